"""Semantic-id routes: GET .../items|users/{id}/semantic-id, POST .../semantic-ids/lookup and
POST .../semantic-ids/prefix, checked against a brute-force oracle computed from the codes with numpy,
and every error (status, code and message).

The indexes are built without torch: a numpy Tokenizer with random MLP weights and codebooks drawn from
the latents (3 levels of 4, 3 and 5 codes), so 600 items share ~45 code tuples and dedup suffixes run
high. Root (module scope):

    sem         items and users tokenized; item ids with "/", spaces, "%", "?", non-ASCII
    sem2        the same ids, another tokenizer (another version of the semantic ids)
    items_only  items tokenized, users kept but not tokenized
    plain       no semantic ids
    v1          tests/fixtures/index_v1, a format-1 artifact
    broken      sem with a semantic-id file truncated (fails to load: 503)
"""

from __future__ import annotations

import base64
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import numpy as np
import pytest
from test_http_errors import Case, send  # the error-case table's shape and sender (same directory)

from vqrec.index import Embeddings, build_index, save_index
from vqrec.index.build import attach_semantic_ids
from vqrec.index.semantic import Tokenizer, residual_quantize
from vqrec.index.semantic.tokenizer import _mlp
from vqrec.service.settings import Settings

V1_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "index_v1"
SIZES = (4, 3, 5)
L = len(SIZES)
URL = "/v1/indexes/sem"
SPECIAL_IDS = {3: "a/b c", 10: "100%", 20: "x?y#z", 30: "ü-é", 40: "with/../dots", 42: "42"}


