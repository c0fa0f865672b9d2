"""`vqrec` commands for the cove step (torch is imported inside the command, never at CLI start).

    vqrec train cove   interaction log -> BPR-MF + cascaded VQ user/item embeddings, codes (a category tree)
    vqrec train bpr    the plain BPR-MF baseline: the same trainer with quantize=false

The trainer itself is vqrec.trainers.learned.cove; ``vqrec.cli.train`` adds both commands to its group.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from .common import ConfigFile, Force, OutDir, Quiet, fail, refuse_existing, summary

_DOC = {
    "cove": "COVE: BPR matrix factorization with cascaded vector quantizers on user and item embeddings "
    "(levels fine -> coarse, e.g. 100,10), trained end to end from random initialisation. Writes user and "
    "item embeddings (users.npy, items.npy + ids; `vqrec build` indexes them directly), each entity's "
    "cascaded codes (a learned category tree) and a manifest with the config and the training report.",
    "bpr": "Plain BPR matrix factorization: the COVE trainer with quantize=false (the baseline for the same "
    "seed and budget). Writes users.npy, items.npy + ids and a manifest with the config and report.",
}
_PRECEDENCE = (
    "\n\nSettings come from, in increasing precedence: built-in defaults, --config, --set, and --seed "
    "(keys of CoveConfig in trainers/learned/cove/config.py, e.g. dim, levels, alpha, omega, beta, epochs, lr, reg, "
    "negatives). With --test, the report holds leave-one-out HR@10 and NDCG@10 (training items excluded)."
)


def command(kind: str):  # type: ignore[no-untyped-def]
    def command(
        interactions: Annotated[
            str, typer.Option("--interactions", "-i", help="Training log: `user TAB item` lines (UTF-8).")
        ],
        out: OutDir,
        test: Annotated[
            str | None,
            typer.Option(
                help="Held-out `user TAB item` lines (one per user): leave-one-out HR@10/NDCG@10 in the report."
            ),
        ] = None,
        config: ConfigFile = None,
        set_: Annotated[
            list[str] | None,
            typer.Option("--set", help="Override one config key: --set epochs=20, --set levels=100,10 (repeatable)."),
        ] = None,
        seed: Annotated[int | None, typer.Option(help="Random seed (initialisation, data order, negatives).")] = None,
        force: Force = False,
        quiet: Quiet = False,
    ) -> None:
        from vqrec.index.errors import VqrecError

        try:
            explicit = {"seed": seed}
            if kind == "bpr":
                explicit["quantize"] = False
            from vqrec.trainers.configfile import load_settings
            from vqrec.trainers.learned.cove import CoveConfig, read_heldout, read_interactions, train_cove

            cfg = load_settings(CoveConfig, config, set_, **explicit)
            refuse_existing(out, force)
            data = read_interactions(interactions)
            heldout = read_heldout(test) if test else None
            result = train_cove(data, cfg, heldout=heldout, show_progress=not quiet)
            if test:
                result.source["heldout"] = test
            result.save(out, overwrite=force)
        except (VqrecError, OSError) as e:
            raise fail(e) from None
        rep = result.report
        rows = {
            "model": f"{cfg.kind}: dim={cfg.dim}"
            + (f" levels={','.join(map(str, cfg.levels))} alpha={cfg.alpha} omega={cfg.omega}" if cfg.quantize else "")
            + f" epochs={cfg.epochs} seed={cfg.seed}",
            "data": f"{rep['n_users']} users, {rep['n_items']} items, {rep['n_interactions']} interactions"
            + (f" ({rep['duplicates_dropped']} duplicates dropped)" if rep["duplicates_dropped"] else ""),
            "trained in": f"{rep['train_seconds']}s ({rep['torch_threads']} torch thread(s))",
            "final losses": ", ".join(f"{k} {v:.4f}" for k, v in rep["final_losses"].items()),
        }
        if cfg.quantize:
            for side, q in rep["quantization"].items():
                rows[f"{side} codes"] = "; ".join(
                    f"L{lvl} {lv['used']}/{lv['codes']} used, perplexity {lv['perplexity']}"
                    for lvl, lv in enumerate(q["levels"])
                ) + (", a tree" if q["tree"]["is_tree"] else ", NOT a tree")
        if "eval" in rep:
            ev = rep["eval"]
            k = cfg.eval_k
            rows[f"HR@{k} / NDCG@{k}"] = (
                f"{ev[f'hr@{k}']:.4f} / {ev[f'ndcg@{k}']:.4f} "
                f"({ev['users']} users, seen items excluded, exact inner-product search)"
            )
        rows["next"] = (
            f"vqrec train rq -e {os.path.join(out, 'items.npy')} --queries {os.path.join(out, 'users.npy')} ..."
        )
        summary(f"{cfg.kind} embeddings written to {out}", rows)

    command.__doc__ = _DOC[kind] + _PRECEDENCE
    return command
