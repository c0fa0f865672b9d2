"""Semantic ids (index/semantic.py) against brute-force oracles written here: dedup suffixes, the prefix
structure (ranges, rows, next tokens), string form and parsing, pagination cursors, the numpy tokenizer
(residual quantization, decode, artifact), the quality report, and the build step + index artifact
(format 2 semantic-id files, format-1 fixture still loading, loud load errors naming the file).

The tokenizers are random numpy weights (no torch); codebooks are drawn from the latents of random rows
(then their residuals), so every code is used and code tuples collide.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from test_artifact import npy_bytes, rewrite  # artifact-surgery helpers (same directory)

from vqrec.index import (
    ArtifactCorrupt,
    ConfigError,
    DimensionMismatchError,
    Embeddings,
    InputError,
    build_index,
    load_index,
    save_index,
)
from vqrec.index.artifact_io import json_default
from vqrec.index.build import attach_semantic_ids
from vqrec.index.semantic import (
    InvalidCursorError,
    InvalidPrefixError,
    SemanticIds,
    Tokenizer,
    assign_suffixes,
    collisions,
    level_usage,
    neighbourhood_preservation,
    semantic_report,
    semantic_string,
    tokenize,
)
from vqrec.trainers.config import TrainConfig
from vqrec.trainers.quantizers import train

FIXTURE_V1 = Path(__file__).resolve().parents[1] / "fixtures" / "index_v1"
SIZES = [4, 3, 5]


# ---- oracles ------------------------------------------------------------------------------------
def oracle_suffixes(codes: np.ndarray) -> np.ndarray:
    """Count earlier rows with the same code tuple, in row order."""
    seen: dict[tuple[int, ...], int] = {}
    out = []
    for row in np.asarray(codes).tolist():
        key = tuple(row)
        out.append(seen.get(key, 0))
        seen[key] = seen.get(key, 0) + 1
    return np.array(out, dtype=np.int64)


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


def rand(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def random_tokenizer(
    seed: int,
    d: int,
    sizes: list[int] | tuple[int, ...],
    *,
    x: np.ndarray | None = None,
    input_norm: str = "l2",
    latent_norm: bool = False,
) -> Tokenizer:
    """encoder [(32, d), (8, 32)], decoder mirrored, codebooks (K, 8): the latents (then residuals) of
    random rows of ``x`` (so every code is used), or of unrelated random inputs when ``x`` is None."""
    rng = np.random.default_rng(seed)
    enc = [(rand(rng, 32, d, scale=d**-0.5), rand(rng, 32, scale=0.1)), (rand(rng, 8, 32, scale=0.3), rand(rng, 8))]
    dec = [(rand(rng, 32, 8, scale=0.3), rand(rng, 32, scale=0.1)), (rand(rng, d, 32, scale=0.2), rand(rng, d))]
    probe = Tokenizer(
        encoder=enc, codebooks=[rand(rng, 1, 8)], decoder=dec, input_norm=input_norm, latent_norm=latent_norm
    )
    src = x if x is not None else rng.standard_normal((512, d)) * rng.lognormal(0, 0.7, (512, 1))
    r = probe.embed(probe.prepare(src)).astype(np.float32)
    codebooks = []
    for k in sizes:
        c = r[rng.choice(len(r), k, replace=False)].copy()
        codebooks.append(c)
        d2 = ((r[:, None, :] - c[None]) ** 2).sum(-1)
        r = r - c[d2.argmin(1)]
    return Tokenizer(
        encoder=enc,
        codebooks=codebooks,
        decoder=dec,
        input_norm=input_norm,
        latent_norm=latent_norm,
        config={"loss": "test", "seed": seed},
        report={"note": "random"},
    )


def mlp64(x: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    h = np.asarray(x, dtype=np.float64)
    for i, (w, b) in enumerate(layers):
        h = h @ np.asarray(w, np.float64).T + np.asarray(b, np.float64)
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return h


def brute_encode(tok: Tokenizer, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes by explicit distances in float64, level by level, one row at a time; and each row's smallest
    gap between the best and second-best distance over the levels (tiny gaps: float32 may choose the
    other codeword)."""
    x = np.asarray(x, dtype=np.float64)
    if tok.input_norm == "l2":
        norms = np.sqrt((x * x).sum(1, keepdims=True))
        x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    z = mlp64(x, tok.encoder)
    if tok.latent_norm:
        z = z / np.maximum(np.sqrt((z * z).sum(1, keepdims=True)), 1e-12)
    codes = np.zeros((len(x), tok.levels), dtype=np.int64)
    margin = np.full(len(x), np.inf)
    for i in range(len(x)):
        r = z[i].copy()
        for lvl, cb in enumerate(tok.codebooks):
            dist = [float(((r - np.asarray(c, np.float64)) ** 2).sum()) for c in cb]
            best = int(np.argmin(dist))
            second = min(dd for j, dd in enumerate(dist) if j != best) if len(dist) > 1 else np.inf
            margin[i] = min(margin[i], (second - dist[best]) / (1.0 + float((r * r).sum())))
            codes[i, lvl] = best
            r = r - np.asarray(cb[best], np.float64)
    return codes, margin


