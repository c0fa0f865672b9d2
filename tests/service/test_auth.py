"""API keys: 401 without a key or with an unknown one, 403 for a read key on admin routes, 200 otherwise;
open health routes; keys never in Settings repr nor in the logs."""

from __future__ import annotations

import logging

import pytest

from vqrec.service.settings import Settings

READ, ADMIN = "read-key-s3cr3t-0001", "admin-key-s3cr3t-0002"
RECOMMEND = "/v1/indexes/demo/recommend"


@pytest.fixture(scope="module")
def secured(index_root, make_client):
    with make_client(Settings(index_root=index_root, api_keys=[READ], admin_keys=[ADMIN])) as c:
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def query(c, headers=None):
    return c.post(RECOMMEND, json={"user_id": "u0", "k": 3}, headers=headers or {})


def test_query_routes_need_a_read_or_admin_key(secured, assert_error):
    r = query(secured)
    assert_error(r, 401, "unauthorized", ("missing API key", "Authorization: Bearer KEY", "X-API-Key"))
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.headers["x-request-id"]
    r = query(secured, bearer("nope"))
    assert_error(r, 401, "unauthorized", ("invalid API key",))
    assert r.headers["www-authenticate"] == "Bearer"
    assert_error(query(secured, {"Authorization": "Basic abc"}), 401, "unauthorized", ("missing API key",))
    for headers in (bearer(READ), {"X-API-Key": READ}, bearer(ADMIN), {"X-API-Key": ADMIN}):
        r = query(secured, headers)
        assert r.status_code == 200, r.text
        assert len(r.json()["results"]) == 3
    # metadata and semantic-id routes are read routes too
    assert_error(secured.get("/v1/indexes"), 401, "unauthorized")
    assert secured.get("/v1/indexes", headers=bearer(READ)).status_code == 200
    assert_error(secured.get("/v1/indexes/demo/items/0/semantic-id"), 401, "unauthorized")


def test_admin_routes_need_an_admin_key(secured, assert_error, index_root):
    r = secured.get("/v1/admin/indexes")
    assert_error(r, 401, "unauthorized", ("missing API key",))
    assert r.headers["www-authenticate"] == "Bearer"
    assert_error(secured.get("/v1/admin/indexes", headers=bearer("wrong")), 401, "unauthorized", ("invalid",))
    r = secured.get("/v1/admin/indexes", headers=bearer(READ))
    assert_error(r, 403, "forbidden", ("admin key", "read key"))
    assert "www-authenticate" not in r.headers
    assert_error(secured.get("/v1/admin/indexes", headers={"X-API-Key": READ}), 403, "forbidden")
    r = secured.get("/v1/admin/indexes", headers={"X-API-Key": ADMIN})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["loaded"] is True and body["failed"] == []
    assert [i["name"] for i in body["indexes"]] == ["demo", "plain"]
    demo = body["indexes"][0]
    assert demo["path"].endswith("demo") and demo["path"].startswith(index_root)
    assert demo["n_items"] == 600 and demo["index_version"] and demo["loaded_at"]
    assert demo["store_version"] is None  # a plain artifact, not the versioned store layout
    assert secured.get("/v1/admin/indexes", headers=bearer(ADMIN)).status_code == 200


def test_admin_lists_failed_indexes(broken_root, make_client):
    with make_client(Settings(index_root=broken_root, admin_keys=[ADMIN])) as c:
        body = c.get("/v1/admin/indexes", headers=bearer(ADMIN)).json()
    assert [i["name"] for i in body["indexes"]] == ["good"]
    (failed,) = body["failed"]
    assert failed["name"] == "broken" and failed["path"].endswith("broken") and "codes.npy" in failed["message"]


def test_open_routes(secured):
    assert secured.get("/healthz").status_code == 200
    assert secured.get("/readyz").status_code == 200
    assert secured.get("/metrics").status_code == 200  # metrics_public defaults to true
    assert secured.get("/openapi.json").status_code == 200
    assert secured.get("/docs").status_code == 200


def test_private_metrics_need_an_admin_key(index_root, make_client, assert_error):
    with make_client(Settings(index_root=index_root, api_keys=[READ], admin_keys=[ADMIN], metrics_public=False)) as c:
        assert_error(c.get("/metrics"), 401, "unauthorized")
        assert_error(c.get("/metrics", headers=bearer(READ)), 403, "forbidden")
        assert c.get("/metrics", headers=bearer(ADMIN)).status_code == 200


def test_no_keys_means_auth_off(client):
    assert query(client).status_code == 200
    assert client.get("/v1/admin/indexes").status_code == 200


def test_admin_keys_alone_turn_auth_on(index_root, make_client, assert_error):
    with make_client(Settings(index_root=index_root, admin_keys=[ADMIN])) as c:
        assert_error(query(c), 401, "unauthorized")
        assert query(c, bearer(ADMIN)).status_code == 200


def test_keys_from_environment_are_hidden(monkeypatch, tmp_path):
    monkeypatch.setenv("VQREC_INDEX_ROOT", str(tmp_path))
    monkeypatch.setenv("VQREC_API_KEYS", f"{READ}, other-read-key")
    monkeypatch.setenv("VQREC_ADMIN_KEYS", f'["{ADMIN}"]')
    s = Settings()
    assert [k.get_secret_value() for k in s.api_keys] == [READ, "other-read-key"]
    assert [k.get_secret_value() for k in s.admin_keys] == [ADMIN]
    for text in (repr(s), str(s), s.model_dump_json()):
        assert READ not in text and ADMIN not in text
    assert Settings(index_root=str(tmp_path), api_keys=[], admin_keys=[]).auth_enabled is False


def test_a_bad_key_is_refused_without_echoing_it(tmp_path):
    with pytest.raises(ValueError, match="API keys must be") as e:
        Settings(index_root=str(tmp_path), api_keys=[" leading-space-s3cr3t"])
    assert "s3cr3t" not in str(e.value)


def test_keys_never_reach_the_logs(secured, caplog):
    with caplog.at_level(logging.DEBUG):
        query(secured, bearer(READ))
        query(secured, {"X-API-Key": ADMIN})
        query(secured, bearer("wrong-key-s3cr3t-0003"))
        secured.get("/v1/admin/indexes", headers=bearer(READ))
    assert caplog.records  # the access lines were captured
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    for secret in (READ, ADMIN, "wrong-key-s3cr3t-0003", "s3cr3t"):
        assert secret not in text
