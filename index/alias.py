"""The ``ACTIVE`` alias file of a store name: JSON ``{"version", "previous", "updated_at"}``, read so that
nothing on disk can make it more than an ``ArtifactCorrupt`` naming the file, and replaced atomically.

Reading refuses, naming the file and the repair (``vqrec activate NAME VERSION``): a file that is not
UTF-8, not a JSON object, a field of the wrong type, a version that is not a store id, a directory, a FIFO
(opened non-blocking, never waited on), a dangling link, anything larger than ``MAX_BYTES``. Writing goes
through a temporary file in the same directory (write, fsync, ``os.replace``, fsync the directory): a reader
sees the old alias or the new one, never half of one; a directory in the alias's place is moved aside.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import stat
import tempfile
from typing import Any

from .errors import ArtifactCorrupt, echo

logger = logging.getLogger(__name__)

ALIAS = "ACTIVE"
MAX_BYTES = 1 << 20  # a real alias is ~150 bytes: anything this large is not one
STORE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")  # an index name or a version id


def fsync_dir(path: str) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_alias(p: str, name: str) -> dict[str, Any] | None:
    """The alias at ``p`` (of index ``name``) as stored, or None when there is none; anything else than a
    well-formed alias is ArtifactCorrupt naming the file."""

    def corrupt(why: str) -> ArtifactCorrupt:
        return ArtifactCorrupt(f"{p}: {why}; the alias is unreadable (repair it with `vqrec activate {name} VERSION`).")

    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        if os.path.islink(p):
            raise corrupt(f"alias is a symbolic link to {os.readlink(p)!r}, which does not exist") from None
        return None
    except OSError as e:
        raise corrupt(f"alias cannot be opened ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise corrupt("alias is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise corrupt("alias is not a regular file")
        if st.st_size > MAX_BYTES:
            raise corrupt(f"alias is {st.st_size} bytes, larger than {MAX_BYTES}")
        chunks = []
        size = 0
        while size <= MAX_BYTES:
            chunk = os.read(fd, MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        raw = b"".join(chunks)
    except OSError as e:
        raise corrupt(f"alias cannot be read ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_BYTES:
        raise corrupt(f"alias is larger than {MAX_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise corrupt(f"alias is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})") from None
    try:
        alias = json.loads(text)
    except ValueError as e:  # JSONDecodeError, and integers too long to convert
        raise corrupt(f"alias is not valid JSON ({e})") from None
    except RecursionError:
        raise corrupt("alias is not valid JSON (nested too deeply)") from None
    if not isinstance(alias, dict):
        raise corrupt(f"alias is a JSON {type(alias).__name__}, not an object")
    version = alias.get("version")
    if not isinstance(version, str) or not STORE_ID.match(version):
        raise corrupt(f"alias 'version' {echo(version)} is not a version id")
    prev = alias.get("previous")
    if prev is not None and (not isinstance(prev, str) or not STORE_ID.match(prev)):
        raise corrupt(f"alias 'previous' {echo(prev)} is not a version id or null")
    updated = alias.get("updated_at")
    if updated is not None and not isinstance(updated, str):
        raise corrupt(f"alias 'updated_at' {echo(updated)} is not a string or null")
    return alias


def write_alias(p: str, name: str, alias: dict[str, Any]) -> None:
    """Replace the alias at ``p`` (of index ``name``) atomically."""
    d = os.path.dirname(p)
    if os.path.isdir(p) and not os.path.islink(p):  # os.replace cannot replace a directory: move it aside
        aside = os.path.join(d, f".{ALIAS}.unreadable-{secrets.token_hex(4)}")
        os.rename(p, aside)
        logger.warning("index %r: the directory %s in place of the alias was moved to %s", name, p, aside)
    fd, tmp = tempfile.mkstemp(prefix=f".{ALIAS}.tmp-", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(alias, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(d)
