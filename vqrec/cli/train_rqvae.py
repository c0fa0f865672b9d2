"""``vqrec train rqvae``: train an RQ-VAE / CoST semantic-ID tokenizer (torch, imported inside the command)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from .common import ConfigFile, Force, OutDir, Quiet, Seed, SetOverrides, fail, refuse_existing, summary


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


def rqvae(
    embeddings: Annotated[
        str, typer.Option("--embeddings", "-e", help="Embeddings to tokenize: .npy (+ ids file) or .npz.")
    ],
    out: OutDir,
    ids: Annotated[str | None, typer.Option(help="Ids file for a .npy (one id per line).")] = None,
    loss: Annotated[
        Loss | None, typer.Option(help="mse (RQ-VAE / TIGER), contrastive (CoST) or both. Default mse.")
    ] = None,
    levels: Annotated[int | None, typer.Option(help="Residual levels L (codes per semantic id). Default 3.")] = None,
    codebook_size: Annotated[int | None, typer.Option(help="Codes per level K. Default 256.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs. Default 200.")] = None,
    seed: Seed = None,
    config: ConfigFile = None,
    set_: SetOverrides = None,
    resume: Annotated[
        str | None,
        typer.Option(
            help="Continue from a tokenizer artifact (its checkpoint.pt) up to --epochs; its config is the base."
        ),
    ] = None,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Train an RQ-VAE (loss mse, as TIGER) or CoST (loss contrastive) tokenizer and write it, with its
    config, checkpoint and quality report, as a tokenizer artifact for `vqrec build --semantic-ids`.

    Settings: built-in defaults (or the resumed checkpoint's config) < --config < --set < explicit flags.
    """
    from vqrec.index.embeddings import load_embeddings
    from vqrec.index.errors import VqrecError

    try:
        from vqrec.trainers.configfile import load_settings
        from vqrec.trainers.learned.rqvae import RQVAEConfig, read_checkpoint, train_rqvae

        refuse_existing(out, force)
        base = None
        if resume:
            ck = read_checkpoint(resume)
            base = {**ck["config"], "hidden": tuple(ck["config"]["hidden"])}
        cfg = load_settings(
            RQVAEConfig,
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
        raise fail(e) from None
    rep = tok.report
    q = rep["quality"]
    nb = q["neighbourhood"]
    for line in collapse_warnings(q["levels"]):
        typer.echo(line, err=True)
    summary(
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
