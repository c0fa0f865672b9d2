"""Item texts to encode: a MovieLens ``u.item`` (title, optionally + genres) or an ``item_id TAB text`` file.

Errors (missing or malformed input, unknown ids, ...) are VqrecError subclasses raised before anything is
encoded or written.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from vqrec.index.embeddings import check_ids, read_ids
from vqrec.index.errors import ConfigError, InputError

FORMATS = ("movielens", "tsv")
TEMPLATES = ("title", "title+genres")

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
