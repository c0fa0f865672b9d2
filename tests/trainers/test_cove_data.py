"""COVE's input (trainers/learned/cove/data.py): reading and validating the `user TAB item` log."""

from __future__ import annotations

import pytest

from vqrec.index import InputError

torch = pytest.importorskip("torch", reason="needs torch (the 'train' extra: pip install torch==2.13.0)")

from vqrec.trainers.learned.cove import read_interactions  # noqa: E402


def test_reading_the_log(tmp_path):
    p = tmp_path / "log.tsv"
    p.write_text("u1\ti1\t5\t881250949\nu1\ti2\n\nu2\ti1\nu1\ti1\r\n")
    data = read_interactions(str(p))
    assert (data.user_ids, data.item_ids, data.n, data.duplicates) == (["u1", "u2"], ["i1", "i2"], 3, 1)
    assert data.seen() == {"u1": ["i1", "i2"], "u2": ["i1"]}
    p.write_text("u1\ti1\nu2 i2\n")
    with pytest.raises(InputError, match=r"log.tsv: line 2 is not `user TAB item`: 'u2 i2'"):
        read_interactions(str(p))
    p.write_text("u1\t\n")
    with pytest.raises(InputError, match="line 1 is not"):
        read_interactions(str(p))
    p.write_text("\n\n")
    with pytest.raises(InputError, match="no interactions"):
        read_interactions(str(p))
    p.write_bytes(b"u1\t\xff\n")
    with pytest.raises(InputError, match="not UTF-8"):
        read_interactions(str(p))
    with pytest.raises(InputError, match="interactions file not found"):
        read_interactions(str(tmp_path / "missing.tsv"))
