"""GET /metrics (per-app registry): request counts and latency per route template, index info, build
recall, items served, reload counters; X-Request-ID on every response; the JSON access log line."""

from __future__ import annotations

import json
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from vqrec.index import save_index
from vqrec.service.main import create_app
from vqrec.service.metrics import record_reload
from vqrec.service.settings import Settings

EVALUATION = {
    "nq": 20,
    "user_to_item": {"recall@10": 0.91, "recall@100": 0.97},
    "user_to_item_rerank": {"candidates": 100, "recall@10": 1.0},
    "item_to_item": {"metric": "cosine", "recall@10": 0.83},
}


@pytest.fixture(scope="module")
def eval_root(svc_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics") / "root"
    save_index(svc_data.index, str(root / "demo"), evaluation=EVALUATION)
    save_index(svc_data.plain, str(root / "plain"))
    return str(root)


@pytest.fixture
def fresh(eval_root, make_client):
    with make_client(Settings(index_root=eval_root)) as c:
        yield c


def scrape(c) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples, name, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_metrics_read_back_after_requests(fresh, svc_data):
    for _ in range(3):
        assert fresh.post("/v1/indexes/demo/recommend", json={"user_id": "u0", "k": 4}).status_code == 200
    assert fresh.post("/v1/indexes/plain/similar", json={"item_id": "1", "k": 2}).status_code == 200
    batch = {"queries": [{"user_id": "u1", "k": 3}, {"user_id": "u2", "k": 5}]}
    assert fresh.post("/v1/indexes/demo/recommend/batch", json=batch).status_code == 200
    assert fresh.post("/v1/indexes/demo/recommend", json={"user_id": "nobody"}).status_code == 404
    assert fresh.get("/nowhere/at/all").status_code == 404
    m = scrape(fresh)

    rec = "/v1/indexes/{name}/recommend"
    assert value(m, "vqrec_requests_total", route=rec, method="POST", status="200") == 3
    assert value(m, "vqrec_requests_total", route=rec, method="POST", status="404") == 1
    assert value(m, "vqrec_requests_total", route="/v1/indexes/{name}/similar", method="POST", status="200") == 1
    assert value(m, "vqrec_requests_total", route="unmatched", method="GET", status="404") == 1
    assert not any("nowhere" in str(k) or "/v1/indexes/demo" in str(k) for k in m)  # templates, never raw paths
    assert value(m, "vqrec_request_seconds_count", route=rec, method="POST") == 4
    assert value(m, "vqrec_request_seconds_bucket", route=rec, method="POST", le="+Inf") == 4
    assert value(m, "vqrec_request_seconds_sum", route=rec, method="POST") > 0

    assert value(m, "vqrec_items_served_total", index="demo") == 3 * 4 + 3 + 5
    assert value(m, "vqrec_items_served_total", index="plain") == 2

    assert value(m, "vqrec_index_info", index="demo", version=svc_data.index.version) == 1
    assert value(m, "vqrec_index_info", index="plain", version=svc_data.plain.version) == 1
    assert value(m, "vqrec_index_items", index="demo") == 600
    assert value(m, "vqrec_index_up", index="plain") == 1
    assert value(m, "vqrec_index_build_recall", index="demo", kind="user_to_item") == 0.91
    assert value(m, "vqrec_index_build_recall", index="demo", kind="user_to_item_rerank") == 1.0
    assert value(m, "vqrec_index_build_recall", index="demo", kind="item_to_item") == 0.83
    assert value(m, "vqrec_index_build_recall", index="plain", kind="user_to_item") is None  # not evaluated

    for name in ("demo", "plain"):
        assert value(m, "vqrec_reloads_total", index=name, outcome="success") == 0
        assert value(m, "vqrec_reloads_total", index=name, outcome="failure") == 0
        assert value(m, "vqrec_reload_failures_total", index=name) == 0
    # the previous scrape is itself counted by the next one
    assert value(scrape(fresh), "vqrec_requests_total", route="/metrics", method="GET", status="200") == 1


def test_record_reload(fresh):
    app = fresh.app
    record_reload(app, "demo", ok=True)
    record_reload(app, "demo", ok=False)
    record_reload(app, "demo", ok=False)
    m = scrape(fresh)
    assert value(m, "vqrec_reloads_total", index="demo", outcome="success") == 1
    assert value(m, "vqrec_reloads_total", index="demo", outcome="failure") == 2
    assert value(m, "vqrec_reload_failures_total", index="demo") == 2


def test_failed_index_is_down(broken_root, make_client):
    with make_client(Settings(index_root=broken_root)) as c:
        m = scrape(c)
    assert value(m, "vqrec_index_up", index="broken") == 0
    assert value(m, "vqrec_index_up", index="good") == 1
    assert not any(k[0] == "vqrec_index_info" and ("index", "broken") in k[1] for k in m)


def test_apps_do_not_share_series(eval_root):
    a, b = create_app(Settings(index_root=eval_root)), create_app(Settings(index_root=eval_root))
    assert a.state.metrics.registry is not b.state.metrics.registry
    record_reload(a, "demo", ok=True)
    assert b.state.metrics.reloads.labels(index="demo", outcome="success")._value.get() == 0


def test_request_id_header_on_every_response(client):
    ok = client.get("/healthz")
    rid = ok.headers["x-request-id"]
    assert len(rid) == 32 and int(rid, 16) >= 0  # uuid4 hex
    assert client.get("/healthz").headers["x-request-id"] != rid
    for r in (
        client.get("/healthz", headers={"X-Request-ID": "abc-123.x:y_z"}),
        client.post(
            "/v1/indexes/demo/recommend", json={"user_id": "nobody"}, headers={"X-Request-ID": "abc-123.x:y_z"}
        ),
        client.post("/v1/indexes/demo/recommend", content=b"{", headers={"X-Request-ID": "abc-123.x:y_z"}),
        client.get("/nowhere", headers={"X-Request-ID": "abc-123.x:y_z"}),
    ):
        assert r.headers.get_list("x-request-id") == ["abc-123.x:y_z"], r.headers
    for bad in ("a" * 129, "has space", "semi;colon", "new\tline"):
        rid = client.get("/healthz", headers={"X-Request-ID": bad}).headers["x-request-id"]
        assert rid != bad and len(rid) == 32
    assert client.get("/healthz", headers={"X-Request-ID": "a" * 128}).headers["x-request-id"] == "a" * 128


def test_500_uses_the_same_request_id(client, monkeypatch, caplog):
    from vqrec.index import CompressedIndex

    def boom(self, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(CompressedIndex, "similar", boom)
    with caplog.at_level(logging.INFO):
        r = client.post("/v1/indexes/demo/similar", json={"item_id": "1"}, headers={"X-Request-ID": "rid-500"})
    assert r.status_code == 500 and r.headers.get_list("x-request-id") == ["rid-500"]
    assert "rid-500" in r.json()["error"]["message"]
    access = [json.loads(rec.getMessage()) for rec in caplog.records if rec.name == "vqrec.access"]
    assert access == [
        {
            "request_id": "rid-500",
            "method": "POST",
            "route": "/v1/indexes/{name}/similar",
            "status": 500,
            "duration_ms": access[0]["duration_ms"],
            "index": "demo",
        }
    ]
    errors = [rec for rec in caplog.records if rec.name == "vqrec.service.errors"]
    assert errors and "rid-500" in errors[0].getMessage() and errors[0].request_id == "rid-500"


def test_access_log_line(client, caplog):
    with caplog.at_level(logging.INFO, logger="vqrec.access"):
        client.post("/v1/indexes/demo/recommend", json={"user_id": "u0", "k": 2}, headers={"X-Request-ID": "r-1"})
        client.get("/healthz", headers={"X-Request-ID": "r-2"})
    lines = [json.loads(rec.getMessage()) for rec in caplog.records if rec.name == "vqrec.access"]
    assert [(x["request_id"], x["method"], x["route"], x["status"], x["index"]) for x in lines] == [
        ("r-1", "POST", "/v1/indexes/{name}/recommend", 200, "demo"),
        ("r-2", "GET", "/healthz", 200, None),
    ]
    assert all(isinstance(x["duration_ms"], float) and x["duration_ms"] >= 0 for x in lines)
    assert [rec.request_id for rec in caplog.records if rec.name == "vqrec.access"] == ["r-1", "r-2"]


def _series(c) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return set(scrape(c))


def test_request_labels_are_bounded(fresh):
    """Methods, paths and statuses a client chooses never become label values of their own: any method
    outside GET HEAD POST PUT DELETE PATCH OPTIONS is "other", any path no route matches is "unmatched", a
    status is one the service answers with. Two rounds of 200 requests with fresh random methods and
    paths: the second adds no series at all."""
    import random

    rnd = random.Random(7)
    known = ["/healthz", "/v1/indexes/demo/recommend", "/v1/indexes", "/metrics"]

    def traffic(round_no: int) -> None:
        methods = [f"X{round_no}{rnd.randrange(10**6)}" for _ in range(35)] + ["PROPFIND", "MKCOL", "TRACE"]
        for i in range(200):
            path = known[i % 4] if i % 3 == 0 else f"/{rnd.randrange(10**9)}/{round_no}/x{rnd.randrange(10**6)}"
            fresh.request(rnd.choice(methods), path)
            if i % 10 == 0:  # unknown names under a template stay that template
                fresh.get(f"/v1/indexes/nope{rnd.randrange(10**6)}")

    base = _series(fresh)
    traffic(1)
    after_one = _series(fresh)
    traffic(2)
    after_two = _series(fresh)
    added = sorted(after_one - base)
    # a few (route, method, status) sets, a histogram each: 160 here (the methods as sent made 1,860)
    assert len(added) <= 250, (len(base), len(after_one), added[:5])
    assert after_two - after_one == set(), sorted(after_two - after_one)[:5]
    methods = {dict(labels).get("method") for name, labels in after_two if name.startswith("vqrec_request")}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"}, methods
    routes = {dict(labels).get("route") for name, labels in after_two if name.startswith("vqrec_request")}
    reachable = {"/healthz", "/metrics", "/v1/indexes", "/v1/indexes/{name}", "/v1/indexes/{name}/recommend"}
    assert routes <= reachable | {"unmatched"}, routes
