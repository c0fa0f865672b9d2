"""The ID table (index/semantic/ids.py) against brute-force oracles written here: dedup suffixes, the prefix
structure (ranges, rows, next tokens), string form and parsing, pagination cursors.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from collections import Counter
from typing import Any

import numpy as np
import pytest
from semantic_helpers import SIZES, oracle_suffixes  # shared semantic-id test helpers (same directory)

from vqrec.index import ConfigError, InputError
from vqrec.index.errors import InvalidCursorError, InvalidPrefixError
from vqrec.index.semantic import SemanticIds, assign_suffixes, semantic_string


# ---- oracles ------------------------------------------------------------------------------------
def skewed_codes(rng: np.random.Generator, n: int, sizes: list[int], *, spare: int = 1) -> np.ndarray:
    """(n, L) codes from a skewed distribution over 0..K-1-spare: many collisions, and the last ``spare``
    codes of each level are never used (valid prefixes that are dead ends)."""
    cols = []
    for k in sizes:
        used = k - spare
        p = 0.6 ** np.arange(used)
        cols.append(rng.choice(used, n, p=p / p.sum()))
    return np.column_stack(cols).astype(np.int64)


def make_sem(codes: np.ndarray, sizes: list[int], *, kind: str = "item", ids: list[str] | None = None) -> SemanticIds:
    ids = ids if ids is not None else [f"{kind[0]}{i}" for i in range(len(codes))]
    return SemanticIds(
        ids=ids, codes=codes.astype(np.uint8), suffix=oracle_suffixes(codes).astype(np.uint32), sizes=sizes, kind=kind
    )


def rows_under(codes: np.ndarray, suffix: np.ndarray, prefix: tuple[int, ...]) -> list[int]:
    """Brute force: rows whose (codes, suffix) start with ``prefix``, sorted by (codes, suffix)."""
    keys = [(*map(int, c), int(s)) for c, s in zip(codes, suffix, strict=True)]
    t = len(prefix)
    return sorted((i for i in range(len(keys)) if keys[i][:t] == prefix), key=keys.__getitem__)


# ---- assign_suffixes ----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("n", "sizes"), [(400, [3, 3, 3]), (300, [2]), (500, [4, 2]), (50, [200, 200])])
def test_assign_suffixes_matches_oracle(seed, n, sizes):
    codes = skewed_codes(np.random.default_rng(seed), n, sizes, spare=0)
    suffix = assign_suffixes(codes)
    want = oracle_suffixes(codes)
    np.testing.assert_array_equal(suffix, want)
    assert suffix.dtype == np.int64 and suffix.shape == (n,)
    keys = {(*c, s) for c, s in zip(codes.tolist(), suffix.tolist(), strict=True)}
    assert len(keys) == n  # (codes, suffix) is unique
    # first occurrence (row order) of each tuple gets 0, later ones 1, 2, ... in row order
    by_tuple: dict[tuple[int, ...], list[int]] = {}
    for i, c in enumerate(codes.tolist()):
        by_tuple.setdefault(tuple(c), []).append(i)
    for rows in by_tuple.values():
        assert suffix[rows].tolist() == list(range(len(rows)))
    if sizes != [200, 200]:
        assert suffix.max() >= 5  # collisions really happened
    # the same for other integer dtypes
    for dtype in (np.uint8, np.uint16, np.uint32):
        np.testing.assert_array_equal(assign_suffixes(codes.astype(dtype)), want)


def test_assign_suffixes_edge_cases():
    assert assign_suffixes(np.zeros((0, 3), np.uint8)).shape == (0,)
    assert assign_suffixes(np.zeros((0, 3), np.uint8)).dtype == np.int64
    np.testing.assert_array_equal(assign_suffixes(np.zeros((6, 2), np.uint8)), np.arange(6))
    np.testing.assert_array_equal(assign_suffixes(np.arange(6)[:, None]), np.zeros(6))
    codes = np.array([[1, 2], [0, 0], [1, 2], [0, 1], [1, 2], [0, 0]])
    assert assign_suffixes(codes).tolist() == [0, 0, 1, 0, 2, 1]


# ---- SemanticIds: the prefix structure ----------------------------------------------------------
def all_prefixes(sizes: list[int]) -> list[tuple[int, ...]]:
    out: list[tuple[int, ...]] = [()]
    for t in range(1, len(sizes) + 1):
        out += list(itertools.product(*(range(k) for k in sizes[:t])))
    return out


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("levels", [1, 2, 3, 4])
def test_prefix_structure_matches_brute_force(seed, levels):
    rng = np.random.default_rng(100 * seed + levels)
    sizes = [int(k) for k in rng.integers(3, 6, levels)]
    n = 120
    codes = skewed_codes(rng, n, sizes)
    ids = [f"id-{v}" for v in rng.permutation(10 * n)[:n]]  # not in row order
    sem = make_sem(codes, sizes, ids=ids)
    suffix = oracle_suffixes(codes)
    keys = [(*map(int, c), int(s)) for c, s in zip(codes, suffix, strict=True)]
    order = sorted(range(n), key=keys.__getitem__)
    assert len(sem) == n and sem.levels == levels
    assert sem.rows_in(0, n).tolist() == order

    dead = occurring = 0
    for p in all_prefixes(sizes):
        assert sem.check_prefix(list(p)) == list(p)
        t = len(p)
        rows = rows_under(codes, suffix, p)
        lo, hi = sem.prefix_range(list(p))
        assert hi - lo == len(rows), p
        assert sem.rows_in(lo, hi).tolist() == rows, p
        tokens = sem.next_tokens(t, lo, hi)
        assert tokens == sorted(Counter(keys[i][t] for i in rows).items()), p
        if rows:
            occurring += 1
            assert order[lo : lo + len(rows)] == rows  # one contiguous range of the sorted order
            assert sum(c for _, c in tokens) == len(rows)
            if t == levels:  # depth == levels: the dedup suffixes, each leading to one row
                assert tokens == [(s, 1) for s in range(len(rows))]
        else:
            dead += 1
            assert tokens == []
    assert dead > 0 and occurring > levels  # both kinds of prefix were checked
    assert suffix.max() >= 3  # and suffixes > 0 (collisions) exist

    # full (codes, suffix): find round-trips every row; anything else is None
    for i in range(n):
        assert sem.find(list(codes[i]), int(suffix[i])) == i
        assert sem.row_of(ids[i]) == i
        e = sem.entry(i)
        sid = "-".join(map(str, [*codes[i], suffix[i]]))
        assert e == {"codes": codes[i].tolist(), "suffix": int(suffix[i]), "semantic_id": sid}
        assert semantic_string(codes[i], suffix[i]) == sid
        assert re.fullmatch(rf"\d+(-\d+){{{levels}}}", sid)
        assert sem.parse(sid) == (codes[i].tolist(), int(suffix[i]))
    top = Counter(map(tuple, codes.tolist())).most_common(1)[0]
    assert sem.find(list(top[0]), top[1]) is None  # one past the last suffix
    assert sem.find(list(codes[0]), 10**12) is None
    assert sem.find(list(codes[0])[:-1], 0) is None  # too few codes
    assert sem.find([*codes[0], 0], 0) is None  # too many
    assert sem.row_of("nope") is None


def test_empty_semantic_ids():
    sem = SemanticIds(ids=[], codes=np.zeros((0, 3), np.uint8), suffix=np.zeros(0, np.uint32), sizes=SIZES)
    assert len(sem) == 0 and sem.prefix_range([]) == (0, 0) and sem.prefix_range([1, 2]) == (0, 0)
    assert sem.next_tokens(0, 0, 0) == [] and sem.rows_in(0, 0).tolist() == []
    assert sem.find([0, 0, 0], 0) is None


@pytest.fixture(scope="module")
def sem() -> SemanticIds:
    return make_sem(skewed_codes(np.random.default_rng(5), 80, SIZES), SIZES)


@pytest.mark.parametrize(
    ("prefix", "words"),
    [
        ([0, 0, 0, 0], ("4 codes", "item semantic ids have 3 levels", "suffix is not part of a prefix")),
        ([-1], ("prefix[0] = -1", "level 0", "0..3")),
        ([4], ("prefix[0] = 4", "0..3")),
        ([0, 3], ("prefix[1] = 3", "level 1", "0..2")),
        ([0, 0, 5], ("prefix[2] = 5", "0..4")),
        ([0, 10**30], ("prefix[1] = 1000000000000000000000000000000",)),
        ([True], ("prefix[0] = True", "integers")),
        ([np.bool_(False)], ("prefix[0] = ",)),
        ([1.0], ("prefix[0] = 1.0", "integers")),
        ([1, 2.5], ("prefix[1] = 2.5",)),
        (["1"], ("prefix[0] = '1'",)),
        ([None], ("prefix[0] = None",)),
    ],
)
def test_check_prefix_errors(sem, prefix, words):
    with pytest.raises(InvalidPrefixError) as e:
        sem.check_prefix(prefix)
    for w in words:
        assert w in str(e.value)
    assert e.value.code == "invalid_prefix" and isinstance(e.value, InputError)


def test_check_prefix_accepts_numpy_ints(sem):
    assert sem.check_prefix([np.int64(3), np.uint8(2), np.int32(4)]) == [3, 2, 4]
    assert all(type(c) is int for c in sem.check_prefix([np.int64(3)]))
    assert sem.check_prefix([]) == []


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("1-2", ("'1-2'", "3 codes and a suffix")),
        ("1-2-0-0-0", ("'1-2-0-0-0'",)),
        ("", ("''",)),
        ("a-b-c-d", ("'a-b-c-d'",)),
        ("-1-0-0-0", ("'-1-0-0-0'",)),
        ("+1-0-0-0", ("'+1-0-0-0'",)),
        (" 1-0-0-0", ("' 1-0-0-0'",)),
        ("1-0-0-0 ", ("'1-0-0-0 '",)),
        ("1-0-0-²", ("'1-0-0-²'",)),
        ("1--0-0", ("'1--0-0'",)),
        ("1-0-0-" + "9" * 5000, ("is not a semantic id",)),
        # canonical decimal only: "01" would name the same id as "1"
        ("01-2-3-0", ("'01-2-3-0'", "leading zeros")),
        ("0-00-0-0", ("leading zeros",)),
        ("1-2-3-00", ("leading zeros",)),
        ("1-2-3-007", ("leading zeros",)),
        # well-formed, but a code out of its level's range
        ("4-0-0-0", ("prefix[0] = 4", "0..3")),
        ("0-3-0-0", ("prefix[1] = 3", "level 1")),
    ],
)
def test_parse_errors(sem, text, words):
    with pytest.raises(InvalidPrefixError) as e:
        sem.parse(text)
    for w in words:
        assert w in str(e.value)


def test_parse_canonical_forms(sem):
    assert sem.parse("0-0-0-0") == ([0, 0, 0], 0)
    assert sem.parse("3-2-4-10") == ([3, 2, 4], 10)
    assert sem.parse("1-0-2-999999999999999999") == ([1, 0, 2], 999999999999999999)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"ids": ["a", "b"], "codes": [[0, 0, 0], [0, 0, 0]], "suffix": [0, 0]}, ("not unique",)),
        ({"ids": ["a", "b"], "codes": [[4, 0, 0], [0, 0, 0]], "suffix": [0, 0]}, ("outside its level's codebook",)),
        ({"ids": ["a", "b"], "codes": [[0, 0, 5], [0, 0, 0]], "suffix": [0, 0]}, ("outside",)),
        ({"ids": ["a", "b"], "codes": [[-1, 0, 0], [0, 0, 0]], "suffix": [0, 0]}, ("outside",)),
        ({"ids": ["a", "b", "c"], "codes": [[0, 0, 0], [1, 0, 0]], "suffix": [0, 0]}, ("3 ids", "codes (2, 3)")),
        ({"ids": ["a", "b"], "codes": [[0, 0, 0], [1, 0, 0]], "suffix": [0]}, ("suffixes (1,)",)),
        ({"ids": ["a", "b"], "codes": [0, 1], "suffix": [0, 0]}, ("codes (2,)",)),
        ({"ids": ["a", "b"], "codes": [[0, 0], [1, 0]], "suffix": [0, 0]}, ("2 levels", "[4, 3, 5]")),
        ({"ids": ["a"], "codes": np.zeros((1, 0), int), "suffix": [0], "sizes": []}, ("0 levels",)),
    ],
)
def test_constructor_rejects(kwargs, words):
    kwargs = {"sizes": SIZES, **kwargs}
    kwargs["codes"] = np.asarray(kwargs["codes"])
    with pytest.raises(ConfigError) as e:
        SemanticIds(**kwargs)
    for w in words:
        assert w in str(e.value)


def test_constructor_accepts_duplicate_codes_with_distinct_suffixes():
    s = SemanticIds(ids=["a", "b"], codes=np.zeros((2, 3), np.uint8), suffix=np.array([1, 0]), sizes=SIZES)
    assert s.rows_in(0, 2).tolist() == [1, 0] and s.find([0, 0, 0], 1) == 0


# ---- cursors ------------------------------------------------------------------------------------
def b64(obj: Any) -> str:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unb64(cursor: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))


def test_cursor_round_trip(sem):
    for prefix, offset in (([], 0), ([], 79), ([1], 3), ([0, 2, 4], 1)):
        c = sem.encode_cursor(prefix, offset)
        assert re.fullmatch(r"[A-Za-z0-9_-]+", c)  # URL-safe, no padding
        assert sem.decode_cursor(c, prefix) == offset
        assert unb64(c)["k"] == "item"
    # decoding needs no state: another object with the same content accepts it
    twin = SemanticIds(ids=list(sem.ids), codes=sem.codes, suffix=sem.suffix, sizes=SIZES)
    assert twin.decode_cursor(sem.encode_cursor([1], 7), [1]) == 7


def forge(sem: SemanticIds, **changes: Any) -> str:
    data = unb64(sem.encode_cursor([1], 2))
    data.update(changes)
    return b64({k: v for k, v in data.items() if v is not ...})


@pytest.mark.parametrize(
    "make",
    [
        lambda s: "not-a-cursor",
        lambda s: "!!!!",
        lambda s: "",
        lambda s: b64({"a": 1}),
        lambda s: b64([1, 2]),
        lambda s: b64("text"),
        lambda s: b64(b"\xff\xfe\xfd"),  # not UTF-8
        lambda s: b64(b"[" * 50000),  # nesting deeper than the JSON parser's recursion
        lambda s: forge(s, o=-1),
        lambda s: forge(s, o=True),
        lambda s: forge(s, o="2"),
        lambda s: forge(s, o=2.0),
        lambda s: forge(s, p=5),
        lambda s: forge(s, k=3),
        lambda s: forge(s, k=...),  # a cursor without the entity kind (issued before kinds were recorded)
        lambda s: forge(s, t=...),
    ],
)
def test_garbage_cursors(sem, make):
    cursor = make(sem)
    with pytest.raises(InvalidCursorError, match="is not a cursor this service issued") as e:
        sem.decode_cursor(cursor, [1])
    assert e.value.code == "invalid_cursor"


def test_cursor_for_another_prefix(sem):
    c = sem.encode_cursor([1], 2)
    with pytest.raises(InvalidCursorError, match=re.escape("issued for prefix [1], not [2]")):
        sem.decode_cursor(c, [2])
    with pytest.raises(InvalidCursorError, match=re.escape("issued for prefix [1], not []")):
        sem.decode_cursor(c, [])


def test_cursor_for_another_kind(sem):
    # the same ids, codes and suffixes as users: the content tag cannot tell them apart, the kind does
    users = SemanticIds(ids=list(sem.ids), codes=sem.codes, suffix=sem.suffix, sizes=SIZES, kind="user")
    assert users.tag == sem.tag
    with pytest.raises(InvalidCursorError, match="cursor was issued for items, not users"):
        users.decode_cursor(sem.encode_cursor([1], 2), [1])
    with pytest.raises(InvalidCursorError, match="cursor was issued for users, not items"):
        sem.decode_cursor(users.encode_cursor([1], 2), [1])
    assert users.decode_cursor(users.encode_cursor([1], 2), [1]) == 2
    with pytest.raises(InvalidCursorError, match="cursor was issued for books"):
        sem.decode_cursor(forge(sem, k="book"), [1])


def test_cursor_for_another_version(sem):
    codes = np.asarray(sem.codes).copy()
    codes[0] = [3, 2, 4]  # a tuple no other row has (the last code of each level is never used)
    other = make_sem(codes.astype(np.int64), SIZES)
    renamed = SemanticIds(ids=[f"z{i}" for i in range(len(sem))], codes=sem.codes, suffix=sem.suffix, sizes=SIZES)
    for o in (other, renamed):
        assert o.tag != sem.tag
        with pytest.raises(InvalidCursorError, match="another version of these semantic ids"):
            sem.decode_cursor(o.encode_cursor([1], 2), [1])
    with pytest.raises(InvalidCursorError, match="another version"):
        sem.decode_cursor(forge(sem, t="0" * 12), [1])
