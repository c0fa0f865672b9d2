"""`vqrec versions / publish / activate / rollback / prune` (vqrec/cli/store.py) on a typer app of their own."""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tests.conftest import pq_index_factory
from vqrec.cli.store import app as store_app
from vqrec.index import save_index
from vqrec.index.store import IndexStore

D = 8


# save_index stamps created_at to the second: every save is one (fake) minute after the last
pytestmark = pytest.mark.usefixtures("ticking_clock")


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    return store_app


@pytest.fixture
def run(app: typer.Typer) -> Callable[..., Any]:
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(app, list(args), catch_exceptions=False)

    return invoke


@pytest.fixture(scope="module")
def make_index() -> Callable[[int], Any]:
    return pq_index_factory(seed=3, n_items=200, d=D)


@pytest.fixture
def built(tmp_path: pathlib.Path, make_index: Callable[[int], Any]) -> Callable[[int], tuple[str, str]]:
    """``built(n)`` -> (artifact dir as `vqrec build` leaves it, its index_version)."""
    ev = {"user_to_item": {"recall@10": 0.91}, "item_to_item": {"metric": "cosine", "recall@10": 0.82}}

    def make(n: int) -> tuple[str, str]:
        out = str(tmp_path / f"built{n}")
        return out, save_index(make_index(n), out, evaluation=ev)["index_version"]

    return make


def _fails(r: Any, *words: str) -> None:
    assert r.exit_code == 1, r.output
    assert r.stderr.startswith("error: "), r.stderr
    for w in words:
        assert w in r.stderr, (w, r.stderr)


def test_publish_activate_versions_rollback(run, built, tmp_path):
    root = str(tmp_path / "root")
    d1, v1 = built(100)
    d2, v2 = built(120)
    r = run("publish", "--index", d1, "--name", "movies", "--index-root", root)
    assert r.exit_code == 0, r.output
    assert f"published movies version {v1}" in r.stdout
    assert IndexStore(root).active("movies") is None
    r = run("publish", "--index", d2, "--name", "movies", "--index-root", root, "--activate")
    assert r.exit_code == 0 and f"active version of movies: {v2}" in r.stdout
    assert IndexStore(root).active("movies") == v2

    r = run("versions", "movies", "--index-root", root)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["version", "created", "items", "method", "u->i", "r@10", "i->i", "r@10"]
    assert lines[1].startswith("* ") and v2 in lines[1] and "120" in lines[1] and "0.91" in lines[1]
    assert v1 in lines[2] and "0.82" in lines[2] and not lines[2].startswith("*")
    assert "2 version(s)" in lines[-1]

    r = run("activate", "movies", v1, "--index-root", root)
    assert r.exit_code == 0 and f"active version of movies: {v1} (previous: {v2})" in r.stdout
    r = run("versions", "movies", "--index-root", root, "--json")
    data = json.loads(r.stdout)
    assert data["active"] == v1 and [v["version"] for v in data["versions"]] == [v2, v1]
    assert data["versions"][0]["previous"] and data["versions"][1]["active"]
    assert data["versions"][1]["evaluation"] == {"user_to_item_recall@10": 0.91, "item_to_item_recall@10": 0.82}

    r = run("rollback", "movies", "--index-root", root)
    assert r.exit_code == 0 and f"active version of movies: {v2} (previous: {v1})" in r.stdout
    assert IndexStore(root).active("movies") == v2


def test_publish_keep_prunes_oldest(run, built, tmp_path):
    root = str(tmp_path / "root")
    vs = []
    for n in (100, 110, 120, 130):
        d, v = built(n)
        vs.append(v)
        assert (
            run("publish", "--index", d, "--name", "m", "--index-root", root, "--activate", "--keep", "2").exit_code
            == 0
        )
    assert sorted(os.listdir(os.path.join(root, "m", "versions"))) == sorted(vs[2:])
    r = run("prune", "m", "--index-root", root, "--keep", "1")
    assert r.exit_code == 0 and "0 version(s) deleted" in r.stdout  # active + previous kept


def test_errors_change_nothing(run, built, tmp_path, tree_digest):
    root = str(tmp_path / "root")
    d1, v1 = built(100)
    assert run("publish", "--index", d1, "--name", "movies", "--index-root", root, "--activate").exit_code == 0
    before = tree_digest(root)
    _fails(run("publish", "--index", d1, "--name", "movies", "--index-root", root), "already has version", v1)
    _fails(run("publish", "--index", str(tmp_path / "nope"), "--name", "movies", "--index-root", root), "not found")
    d2, v2 = built(110)
    pathlib.Path(d2, "codes.npy").write_bytes(pathlib.Path(d2, "codes.npy").read_bytes()[:-5])
    _fails(run("publish", "--index", d2, "--name", "movies", "--index-root", root, "--activate"), "codes.npy")
    d3, _ = built(120)
    _fails(run("publish", "--index", d3, "--name", "movies", "--index-root", root, "--keep", "0"), "--keep")
    _fails(run("publish", "--index", d3, "--name", "bad/name", "--index-root", root), "invalid index name")
    _fails(run("activate", "movies", "missing", "--index-root", root), "no version 'missing'")
    _fails(run("rollback", "movies", "--index-root", root), "no previous version")
    _fails(run("rollback", "other", "--index-root", root), "no alias")
    _fails(run("versions", "other", "--index-root", root), "no index named 'other'")
    _fails(run("prune", "movies", "--index-root", root, "--keep", "0"), "keep")
    assert tree_digest(root) == before


def test_versions_flags_unreadable_version(run, built, tmp_path):
    root = str(tmp_path / "root")
    d1, v1 = built(100)
    assert run("publish", "--index", d1, "--name", "movies", "--index-root", root).exit_code == 0
    pathlib.Path(root, "movies", "versions", v1, "manifest.json").write_text("{")
    r = run("versions", "movies", "--index-root", root)
    assert r.exit_code == 0 and "unreadable" in r.stdout and "no active version" in r.stdout
    assert "not valid JSON" in r.stderr


def test_index_root_from_environment(run, built, tmp_path, monkeypatch):
    root = str(tmp_path / "root")
    d1, v1 = built(100)
    monkeypatch.setenv("VQREC_INDEX_ROOT", root)
    assert run("publish", "--index", d1, "--name", "movies", "--activate").exit_code == 0
    assert json.loads(run("versions", "movies", "--json").stdout)["active"] == v1
