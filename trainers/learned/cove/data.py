"""COVE's input: an implicit-feedback log of ``user TAB item`` lines, read and validated into Interactions
(ids in order of first appearance, duplicate pairs kept once), and the held-out pairs of the evaluation."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from vqrec.index.errors import InputError


@dataclass(frozen=True)
class Interactions:
    """A deduplicated implicit-feedback log: ids in order of first appearance, pairs as row indices."""

    user_ids: list[str]
    item_ids: list[str]
    users: NDArray[np.int64]  # (n,) user row of each pair
    items: NDArray[np.int64]  # (n,) item row of each pair
    source: str = ""
    lines: int = 0
    duplicates: int = 0
    sha256: str = ""
    user_rows: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    item_rows: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def n(self) -> int:
        return int(len(self.users))

    def seen(self) -> dict[str, list[str]]:
        """{user id: [item ids]} in log order (the training items excluded at evaluation)."""
        out: dict[str, list[str]] = {}
        for u, i in zip(self.users.tolist(), self.items.tolist(), strict=True):
            out.setdefault(self.user_ids[u], []).append(self.item_ids[i])
        return out


def read_pairs_strict(path: str) -> tuple[list[tuple[str, str]], int, str]:
    """``user TAB item [TAB ...]`` lines -> ([(user, item)], lines read, sha256). Blank lines are skipped,
    further columns ignored; a line without two non-empty tab-separated fields is an error naming it."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"interactions file not found: {path}")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, expected a `user TAB item` file.")
    with open(path, "rb") as f:
        blob = f.read()
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 ({e.reason} at byte {e.start}).") from None
    pairs: list[tuple[str, str]] = []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for no, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or not parts[0].strip() or not parts[1].strip():
            raise InputError(f"{path}: line {no} is not `user TAB item`: {line[:80]!r}.")
        pairs.append((parts[0].strip(), parts[1].strip()))
    return pairs, len(lines), hashlib.sha256(blob).hexdigest()


def read_interactions(path: str) -> Interactions:
    """Read and validate a training log (see read_pairs_strict); duplicate pairs are kept once."""
    pairs, nlines, digest = read_pairs_strict(path)
    if not pairs:
        raise InputError(f"{path}: no interactions (the file has no `user TAB item` lines).")
    urow: dict[str, int] = {}
    irow: dict[str, int] = {}
    seen: set[tuple[int, int]] = set()
    us: list[int] = []
    its: list[int] = []
    for u, i in pairs:
        a = urow.setdefault(u, len(urow))
        b = irow.setdefault(i, len(irow))
        if (a, b) in seen:
            continue
        seen.add((a, b))
        us.append(a)
        its.append(b)
    return Interactions(
        user_ids=list(urow),
        item_ids=list(irow),
        users=np.asarray(us, np.int64),
        items=np.asarray(its, np.int64),
        source=path,
        lines=nlines,
        duplicates=len(pairs) - len(us),
        sha256=digest,
        user_rows=urow,
        item_rows=irow,
    )


def read_heldout(path: str) -> dict[str, str]:
    """Held-out ``user TAB item`` lines -> {user: item} (a user's last line wins, as in ``vqrec eval``)."""
    pairs, _, _ = read_pairs_strict(path)
    if not pairs:
        raise InputError(f"{path}: no held-out interactions (the file has no `user TAB item` lines).")
    return dict(pairs)