def make_tokenizer(seed: int, x: np.ndarray) -> Tokenizer:
    """Random MLP weights; each level's codewords are latents (then residuals) of random rows, so every
    code is used and tuples collide."""
    rng = np.random.default_rng(seed)

    def f(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    d = x.shape[1]
    enc = [(f(32, d) / 4, f(32) * 0.1), (f(8, 32) / 5, f(8) * 0.1)]
    dec = [(f(32, 8) / 3, f(32) * 0.1), (f(d, 32) / 6, f(d) * 0.1)]
    r = _mlp(Tokenizer(encoder=enc, codebooks=[f(1, 8)], decoder=dec).prepare(x), enc)
    codebooks = []
    for k in SIZES:
        c = r[rng.choice(len(r), k, replace=False)].copy()
        codebooks.append(c)
        r = r - c[residual_quantize(r, [c])[:, 0]]
    return Tokenizer(encoder=enc, codebooks=codebooks, decoder=dec)


class Oracle:
    """Brute force over one entity kind's codes: suffixes by counting earlier rows, prefixes by comparing."""

    def __init__(self, ids: list[str], codes: np.ndarray) -> None:
        self.ids = ids
        self.codes = np.asarray(codes, dtype=np.int64)
        n = len(ids)
        self.suffix = np.array([int(np.all(self.codes[:i] == self.codes[i], axis=1).sum()) for i in range(n)])
        self.key = [(*map(int, self.codes[i]), int(self.suffix[i])) for i in range(n)]
        self.order = sorted(range(n), key=lambda i: self.key[i])
        self.row = {s: i for i, s in enumerate(ids)}

    def sid(self, i: int) -> str:
        return "-".join(map(str, self.key[i]))

    def entry(self, i: int) -> dict[str, Any]:
        return {"id": self.ids[i], "codes": list(self.key[i][:L]), "suffix": self.key[i][L], "semantic_id": self.sid(i)}

    def under(self, prefix: list[int]) -> list[int]:
        """Rows whose codes start with ``prefix``, in semantic-id order."""
        t = len(prefix)
        return [i for i in self.order if list(self.key[i][:t]) == prefix]

    def next_tokens(self, prefix: list[int]) -> list[dict[str, int]]:
        counts = Counter(self.key[i][len(prefix)] for i in self.under(prefix))
        return [{"token": t, "count": c} for t, c in sorted(counts.items())]


class Built(NamedTuple):
    root: str
    items: Oracle
    users: Oracle
    items2: Oracle  # the "sem2" index


def all_prefixes() -> list[list[int]]:
    out: list[list[int]] = [[]]
    frontier: list[list[int]] = [[]]
    for k in SIZES:
        frontier = [p + [c] for p in frontier for c in range(k)]
        out += frontier
    return out


@pytest.fixture(scope="module")
def built(svc_data, tmp_path_factory) -> Built:
    item_ids = [SPECIAL_IDS.get(i, f"i{i}") for i in range(len(svc_data.item_ids))]
    items = Embeddings(ids=item_ids, vectors=svc_data.items, source="items")
    users = Embeddings(ids=svc_data.user_ids, vectors=svc_data.users, source="users")
    cb = svc_data.index.codebooks
    root = tmp_path_factory.mktemp("semantic") / "root"
    tok, tok2 = make_tokenizer(1, svc_data.items), make_tokenizer(2, svc_data.items)

    def build(name: str, tokenizer: Tokenizer | None, *, tokenize_users: bool) -> None:
        index = build_index(cb, items, users=users, show_progress=False)
        if tokenizer is not None:
            attach_semantic_ids(index, tokenizer, items, users=users if tokenize_users else None)
        save_index(index, str(root / name))

    build("sem", tok, tokenize_users=True)
    build("sem2", tok2, tokenize_users=True)
    build("items_only", tok, tokenize_users=False)
    build("plain", None, tokenize_users=False)
    shutil.copytree(V1_FIXTURE, root / "v1")
    shutil.copytree(root / "sem", root / "broken")
    suffix_file = root / "broken" / "item_semantic_suffix.npy"
    suffix_file.write_bytes(suffix_file.read_bytes()[:-8])
    return Built(
        str(root),
        Oracle(item_ids, tok.encode(svc_data.items)),
        Oracle(svc_data.user_ids, tok.encode(svc_data.users)),
        Oracle(item_ids, tok2.encode(svc_data.items)),
    )


@pytest.fixture(scope="module")
def sc(built, make_client):
    with make_client(Settings(index_root=built.root)) as c:
        yield c


def prefix_page(sc, prefix: Any, **kw: Any) -> Any:
    return sc.post(f"{URL}/semantic-ids/prefix", json={"prefix": prefix, **kw})


def forge(cursor: str, **changes: Any) -> str:
    data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    data.update(changes)
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


# ---- success -----------------------------------------------------------------------------------
def test_fixture_has_collisions_and_dead_ends(built):
    o = built.items
    assert o.suffix.max() >= 5  # dedup suffixes in use
    used = {o.key[i][:L] for i in range(len(o.ids))}
    assert 10 < len(used) < int(np.prod(SIZES))  # some full-length prefixes are dead ends
    assert all(len(set(o.codes[:, lvl])) == k for lvl, k in enumerate(SIZES))


@pytest.mark.parametrize("row", [0, 1, 3, 10, 20, 30, 40, 42, 299, 599])
def test_item_semantic_id(sc, built, row):
    o = built.items
    r = sc.get(f"{URL}/items/{quote(o.ids[row], safe='')}/semantic-id")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body == {
        "index": "sem",
        "index_version": body["index_version"],
        "entity": "item",
        "id": o.ids[row],
        "codes": list(o.key[row][:L]),
        "suffix": o.key[row][L],
        "semantic_id": o.sid(row),
    }
    assert body["index_version"] == sc.get("/v1/indexes/sem").json()["index_version"]


def test_every_user_semantic_id(sc, built):
    o = built.users
    for row, uid in enumerate(o.ids):
        r = sc.get(f"{URL}/users/{uid}/semantic-id")
        assert r.status_code == 200, r.text
        assert r.json()["entity"] == "user"
        assert {k: r.json()[k] for k in ("id", "codes", "suffix", "semantic_id")} == o.entry(row)


def test_lookup_every_item_both_ways(sc, built):
    o = built.items
    for start in range(0, len(o.ids), 256):
        rows = list(range(start, min(start + 256, len(o.ids))))
        r = sc.post(f"{URL}/semantic-ids/lookup", json={"item_ids": [o.ids[i] for i in rows]})
        assert r.status_code == 200, r.text
        assert r.json()["results"] == [o.entry(i) for i in rows] and r.json()["unknown"] == []
        r = sc.post(f"{URL}/semantic-ids/lookup", json={"semantic_ids": [o.sid(i) for i in rows]})
        assert r.status_code == 200, r.text
        assert r.json()["entity"] == "item"
        assert r.json()["results"] == [o.entry(i) for i in rows]


def test_lookup_users_both_ways(sc, built):
    o = built.users
    r = sc.post(f"{URL}/semantic-ids/lookup", json={"user_ids": o.ids[::-1]})
    assert r.json()["entity"] == "user"
    assert r.json()["results"] == [o.entry(i) for i in range(len(o.ids))][::-1]
    sids = [o.sid(i) for i in range(len(o.ids))]
    r = sc.post(f"{URL}/semantic-ids/lookup", json={"semantic_ids": sids, "entity": "user"})
    assert r.json()["results"] == [o.entry(i) for i in range(len(o.ids))]


def test_lookup_allow_unknown(sc, built):
    o = built.items
    free = next(f"{a}-{b}-{c}-0" for a, b, c in np.ndindex(*SIZES) if (a, b, c) not in {k[:L] for k in o.key})
    asked = ["i1", "ghost", 42, "a/b c", "ghost", "i1", "spook"]  # 42 is read as the id "42"
    r = sc.post(f"{URL}/semantic-ids/lookup", json={"item_ids": asked, "allow_unknown": True})
    assert r.status_code == 200, r.text
    assert r.json()["results"] == [o.entry(o.row[i]) for i in ("i1", "42", "a/b c", "i1")]
    assert r.json()["unknown"] == ["ghost", "spook"]
    sids = [o.sid(7), free, o.sid(8), f"{o.sid(7)[:-2]}-999999999"]
    r = sc.post(f"{URL}/semantic-ids/lookup", json={"semantic_ids": sids, "allow_unknown": True})
    assert r.json()["results"] == [o.entry(7), o.entry(8)]
    assert r.json()["unknown"] == sids[1::2]
    r = sc.post(f"{URL}/semantic-ids/lookup", json={"item_ids": []})
    assert r.status_code == 200 and r.json()["results"] == [] and r.json()["unknown"] == []


@pytest.mark.parametrize("entity", ["item", "user"])
def test_every_prefix_matches_oracle(sc, built, entity):
    o = built.items if entity == "item" else built.users
    dead_ends = 0
    for p in all_prefixes():
        r = prefix_page(sc, p, entity=entity, limit=1000)
        assert r.status_code == 200, (p, r.text)
        body = r.json()
        rows = o.under(p)
        dead_ends += not rows
        assert body["entity"] == entity and body["prefix"] == p and body["levels"] == L
        assert body["total"] == len(rows), p
        assert body["results"] == [o.entry(i) for i in rows], p
        assert body["next_tokens"] == (o.next_tokens(p) if rows else []), p
        assert body["next_is_suffix"] is (len(p) == L)
        assert body["next_cursor"] is None
        if len(p) == L:  # the suffixes of one code tuple: 0, 1, ..., each leading to one entity
            assert body["next_tokens"] == [{"token": s, "count": 1} for s in range(len(rows))]
    assert dead_ends > 0  # dead ends answered 200, total 0


@pytest.mark.parametrize("limit", [1, 7, 100])
def test_pagination_walks_everything_once_in_order(sc, built, limit):
    o = built.items
    biggest = max(all_prefixes()[1:5], key=lambda p: len(o.under(p)))
    for p in ([], biggest, [*biggest, 0]) if limit > 1 else (biggest[:1] + [1], [*biggest, 0]):
        want = [o.entry(i) for i in o.under(p)]
        tokens = o.next_tokens(p) if want else []
        got: list[dict[str, Any]] = []
        cursor = None
        pages = 0
        while True:
            body = prefix_page(sc, p, limit=limit, cursor=cursor).json()
            assert body["total"] == len(want) and body["next_tokens"] == tokens
            assert len(body["results"]) == min(limit, len(want) - len(got))
            got += body["results"]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert got == want  # the union, no duplicates, semantic-id order
        assert len({e["id"] for e in got}) == len(got)
        assert pages == max(1, -(-len(want) // limit))


def test_default_limit_and_changing_limit_between_pages(sc, built):
    o = built.items
    first = prefix_page(sc, []).json()
    assert len(first["results"]) == 100 and first["total"] == 600 and first["next_cursor"]
    assert first["next_tokens"] == o.next_tokens([])
    rest = prefix_page(sc, [], cursor=first["next_cursor"], limit=1000).json()
    assert rest["next_cursor"] is None
    assert first["results"] + rest["results"] == [o.entry(i) for i in o.order]
    # the last row's cursor: an empty last page is fine
    last = prefix_page(sc, [], limit=599).json()
    end = forge(last["next_cursor"], o=600)
    body = prefix_page(sc, [], cursor=end).json()
    assert body["results"] == [] and body["next_cursor"] is None


def test_users_prefix_pages(sc, built):
    o = built.users
    got, cursor = [], None
    while True:
        body = prefix_page(sc, [], entity="user", limit=9, cursor=cursor).json()
        got += body["results"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert got == [o.entry(i) for i in o.order]


def test_index_detail_semantic_summary(sc, built):
    with open(f"{built.root}/sem/manifest.json", encoding="utf-8") as f:
        m = json.load(f)["semantic_ids"]
    s = sc.get("/v1/indexes/sem").json()["semantic_ids"]
    assert s["levels"] == L and s["codebook_sizes"] == list(SIZES)
    assert (s["n_items"], s["n_users"], s["users_tokenized"]) == (600, 50, True)
    assert s["items"] == m["items"] and s["users"] == m["users"] and s["tokenizer"] == m["tokenizer"]
    assert s["items"]["max_suffix"] == int(built.items.suffix.max())
    s = sc.get("/v1/indexes/items_only").json()["semantic_ids"]
    assert (s["users_tokenized"], s["n_users"], s["users"]) == (False, 0, None)
    assert sc.get("/v1/indexes/plain").json()["semantic_ids"] is None
    assert sc.get("/v1/indexes/v1").json()["semantic_ids"] is None
    assert sc.get("/v1/indexes/v1").json()["format_version"] == 1


def test_openapi_lists_the_routes(sc):
    spec = sc.get("/openapi.json").json()
    for path in (
        "/v1/indexes/{name}/items/{item_id}/semantic-id",
        "/v1/indexes/{name}/users/{user_id}/semantic-id",
        "/v1/indexes/{name}/semantic-ids/lookup",
        "/v1/indexes/{name}/semantic-ids/prefix",
    ):
        assert path in spec["paths"], path
    prefix = spec["components"]["schemas"]["PrefixRequest"]["properties"]["prefix"]
    assert prefix["items"]["type"] == "integer"


# ---- errors --------------------------------------------------------------------------------------

LOOKUP, PREFIX = f"{URL}/semantic-ids/lookup", f"{URL}/semantic-ids/prefix"
TOO_LONG = "vqrec build ... --semantic-ids TOKENIZER_DIR"


def bad_prefix(prefix: Any, *words: str) -> Case:
    return Case("POST", PREFIX, {"prefix": prefix}, 422, "invalid_prefix", words)


def bad_sid(sid: str, *words: str) -> Case:
    return Case(
        "POST", LOOKUP, {"semantic_ids": ["0-0-0-0", sid]}, 422, "invalid_semantic_id", ("semantic_ids[1]", *words)
    )


CASES = {
    # 404 unknown index / id
    "unknown index (item)": Case(
        "GET", "/v1/indexes/nope/items/i1/semantic-id", None, 404, "unknown_index", ("'nope'",)
    ),
    "unknown index (user)": Case(
        "GET", "/v1/indexes/nope/users/u1/semantic-id", None, 404, "unknown_index", ("'nope'",)
    ),
    "unknown index (lookup)": Case(
        "POST", "/v1/indexes/nope/semantic-ids/lookup", {"item_ids": ["i1"]}, 404, "unknown_index", ("'nope'", "sem")
    ),
    "unknown index (prefix)": Case(
        "POST", "/v1/indexes/nope/semantic-ids/prefix", {"prefix": []}, 404, "unknown_index", ("'nope'",)
    ),
    "unknown item": Case("GET", f"{URL}/items/zzz/semantic-id", None, 404, "unknown_item", ("'zzz'",)),
    "unknown item with a slash": Case(
        "GET", f"{URL}/items/no%2Fsuch/semantic-id", None, 404, "unknown_item", ("'no/such'",)
    ),
    "unknown user": Case("GET", f"{URL}/users/ghost/semantic-id", None, 404, "unknown_user", ("'ghost'",)),
    "an item id is not a user": Case("GET", f"{URL}/users/i1/semantic-id", None, 404, "unknown_user", ("'i1'",)),
    "lookup unknown items": Case(
        "POST",
        LOOKUP,
        {"item_ids": ["i1", "zzz", "yyy", "zzz"]},
        404,
        "unknown_item",
        ("2 of the 4", "'zzz'", "'yyy'", "allow_unknown"),
    ),
    "lookup many unknown items": Case(
        "POST",
        LOOKUP,
        {"item_ids": [f"no{i}" for i in range(12)]},
        404,
        "unknown_item",
        ("12 of the 12", "'no4'", "and 7 more"),
    ),
    "lookup unknown users": Case(
        "POST", LOOKUP, {"user_ids": ["u1", "i1"]}, 404, "unknown_user", ("1 of the 2", "'i1'")
    ),
    "lookup unknown semantic id": Case(
        "POST", LOOKUP, {"semantic_ids": ["0-0-0-999999"]}, 404, "unknown_semantic_id", ("'0-0-0-999999'", "no item")
    ),
    "lookup unknown user semantic id": Case(
        "POST", LOOKUP, {"semantic_ids": ["0-0-0-999999"], "entity": "user"}, 404, "unknown_semantic_id", ("no user",)
    ),
    # 404 no semantic ids
    "no semantic ids (item)": Case(
        "GET", "/v1/indexes/plain/items/i1/semantic-id", None, 404, "no_semantic_ids", ("'plain'", TOO_LONG)
    ),
    "no semantic ids (lookup)": Case(
        "POST", "/v1/indexes/plain/semantic-ids/lookup", {"item_ids": ["i1"]}, 404, "no_semantic_ids", (TOO_LONG,)
    ),
    "no semantic ids (prefix)": Case(
        "POST", "/v1/indexes/plain/semantic-ids/prefix", {"prefix": []}, 404, "no_semantic_ids", (TOO_LONG,)
    ),
    "no semantic ids (user, plain)": Case(
        "GET", "/v1/indexes/plain/users/u1/semantic-id", None, 404, "no_semantic_ids", (TOO_LONG, "--tokenize-users")
    ),
    "users not tokenized (user)": Case(
        "GET",
        "/v1/indexes/items_only/users/u1/semantic-id",
        None,
        404,
        "no_semantic_ids",
        ("users were not tokenized", "--tokenize-users"),
    ),
    "users not tokenized (lookup)": Case(
        "POST",
        "/v1/indexes/items_only/semantic-ids/lookup",
        {"user_ids": ["u1"]},
        404,
        "no_semantic_ids",
        ("--tokenize-users",),
    ),
    "users not tokenized (prefix)": Case(
        "POST",
        "/v1/indexes/items_only/semantic-ids/prefix",
        {"prefix": [], "entity": "user"},
        404,
        "no_semantic_ids",
        ("--tokenize-users",),
    ),
    "format-1 artifact": Case(
        "GET", "/v1/indexes/v1/items/0/semantic-id", None, 404, "no_semantic_ids", ("'v1'", TOO_LONG)
    ),
    "format-1 artifact (prefix)": Case(
        "POST", "/v1/indexes/v1/semantic-ids/prefix", {"prefix": [0]}, 404, "no_semantic_ids", (TOO_LONG,)
    ),
    # 503
    "index failed to load": Case(
        "POST",
        "/v1/indexes/broken/semantic-ids/prefix",
        {"prefix": []},
        503,
        "index_not_loaded",
        ("'broken'", "item_semantic_suffix.npy"),
    ),
    # 422 prefix
    "prefix negative": bad_prefix([-1], "prefix[0] = -1", "0..3"),
    "prefix code = K": bad_prefix([4], "prefix[0] = 4", "0..3"),
    "prefix code >= K at level 1": bad_prefix([0, 3], "prefix[1] = 3", "level 1", "0..2"),
    "prefix code >= K at level 2": bad_prefix([0, 0, 5], "prefix[2] = 5", "0..4"),
    "prefix huge code": bad_prefix([0, 10**30], "prefix[1]"),
    "prefix float": bad_prefix([1, 2.5], "prefix[1] = 2.5", "integers"),
    "prefix integral float": bad_prefix([1.0], "prefix[0] = 1.0"),
    "prefix string": bad_prefix(["1"], "prefix[0] = '1'"),
    "prefix bool": bad_prefix([True], "prefix[0] = True"),
    "prefix null": bad_prefix([0, None], "prefix[1] = None"),
    "prefix nested list": bad_prefix([[1]], "prefix[0] = [1]"),
    "prefix longer than the levels": bad_prefix([0, 0, 0, 0], "4 codes", "3 levels", "suffix"),
    "user prefix longer than the levels": Case(
        "POST",
        PREFIX,
        {"prefix": [0, 0, 0, 0, 0], "entity": "user"},
        422,
        "invalid_prefix",
        ("5 codes", "user semantic ids"),
    ),
    "prefix not a list": Case("POST", PREFIX, {"prefix": "1-2"}, 422, "validation_error", ("prefix",)),
    # 422 pagination
    "limit 0": Case("POST", PREFIX, {"prefix": [], "limit": 0}, 422, "validation_error", ("limit", "1")),
    "limit 1001": Case("POST", PREFIX, {"prefix": [], "limit": 1001}, 422, "validation_error", ("limit", "1000")),
    "limit string": Case("POST", PREFIX, {"prefix": [], "limit": "10"}, 422, "validation_error", ("limit",)),
    "limit float": Case("POST", PREFIX, {"prefix": [], "limit": 2.5}, 422, "validation_error", ("limit",)),
    "garbage cursor": Case(
        "POST", PREFIX, {"prefix": [], "cursor": "not-a-cursor"}, 422, "invalid_cursor", ("not a cursor",)
    ),
    "cursor not base64": Case(
        "POST", PREFIX, {"prefix": [], "cursor": "!!!!"}, 422, "invalid_cursor", ("not a cursor",)
    ),
    "cursor of another JSON": Case(
        "POST",
        PREFIX,
        {"prefix": [], "cursor": base64.urlsafe_b64encode(b'{"a": 1}').decode()},
        422,
        "invalid_cursor",
        ("not a cursor",),
    ),
    "deeply nested cursor": Case(
        "POST",
        PREFIX,
        {"prefix": [], "cursor": base64.urlsafe_b64encode(b"[" * 50000).decode()},
        422,
        "invalid_cursor",
        ("not a cursor",),
    ),
    "cursor not a string": Case("POST", PREFIX, {"prefix": [], "cursor": 100}, 422, "validation_error", ("cursor",)),
    "entity unknown": Case("POST", PREFIX, {"prefix": [], "entity": "book"}, 422, "validation_error", ("entity",)),
    "prefix extra field": Case("POST", PREFIX, {"prefix": [], "k": 3}, 422, "validation_error", ("k",)),
    # 422 lookup
    "malformed semantic id: too few parts": bad_sid("1-2", "'1-2'", "3 codes and a suffix"),
    "malformed semantic id: too many parts": bad_sid("1-2-0-0-0", "'1-2-0-0-0'"),
    "malformed semantic id: letters": bad_sid("a-b-c-d", "'a-b-c-d'"),
    "malformed semantic id: empty": bad_sid("", "''"),
    "malformed semantic id: negative": bad_sid("-1-0-0-0", "'-1-0-0-0'"),
    "malformed semantic id: space": bad_sid(" 1-0-0-0", "' 1-0-0-0'"),
    "malformed semantic id: unicode digit": bad_sid("1-0-0-²", "'1-0-0-²'"),
    "malformed semantic id: 5000 digits": bad_sid("1-0-0-" + "9" * 5000, "is not a semantic id"),
    "semantic id code out of range": bad_sid("4-0-0-0", "'4-0-0-0': code[0] = 4", "level 0", "0..3"),
    "semantic id code out of range, level 1": bad_sid("0-3-0-0", "code[1] = 3", "level 1", "0..2"),
    "semantic id not a string": Case(
        "POST", LOOKUP, {"semantic_ids": [1]}, 422, "validation_error", ("semantic_ids[0]",)
    ),
    "lookup both lists": Case(
        "POST",
        LOOKUP,
        {"item_ids": ["i1"], "semantic_ids": ["0-0-0-0"]},
        422,
        "invalid_query",
        ("item_ids and semantic_ids",),
    ),
    "lookup neither list": Case("POST", LOOKUP, {"allow_unknown": True}, 422, "invalid_query", ("exactly one", "none")),
    "lookup entity contradicts ids": Case(
        "POST", LOOKUP, {"item_ids": ["i1"], "entity": "user"}, 422, "invalid_query", ("'user'", "item_ids")
    ),
    "lookup allow_unknown not a bool": Case(
        "POST", LOOKUP, {"item_ids": ["i1"], "allow_unknown": "yes"}, 422, "validation_error", ("allow_unknown",)
    ),
    "lookup id as list": Case("POST", LOOKUP, {"item_ids": [["i1"]]}, 422, "validation_error", ("item_ids[0]",)),
    "lookup malformed JSON": Case("POST", LOOKUP, '{"item_ids": [', 422, "malformed_json", ("JSON",)),
    "prefix no body": Case("POST", PREFIX, None, 422, "validation_error", ("body",)),
    # 413 / 405
    "lookup over max_batch": Case(
        "POST", LOOKUP, {"item_ids": ["i1"] * 257}, 413, "batch_too_large", ("item_ids", "257", "256")
    ),
    "semantic lookup over max_batch": Case(
        "POST", LOOKUP, {"semantic_ids": ["x"] * 300}, 413, "batch_too_large", ("semantic_ids", "300", "256")
    ),
    "prefix by GET": Case("GET", PREFIX, None, 405, "method_not_allowed", ()),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_error(sc, case, assert_error):
    assert_error(send(sc, case), case.status, case.code, case.words)


def test_unknown_ids_details(sc, assert_error):
    asked = [f"no{i}" for i in range(12)] + ["i1", "no0"]
    err = assert_error(sc.post(LOOKUP, json={"item_ids": asked}), 404, "unknown_item")
    assert err["details"] == {"unknown": [f"no{i}" for i in range(12)], "n_unknown": 12}


def test_cursor_from_another_prefix(sc, assert_error):
    cursor = prefix_page(sc, [0], limit=1).json()["next_cursor"]
    assert cursor
    assert_error(prefix_page(sc, [1], cursor=cursor), 422, "invalid_cursor", ("prefix [0]", "not [1]"))
    assert_error(prefix_page(sc, [], cursor=cursor), 422, "invalid_cursor", ("prefix [0]", "not []"))


def test_cursor_from_another_index_version(sc, built, assert_error):
    cursor = sc.post("/v1/indexes/sem2/semantic-ids/prefix", json={"prefix": [], "limit": 5}).json()["next_cursor"]
    assert cursor and built.items2.key != built.items.key
    assert_error(prefix_page(sc, [], cursor=cursor), 422, "invalid_cursor", ("another version",))
    # the same cursor still works where it was issued
    r = sc.post("/v1/indexes/sem2/semantic-ids/prefix", json={"prefix": [], "limit": 5, "cursor": cursor})
    assert r.status_code == 200 and r.json()["results"] == [built.items2.entry(i) for i in built.items2.order[5:10]]


def test_cursor_from_the_other_entity(sc, assert_error):
    cursor = prefix_page(sc, [], entity="user", limit=2).json()["next_cursor"]
    assert_error(prefix_page(sc, [], cursor=cursor), 422, "invalid_cursor", ("user semantic ids", "entity 'user'"))
    cursor = prefix_page(sc, [], limit=2).json()["next_cursor"]
    assert_error(prefix_page(sc, [], entity="user", cursor=cursor), 422, "invalid_cursor", ("entity 'item'",))


def test_forged_cursors(sc, assert_error):
    cursor = prefix_page(sc, [1], limit=2).json()["next_cursor"]
    total = prefix_page(sc, [1]).json()["total"]
    assert_error(prefix_page(sc, [1], cursor=forge(cursor, o=total + 1)), 422, "invalid_cursor", ("past the",))
    assert_error(prefix_page(sc, [1], cursor=forge(cursor, o=-1)), 422, "invalid_cursor", ("not a cursor",))
    assert_error(prefix_page(sc, [1], cursor=forge(cursor, p=5)), 422, "invalid_cursor", ("not a cursor",))
    assert_error(prefix_page(sc, [1], cursor=forge(cursor, t="0" * 12)), 422, "invalid_cursor", ("another version",))
    assert prefix_page(sc, [1], cursor=forge(cursor, o=total)).json()["results"] == []


def test_errors_leave_the_service_answering(sc, built):
    for case in CASES.values():
        send(sc, case)
    r = sc.post(LOOKUP, json={"item_ids": ["i1"]})
    assert r.status_code == 200 and r.json()["results"] == [built.items.entry(1)]


def test_lookup_limit_comes_from_settings(built, make_client, assert_error):
    with make_client(Settings(index_root=built.root, indexes=["sem"], max_batch=3)) as c:
        assert c.post(LOOKUP, json={"item_ids": ["i1", "i2", "i4"]}).status_code == 200
        r = c.post(LOOKUP, json={"user_ids": ["u1"] * 4})
        assert_error(r, 413, "batch_too_large", ("user_ids has 4 ids", "at most 3"))