def assert_encode_matches(tok: Tokenizer, x: np.ndarray) -> np.ndarray:
    got = tok.encode(x)
    want, margin = brute_encode(tok, x)
    clear = margin > 1e-4
    assert clear.mean() >= 0.98, "test data too close to ties to be an oracle"
    np.testing.assert_array_equal(got[clear], want[clear])
    assert got.dtype == np.int64 and got.shape == (len(x), tok.levels)
    assert all(len(np.unique(got[:, lvl])) > 1 for lvl in range(tok.levels))  # not a constant code
    return got


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


# ---- tokenizer ----------------------------------------------------------------------------------
D = 16


def sample_x(seed: int, n: int = 300, d: int = D) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32) * rng.lognormal(0, 0.7, (n, 1)).astype(np.float32)
    x[7] = 0.0  # a zero row (stays zero under l2 normalisation)
    return x


@pytest.mark.parametrize("latent_norm", [False, True])
@pytest.mark.parametrize("input_norm", ["l2", "none"])
@pytest.mark.parametrize("data_codebooks", [False, True])
def test_encode_matches_brute_force(latent_norm, input_norm, data_codebooks):
    x = sample_x(1)
    tok = random_tokenizer(
        3, D, (6, 5, 4), x=x if data_codebooks else None, input_norm=input_norm, latent_norm=latent_norm
    )
    codes = assert_encode_matches(tok, x)
    np.testing.assert_array_equal(tok.encode(x, batch_size=7), codes)  # batching does not change anything
    np.testing.assert_array_equal(tok.encode(x.astype(np.float64)), codes)


def test_latent_norm_changes_the_codes():
    x = sample_x(2)
    a = random_tokenizer(4, D, (6, 5, 4))
    b = Tokenizer(encoder=a.encoder, codebooks=a.codebooks, decoder=a.decoder, latent_norm=True)
    assert (a.encode(x) != b.encode(x)).any()


def test_input_norm_l2_is_scale_invariant():
    x = sample_x(3)
    tok = random_tokenizer(5, D, (6, 5, 4), x=x, input_norm="l2")
    codes = tok.encode(x)
    np.testing.assert_array_equal(tok.encode(3 * x), codes)
    np.testing.assert_array_equal(tok.encode(0.01 * x), codes)
    np.testing.assert_allclose(np.linalg.norm(tok.prepare(3 * x), axis=1)[x.any(1)], 1.0, rtol=1e-5)
    assert not tok.prepare(x)[7].any()  # zero row stays zero (no NaN)

    raw = Tokenizer(encoder=tok.encoder, codebooks=tok.codebooks, decoder=tok.decoder, input_norm="none")
    assert (raw.encode(3 * x) != raw.encode(x)).any()  # biases + ReLU: not scale-invariant in general
    np.testing.assert_array_equal(raw.prepare(3 * x), 3 * x)


def test_decode_and_latent_match_the_mlp_of_the_codeword_sum():
    tok = random_tokenizer(6, D, (6, 5, 4))
    codes = np.random.default_rng(0).integers(0, [6, 5, 4], (50, 3))
    z = sum(np.asarray(c, np.float64)[codes[:, lvl]] for lvl, c in enumerate(tok.codebooks))
    np.testing.assert_allclose(tok.latent(codes), z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tok.decode(codes), mlp64(z, tok.decoder), rtol=1e-4, atol=1e-5)
    assert tok.decode(codes).shape == (50, D)


