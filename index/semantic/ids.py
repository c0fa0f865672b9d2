"""The ID table: the semantic ID of each item (or user), i.e. the code tuple a learned residual tokenizer
(RQ-VAE / CoST) gives it, made unique with a dedup suffix, plus the prefix structure that generative
recommenders decode against.

    assign_suffixes    per-item dedup suffix: 0 for the first item of a code tuple (row order), 1 for
                       the next, ...; (codes, suffix) is then unique
    SemanticIds        codes + suffixes of one entity kind (items or users), with a prefix structure:
                       rows sorted lexicographically by (codes, suffix), so every prefix is one
                       contiguous range found level by level with binary search, and the distinct next
                       codes of a prefix are the child runs inside that range (O(L log n + children),
                       never a scan of the catalogue); and the pagination cursors of prefix answers

String form of a semantic ID: the L codes, then the suffix, joined by "-": ``"12-5-200-0"``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError, InvalidCursorError, InvalidPrefixError, echo


# ---- dedup suffixes ----------------------------------------------------------------------------
def assign_suffixes(codes: NDArray[Any]) -> NDArray[np.int64]:
    """0 for the first row (in row order) of each distinct code tuple, 1 for the second, ..."""
    codes = np.asarray(codes)
    n = len(codes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    # lexsort sorts by the last key first: codes level 0, 1, ..., then row number (ties keep row order)
    order = np.lexsort((np.arange(n),) + tuple(codes[:, lvl] for lvl in range(codes.shape[1] - 1, -1, -1)))
    sc = codes[order]
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = np.any(sc[1:] != sc[:-1], axis=1)
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    suffix = np.empty(n, dtype=np.int64)
    suffix[order] = np.arange(n) - group_start
    return suffix


# ---- the served structure ----------------------------------------------------------------------
def semantic_string(codes: Sequence[int], suffix: int) -> str:
    return "-".join(str(int(c)) for c in codes) + f"-{int(suffix)}"


@dataclass
class SemanticIds:
    """Codes (n, L) and dedup suffixes (n,) of one entity kind, rows aligned with ``ids``."""

    ids: list[str]
    codes: NDArray[Any]  # (n, L) non-negative ints
    suffix: NDArray[Any]  # (n,)
    sizes: list[int]  # codebook size per level
    kind: str = "item"

    def __post_init__(self) -> None:
        codes = np.asarray(self.codes)
        n = len(self.ids)
        if codes.ndim != 2 or len(codes) != n or np.asarray(self.suffix).shape != (n,):
            raise ConfigError(f"semantic ids: {n} ids but codes {codes.shape} and suffixes {np.shape(self.suffix)}.")
        if codes.shape[1] != len(self.sizes) or codes.shape[1] == 0:
            raise ConfigError(f"semantic ids: codes have {codes.shape[1]} levels, sizes list {self.sizes}.")
        if n and (codes.min() < 0 or np.any(codes.max(axis=0) >= np.asarray(self.sizes))):
            raise ConfigError("semantic ids: a code is outside its level's codebook.")
        self._rows = {s: i for i, s in enumerate(self.ids)}
        L = codes.shape[1]
        suffix = np.asarray(self.suffix, dtype=np.int64)
        keys = [codes[:, lvl].astype(np.int64) for lvl in range(L)] + [suffix]
        order = np.lexsort(tuple(reversed(keys)))
        self._order = order  # position in the sorted order -> row
        self._cols = [np.ascontiguousarray(k[order]) for k in keys]  # L code columns + suffix column, sorted
        if n > 1:
            same = np.ones(n - 1, dtype=bool)
            for col in self._cols:
                same &= col[1:] == col[:-1]
            if same.any():
                raise ConfigError("semantic ids: (codes, suffix) is not unique; suffixes must deduplicate the codes.")
        # run starts at depth t = 1..L+1 (prefix of t tokens): positions where one of the first t tokens changes
        self._starts: list[NDArray[np.int64]] = [np.zeros(1 if n else 0, dtype=np.int64)]  # depth 0: one run
        change = np.zeros(max(n - 1, 0), dtype=bool)
        for col in self._cols:
            change |= col[1:] != col[:-1]
            self._starts.append(np.concatenate([[0], np.flatnonzero(change) + 1]).astype(np.int64) if n else change)
        h = hashlib.sha256(np.ascontiguousarray(codes, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(suffix).tobytes())
        h.update("\n".join(self.ids).encode())
        self.tag = h.hexdigest()[:12]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def levels(self) -> int:
        return len(self.sizes)

    def row_of(self, ident: str) -> int | None:
        return self._rows.get(ident)

    def entry(self, row: int) -> dict[str, Any]:
        codes = [int(c) for c in self.codes[row]]
        suffix = int(self.suffix[row])
        return {"codes": codes, "suffix": suffix, "semantic_id": semantic_string(codes, suffix)}

    # ---- prefixes ------------------------------------------------------------------------------
    def check_prefix(self, prefix: Sequence[int]) -> list[int]:
        """The prefix as ints, or InvalidPrefixError naming the position and the valid range."""
        if len(prefix) > self.levels:
            raise InvalidPrefixError(
                f"prefix has {len(prefix)} codes but {self.kind} semantic ids have {self.levels} levels "
                f"(the dedup suffix is not part of a prefix)."
            )
        out = []
        for pos, c in enumerate(prefix):
            if isinstance(c, bool) or not isinstance(c, int | np.integer) or not 0 <= int(c) < self.sizes[pos]:
                raise InvalidPrefixError(
                    f"prefix[{pos}] = {echo(c)} is not a code of level {pos}: "
                    f"codes are integers in 0..{self.sizes[pos] - 1}."
                )
            out.append(int(c))
        return out

    def prefix_range(self, prefix: Sequence[int]) -> tuple[int, int]:
        """[lo, hi) positions in the sorted order whose first len(prefix) tokens equal ``prefix``."""
        lo, hi = 0, len(self.ids)
        for lvl, c in enumerate(prefix):
            col = self._cols[lvl][lo:hi]
            a = int(np.searchsorted(col, c, side="left"))
            b = int(np.searchsorted(col, c, side="right"))
            lo, hi = lo + a, lo + b
            if lo == hi:
                break
        return lo, hi

    def next_tokens(self, depth: int, lo: int, hi: int) -> list[tuple[int, int]]:
        """(token, count) of the runs at depth+1 inside [lo, hi): the valid next codes (or, at depth L,
        the dedup suffixes) after a prefix of ``depth`` codes, with how many rows each leads to."""
        if lo >= hi:
            return []
        starts = self._starts[depth + 1]
        a = int(np.searchsorted(starts, lo, side="left"))
        b = int(np.searchsorted(starts, hi, side="left"))
        s = starts[a:b]
        counts = np.diff(np.append(s, hi))
        tokens = self._cols[depth][s]
        return [(int(t), int(c)) for t, c in zip(tokens, counts, strict=True)]

    def rows_in(self, lo: int, hi: int) -> NDArray[np.int64]:
        return self._order[lo:hi]

    def find(self, codes: Sequence[int], suffix: int) -> int | None:
        """The row whose semantic ID is exactly (codes, suffix), or None."""
        if len(codes) != self.levels:
            return None
        lo, hi = self.prefix_range(list(codes) + [suffix])
        return int(self._order[lo]) if hi > lo else None

    def parse(self, text: str) -> tuple[list[int], int]:
        """``"12-5-200-0"`` -> ([12, 5, 200], 0). InvalidPrefixError (with the expected form) if malformed:
        not L codes and a suffix joined by "-", a part that is not a canonical decimal (ASCII digits, no
        leading zeros: "01" would otherwise name the same id as "1"), or a code out of its level's range."""
        parts = text.split("-")
        # ASCII digits only (str.isdigit also accepts e.g. "²", which int() refuses), and at most 18 of
        # them (int() refuses > 4300 digits; no code or suffix is that long anyway)
        if len(parts) != self.levels + 1 or not all(
            p.isascii() and p.isdigit() and len(p) <= 18 and (p == "0" or p[0] != "0") for p in parts
        ):
            raise InvalidPrefixError(
                f"{text[:80]!r} is not a semantic id: expected {self.levels} codes and a suffix, decimal "
                f"without leading zeros, joined by '-', e.g. {semantic_string([0] * self.levels, 0)!r}."
            )
        return self.check_prefix([int(p) for p in parts[:-1]]), int(parts[-1])

    # ---- pagination cursors --------------------------------------------------------------------
    def encode_cursor(self, prefix: Sequence[int], offset: int) -> str:
        raw = json.dumps({"k": self.kind, "p": list(prefix), "o": int(offset), "t": self.tag}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def decode_cursor(self, cursor: str, prefix: Sequence[int]) -> int:
        """The offset a cursor from ``encode_cursor`` carries; InvalidCursorError if it is not one of ours,
        was issued for the other entity kind, for another version of these semantic ids, or for another
        prefix."""
        try:
            pad = "=" * (-len(cursor) % 4)
            data = json.loads(base64.urlsafe_b64decode(cursor + pad).decode())
            kind, offset, p, tag = data["k"], data["o"], data["p"], data["t"]
            if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0 or not isinstance(p, list):
                raise ValueError
            if not isinstance(kind, str):
                raise ValueError
        except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
            raise InvalidCursorError(f"cursor {cursor[:40]!r} is not a cursor this service issued.") from None
        if kind != self.kind:
            raise InvalidCursorError(
                f"cursor was issued for {kind[:40]}s, not {self.kind}s: send it back for the same entity kind."
            )
        if tag != self.tag:
            raise InvalidCursorError("cursor was issued for another version of these semantic ids; start again.")
        if list(p) != list(prefix):
            raise InvalidCursorError(f"cursor was issued for prefix {p}, not {list(prefix)}.")
        return offset
