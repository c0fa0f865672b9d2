"""Every error: status code, the one body shape {"error": {"code", "message"}}, and a message that
names what was wrong. No request, however bad, changes a file of the index on disk."""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import pytest

from vqrec.service.settings import Settings

URL = "/v1/indexes/demo"
VEC16 = [0.5] * 16


class Case(NamedTuple):
    method: str
    path: str
    body: Any  # dict -> json=..., str -> raw JSON text, None -> no body
    status: int
    code: str
    words: tuple[str, ...]  # each must appear in the message


def raw_vector(first: str) -> str:
    return '{"vector": [' + ", ".join([first] + ["1.0"] * 15) + '], "k": 3}'


CASES = {
    # 404
    "unknown index (query)": Case(
        "POST", "/v1/indexes/nope/recommend", {"user_id": "u1"}, 404, "unknown_index", ("'nope'", "demo")
    ),
    "unknown index (info)": Case("GET", "/v1/indexes/nope", None, 404, "unknown_index", ("'nope'",)),
    "unknown index (item)": Case("GET", "/v1/indexes/nope/items/1", None, 404, "unknown_index", ("'nope'",)),
    "unknown user": Case("POST", f"{URL}/recommend", {"user_id": "nobody"}, 404, "unknown_user", ("'nobody'",)),
    "unknown user in batch": Case(
        "POST",
        f"{URL}/recommend/batch",
        {"queries": [{"user_id": "u1"}, {"user_id": "ghost"}]},
        404,
        "unknown_user",
        ("'ghost'",),
    ),
    "unknown item": Case("POST", f"{URL}/similar", {"item_id": "i-404"}, 404, "unknown_item", ("'i-404'",)),
    "unknown integer item": Case("POST", f"{URL}/similar", {"item_id": 100000}, 404, "unknown_item", ("'100000'",)),
    "unknown item (info)": Case("GET", f"{URL}/items/zzz", None, 404, "unknown_item", ("'zzz'",)),
    "index without users": Case(
        "POST", "/v1/indexes/plain/recommend", {"user_id": "u1"}, 404, "unknown_user", ("'u1'",)
    ),
    "no such route": Case("GET", "/v2/whatever", None, 404, "not_found", ("/v2/whatever",)),
    "wrong method": Case("DELETE", URL, None, 405, "method_not_allowed", ()),
    # 422: vectors
    "dimension 15": Case(
        "POST", f"{URL}/recommend", {"vector": [1.0] * 15}, 422, "dimension_mismatch", ("(15)", "(16)")
    ),
    "dimension 17 similar": Case(
        "POST", f"{URL}/similar", {"vector": [1.0] * 17}, 422, "dimension_mismatch", ("(17)", "(16)")
    ),
    "empty vector": Case("POST", f"{URL}/recommend", {"vector": []}, 422, "dimension_mismatch", ("(0)", "(16)")),
    "dimension in batch": Case(
        "POST",
        f"{URL}/similar/batch",
        {"queries": [{"vector": VEC16}, {"vector": [1.0] * 3}]},
        422,
        "dimension_mismatch",
        ("queries[1]", "(3)", "(16)"),
    ),
    "NaN": Case("POST", f"{URL}/recommend", raw_vector("NaN"), 422, "non_finite", ("vector[0]", "finite")),
    "Infinity": Case("POST", f"{URL}/similar", raw_vector("Infinity"), 422, "non_finite", ("vector[0]",)),
    "-Infinity": Case("POST", f"{URL}/recommend", raw_vector("-Infinity"), 422, "non_finite", ("vector[0]",)),
    "1e400 overflows": Case("POST", f"{URL}/recommend", raw_vector("1e400"), 422, "non_finite", ("vector[0]",)),
    "overflows float32": Case(
        "POST", f"{URL}/recommend", raw_vector("1e39"), 422, "non_finite", ("vector[0]", "float32")
    ),
    "norm overflows float32": Case(
        "POST", f"{URL}/similar", {"vector": [1e20] * 16}, 422, "non_finite", ("norm", "float32")
    ),
    "norm overflow in batch": Case(
        "POST",
        f"{URL}/recommend/batch",
        {"queries": [{"vector": [1e38] * 16}]},
        422,
        "non_finite",
        ("queries[0]", "float32"),
    ),
    "NaN in batch": Case(
        "POST",
        f"{URL}/recommend/batch",
        '{"queries": [{"user_id": "u1"}, ' + raw_vector("NaN") + "]}",
        422,
        "non_finite",
        ("queries[1].vector[0]",),
    ),
    "zero vector, cosine": Case("POST", f"{URL}/similar", {"vector": [0.0] * 16}, 422, "invalid_input", ("zero norm",)),
    # 422: k
    "k=0": Case("POST", f"{URL}/recommend", {"user_id": "u1", "k": 0}, 422, "invalid_k", ("k", "1", "1000", "0")),
    "k=1001": Case("POST", f"{URL}/similar", {"item_id": "1", "k": 1001}, 422, "invalid_k", ("1000", "1001")),
    "k=-3": Case("POST", f"{URL}/recommend", {"vector": VEC16, "k": -3}, 422, "invalid_k", ("-3",)),
    "k in batch": Case(
        "POST",
        f"{URL}/recommend/batch",
        {"queries": [{"user_id": "u1"}, {"user_id": "u2", "k": 0}]},
        422,
        "invalid_k",
        ("queries[1].k",),
    ),
    "k string": Case("POST", f"{URL}/recommend", {"user_id": "u1", "k": "ten"}, 422, "validation_error", ("k",)),
    "k float": Case("POST", f"{URL}/recommend", {"user_id": "u1", "k": 2.5}, 422, "validation_error", ("k",)),
    # 422: which query
    "both id and vector": Case(
        "POST",
        f"{URL}/recommend",
        {"user_id": "u1", "vector": VEC16},
        422,
        "invalid_query",
        ("user_id", "vector", "both"),
    ),
    "neither id nor vector": Case("POST", f"{URL}/recommend", {"k": 3}, 422, "invalid_query", ("neither",)),
    "similar both": Case(
        "POST", f"{URL}/similar", {"item_id": "1", "vector": VEC16}, 422, "invalid_query", ("item_id", "both")
    ),
    "similar neither": Case("POST", f"{URL}/similar", {}, 422, "invalid_query", ("item_id", "neither")),
    "batch neither": Case(
        "POST",
        f"{URL}/similar/batch",
        {"queries": [{"item_id": 1}, {"k": 2}]},
        422,
        "invalid_query",
        ("queries[1]", "neither"),
    ),
    "item_id on recommend": Case("POST", f"{URL}/recommend", {"item_id": "1"}, 422, "validation_error", ("item_id",)),
    # 422: rerank
    "rerank without item vectors": Case(
        "POST",
        "/v1/indexes/plain/similar",
        {"item_id": "1", "rerank": 50},
        422,
        "invalid_input",
        ("rerank", "item vectors"),
    ),
    "rerank negative": Case(
        "POST", f"{URL}/recommend", {"user_id": "u1", "rerank": -1}, 422, "validation_error", ("rerank",)
    ),
    # 422: body
    "malformed JSON": Case("POST", f"{URL}/recommend", '{"user_id": "u1",', 422, "malformed_json", ("JSON",)),
    "not JSON at all": Case("POST", f"{URL}/similar", "item_id=1", 422, "malformed_json", ("JSON",)),
    "JSON array body": Case("POST", f"{URL}/recommend", "[1, 2]", 422, "validation_error", ("JSON object",)),
    "empty body": Case("POST", f"{URL}/recommend", None, 422, "validation_error", ("body",)),
    "vector of strings": Case(
        "POST", f"{URL}/recommend", {"vector": ["a"] * 16}, 422, "validation_error", ("vector[0]",)
    ),
    "vector numeric strings": Case(
        "POST", f"{URL}/recommend", {"vector": ["1.5"] * 16}, 422, "validation_error", ("vector[0]",)
    ),
    "id as list": Case("POST", f"{URL}/recommend", {"user_id": ["u1"]}, 422, "validation_error", ("user_id",)),
    "id as bool": Case("POST", f"{URL}/similar", {"item_id": True}, 422, "validation_error", ("item_id",)),
    "exclude not a list": Case(
        "POST",
        f"{URL}/recommend",
        {"user_id": "u1", "exclude_item_ids": "1"},
        422,
        "validation_error",
        ("exclude_item_ids",),
    ),
    "queries not a list": Case(
        "POST", f"{URL}/recommend/batch", {"queries": {"user_id": "u1"}}, 422, "validation_error", ("queries",)
    ),
    # 413
    "batch over max_batch": Case(
        "POST", f"{URL}/recommend/batch", {"queries": [{"user_id": "u1"}] * 257}, 413, "batch_too_large", ("257", "256")
    ),
    "exclude over max_exclude": Case(
        "POST",
        f"{URL}/similar",
        {"item_id": "1", "exclude_item_ids": list(range(10001))},
        413,
        "exclude_too_large",
        ("10001", "10000"),
    ),
}


