"""The index manifest's schema, checked at load before any other file is read (plain Python, no pydantic).

``validate_index_manifest(path, manifest)`` checks every field that ``load_index``, the self-test
(index/probes.py) and the service (``GET /v1/indexes``, ``GET /v1/indexes/{name}``, ``/metrics``) read:
its type, range and allowed values, and the fields that must agree with each other. A fault raises
``ArtifactCorrupt`` naming ``manifest.json`` and the field (``method.nbits: 9 is not in 1..8``). Unknown
fields are allowed (a newer build may add some); ``null`` is not an object.

    field              required  checked
    index_version      yes       non-empty string
    created_at                   string or null
    files              yes       {plain file name: {"sha256": 64 hex digits, "bytes": int >= 0}}
    method             yes       kind in KINDS, metric in METRICS, d >= 1, M >= 1, nbits in 1..8, d % M == 0
                                 for pq/opq, ksub == 2**nbits, beam_size >= 1, norm_explicit bool, score_aware in [0, 1)
                                 (0 for rq), code_size int
    metric                       in METRICS and == method.metric
    similar_metric               "l2" for l2, else "cosine"
    d                            == method.d
    n_items            yes       int >= 1
    n_users                      int >= 0
    lut_path                     "pairs" | "decode"
    bytes                        object; its counts and ratios finite numbers >= 0 (the service casts them)
    evaluation, train_report, trainer_config, source
                                 objects; evaluation's recall sections objects or null, their recall@k
                                 numbers or null
    semantic_ids                 object or null; codebook_sizes a non-empty list of ints >= 1 (required when
                                 semantic-id files are listed); tokenizer, items, users objects or null
    partition                    object or null: nlist int >= 2, kind sphere|euclid, nprobe in 1..nlist,
                                 list_sizes object (required with the partition files)
    search                       object or null (the build's tuning): nprobe int >= 1, rerank in 0..MAX_RERANK
                                 (the default re-rank, used only with item vectors), curve a list
    probes                       object or null: k in 1..MAX_K; similar / recommend / search / rerank lists of
                                 {item_id | user_id | vector (d finite numbers), ids: [str], scores: [number]}
                                 (rerank entries also {query: similar|recommend|search, rerank: int})

Integers are JSON integers (not ``true``, not ``6.0``). The checks that need the arrays (``n_items`` and
``n_users`` against the files, ``method.code_size`` against the codebooks, ``norm_explicit`` against
``item_scale.npy``) are in ``load_index``, which also verifies the manifest's own checksum last (see
index/artifact_io.py ``verify_manifest_checksum``), after the checks that can name a more precise fault.
"""

from __future__ import annotations

import math
import os
from typing import Any, NoReturn

from .artifact_io import MANIFEST
from .codebooks import KINDS, METRICS
from .errors import ArtifactCorrupt
from .index import MAX_K
from .partition import PARTITION_KINDS

LUT_PATHS = ("pairs", "decode")
PROBE_KINDS = {"similar": "item_id", "recommend": "user_id", "search": "vector"}
MAX_RERANK = 10 * MAX_K
_BYTES_FIELDS = (
    "code_bytes_per_item",
    "index_bytes_per_item",
    "float32_bytes_per_item",
    "compression_ratio",
    "pair_tables",
    "users",
    "item_vectors",
    "total",
)
RECALL_SECTIONS = ("user_to_item", "user_to_item_rerank", "item_to_item")
_SEMANTIC_FILES = (
    "item_semantic_codes.npy",
    "item_semantic_suffix.npy",
    "user_semantic_codes.npy",
    "user_semantic_suffix.npy",
)
_HEX = frozenset("0123456789abcdef")


