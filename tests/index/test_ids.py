"""IdList: ids as one blob + offsets + a table of rows, against a plain list and dict (the oracle)."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from vqrec.index import ConfigError, InputError
from vqrec.index import ids as ids_mod
from vqrec.index.ids import IdList, read_id_file

IDS = ["i0", "é-ünïcode", "", "x" * 300, "42", "a b\tc", "i1", "🙂"]


@pytest.mark.parametrize("kernel", [True, False])
def test_permuted_ids_match_the_permuted_list(monkeypatch: pytest.MonkeyPatch, kernel: bool) -> None:
    """permuted(perm) (the build's list-by-list order) equals the list reordered, lookups included; an id holding a
    newline is refused by from_list."""
    if not kernel:
        monkeypatch.setattr(ids_mod, "_BOUND", False)
    perm = np.random.default_rng(0).permutation(len(IDS))
    for base in (IdList.from_list(IDS), read_id_file_bytes(IDS)):
        got = base.permuted(perm)
        want = [IDS[i] for i in perm]
        assert list(got) == want and got.take(list(range(len(IDS)))) == want
        assert all(got.row_of(s) == i for i, s in enumerate(want))
    assert list(IdList.from_list([]).permuted(np.zeros(0, np.int64))) == []
    with pytest.raises(ConfigError, match="newline-terminated ids"):
        IdList.from_list(["a", "b\nc"])


def read_id_file_bytes(ids: list[str]) -> IdList:
    return IdList.from_lines_bytes(("\n".join(ids) + "\n").encode("utf-8"), len(ids))


@pytest.mark.parametrize("kernel", [True, False])
def test_sequence_and_lookups_match_a_list(monkeypatch: pytest.MonkeyPatch, kernel: bool) -> None:
    if not kernel:
        monkeypatch.setattr(ids_mod, "_BOUND", False)  # the dict fallback answers the same
    ids = IdList.from_list(IDS)
    assert len(ids) == len(IDS) and list(ids) == IDS and ids == IDS
    assert [ids[i] for i in range(len(IDS))] == IDS and ids[-1] == IDS[-1] and ids[2:5] == IDS[2:5]
    assert ids.take([7, 0, 3]) == [IDS[7], IDS[0], IDS[3]] and ids.take([]) == []
    for i, s in enumerate(IDS):
        assert ids.row_of(s) == i and s in ids
    for missing in ("i2", "I0", "x" * 299, "é", " "):
        assert ids.row_of(missing) == -1 and missing not in ids
    assert 3 not in ids  # type: ignore[operator]
    with pytest.raises(IndexError):
        ids[len(IDS)]


@pytest.mark.parametrize("strip", [True, False])
def test_take_joins_in_chunks_of_the_thread_buffer(monkeypatch: pytest.MonkeyPatch, strip: bool) -> None:
    """take() of many rows (the ids of a batch's answers) in several kernel calls, empty and long ids among them;
    ids without trailing newlines (offsets given directly) too."""
    monkeypatch.setattr(ids_mod, "_JOIN_BYTES", 1000)  # a few hundred bytes per call: many calls
    names = [s + (f"#{j}" if j else "") for j in range(50) for s in IDS]  # one empty id, one of 300 bytes
    if strip:
        ids = IdList.from_list(names)
    else:
        lens = [len(s.encode()) for s in names]
        ids = IdList(np.frombuffer("".join(names).encode(), np.uint8), np.cumsum([0, *lens]).astype(np.uint32))
    rows = np.random.default_rng(1).integers(0, len(names), 3000)
    want = [names[r] for r in rows.tolist()]
    assert ids.take(rows) == want and ids.take(rows.tolist()) == want
    assert ids.max_len == len(("x" * 300 + "#49").encode()) and ids.take(rows[:1]) == want[:1]


def test_many_ids_are_compact_and_all_found() -> None:
    n = 200_000
    plain = [f"item-{i * 7919 % 1_000_003}" for i in range(n)]
    ids = IdList.from_list(plain)
    rng = np.random.default_rng(0)
    for r in rng.integers(0, n, 2000).tolist():
        assert ids.row_of(plain[r]) == r
    assert ids.row_of("item--1") == -1
    assert ids.nbytes / n < 30  # blob ~11 B + offsets 4 B + table ~10 B, where a list + dict hold ~140


def test_duplicates_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"duplicate id 'b' \(row 2\)"):
        IdList.from_list(["a", "b", "b"])


@pytest.mark.parametrize("mmap", [False, True])
def test_read_id_file_reads_like_read_ids(tmp_path, mmap: bool) -> None:  # type: ignore[no-untyped-def]
    from vqrec.index.embeddings import read_ids

    for name, data in (("plain", b"a\nb\nc\n"), ("no-final-newline", b"a\nb\nc"), ("crlf", b"a\r\nb\r\nc\r\n")):
        p = tmp_path / name
        p.write_bytes(data)
        assert list(read_id_file(str(p), mmap=mmap)) == read_ids(str(p)) == ["a", "b", "c"]


@pytest.mark.skipif(not pathlib.Path("/proc/self/maps").exists(), reason="needs /proc/self/maps to see the mapping")
def test_read_id_file_maps_the_file_and_answers_the_same(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With mmap the blob is the file itself, mapped (only offsets and the lookup table are built); every answer is
    the read file's. Files it cannot map as they are (empty, not UTF-8, a CR, no final newline) read or fail as
    without mmap."""
    p = tmp_path / "mapped_ids.txt"
    ids = [*IDS, *(f"item{i}" for i in range(5000))]
    p.write_bytes(("\n".join(ids) + "\n").encode("utf-8"))
    mapped, read = read_id_file(str(p), mmap=True), read_id_file(str(p))
    assert str(p) in pathlib.Path("/proc/self/maps").read_text()
    assert list(mapped) == list(read) == ids and mapped.take([3, 0, 5007]) == [ids[3], ids[0], ids[5007]]
    assert all(mapped.row_of(s) == i for i, s in enumerate(ids)) and mapped.row_of("item5000") == -1
    p.write_bytes(b"")
    assert list(read_id_file(str(p), mmap=True)) == []
    p.write_bytes(b"a\n\xff\n")
    with pytest.raises(InputError, match="not UTF-8"):
        read_id_file(str(p), mmap=True)
    p.write_bytes(b"a\nb\na\n")
    with pytest.raises(ConfigError, match="duplicate id 'a'"):
        read_id_file(str(p), mmap=True)