def send(client, case: Case):
    if isinstance(case.body, dict):
        return client.request(case.method, case.path, json=case.body)
    if isinstance(case.body, str):
        return client.request(case.method, case.path, content=case.body, headers={"content-type": "application/json"})
    return client.request(case.method, case.path)


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_error(client, case, assert_error, assert_disk_unchanged):
    r = send(client, case)
    assert_error(r, case.status, case.code, case.words)
    assert_disk_unchanged()
    # the service still answers normally afterwards
    assert client.post(f"{URL}/recommend", json={"user_id": "u1", "k": 2}).status_code == 200


def test_error_code_table_is_complete():
    codes = {c.code for c in CASES.values()}
    assert {
        "unknown_index",
        "unknown_user",
        "unknown_item",
        "dimension_mismatch",
        "non_finite",
        "invalid_k",
        "invalid_query",
        "malformed_json",
        "validation_error",
        "invalid_input",
        "batch_too_large",
        "exclude_too_large",
    } <= codes


@pytest.fixture
def limited(index_root, make_client):
    with make_client(Settings(index_root=index_root, max_k=50, default_k=5, max_batch=3, max_exclude=2)) as c:
        yield c


def test_limits_come_from_settings(limited, assert_error):
    assert len(limited.post(f"{URL}/recommend", json={"user_id": "u1"}).json()["results"]) == 5
    assert_error(
        limited.post(f"{URL}/recommend", json={"user_id": "u1", "k": 51}), 422, "invalid_k", ("between 1 and 50", "51")
    )
    assert limited.post(f"{URL}/recommend", json={"user_id": "u1", "k": 50}).status_code == 200
    assert_error(
        limited.post(f"{URL}/recommend/batch", json={"queries": [{"user_id": "u1"}] * 4}),
        413,
        "batch_too_large",
        ("4", "3"),
    )
    assert limited.post(f"{URL}/recommend/batch", json={"queries": [{"user_id": "u1"}] * 3}).status_code == 200
    assert_error(
        limited.post(f"{URL}/similar", json={"item_id": "1", "exclude_item_ids": ["2", "3", "4"]}),
        413,
        "exclude_too_large",
        ("3", "2"),
    )
    assert_error(
        limited.post(
            f"{URL}/similar/batch",
            json={"queries": [{"item_id": "1"}, {"item_id": "1", "exclude_item_ids": [2, 3, 4]}]},
        ),
        413,
        "exclude_too_large",
        ("queries[1]",),
    )