class _Check:
    """Helpers that raise ArtifactCorrupt("<dir>/manifest.json: <field>: <what>")."""

    def __init__(self, path: str) -> None:
        self.mpath = os.path.join(path, MANIFEST)

    def fail(self, field: str, what: str) -> NoReturn:
        raise ArtifactCorrupt(f"{self.mpath}: {field}: {what}.")

    def raw(self, text: str) -> NoReturn:
        raise ArtifactCorrupt(f"{self.mpath}: {text}.")

    def required(self, m: dict[str, Any], key: str, field: str | None = None) -> Any:
        if key not in m:
            self.fail(field or key, "missing")
        return m[key]

    def obj(self, value: Any, field: str, *, null: bool = False) -> dict[str, Any] | None:
        if value is None and null:
            return None
        if not isinstance(value, dict):
            self.fail(field, f"expected an object{' or null' if null else ''}, got {_show(value)}")
        return value

    def integer(self, value: Any, field: str, lo: int | None = None, hi: int | None = None) -> int:
        if not _is_int(value):
            self.fail(field, f"expected an integer, got {_show(value)}")
        if hi is not None and lo is not None:
            if not lo <= value <= hi:
                self.fail(field, f"{value} is not in {lo}..{hi}")
        elif lo is not None and value < lo:
            self.fail(field, f"{value} is not >= {lo}")
        return int(value)

    def string(self, value: Any, field: str, *, null: bool = False, nonempty: bool = False) -> str | None:
        if value is None and null:
            return None
        if not isinstance(value, str) or (nonempty and not value):
            what = "a non-empty string" if nonempty else "a string"
            self.fail(field, f"expected {what}{' or null' if null else ''}, got {_show(value)}")
        return value

    def choice(self, value: Any, field: str, allowed: tuple[str, ...]) -> str:
        if not isinstance(value, str) or value not in allowed:
            self.fail(field, f"{value!r} is not one of {list(allowed)}")
        return value

    def number(self, value: Any, field: str, *, finite: bool = True, null: bool = False) -> None:
        if value is None and null:
            return
        if not _is_number(value) or (finite and not math.isfinite(value)):
            what = "a finite number" if finite else "a number"
            self.fail(field, f"expected {what}{' or null' if null else ''}, got {_show(value)}")

    def str_list(self, value: Any, field: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(field, f"expected a list of strings, got {_show(value)}")
        return value


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _show(v: Any) -> str:
    text = repr(v)
    return f"{type(v).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def validate_index_manifest(path: str, m: dict[str, Any]) -> None:
    """Check the manifest ``m`` of the index artifact at ``path`` (see the module docstring); raises
    ArtifactCorrupt naming manifest.json and the field. ``artifact``, ``format_version`` and the presence
    of ``files`` were checked by ``read_manifest``."""
    c = _Check(path)
    c.string(c.required(m, "index_version"), "index_version", nonempty=True)
    if "created_at" in m:
        c.string(m["created_at"], "created_at", null=True)
    _files(c, m["files"])
    method = c.obj(c.required(m, "method"), "method")
    assert method is not None
    d = _method(c, method)
    metric = method["metric"]
    if "metric" in m:
        c.choice(m["metric"], "metric", METRICS)
        if m["metric"] != metric:
            c.fail("metric", f"{m['metric']!r} does not match method.metric {metric!r}")
    if "similar_metric" in m:
        want = "l2" if metric == "l2" else "cosine"
        if m["similar_metric"] != want:
            c.fail("similar_metric", f"{m['similar_metric']!r}, expected {want!r} for metric {metric!r}")
    if "d" in m:
        c.integer(m["d"], "d")
        if m["d"] != d:
            c.fail("d", f"{m['d']} does not match method.d {d}")
    c.integer(c.required(m, "n_items"), "n_items", lo=1)
    if "n_users" in m:
        c.integer(m["n_users"], "n_users", lo=0)
    if "lut_path" in m:
        c.choice(m["lut_path"], "lut_path", LUT_PATHS)
    if "bytes" in m:
        nbytes = c.obj(m["bytes"], "bytes")
        assert nbytes is not None
        for key in _BYTES_FIELDS:
            if key in nbytes:
                c.number(nbytes[key], f"bytes.{key}")
                if nbytes[key] < 0:
                    c.fail(f"bytes.{key}", f"{nbytes[key]} is negative")
    for key in ("train_report", "trainer_config", "source"):
        if key in m:
            c.obj(m[key], key)
    if "evaluation" in m:
        _evaluation(c, m["evaluation"])
    _semantic(c, m.get("semantic_ids"), has_files=any(f in m["files"] for f in _SEMANTIC_FILES))
    if "partition" in m:
        _partition(c, m["partition"])
    if "search" in m:
        _search(c, m["search"])
    if "probes" in m:
        _probes(c, m["probes"], d)


def _files(c: _Check, files: dict[str, Any]) -> None:
    for name, meta in files.items():
        if not name or name in (".", "..", MANIFEST) or "/" in name or "\\" in name or "\0" in name:
            c.fail("files", f"{name!r} is not a plain file name of the artifact directory")
        entry = c.obj(meta, f"files.{name}")
        assert entry is not None
        sha = entry.get("sha256")
        if not isinstance(sha, str) or len(sha) != 64 or not set(sha) <= _HEX:
            c.fail(f"files.{name}.sha256", f"expected 64 lowercase hex digits, got {_show(sha)}")
        c.integer(entry.get("bytes"), f"files.{name}.bytes", lo=0)


def _method(c: _Check, method: dict[str, Any]) -> int:
    """Check the codebook header; returns d."""
    kind = c.choice(c.required(method, "kind", "method.kind"), "method.kind", KINDS)
    c.choice(c.required(method, "metric", "method.metric"), "method.metric", METRICS)
    d = c.integer(c.required(method, "d", "method.d"), "method.d", lo=1)
    M = c.integer(c.required(method, "M", "method.M"), "method.M", lo=1)
    nbits = c.integer(c.required(method, "nbits", "method.nbits"), "method.nbits", lo=1, hi=8)
    if kind != "rq" and d % M:
        c.fail("method.d", f"{d} is not divisible by method.M ({M}), which {kind} needs")
    if "ksub" in method:
        c.integer(method["ksub"], "method.ksub")
        if method["ksub"] != 1 << nbits:
            c.fail("method.ksub", f"{method['ksub']}, expected 2**nbits = {1 << nbits}")
    if "beam_size" in method:
        c.integer(method["beam_size"], "method.beam_size", lo=1)
    if "norm_explicit" in method and not isinstance(method["norm_explicit"], bool):
        c.fail("method.norm_explicit", f"expected true or false, got {_show(method['norm_explicit'])}")
    if "score_aware" in method:
        c.number(method["score_aware"], "method.score_aware")
        t = method["score_aware"]
        if not 0 <= t < 1 or (t and kind == "rq"):
            c.fail("method.score_aware", f"{_show(t)}, expected a threshold in [0, 1) (0 for rq)")
    if "code_size" in method:  # == M is checked against the codebooks, in load_index
        c.integer(method["code_size"], "method.code_size", lo=1)
    return d


def _evaluation(c: _Check, value: Any) -> None:
    ev = c.obj(value, "evaluation")
    assert ev is not None
    for section in RECALL_SECTIONS:
        sec = c.obj(ev.get(section), f"evaluation.{section}", null=True)
        for key, v in (sec or {}).items():
            if key.startswith("recall@"):
                c.number(v, f"evaluation.{section}.{key}", finite=False, null=True)  # NaN: no valid query


def _semantic(c: _Check, value: Any, *, has_files: bool) -> None:
    sizes_bad = "semantic_ids.codebook_sizes missing or invalid"
    if value is None:
        if has_files:
            c.raw(sizes_bad)
        return
    sem = c.obj(value, "semantic_ids", null=True)
    assert sem is not None
    if "codebook_sizes" in sem or has_files:
        sizes = sem.get("codebook_sizes")
        if not isinstance(sizes, list) or not sizes or not all(_is_int(k) and k > 0 for k in sizes):
            c.raw(sizes_bad)
    if "levels" in sem:
        c.integer(sem["levels"], "semantic_ids.levels", lo=1)
    for key in ("tokenizer", "items", "users"):
        c.obj(sem.get(key), f"semantic_ids.{key}", null=True)


def _partition(c: _Check, value: Any) -> None:
    part = c.obj(value, "partition", null=True)
    if part is None:
        return
    nlist = c.integer(c.required(part, "nlist", "partition.nlist"), "partition.nlist", lo=2)
    c.choice(c.required(part, "kind", "partition.kind"), "partition.kind", PARTITION_KINDS)
    c.integer(c.required(part, "nprobe", "partition.nprobe"), "partition.nprobe", lo=1, hi=nlist)
    if "list_sizes" in part:
        c.obj(part["list_sizes"], "partition.list_sizes")


def _search(c: _Check, value: Any) -> None:
    search = c.obj(value, "search", null=True)
    if search is None:
        return
    c.integer(c.required(search, "nprobe", "search.nprobe"), "search.nprobe", lo=1)
    c.integer(c.required(search, "rerank", "search.rerank"), "search.rerank", lo=0, hi=MAX_RERANK)
    if "curve" in search and not isinstance(search["curve"], list):
        c.fail("search.curve", f"expected a list, got {_show(search['curve'])}")


def _probes(c: _Check, value: Any, d: int) -> None:
    probes = c.obj(value, "probes", null=True)
    if probes is None:
        return
    if "k" in probes:
        c.integer(probes["k"], "probes.k", lo=1, hi=MAX_K)
    for kind in (*PROBE_KINDS, "rerank"):
        entries = probes.get(kind)
        if entries is None:
            continue
        if not isinstance(entries, list):
            c.fail(f"probes.{kind}", f"expected a list, got {_show(entries)}")
        for i, p in enumerate(entries):
            field = f"probes.{kind}[{i}]"
            entry = c.obj(p, field)
            assert entry is not None
            query = kind
            if kind == "rerank":
                query = c.choice(entry.get("query"), f"{field}.query", tuple(PROBE_KINDS))
                c.integer(entry.get("rerank"), f"{field}.rerank", lo=1, hi=MAX_RERANK)
            key = PROBE_KINDS[query]
            if key == "vector":
                vec = entry.get("vector")
                if not isinstance(vec, list) or len(vec) != d:
                    c.fail(f"{field}.vector", f"expected a list of {d} numbers, got {_show(vec)}")
                for v in vec:
                    c.number(v, f"{field}.vector")
            else:
                c.string(entry.get(key), f"{field}.{key}")
            ids = c.str_list(entry.get("ids"), f"{field}.ids")
            scores = entry.get("scores")
            if not isinstance(scores, list) or len(scores) != len(ids):
                c.fail(f"{field}.scores", f"expected a list of {len(ids)} numbers, got {_show(scores)}")
            for s in scores:
                c.number(s, f"{field}.scores", finite=False)
