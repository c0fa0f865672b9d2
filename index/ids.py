"""IdList: n string ids held compactly, with id -> row lookups.

A Python list of a million id strings and a dict from id to row hold about 140 bytes per item (measured at
1M items: 72 B for the list and its str objects, 71 B for the dict). IdList keeps the ids as one UTF-8 blob
(the bytes of ``item_ids.txt``: one id per line) with uint32 offsets (int64 beyond 4 GiB), and finds rows
through an open-addressing table of int32 rows (1.5 n slots, linear probing, FNV-1a hashes of the bytes
finalized and mapped onto the slots by their high bits), built and searched by the C kernel: ~18 bytes per item
for 7-character ids. Without the kernel the table is a Python dict (the old cost, the same answers).

It behaves as a read-only sequence of str: ``len``, ``ids[i]``, slices (lists), iteration, ``in``,
``row_of(id)`` (-1 when unknown), equality with a list.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

import numpy as np
from numpy.typing import NDArray

from .adc import _KERNEL, _ptr
from .errors import ConfigError

_NEWLINE = 10
_JOIN_BYTES = 1 << 22  # take(): ids joined per kernel call at most (a thread's buffer)


def _bind() -> bool:
    if _KERNEL is None or not hasattr(_KERNEL, "vqrec_ids_find"):
        return False
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    f = _KERNEL.vqrec_ids_find
    f.restype, f.argtypes = i64, [p, p, i32, p, i64, ctypes.c_char_p, i64]
    g = _KERNEL.vqrec_ids_build
    g.restype, g.argtypes = i64, [p, p, i32, i64, p, i64]
    h = _KERNEL.vqrec_ids_join
    h.restype, h.argtypes = i64, [p, p, i32, i64, p, i64, p, i64]
    return True


_BOUND = _bind()


class IdList(Sequence[str]):
    def __init__(self, blob: NDArray[np.uint8], offsets: NDArray[np.integer]) -> None:
        """``blob[offsets[i]:offsets[i+1]]`` holds id i's UTF-8 bytes (a trailing newline is allowed and not
        part of the id: see ``from_lines_bytes``)."""
        self._blob = np.ascontiguousarray(blob, dtype=np.uint8)
        self._off = np.ascontiguousarray(offsets)
        self._off32 = int(self._off.dtype == np.uint32)
        self._n = len(self._off) - 1
        # bytes to slice ids from without the kernel: the ids file's own bytes object when read from one (no
        # copy), else made when first needed (never for a memory-mapped blob while the kernel is built)
        base = getattr(blob, "base", None)
        self._bytes_obj = base if isinstance(base, bytes) and len(base) == self._blob.nbytes else None
        self._local = threading.local()
        self._strip = 0
        self._dict: dict[str, int] | None = None
        self._table: NDArray[np.int32] | None = None
        self._max_len: int | None = None

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def from_list(cls, ids: Iterable[str]) -> IdList:
        if isinstance(ids, IdList):
            return ids
        ids = ids if isinstance(ids, list) else list(ids)
        data = ("\n".join(ids) + "\n").encode("utf-8") if ids else b""  # an id holding a newline: refused below
        return cls.from_lines_bytes(data, len(ids))

    @classmethod
    def from_lines_bytes(cls, data: bytes | NDArray[np.uint8], n: int | None = None) -> IdList:
        """Ids from the bytes of an ids file (or a uint8 array of them, e.g. the file memory-mapped): one id per
        line, each line ending with a newline."""
        blob = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
        ends = np.flatnonzero(blob == _NEWLINE)
        if n is not None and len(ends) != n:
            raise ConfigError(f"{len(ends)} newline-terminated ids, expected {n}.")
        dtype = np.uint32 if len(blob) < (1 << 32) else np.int64
        starts = np.concatenate([[0], ends + 1]).astype(dtype)
        out = cls(blob, starts)
        out._strip = 1  # each span ends with its newline
        out._build()
        return out

    def permuted(self, perm: NDArray[np.int64]) -> IdList:
        """The ids in the order of ``perm`` (a permutation of the rows), gathered from the blob in numpy (a list of
        a million str reordered and joined again took ~1.4 s)."""
        off = self._off.astype(np.int64)
        lens = np.diff(off)[perm]
        new = np.zeros(len(lens) + 1, np.int64)
        np.cumsum(lens, out=new[1:])
        src = np.repeat(off[:-1][perm] - new[:-1], lens) + np.arange(new[-1], dtype=np.int64)
        out = IdList(self._blob[src], new.astype(self._off.dtype))
        out._strip = self._strip
        out._build()
        return out

    def _build(self) -> None:
        n = self._n
        if _BOUND and n < (1 << 31):
            cap = max(16, n + n // 2 + 1)  # load at most 2/3 (any size: the kernel maps hashes onto [0, cap))
            table = np.full(cap, -1, np.int32)
            dup = _KERNEL.vqrec_ids_build(  # type: ignore[union-attr]
                _ptr(self._blob), _ptr(self._off), self._off32, n, _ptr(table), cap
            )
            if dup >= 0:
                raise ConfigError(f"duplicate id {self[int(dup)]!r} (row {dup}).")
            self._table = table
            self._p = (_ptr(self._blob), _ptr(self._off), _ptr(table), cap)
        else:
            self._dict = {}
            for i, s in enumerate(self):
                if self._dict.setdefault(s, i) != i:
                    raise ConfigError(f"duplicate id {s!r} (row {i}).")

    def kernel_view(self) -> tuple[int, int, int, int]:
        """(blob address, offsets address, off32 | strip << 1, longest id in bytes): what the search kernel needs to
        write an answer's ids (fastscan.ListScan.set_ids). The addresses stay valid while this IdList lives."""
        return _ptr(self._blob), _ptr(self._off), self._off32 | (self._strip << 1), self.max_len

    # ---- lookups --------------------------------------------------------------------------------
    def row_of(self, key: str) -> int:
        """The row of ``key``, or -1."""
        if self._dict is not None:
            return self._dict.get(key, -1)
        if not isinstance(key, str):
            return -1
        b = key.encode("utf-8", "surrogatepass")
        if self._strip:
            b += b"\n"  # spans hold the newline: compare the whole line
        blob, off, table, cap = self._p
        return int(_KERNEL.vqrec_ids_find(blob, off, self._off32, table, cap, b, len(b)))  # type: ignore[union-attr]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.row_of(key) >= 0

    # ---- sequence -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    def _one(self, i: int) -> str:
        a, b = int(self._off[i]), int(self._off[i + 1]) - self._strip
        return self._blob[a:b].tobytes().decode("utf-8", "surrogatepass")

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self._one(j) for j in range(*i.indices(self._n))]
        j = int(i)
        if j < 0:
            j += self._n
        if not 0 <= j < self._n:
            raise IndexError(f"id row {i} out of range for {self._n} ids")
        return self._one(j)

    def take(self, rows: Sequence[int] | NDArray[np.int64]) -> list[str]:
        """The ids of several rows (valid rows, as a search returns them): joined by newlines in the kernel, then
        one decode and one split (a search's answers are 10-1000 ids each: per-id Python steps would dominate)."""
        n = len(rows)
        if not n:
            return []
        if not _BOUND:
            r = np.asarray(rows, dtype=np.int64)
            starts, ends = self._off[r].tolist(), (self._off[r + 1] - self._strip).tolist()
            if self._bytes_obj is None:
                self._bytes_obj = self._blob.tobytes()
            b = self._bytes_obj
            return [b[a:e].decode() for a, e in zip(starts, ends, strict=True)]
        step = max(1, _JOIN_BYTES // (self.max_len + 1))
        if n <= step:
            return self._join(rows, n)
        out: list[str] = []
        for i0 in range(0, n, step):
            part = rows[i0 : i0 + step]
            out += self._join(part, len(part))
        return out

    def _join(self, rows: Sequence[int] | NDArray[np.int64], n: int) -> list[str]:
        """take() of at most _JOIN_BYTES // (max_len + 1) rows, through this thread's buffers."""
        buf = getattr(self._local, "join", None)
        if buf is None or len(buf[0]) < n:  # room for at least 1,024 ids, or for _JOIN_BYTES when ids are long
            rows_a = np.empty(max(n, min(1024, _JOIN_BYTES // (self.max_len + 1))), np.int64)
            out = np.empty(len(rows_a) * (self.max_len + 1), np.uint8)
            buf = self._local.join = (rows_a, out, _ptr(rows_a), _ptr(out), memoryview(out))
        rows_a, out, prow, pout, view = buf
        rows_a[:n] = rows
        nb = _KERNEL.vqrec_ids_join(  # type: ignore[union-attr]
            _ptr(self._blob), _ptr(self._off), self._off32, self._strip, prow, n, pout, len(out)
        )
        if nb < 0:  # cannot happen (room for n of the longest id): the slow way all the same
            return [self[int(r)] for r in rows_a[:n]]
        return str(view[:nb], "utf-8").split("\n")

    @property
    def max_len(self) -> int:
        """Bytes of the longest id."""
        if self._max_len is None:
            lens = np.diff(self._off.astype(np.int64)) - self._strip
            self._max_len = max(int(lens.max(initial=0)), 0)
        return self._max_len

    def __iter__(self) -> Iterator[str]:
        if self._strip:  # one decode of the whole blob
            text = self._blob.tobytes().decode("utf-8", "surrogatepass")
            yield from text.split("\n")[: self._n]
            return
        for j in range(self._n):
            yield self._one(j)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (IdList, list, tuple)):
            return len(other) == self._n and all(a == b for a, b in zip(self, other, strict=False))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        head = ", ".join(repr(s) for s in self[:3])
        return f"IdList([{head}{', ...' if self._n > 3 else ''}], n={self._n})"

    def lines_bytes(self) -> bytes:
        """The ids as the bytes of an ids file (one per line)."""
        if self._strip:
            return self._blob.tobytes()
        return "".join(f"{s}\n" for s in self).encode("utf-8")

    @property
    def nbytes(self) -> int:
        """Bytes held: blob, offsets and the lookup table."""
        t = 0 if self._table is None else self._table.nbytes
        return int(self._blob.nbytes + self._off.nbytes + t)


def read_id_file(path: str, *, mmap: bool = False) -> IdList:
    """An ids file (one UTF-8 id per line) as an IdList, without making a str per id (a million small
    strings would leave their memory arenas behind). The same reading as ``embeddings.read_ids``: a last line
    without a newline counts, a CR before the newline is not part of the id.

    With ``mmap`` the file's bytes are the IdList's blob, mapped read-only (pages shared by every process that
    maps the file; only the offsets and the lookup table are built in memory), when the file allows it: UTF-8,
    every line newline-terminated, no CR. Otherwise it is read as without ``mmap``."""
    from .embeddings import read_ids
    from .errors import InputError

    if mmap:
        mapped = _map_id_file(path)
        if mapped is not None:
            return IdList.from_lines_bytes(mapped)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise InputError(f"ids file not found: {path}") from None
    if b"\r" in data:  # rare: the general reader strips it
        return IdList.from_list(read_ids(path))
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: ids file is not UTF-8 ({e.reason} at byte {e.start}).") from None
    if data and not data.endswith(b"\n"):
        data += b"\n"
    return IdList.from_lines_bytes(data)


_UTF8_STEP = 1 << 22  # bytes decoded per step when checking a mapped ids file


def _map_id_file(path: str) -> NDArray[np.uint8] | None:
    """The ids file mapped read-only as uint8, or None when it must be read instead (missing, empty, a CR, no
    final newline, not UTF-8: ``read_id_file`` then reads it and raises what it finds)."""
    import codecs

    try:
        if os.path.getsize(path) == 0:
            return None
        blob = np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError):
        return None
    if blob[-1] != _NEWLINE:
        return None
    dec = codecs.getincrementaldecoder("utf-8")()
    try:
        for i0 in range(0, len(blob), _UTF8_STEP):
            part = blob[i0 : i0 + _UTF8_STEP].tobytes()
            if b"\r" in part:
                return None
            dec.decode(part, final=i0 + _UTF8_STEP >= len(blob))
    except UnicodeDecodeError:
        return None
    return blob
