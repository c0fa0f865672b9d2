"""``vqrec train rqvae``: train an RQ-VAE / CoST semantic-ID tokenizer (torch, imported inside the command)."""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Annotated

import typer


class Loss(StrEnum):
    mse = "mse"
    contrastive = "contrastive"
    both = "both"


def collapse_warnings(levels: list[dict], min_utilization: float = 0.5) -> list[str]:  # type: ignore[type-arg]
    """One warning per level of a tokenizer report that uses fewer than ``min_utilization`` of its codes."""
    return [
        f"warning: level {lv['level']} uses only {lv['used']} of {lv['codebook_size']} codes: the encoder "
        "collapsed (seen with the contrastive loss at temperature 0.5); try the defaults or another --seed."
        for lv in levels
        if lv["utilization"] < min_utilization
    ]


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add ``train rqvae`` to the ``vqrec`` app."""
    train_app.command("rqvae")(rqvae)


def rqvae(
    embeddings: Annotated[
        str, typer.Option("--embeddings", "-e", help="Embeddings to tokenize: .npy (+ ids file) or .npz.")
    ],
    out: Annotated[
        str, typer.Option("--out", "-o", help="Tokenizer artifact directory (must not exist unless --force).")
    ],
    ids: Annotated[str | None, typer.Option(help="Ids file for a .npy (one id per line).")] = None,
    loss: Annotated[
        Loss | None, typer.Option(help="mse (RQ-VAE / TIGER), contrastive (CoST) or both. Default mse.")
    ] = None,
    levels: Annotated[int | None, typer.Option(help="Residual levels L (codes per semantic id). Default 3.")] = None,
    codebook_size: Annotated[int | None, typer.Option(help="Codes per level K. Default 256.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs. Default 200.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed. Default 1234.")] = None,
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="JSON or TOML file of settings (trainers/learned/rqvae.py).")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override one setting: --set temperature=0.2 (repeatable).")
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            help="Continue from a tokenizer artifact (its checkpoint.pt) up to --epochs; its config is the base."
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing artifact at --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Train an RQ-VAE (loss mse, as TIGER) or CoST (loss contrastive) tokenizer and write it, with its
    config, checkpoint and quality report, as a tokenizer artifact for `vqrec build --semantic-ids`.

    Settings: built-in defaults (or the resumed checkpoint's config) < --config < --set < explicit flags.
    """
    from index.embeddings import load_embeddings
    from index.errors import VqrecError

    from .cli import _fail, _summary

    try:
        from .learned.rqvae import load_rqvae_config, read_checkpoint, train_rqvae

        if os.path.exists(out) and not force:
            raise VqrecError(f"{out} already exists; choose another --out or pass --force.")
        base = None
        if resume:
            ck = read_checkpoint(resume)
            base = {**ck["config"], "hidden": tuple(ck["config"]["hidden"])}
        cfg = load_rqvae_config(
            config,
            set_,
            base=base,
            loss=loss.value if loss else None,
            levels=levels,
            codebook_size=codebook_size,
            epochs=epochs,
            seed=seed,
        )
        emb = load_embeddings(embeddings, ids)
        tok, ckpt = train_rqvae(emb, cfg, resume=resume, show_progress=not quiet)
        tok.save(out, overwrite=force, extra_files={"checkpoint.pt": ckpt})
    except VqrecError as e:
        raise _fail(e) from None
    rep = tok.report
    q = rep["quality"]
    nb = q["neighbourhood"]
    for line in collapse_warnings(q["levels"]):
        typer.echo(line, err=True)
    _summary(
        f"tokenizer written to {out}",
        {
            "model": f"{cfg.loss} loss, {cfg.levels} levels x {cfg.codebook_size} codes, latent {cfg.latent_dim}, "
            f"input {emb.n} x {emb.d}",
            "trained": f"{rep['epochs']} epochs ({rep['steps']} steps) in {rep['train_seconds']}s",
            "codes used per level": ", ".join(f"{lv['used']}/{lv['codebook_size']}" for lv in q["levels"]),
            "perplexity per level": ", ".join(f"{lv['perplexity']:.1f}" for lv in q["levels"]),
            "collisions before dedup": f"{q['collisions_before_dedup']['collision_rate']:.4f} of items "
            f"(max suffix {q['max_suffix']}); after dedup: {q['collisions_after_dedup']}",
            "reconstruction": f"relative mse {q['reconstruction']['relative_mse']:.4f}",
            f"top-{nb.get('k', 10)} neighbours sharing codes": ", ".join(
                f"{t} code{'s' if t > 1 else ''} {nb[f'share@{t}']:.3f} (chance {nb[f'chance@{t}']:.3f})"
                for t in range(1, cfg.levels + 1)
                if f"share@{t}" in nb
            ),
        },
    )
