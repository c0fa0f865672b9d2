"""COVE's input: an implicit-feedback log of ``user TAB item`` lines, read and validated into Interactions
(ids in order of first appearance, duplicate pairs kept once), and the held-out pairs of the evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from vqrec.index.errors import InputError
from vqrec.index.interactions import read_pairs


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


def read_interactions(path: str) -> Interactions:
    """Read and validate a training log (vqrec.index.interactions.read_pairs); duplicate pairs are kept once."""
    pairs, nlines, digest = read_pairs(path)
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
    pairs, _, _ = read_pairs(path)
    if not pairs:
        raise InputError(f"{path}: no held-out interactions (the file has no `user TAB item` lines).")
    return dict(pairs)
