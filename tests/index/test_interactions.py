"""The one reader of ``user TAB item`` logs (training logs, the seen / held-out files of ``vqrec eval``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from vqrec.index.errors import InputError
from vqrec.index.interactions import pairs_by_user, read_pairs


def test_pairs_in_file_order_grouped_by_user(tmp_path: Path) -> None:
    p = tmp_path / "log.tsv"
    p.write_bytes(b"u1\ti1\t5\t881250949\n\nu2\ti3\r\nu1\ti2\nu1\ti1\n")
    pairs, lines, digest = read_pairs(str(p))
    assert pairs == [("u1", "i1"), ("u2", "i3"), ("u1", "i2"), ("u1", "i1")]
    assert lines == 5 and digest == hashlib.sha256(p.read_bytes()).hexdigest()
    assert pairs_by_user(str(p)) == {"u1": ["i1", "i2", "i1"], "u2": ["i3"]}


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (b"u1\ti1\nu2 i2\n", "line 2 is not `user TAB item`: 'u2 i2'"),
        (b"u1\t\n", "line 1 is not `user TAB item`"),
        (b"u1\ti1\n\xff\xfe\n", "not UTF-8"),
    ],
)
def test_a_bad_line_is_an_error_naming_it(tmp_path: Path, content: bytes, expect: str) -> None:
    p = tmp_path / "log.tsv"
    p.write_bytes(content)
    with pytest.raises(InputError, match=expect):
        pairs_by_user(str(p))


def test_missing_file_or_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="interactions file not found"):
        read_pairs(str(tmp_path / "nope.tsv"))
    with pytest.raises(InputError, match="is a directory"):
        read_pairs(str(tmp_path))