def test_tokenizer_shape_errors():
    tok = random_tokenizer(7, D, (6, 5, 4))
    with pytest.raises(DimensionMismatchError, match="dimension 15, the tokenizer expects 16"):
        tok.encode(np.zeros((3, 15), np.float32))
    with pytest.raises(DimensionMismatchError, match=r"\(n, 16\) array, got shape \(16,\)"):
        tok.encode(np.zeros(16, np.float32))
    with pytest.raises(ConfigError, match="input_norm must be one of"):
        Tokenizer(encoder=tok.encoder, codebooks=tok.codebooks, decoder=tok.decoder, input_norm="l1")
    with pytest.raises(ConfigError, match=r"codebook 1 has shape \(5, 7\), expected \(K, 8\)"):
        Tokenizer(encoder=tok.encoder, codebooks=[tok.codebooks[0], np.zeros((5, 7), np.float32)], decoder=tok.decoder)
    with pytest.raises(ConfigError, match="decoder shapes"):
        Tokenizer(encoder=tok.encoder, codebooks=tok.codebooks, decoder=tok.decoder[:1])
    with pytest.raises(ConfigError, match="at least one codebook"):
        Tokenizer(encoder=tok.encoder, codebooks=[], decoder=tok.decoder)
    assert (tok.d, tok.latent_dim, tok.levels, tok.sizes) == (16, 8, 3, [6, 5, 4])


@pytest.fixture
def saved_tokenizer(tmp_path) -> tuple[Tokenizer, Path]:
    tok = random_tokenizer(8, D, (6, 5, 4), latent_norm=True)
    path = tmp_path / "tok"
    tok.save(str(path), extra_files={"checkpoint.pt": b"not really torch"})
    return tok, path


def test_tokenizer_save_load_round_trip(saved_tokenizer):
    tok, path = saved_tokenizer
    back = Tokenizer.load(str(path))
    a, b = tok.arrays(), back.arrays()
    assert sorted(a) == sorted(b) and len(a) == 2 * 2 + 2 * 2 + 3
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        assert b[name].dtype == np.float32
    assert back.header() == tok.header() and back.header()["latent_norm"] is True
    assert back.fingerprint() == tok.fingerprint()
    assert back.config == tok.config and back.report == tok.report and back.path == str(path)
    x = sample_x(4)
    np.testing.assert_array_equal(back.encode(x), tok.encode(x))
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["artifact"] == "tokenizer" and manifest["fingerprint"] == tok.fingerprint()
    assert manifest["codebook_sizes"] == [6, 5, 4] and set(manifest["files"]) == {"weights.npz", "checkpoint.pt"}
    other = random_tokenizer(9, D, (6, 5, 4))
    assert other.fingerprint() != tok.fingerprint()


def edit_manifest(path: Path, **changes: Any) -> None:
    mpath = path / "manifest.json"
    mpath.write_text(json.dumps({**json.loads(mpath.read_text()), **changes}))


def test_tokenizer_corrupted_weights(saved_tokenizer):
    _, path = saved_tokenizer
    w = path / "weights.npz"
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0x01
    w.write_bytes(bytes(data))
    with pytest.raises(ArtifactCorrupt, match=r"weights\.npz: sha256 .* does not match"):
        Tokenizer.load(str(path))
    # without checksums the zip's CRC still catches it, as an ArtifactCorrupt naming the file
    with pytest.raises(ArtifactCorrupt, match=r"weights\.npz: unreadable"):
        Tokenizer.load(str(path), verify=False)
    w.write_bytes(bytes(data[:-10]))
    with pytest.raises(ArtifactCorrupt, match=r"weights\.npz: size .* \(truncated\?\)"):
        Tokenizer.load(str(path), verify=False)


def test_tokenizer_weights_missing_an_array(saved_tokenizer, tmp_path):
    tok, path = saved_tokenizer
    arrays = tok.arrays()
    del arrays["encoder.1.bias"]
    scratch = tmp_path / "w.npz"
    np.savez(scratch, **arrays)
    rewrite(path, "weights.npz", scratch.read_bytes())
    with pytest.raises(ArtifactCorrupt, match=r"weights\.npz: does not hold a usable tokenizer"):
        Tokenizer.load(str(path))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"codebook_sizes": [6, 5, 5]}, r"weights\.npz: shapes do not match the manifest"),
        ({"codebook_sizes": [6, 5]}, r"weights\.npz: shapes do not match the manifest"),
        ({"d": 17}, r"weights\.npz: shapes do not match the manifest"),
        ({"input_norm": "cube"}, r"weights\.npz: does not hold a usable tokenizer .*input_norm"),
    ],
)
def test_tokenizer_manifest_mismatch(saved_tokenizer, changes, match):
    _, path = saved_tokenizer
    edit_manifest(path, **changes)
    with pytest.raises(ArtifactCorrupt, match=match):
        Tokenizer.load(str(path))


def test_tokenizer_weights_missing_from_the_manifest(saved_tokenizer):
    _, path = saved_tokenizer
    mpath = path / "manifest.json"
    manifest = json.loads(mpath.read_text())
    del manifest["files"]["weights.npz"]
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactCorrupt, match=r"weights\.npz: missing from the manifest"):
        Tokenizer.load(str(path))


