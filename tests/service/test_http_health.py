"""/healthz and /readyz, and what a failed index load does to the rest of the service."""

from __future__ import annotations

import logging
import os
import shutil

import pytest

from vqrec.service.settings import Settings


def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_readyz_when_loaded(client, svc_data):
    r = client.get("/readyz")
    assert r.status_code == 200
    indexes = {"demo": svc_data.index.version, "plain": svc_data.plain.version}
    assert r.json() == {"status": "ready", "indexes": indexes, "removed": {}}


def test_readyz_503_before_load(index_root, make_client, assert_error):
    c = make_client(Settings(index_root=index_root))  # no `with`: the lifespan has not run
    assert_error(c.get("/readyz"), 503, "not_ready", ("not loaded yet",))
    assert c.get("/healthz").status_code == 200
    assert_error(c.post("/v1/indexes/demo/recommend", json={"user_id": "u1"}), 503, "index_not_loaded", ("'demo'",))


@pytest.fixture(scope="module")
def broken_client(broken_root, make_client):
    with make_client(Settings(index_root=broken_root)) as c:
        yield c


def test_corrupt_index_is_reported_not_fatal(broken_client, broken_root, assert_error):
    err = assert_error(broken_client.get("/readyz"), 503, "not_ready", ("'broken'", "codes.npy"))
    assert err["details"]["loaded"] == ["good"]
    assert list(err["details"]["failed"]) == ["broken"]
    assert broken_client.get("/healthz").json() == {"status": "ok"}
    for method, path, body in [
        ("POST", "/v1/indexes/broken/recommend", {"user_id": "u1"}),
        ("POST", "/v1/indexes/broken/similar", {"item_id": "1"}),
        ("POST", "/v1/indexes/broken/similar/batch", {"queries": [{"item_id": "1"}]}),
        ("GET", "/v1/indexes/broken", None),
        ("GET", "/v1/indexes/broken/items/1", None),
    ]:
        r = broken_client.request(method, path, **({"json": body} if body is not None else {}))
        assert_error(r, 503, "index_not_loaded", ("'broken'",))


def test_good_index_next_to_corrupt_one_still_serves(broken_client, client):
    body = {"user_id": "u1", "k": 5}
    r = broken_client.post("/v1/indexes/good/recommend", json=body)
    assert r.status_code == 200
    assert r.json()["results"] == client.post("/v1/indexes/demo/recommend", json=body).json()["results"]
    listing = broken_client.get("/v1/indexes").json()
    assert [x["name"] for x in listing["indexes"]] == ["good"]
    assert listing["unavailable"][0]["name"] == "broken"
    assert "codes.npy" in listing["unavailable"][0]["message"]


def test_load_failure_logged_with_path(broken_root, make_client, caplog):
    with caplog.at_level(logging.INFO), make_client(Settings(index_root=broken_root)):
        pass
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("'broken'" in m and os.path.join(broken_root, "broken") in m for m in errors), errors
    loads = [
        r.getMessage() for r in caplog.records if r.name == "vqrec.index.artifact" and "loaded index" in r.getMessage()
    ]
    assert len(loads) == 1 and os.path.join(broken_root, "good") in loads[0]  # one line per loaded index


def test_checksum_verification_can_be_disabled(tmp_path, index_root, make_client):
    shutil.copytree(os.path.join(index_root, "demo"), tmp_path / "demo")
    norms = tmp_path / "demo" / "item_norms.npy"
    data = bytearray(norms.read_bytes())
    data[-1] ^= 0x01  # same size, different sha256
    norms.write_bytes(bytes(data))
    with make_client(Settings(index_root=str(tmp_path))) as c:
        assert c.get("/readyz").status_code == 503
    with make_client(Settings(index_root=str(tmp_path), verify_checksums=False)) as c:
        assert c.get("/readyz").status_code == 200


def test_empty_root_is_ready_with_no_index(tmp_path, make_client, assert_error):
    """A first deployment: nothing published yet is not a failure (tests/service/test_runtime_names.py)."""
    with make_client(Settings(index_root=str(tmp_path))) as c:
        assert c.get("/readyz").json() == {"status": "ready", "indexes": {}, "removed": {}}
        assert_error(c.post("/v1/indexes/demo/similar", json={"item_id": "1"}), 404, "unknown_index", ("'demo'",))


def test_missing_root_is_not_ready(tmp_path, make_client, assert_error):
    with make_client(Settings(index_root=str(tmp_path / "nope"))) as c:
        assert_error(c.get("/readyz"), 503, "not_ready", ("not a directory",))
        assert c.get("/healthz").status_code == 200


def test_root_pointing_at_one_artifact(index_root, make_client, svc_data):
    with make_client(Settings(index_root=os.path.join(index_root, "demo"))) as c:
        assert c.get("/readyz").json()["indexes"] == {"demo": svc_data.index.version}
        assert c.post("/v1/indexes/demo/similar", json={"item_id": "3", "k": 2}).status_code == 200


def test_only_named_indexes_are_loaded(index_root, make_client, assert_error):
    with make_client(Settings(index_root=index_root, indexes=["plain"])) as c:
        assert list(c.get("/readyz").json()["indexes"]) == ["plain"]
        assert_error(c.get("/v1/indexes/demo"), 404, "unknown_index", ("'demo'", "plain"))
    with make_client(Settings(index_root=index_root, indexes=["demo", "missing"])) as c:
        assert_error(c.get("/readyz"), 503, "not_ready", ("'missing'",))
        assert_error(c.get("/v1/indexes/missing"), 503, "index_not_loaded", ("'missing'",))
        assert c.get("/v1/indexes/demo").status_code == 200


def test_hidden_directories_are_skipped(index_root, tmp_path, make_client):
    shutil.copytree(os.path.join(index_root, "demo"), tmp_path / "demo")
    shutil.copytree(os.path.join(index_root, "demo"), tmp_path / ".demo.tmp-abc")  # a save in progress
    with make_client(Settings(index_root=str(tmp_path))) as c:
        assert list(c.get("/readyz").json()["indexes"]) == ["demo"]


def test_served_index_survives_its_files_changing_on_disk(tmp_path, index_root, make_client) -> None:
    """Codes are read into memory at load: truncating the artifact afterwards changes nothing served."""
    root = tmp_path / "root"
    shutil.copytree(os.path.join(index_root, "demo"), root / "demo")
    with make_client(Settings(index_root=str(root))) as c:
        before = c.post("/v1/indexes/demo/similar", json={"item_id": "40", "k": 10}).json()
        codes = root / "demo" / "codes.npy"
        codes.write_bytes(codes.read_bytes()[:200])  # truncated in place
        after = c.post("/v1/indexes/demo/similar", json={"item_id": "40", "k": 10}).json()
        assert len(before["results"]) == 10
        assert after["results"] == before["results"] and after["index_version"] == before["index_version"]
