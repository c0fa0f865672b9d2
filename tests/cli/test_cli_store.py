"""`vqrec versions / publish / activate / rollback / prune` (vqrec/cli/store.py) on a typer app of their own."""

from __future__ import annotations

import json
import os
import pathlib
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tests.conftest import pq_index_factory
from tests.index.store_kill import POINTS, kill_publish, stagings
from vqrec.cli.store import app as store_app
from vqrec.index import load_index, save_index
from vqrec.index.store import IndexStore
from vqrec.service.main import create_app
from vqrec.service.settings import Settings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient

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


def test_verify_checks_stored_versions_on_demand(run, built, tmp_path, tree_digest):
    """`vqrec verify`: the active version by default, --version one, --all every one; a flipped byte in a stored
    file fails naming the file and the version, exit 1, and the store is left as it was."""
    root = str(tmp_path / "root")
    (d1, v1), (d2, v2) = built(100), built(120)
    assert run("publish", "--index", d1, "--name", "movies", "--index-root", root).exit_code == 0
    assert run("publish", "--index", d2, "--name", "movies", "--index-root", root, "--activate").exit_code == 0
    r = run("verify", "movies", "--index-root", root)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"ok movies version {v2}: 120 items,") and v1 not in r.stdout
    r = run("verify", "movies", "--index-root", root, "--all")
    assert r.exit_code == 0 and f"ok movies version {v1}: 100 items" in r.stdout and v2 in r.stdout
    victim = pathlib.Path(root, "movies", "versions", v1, "item_norms.npy")
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    os.chmod(victim, 0o644)
    victim.write_bytes(bytes(data))
    before = tree_digest(root)
    r = run("verify", "movies", "--index-root", root, "--version", v2)
    assert r.exit_code == 0, r.output
    r = run("verify", "movies", "--index-root", root, "--all")
    _fails(r, f"movies version {v1}", "item_norms.npy: sha256", "1 of 2 version(s) of 'movies' failed verification")
    assert f"ok movies version {v2}" in r.stdout
    _fails(run("verify", "movies", "--index-root", root, "--version", "nope"), "nope")
    _fails(run("verify", "movies", "--index-root", root, "--version", v1, "--all"), "not both")
    _fails(run("verify", "books", "--index-root", root), "books")
    assert tree_digest(root) == before


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
    # the same artifact again: already published, nothing changes (a rerun after a kill is not an error)
    r = run("publish", "--index", d1, "--name", "movies", "--index-root", root, "--activate")
    assert r.exit_code == 0 and f"movies version {v1} already published" in r.stdout, r.output
    assert tree_digest(root) == before
    # another artifact claiming the same version id: refused, naming both
    dx, _ = built(105)
    manifest = pathlib.Path(dx, "manifest.json")
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "index_version": v1}))
    stored = os.path.join(root, "movies", "versions", v1)
    _fails(run("publish", "--index", dx, "--name", "movies", "--index-root", root), "different content", dx, stored)
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


@pytest.mark.parametrize("garbage", [b"\xff\xfe", b'{"version": 7}', "directory"], ids=["non-utf8", "bad-field", "dir"])
def test_unreadable_alias_is_listed_warned_and_repaired_by_activate(run, built, tmp_path, garbage):
    root = str(tmp_path / "root")
    d1, v1 = built(100)
    d2, v2 = built(120)
    assert run("publish", "--index", d1, "--name", "movies", "--index-root", root, "--activate").exit_code == 0
    assert run("publish", "--index", d2, "--name", "movies", "--index-root", root, "--activate").exit_code == 0
    alias = pathlib.Path(root, "movies", "ACTIVE")
    alias.unlink()
    if garbage == "directory":
        alias.mkdir()
    else:
        alias.write_bytes(garbage)
    # versions: listed, no active marker, a warning naming the alias
    r = run("versions", "movies", "--index-root", root)
    assert r.exit_code == 0, r.output
    assert v1 in r.stdout and v2 in r.stdout and "alias unreadable" in r.stdout.splitlines()[-1]
    assert not any(line.startswith(("*", "-")) for line in r.stdout.splitlines()[1:])
    assert r.stderr.startswith("warning: ") and str(alias) in r.stderr and "vqrec activate movies" in r.stderr
    data = json.loads(run("versions", "movies", "--index-root", root, "--json").stdout)
    assert data["active"] is None and str(alias) in data["alias_error"] and len(data["versions"]) == 2
    # rollback and prune need the alias: a one-line error, nothing changed
    _fails(run("rollback", "movies", "--index-root", root), str(alias))
    _fails(run("prune", "movies", "--index-root", root, "--keep", "1"), str(alias))
    assert alias.exists() and sorted(os.listdir(os.path.join(root, "movies", "versions"))) == sorted([v1, v2])
    # activate repairs it: a good alias written atomically, the previous version unknown
    r = run("activate", "movies", v1, "--index-root", root)
    assert r.exit_code == 0, r.output
    assert f"active version of movies: {v1} (previous: -)" in r.stdout and str(alias) in r.stderr
    assert json.loads(alias.read_text())["version"] == v1 and IndexStore(root).previous("movies") is None
    assert not [n for n in os.listdir(os.path.join(root, "movies")) if n.startswith(".ACTIVE.tmp")]
    r = run("versions", "movies", "--index-root", root)
    assert r.exit_code == 0 and r.stderr == "" and "alias unreadable" not in r.stdout


@pytest.mark.parametrize("at", POINTS)
def test_publish_activate_killed_then_rerun(run, built, tmp_path, at):
    """`vqrec publish --activate` killed with SIGKILL (mid-copy, or published but not activated), then run
    again: no staging left, the new version active, and the service answers from it."""
    root = str(tmp_path / "root")
    d1, v1 = built(100)
    d2, v2 = built(120)
    assert run("publish", "--index", d1, "--name", "movies", "--index-root", root, "--activate").exit_code == 0
    argv = ["--index", d2, "--name", "movies", "--index-root", root, "--activate", "--keep", "5"]
    assert kill_publish(argv, at) == -9
    store = IndexStore(root)
    vdir = store.versions_dir("movies")
    assert store.active("movies") == v1  # the kill changed nothing served
    if at == "mid-copy":
        assert len(stagings(vdir)) == 1 and not os.path.exists(store.version_dir("movies", v2))
    else:
        assert os.path.isdir(store.version_dir("movies", v2))
    r = run("publish", *argv)
    assert r.exit_code == 0, r.output
    assert ("already published" in r.stdout) == (at == "before-activate")
    assert f"active version of movies: {v2}" in r.stdout
    assert stagings(vdir) == [] and sorted(os.listdir(vdir)) == sorted([v1, v2])
    assert store.active("movies") == v2 and store.previous("movies") == v1
    expected = load_index(d2).similar(["i3"], 5)[0].ids
    with TestClient(create_app(Settings(index_root=root))) as c:
        r = c.post("/v1/indexes/movies/similar", json={"item_id": "i3", "k": 5})
        assert r.status_code == 200, r.text
        assert r.json()["index_version"] == v2
        assert [x["id"] for x in r.json()["results"]] == list(expected)
