"""``vqrec train``: codebooks for the ADC index and the learned trainers.

vqrec train {pq,opq,rq}  embeddings -> codebook artifact (faiss)
vqrec train auto         the same, the code family chosen by its recall on held-out queries
vqrec train rqvae        embeddings -> semantic-ID tokenizer (RQ-VAE / CoST; torch)
vqrec train {cove,bpr}   interaction log -> user and item embeddings (+ cascaded codes; torch)
"""

from __future__ import annotations

from typing import Annotated

import typer

from . import train_cove, train_rqvae
from .common import (
    ConfigFile,
    Force,
    Method,
    Metric,
    OutDir,
    Quiet,
    Seed,
    SetOverrides,
    fail,
    new_app,
    refuse_existing,
    summary,
)

app = new_app(
    help="Train a quantizer or a learned model. pq/opq/rq write codebooks for the ADC index (faiss); rqvae writes "
    "a semantic-ID tokenizer (RQ-VAE / CoST); cove and bpr train recommender embeddings from an interaction log. "
    "rqvae, cove and bpr need the 'train' extra (torch).",
    no_args_is_help=True,
)

_FAISS_HELP = {
    Method.pq: "Product quantization: M sub-vectors, 2**nbits codewords each (faiss k-means).",
    Method.opq: "OPQ: a learned rotation, then product quantization (faiss OPQMatrix + k-means).",
    Method.rq: "Residual quantization: M stages, each quantizing the previous residual (faiss k-means, beam-search encoding).",
    Method.auto: "Trains every candidate (pq, opq, rq; norm-explicit and joint codes) and keeps the one that finds "
    "the most exact top-10 neighbours of held-out queries (the cheapest within auto_tolerance of the best).",
}


def _faiss_trainer(method: Method):  # type: ignore[no-untyped-def]
    def command(
        embeddings: Annotated[
            str, typer.Option("--embeddings", "-e", help="Item embeddings: .npy (+ ids file) or .npz (ids, vectors).")
        ],
        out: OutDir,
        ids: Annotated[
            str | None,
            typer.Option(
                help="Ids file for a .npy (one id per line). Default: <stem>_ids.txt or item_ids.txt beside it."
            ),
        ] = None,
        queries: Annotated[
            str | None,
            typer.Option(
                help="Query embeddings (e.g. users, .npy or .npz) for the report's held-out recall. Default: a sample of items."
            ),
        ] = None,
        config: ConfigFile = None,
        set_: SetOverrides = None,
        M: Annotated[
            int | None,
            typer.Option("--M", "-M", help="Sub-quantizers (pq/opq) or stages (rq) = code bytes per item. Default 16."),
        ] = None,
        nbits: Annotated[int | None, typer.Option(help="Bits per code, 1..8 (2**nbits codewords). Default 8.")] = None,
        metric: Annotated[
            Metric | None, typer.Option(help="ip (maximum inner product), cosine, or l2. Default ip.")
        ] = None,
        seed: Seed = None,
        force: Force = False,
        quiet: Quiet = False,
    ) -> None:
        from vqrec.index.embeddings import load_embeddings
        from vqrec.index.errors import VqrecError
        from vqrec.trainers.config import TrainConfig
        from vqrec.trainers.configfile import load_settings
        from vqrec.trainers.quantizers import train as run_train

        try:
            cfg = load_settings(
                TrainConfig,
                config,
                set_,
                method=method.value,
                M=M,
                nbits=nbits,
                metric=metric.value if metric else None,
                seed=seed,
            )
            refuse_existing(out, force)
            emb = load_embeddings(embeddings, ids)
            q = load_embeddings(queries) if queries else None
            cb = run_train(emb, cfg, queries=q, show_progress=not quiet)
            cb.save(out, overwrite=force)
        except VqrecError as e:
            raise fail(e) from None
        rep = cb.report
        auto = rep.get("auto")
        if auto:
            typer.echo(
                f"auto: {len(auto['candidates'])} candidates on {auto['database']} items, recall@10 of "
                f"{auto['queries']} held-out queries ({auto['queries_from']}):"
            )
            for r in auto["candidates"]:
                mark = "*" if r["candidate"] == auto["chosen"] else " "
                typer.echo(
                    f" {mark} {r['candidate']:<16} recall@10 {r['recall@10']:.4f}  recall@100 {r['recall@100']:.4f}  "
                    f"relative mse {r['relative_mse']:.4f}  {r['train_seconds']:.1f}s"
                )
            typer.echo(f"auto: chose {auto['chosen']}: {auto['reason']}")
        summary(
            f"codebooks written to {out}",
            {
                "method": f"{cb.kind} M={cfg.M} nbits={cfg.nbits} metric={cfg.metric} norm_explicit={cb.norm_explicit}",
                "trained on": f"{rep['n_train']} of {rep['n_items']} vectors in {rep['train_seconds']}s",
                "relative mse": f"{rep['relative_mse']:.4f}",
                "recall@10/@100": f"{rep['eval']['recall@10']:.4f} / {rep['eval']['recall@100']:.4f} "
                f"({rep['eval']['queries']} queries from {rep['eval']['queries_from']})",
                "codebook usage": f"{rep['usage']['utilization_mean']:.3f} utilization, "
                f"perplexity {rep['usage']['perplexity_mean']:.1f} of {cb.ksub}",
            },
        )

    command.__doc__ = (
        f"{_FAISS_HELP[method]} Trains on item embeddings and writes a codebook artifact with its report.\n\n"
        "Settings come from, in increasing precedence: built-in defaults, --config, --set, and the explicit "
        "flags (--M, --nbits, --metric, --seed); the keys are TrainConfig's (trainers/config.py, e.g. "
        "beam_size, niter, norm)."
    )
    return command


for _m in Method:
    app.command(_m.value)(_faiss_trainer(_m))
app.command("rqvae")(train_rqvae.rqvae)
app.command("cove")(train_cove.command("cove"))
app.command("bpr")(train_cove.command("bpr"))