def test_unexpected_exception_is_500_with_request_id(client, monkeypatch, caplog, assert_error):
    from vqrec.index import CompressedIndex

    def boom(self, *args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(CompressedIndex, "similar", boom)
    with caplog.at_level(logging.ERROR, logger="vqrec.service.errors"):
        r = client.post(f"{URL}/similar", json={"item_id": "1"})
    err = assert_error(r, 500, "internal", ("internal error, request id",))
    rid = r.headers["x-request-id"]
    assert rid in err["message"]
    assert "secret" not in r.text
    logged = [rec for rec in caplog.records if rid in rec.getMessage()]
    assert logged and logged[0].exc_info is not None  # the traceback is logged, not sent

    r = client.post(f"{URL}/similar", json={"item_id": "1"}, headers={"X-Request-ID": "req-123"})
    assert_error(r, 500, "internal", ("req-123",))


def test_echoed_input_is_truncated(client, assert_error):
    """A 1 MB id (or a 60 kB index name or path, a 1 MB version) comes back as its first 100 characters and
    its length, not as a 1 MB error body; the same message reaches the CLI (it is built in index/errors.py)."""
    from vqrec.index.errors import UnknownUserError

    huge = "A" * 1_000_000
    long_path = "A" * 60_000  # a URL (the client refuses more than 64 KiB)
    spaced = "a b " * 250_000  # no long run without a space: the whole message is bounded too
    cases = [
        (client.post(f"{URL}/recommend", json={"user_id": huge}), 404, "unknown_user"),
        (client.post(f"{URL}/similar", json={"item_id": huge, "k": 2}), 404, "unknown_item"),
        (
            client.post(f"{URL}/recommend/batch", json={"queries": [{"user_id": "u1"}, {"user_id": huge}]}),
            404,
            "unknown_user",
        ),
        (client.get(f"{URL}/items/{long_path}"), 404, "unknown_item"),
        (client.get(f"/v1/indexes/{long_path}"), 404, "unknown_index"),
        (client.get(f"/{long_path}"), 404, "not_found"),
        (client.post("/v1/admin/indexes/demo/reload", json={"version": huge}), 422, "reload_failed"),
        (client.post("/v1/admin/indexes/demo/reload", json={"version": spaced}), 422, "reload_failed"),
        (client.post(f"{URL}/recommend", json={"user_id": spaced}), 404, "unknown_user"),
    ]
    sizes = [len(r.content) for r, _, _ in cases]
    for r, status, code in cases:
        err = assert_error(r, status, code)
        assert len(r.content) < 3000, (code, sizes)  # at most a 2000-character message and short details
        if code in ("unknown_user", "unknown_item"):
            assert "(1000000 chars)" in err["message"] or "(60000 chars)" in err["message"], err["message"]
            assert "A" * 100 in err["message"] or "a b " * 25 in err["message"], err["message"]
    assert sizes[0] < 300, sizes  # was 1,000,065 bytes
    assert client.post(f"{URL}/recommend", json={"user_id": "u1", "k": 2}).status_code == 200
    msg = str(UnknownUserError(huge))
    assert msg == f"Unknown user id {'A' * 100!r}…(1000000 chars).", msg[:300]
    assert str(UnknownUserError("u-42")) == "Unknown user id 'u-42'."
