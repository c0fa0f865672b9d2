"""`vqrec rebuild` (trainers/rebuild/config.py) config and input errors: the exit code (2 config, 3 input) and
the message naming the table and key; the [distributed] switch of rebuild.toml. End to end: test_rebuild.py.
"""

from __future__ import annotations

import pathlib
from typing import Any

from tests.trainers.rebuild_helpers import NAME, config, rebuild
from vqrec.trainers.rebuild import load_rebuild_config


def test_config_and_input_errors(data: dict[str, Any], store_root: pathlib.Path, tmp_path: pathlib.Path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[index]\nroot = 'x'\n")
    r = rebuild(bad)
    assert r.returncode == 2 and "name is required" in r.stderr
    r = rebuild(config(data, store_root, tmp_path, items="missing.npz"))
    assert r.returncode == 3 and "missing.npz" in r.stderr
    for extra, msg in (
        ('[distributed]\nray = "yes"\n', "[distributed] ray has the wrong type"),
        ("[distributed]\nshards = 0\n", "[distributed] shards must be >= 1"),
        ("[distributed]\nworkers = 2\n", "unknown keys ['workers'] in [distributed]"),
    ):
        r = rebuild(config(data, store_root, tmp_path, extra=extra))
        assert r.returncode == 2 and msg in r.stderr, (extra, r.returncode, r.stderr)
    # the name is a plain store name: nothing is created outside the root
    evil = tmp_path / "evil.toml"
    evil.write_text(config(data, store_root, tmp_path).read_text().replace(f'name = "{NAME}"', 'name = "../evil"'))
    r = rebuild(evil)
    assert r.returncode == 2 and "[index] name: invalid index name '../evil'" in r.stderr, r.stderr
    assert not (store_root.parent / "evil").exists()


def test_ray_switch_in_the_config(tmp_path: pathlib.Path) -> None:
    base = '[index]\nroot = "r"\nname = "n"\n[data]\nitems = "i.npz"\n'
    cases = {
        "": (False, None),
        '[distributed]\naddress = "ray://h:10001"\n': (True, "ray://h:10001"),  # an address means Ray
        '[distributed]\nray = false\naddress = "ray://h:10001"\n': (False, "ray://h:10001"),  # explicit false wins
        "[distributed]\nray = true\nshards = 8\n": (True, None),
    }
    for extra, (ray, address) in cases.items():
        p = tmp_path / "c.toml"
        p.write_text(base + extra)
        cfg = load_rebuild_config(str(p))
        assert (cfg.ray, cfg.ray_address) == (ray, address), extra