# ---- quality report -----------------------------------------------------------------------------
def clusters(seed: int, per: int = 40, d: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Two tight clusters around orthogonal directions; labels 0/1."""
    rng = np.random.default_rng(seed)
    centres = np.eye(d)[:2] * 5.0
    labels = np.repeat([0, 1], per)
    x = centres[labels] + 0.05 * rng.standard_normal((2 * per, d))
    return x.astype(np.float32), labels


def test_neighbourhood_of_codes_that_follow_the_clusters():
    x, labels = clusters(0)
    codes = np.column_stack([labels, labels, labels])
    rep = neighbourhood_preservation(x, codes, k=10)
    assert rep == {
        "k": 10,
        "queries": 80,
        "metric": "cosine",
        **{f"share@{t}": 1.0 for t in (1, 2, 3)},
        **{f"chance@{t}": 0.5 for t in (1, 2, 3)},
    }
    # the other way round: every neighbour is in the other code
    rep = neighbourhood_preservation(x, np.column_stack([1 - labels]), k=10)
    assert rep["share@1"] == 1.0
    flipped = np.column_stack([labels ^ (np.arange(80) % 2)])  # half of each cluster in each code
    assert neighbourhood_preservation(x, flipped, k=10)["share@1"] == pytest.approx(0.5, abs=0.15)


def test_neighbourhood_of_random_codes_is_chance():
    rng = np.random.default_rng(1)
    x, _ = clusters(1, per=200)
    codes = rng.integers(0, 4, (400, 2))
    rep = neighbourhood_preservation(x, codes, k=10)
    assert rep["chance@1"] == pytest.approx(0.25, abs=0.01) and rep["chance@2"] == pytest.approx(1 / 16, abs=0.01)
    assert rep["share@1"] == pytest.approx(rep["chance@1"], abs=0.04)
    assert rep["share@2"] == pytest.approx(rep["chance@2"], abs=0.03)


def test_neighbourhood_matches_brute_force():
    rng = np.random.default_rng(2)
    n, d, k = 300, 12, 7
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[[3, 50]] = 0.0  # excluded as queries and as neighbours
    codes = np.column_stack([(x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0), rng.integers(0, 3, n)])
    ok = np.flatnonzero(x.any(1))
    xn = x[ok].astype(np.float64) / np.linalg.norm(x[ok], axis=1, keepdims=True)
    sims = xn @ xn.T
    np.fill_diagonal(sims, -np.inf)
    nb = np.argsort(-sims, axis=1)
    gaps = np.take_along_axis(sims, nb, 1)
    assert (gaps[:, k - 1] - gaps[:, k]).min() > 1e-6  # no near-ties at the k-th neighbour
    want = {}
    for t in (1, 2):
        qc = codes[ok]
        share = np.mean([np.mean(np.all(qc[nb[i, :k], :t] == qc[i, :t], axis=1)) for i in range(len(ok))])
        freq = np.array(list(Counter(map(tuple, qc[:, :t].tolist())).values())) / len(ok)
        want[t] = (round(float(share), 4), round(float((freq**2).sum()), 4))
    rep = neighbourhood_preservation(x, codes, k=k)
    assert rep["queries"] == n - 2
    for t in (1, 2):
        assert (rep[f"share@{t}"], rep[f"chance@{t}"]) == pytest.approx(want[t], abs=1e-4)
    assert want[1][0] > want[1][1] + 0.2  # the first code follows the geometry: clearly above chance
    sub = neighbourhood_preservation(x, codes, k=k, max_queries=50, seed=3)
    assert sub["queries"] == 50 and 0.0 <= sub["share@1"] <= 1.0
    assert neighbourhood_preservation(x[:8], codes[:8], k=10) == {"k": 10, "queries": 0}


def test_level_usage_oracle():
    uniform = np.column_stack([np.arange(40) % 8, np.arange(40) % 4, np.zeros(40, int), np.r_[[0] * 30, [1] * 10]])
    usage = level_usage(uniform, [8, 8, 5, 2])
    assert usage[0] == {"level": 0, "codebook_size": 8, "used": 8, "utilization": 1.0, "perplexity": 8.0}
    assert usage[1] == {"level": 1, "codebook_size": 8, "used": 4, "utilization": 0.5, "perplexity": 4.0}
    assert usage[2] == {"level": 2, "codebook_size": 5, "used": 1, "utilization": 0.2, "perplexity": 1.0}
    # counts 30/10: perplexity = 1 / (0.75^0.75 * 0.25^0.25)
    assert usage[3]["perplexity"] == round(1 / (0.75**0.75 * 0.25**0.25), 2) == 1.75
    empty = level_usage(np.zeros((0, 1), int), [3])
    assert empty[0]["used"] == 0 and empty[0]["utilization"] == 0.0


def test_collisions_and_report_by_hand():
    codes = np.array([[0, 0], [0, 0], [0, 1], [1, 1], [0, 0], [1, 1]])
    assert collisions(codes) == {
        "unique_tuples": 3,
        "collision_rate": 0.5,
        "rows_in_collisions": 5,
        "max_rows_per_tuple": 3,
    }
    assert collisions(np.zeros((0, 2), int))["unique_tuples"] == 0
    suffix = assign_suffixes(codes)
    assert suffix.tolist() == [0, 1, 0, 0, 2, 1]
    x = np.array([[3, 4], [1, 0], [0, 2], [1, 1], [2, 0], [0, 1]], np.float32)
    x_hat = x.copy()
    x_hat[0] = [3, 3]  # squared error 1
    x_hat[2] = [0, 0]  # squared error 4
    rep = semantic_report(x, codes, suffix, [2, 2], x_hat=x_hat, k=2)
    assert rep["n"] == 6 and rep["max_suffix"] == 2
    assert rep["collisions_before_dedup"] == collisions(codes)
    assert rep["collisions_after_dedup"] == 0
    assert [lv["used"] for lv in rep["levels"]] == [2, 2]
    total = float((x.astype(np.float64) ** 2).sum())  # 25 + 1 + 4 + 2 + 4 + 1 = 37
    assert rep["reconstruction"] == {"mse": round(5 / 6 / 2, 6), "relative_mse": round(5 / total, 4)}
    assert rep["neighbourhood"]["queries"] == 6
    # without dedup the collisions remain; without x_hat there is no reconstruction entry
    rep = semantic_report(x, codes, np.zeros(6, int), [2, 2], k=2)
    assert rep["collisions_after_dedup"] == 5 and "reconstruction" not in rep


def test_tokenize_matches_its_parts():
    x = sample_x(5, n=200)
    tok = random_tokenizer(10, D, (6, 5, 4), x=x)
    ids = [f"t{i}" for i in range(200)]
    sem_, rep = tokenize(tok, x, ids, kind="user", seed=3)
    codes = tok.encode(x)
    np.testing.assert_array_equal(sem_.codes, codes)
    np.testing.assert_array_equal(sem_.suffix, oracle_suffixes(codes))
    assert sem_.codes.dtype == np.uint8 and sem_.suffix.dtype == np.uint32
    assert sem_.ids == ids and sem_.kind == "user" and sem_.sizes == [6, 5, 4]
    want = semantic_report(tok.prepare(x), codes, oracle_suffixes(codes), [6, 5, 4], x_hat=tok.decode(codes), seed=3)
    assert rep == want
    assert rep["collisions_before_dedup"]["rows_in_collisions"] > 0
    assert 0 < rep["reconstruction"]["relative_mse"]
    big = random_tokenizer(11, D, (300, 2))
    assert tokenize(big, x, ids, kind="item")[0].codes.dtype == np.uint16


# ---- build step + index artifact ----------------------------------------------------------------
SEM_D = 24  # the tokenizer reads other embeddings than the index (e.g. title embeddings)


class SemInputs(NamedTuple):
    items: Embeddings  # every index item in another row order, plus extra rows
    users: Embeddings  # every index user reversed, plus extra rows
    xi: np.ndarray  # the rows of ``items`` in index item order
    xu: np.ndarray  # the rows of ``users`` in index user order


@pytest.fixture(scope="module")
def codebooks(recsys):
    cfg = TrainConfig(method="pq", metric="ip", M=4, nbits=4, niter=8, eval_queries=20)
    return train(recsys.items, cfg, show_progress=False)


@pytest.fixture(scope="module")
def sem_inputs(recsys) -> SemInputs:
    rng = np.random.default_rng(11)
    proj = rng.standard_normal((32, SEM_D)).astype(np.float32)
    xi = (recsys.xb @ proj + 0.2 * rng.standard_normal((len(recsys.xb), SEM_D))).astype(np.float32)
    xu = (recsys.xq @ proj + 0.2 * rng.standard_normal((len(recsys.xq), SEM_D))).astype(np.float32)

    def shuffled(ids: list[str], x: np.ndarray, order: np.ndarray, extra: str) -> Embeddings:
        all_ids = [ids[i] for i in order] + [f"{extra}{j}" for j in range(37)]
        vecs = np.concatenate([x[order], rand(rng, 37, SEM_D)])
        mix = rng.permutation(len(all_ids))
        return Embeddings(ids=[all_ids[j] for j in mix], vectors=np.ascontiguousarray(vecs[mix]), source=f"{extra}.npy")

    items = shuffled(recsys.items.ids, xi, rng.permutation(len(xi)), "extra_item")
    users = shuffled(recsys.users.ids, xu, np.arange(len(xu))[::-1], "extra_user")
    return SemInputs(items, users, xi, xu)


@pytest.fixture(scope="module")
def tok(sem_inputs) -> Tokenizer:
    return random_tokenizer(12, SEM_D, SIZES, x=sem_inputs.xi)


class Built(NamedTuple):
    index: Any
    section: dict[str, Any]
    path: Path


def fresh_index(codebooks, recsys, *, users: bool = True):
    return build_index(codebooks, recsys.items, users=recsys.users if users else None, show_progress=False)


@pytest.fixture(scope="module")
def built(codebooks, recsys, sem_inputs, tok, tmp_path_factory) -> Built:
    index = fresh_index(codebooks, recsys)
    section = attach_semantic_ids(index, tok, sem_inputs.items, users=sem_inputs.users, seed=0)
    path = tmp_path_factory.mktemp("semantic") / "idx"
    save_index(index, str(path))
    return Built(index, section, path)


def test_attach_aligns_by_id(built, recsys, sem_inputs, tok):
    index = built.index
    for sem_, ids, x, kind in (
        (index.semantic_items, recsys.items.ids, sem_inputs.xi, "item"),
        (index.semantic_users, recsys.users.ids, sem_inputs.xu, "user"),
    ):
        codes = tok.encode(x)
        assert sem_.kind == kind and sem_.ids == list(ids) and sem_.sizes == SIZES
        np.testing.assert_array_equal(sem_.codes, codes)
        np.testing.assert_array_equal(sem_.suffix, oracle_suffixes(codes))  # in the index's row order
        assert sem_.suffix.max() > 0
        assert all(sem_.find(list(codes[i]), int(sem_.suffix[i])) == i for i in range(0, len(ids), 37))
    # the semantic embeddings' own row order would have given other codes (the alignment matters)
    assert (tok.encode(sem_inputs.items.vectors[: len(recsys.xb)]) != index.semantic_items.codes).any()


def test_attach_section(built, sem_inputs, tok):
    s = built.section
    assert built.index.manifest["semantic_ids"] is s
    assert s["levels"] == 3 and s["codebook_sizes"] == SIZES
    assert s["tokenizer"] == {**tok.header(), "path": None, "fingerprint": tok.fingerprint(), "config": tok.config}
    assert s["source"] == {
        "items": {"path": "extra_item.npy", "sha256": sem_inputs.items.fingerprint()},
        "users": {"path": "extra_user.npy", "sha256": sem_inputs.users.fingerprint()},
    }
    for key, x, sem_ in (
        ("items", sem_inputs.xi, built.index.semantic_items),
        ("users", sem_inputs.xu, built.index.semantic_users),
    ):
        want = semantic_report(tok.prepare(x), tok.encode(x), sem_.suffix, SIZES, x_hat=tok.decode(tok.encode(x)))
        assert s[key] == want
    assert s["items"]["n"] == 2000 and s["users"]["n"] == 100


def test_attach_without_users(codebooks, recsys, sem_inputs, tok):
    index = fresh_index(codebooks, recsys)
    section = attach_semantic_ids(index, tok, sem_inputs.items)
    assert index.semantic_users is None and section["users"] is None and "users" not in section["source"]
    np.testing.assert_array_equal(index.semantic_items.codes, tok.encode(sem_inputs.xi))


def drop_rows(emb: Embeddings, ids: set[str]) -> Embeddings:
    keep = [i for i, s in enumerate(emb.ids) if s not in ids]
    return Embeddings(ids=[emb.ids[i] for i in keep], vectors=np.ascontiguousarray(emb.vectors[keep]), source="t.npy")


def test_attach_missing_ids(codebooks, recsys, sem_inputs, tok):
    index = fresh_index(codebooks, recsys)
    items = drop_rows(sem_inputs.items, {"i1999", "i7", "i5"})
    with pytest.raises(
        InputError, match=re.escape("3 of 2000 item ids have no row in t.npy (first: ['i5', 'i7', 'i1999'])")
    ):
        attach_semantic_ids(index, tok, items)
    many = drop_rows(sem_inputs.items, {f"i{j}" for j in range(100, 120)})
    with pytest.raises(
        InputError,
        match=re.escape("20 of 2000 item ids have no row in t.npy (first: ['i100', 'i101', 'i102', 'i103', 'i104'])"),
    ):
        attach_semantic_ids(index, tok, many)
    users = drop_rows(sem_inputs.users, {"u3"})
    with pytest.raises(InputError, match=re.escape("1 of 100 user ids have no row in t.npy (first: ['u3'])")):
        attach_semantic_ids(index, tok, sem_inputs.items, users=users)
    # a failure in the users step leaves the index untouched (items were valid): nothing half-attached
    assert index.semantic_items is None and index.semantic_users is None and "semantic_ids" not in index.manifest


def test_attach_dimension_mismatch(codebooks, recsys, sem_inputs, tok, embed):
    index = fresh_index(codebooks, recsys)
    narrow = embed(sem_inputs.xi[:, :23], "i", "narrow.npy")
    with pytest.raises(DimensionMismatchError, match=r"narrow\.npy: item dimension \(23\) .* input dimension \(24\)"):
        attach_semantic_ids(index, tok, narrow)
    wide = embed(np.zeros((100, 32), np.float32), "u", "wide.npy")
    with pytest.raises(DimensionMismatchError, match=r"wide\.npy: user dimension \(32\)"):
        attach_semantic_ids(index, tok, sem_inputs.items, users=wide)
    assert index.semantic_items is None and "semantic_ids" not in index.manifest  # checked before any work


def test_attach_users_without_index_users(codebooks, recsys, sem_inputs, tok):
    index = fresh_index(codebooks, recsys, users=False)
    with pytest.raises(ConfigError, match=r"only in an index built with users \(--users\)"):
        attach_semantic_ids(index, tok, sem_inputs.items, users=sem_inputs.users)
    assert index.semantic_items is None and "semantic_ids" not in index.manifest


def test_save_load_round_trip(built):
    back = load_index(str(built.path))
    m = back.manifest
    assert m["format_version"] == 2
    assert m["semantic_ids"] == json.loads(json.dumps(built.section, default=json_default))
    assert m["semantic_ids"]["items"]["collisions_before_dedup"]["rows_in_collisions"] > 0
    for name in (
        "item_semantic_codes.npy",
        "item_semantic_suffix.npy",
        "user_semantic_codes.npy",
        "user_semantic_suffix.npy",
    ):
        assert name in m["files"]
    for a, b in ((built.index.semantic_items, back.semantic_items), (built.index.semantic_users, back.semantic_users)):
        assert (b.ids, b.kind, b.sizes) == (a.ids, a.kind, a.sizes)
        np.testing.assert_array_equal(b.codes, a.codes)
        np.testing.assert_array_equal(b.suffix, a.suffix)
        assert b.codes.dtype == np.uint8 and b.suffix.dtype == np.uint32
        assert b.tag == a.tag
        assert b.decode_cursor(a.encode_cursor([1], 3), [1]) == 3  # cursors survive a reload
        assert b.rows_in(0, len(b)).tolist() == a.rows_in(0, len(a)).tolist()


def test_index_without_semantic_ids(codebooks, recsys, tmp_path):
    path = tmp_path / "plain"
    manifest = save_index(fresh_index(codebooks, recsys), str(path))
    assert manifest["format_version"] == 2 and "semantic_ids" not in manifest
    assert not [f for f in manifest["files"] if "semantic" in f]
    back = load_index(str(path))
    assert back.semantic_items is None and back.semantic_users is None


def test_v1_fixture_loads_without_semantic_ids():
    index = load_index(str(FIXTURE_V1))
    assert index.manifest["format_version"] == 1 and "semantic_ids" not in index.manifest
    assert index.semantic_items is None and index.semantic_users is None
    assert len(index) == 64 and index.users is not None


@pytest.fixture
def copy(built, tmp_path) -> Path:
    path = tmp_path / "idx"
    shutil.copytree(built.path, path)
    return path


def test_corrupted_semantic_codes(copy):
    f = copy / "item_semantic_codes.npy"
    data = bytearray(f.read_bytes())
    data[-3] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(ArtifactCorrupt, match=r"item_semantic_codes\.npy: sha256 .* does not match"):
        load_index(str(copy))
    f.write_bytes(bytes(data[:-6]))
    for verify in (True, False):
        with pytest.raises(ArtifactCorrupt, match=r"item_semantic_codes\.npy: size .* \(truncated\?\)"):
            load_index(str(copy), verify=verify)


@pytest.mark.parametrize(
    ("name", "make", "match"),
    [
        (
            "item_semantic_codes.npy",
            lambda c, s: c[:-1],
            r"item_semantic_codes\.npy: shape \(1999, 3\) .*expected \(2000, 3\)",
        ),
        (
            "item_semantic_codes.npy",
            lambda c, s: c[:, :2],
            r"item_semantic_codes\.npy: shape \(2000, 2\) .*expected \(2000, 3\)",
        ),
        ("item_semantic_codes.npy", lambda c, s: c.astype(np.int64), r"item_semantic_codes\.npy: dtype int64"),
        ("item_semantic_codes.npy", lambda c, s: c.astype(np.float32), r"item_semantic_codes\.npy: dtype float32"),
        (
            "item_semantic_suffix.npy",
            lambda c, s: s[:-1],
            r"item_semantic_suffix\.npy: shape \(1999,\) .*expected \(2000,\) uint32",
        ),
        (
            "item_semantic_suffix.npy",
            lambda c, s: s.astype(np.int64),
            r"item_semantic_suffix\.npy: .*dtype int64, expected \(2000,\) uint32",
        ),
        (
            "user_semantic_codes.npy",
            lambda c, s: np.zeros((99, 3), np.uint8),
            r"user_semantic_codes\.npy: shape \(99, 3\) .*expected \(100, 3\)",
        ),
        (
            "item_semantic_codes.npy",
            lambda c, s: np.where(np.arange(2000)[:, None] == 9, 4, c).astype(np.uint8),
            r"item_semantic_codes\.npy: .*outside its level's codebook",
        ),
        ("item_semantic_suffix.npy", lambda c, s: np.zeros_like(s), r"item_semantic_codes\.npy: .*not unique"),
        (
            "item_semantic_codes.npy",
            lambda c, s: None,
            r"item_semantic_codes\.npy and item_semantic_suffix\.npy come together; one is missing",
        ),
        ("item_semantic_suffix.npy", lambda c, s: None, r"come together; one is missing"),
        (
            "user_semantic_codes.npy",
            lambda c, s: None,
            r"user_semantic_codes\.npy and user_semantic_suffix\.npy come together",
        ),
        (
            "user_semantic_suffix.npy",
            lambda c, s: None,
            r"user_semantic_codes\.npy and user_semantic_suffix\.npy come together",
        ),
    ],
)
def test_semantic_files_rewritten_consistently(copy, tmp_path, name, make, match):
    codes = np.load(copy / "item_semantic_codes.npy")
    suffix = np.load(copy / "item_semantic_suffix.npy")
    arr = make(codes, suffix)
    rewrite(copy, name, None if arr is None else npy_bytes(arr, tmp_path))
    with pytest.raises(ArtifactCorrupt, match=match):
        load_index(str(copy))


def test_unreadable_semantic_file(copy):
    rewrite(copy, "user_semantic_suffix.npy", b"definitely not npy")
    with pytest.raises(ArtifactCorrupt, match=r"user_semantic_suffix\.npy: unreadable"):
        load_index(str(copy))


def test_both_semantic_files_dropped_from_the_manifest_is_a_plain_index(copy):
    rewrite(copy, "user_semantic_codes.npy", None)
    rewrite(copy, "user_semantic_suffix.npy", None)
    back = load_index(str(copy))
    assert back.semantic_users is None and back.semantic_items is not None


@pytest.mark.parametrize(
    "section",
    [..., None, {}, {"codebook_sizes": []}, {"codebook_sizes": [4, 0, 5]}, {"codebook_sizes": [4, "3", 5]}],
)
def test_semantic_section_missing_or_invalid(copy, section):
    manifest = json.loads((copy / "manifest.json").read_text())
    if section is ...:
        del manifest["semantic_ids"]
    else:
        manifest["semantic_ids"] = section
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactCorrupt, match=r"manifest\.json: semantic_ids\.codebook_sizes missing or invalid"):
        load_index(str(copy))


def test_semantic_section_sizes_smaller_than_the_codes(copy):
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["semantic_ids"]["codebook_sizes"] = [4, 3, 2]  # codes of level 2 go up to 4
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactCorrupt, match=r"item_semantic_codes\.npy: .*outside its level's codebook"):
        load_index(str(copy))


def test_user_semantic_ids_without_users(copy):
    rewrite(copy, "user_ids.txt", None)
    rewrite(copy, "user_vectors.npy", None)
    with pytest.raises(ArtifactCorrupt, match=r"user_semantic_codes\.npy: user semantic ids without users"):
        load_index(str(copy))
