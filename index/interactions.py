"""Interaction logs: ``user TAB item`` lines, and the one reader of them (the training log of ``vqrec train
cove``, the seen and held-out files of ``vqrec eval``, the benchmarks' leave-one-out split).

UTF-8; blank lines are skipped and further columns ignored; a line without two non-empty tab-separated
fields is an InputError naming the file and the line.
"""

from __future__ import annotations

import hashlib
import os

from .errors import InputError


def read_pairs(path: str) -> tuple[list[tuple[str, str]], int, str]:
    """``user TAB item [TAB ...]`` lines -> ([(user, item)] in file order, lines read, sha256 of the file)."""
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


def pairs_by_user(path: str) -> dict[str, list[str]]:
    """``user TAB item`` lines -> {user: [items in file order]}."""
    out: dict[str, list[str]] = {}
    for user, item in read_pairs(path)[0]:
        out.setdefault(user, []).append(item)
    return out
