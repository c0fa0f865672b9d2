"""The root ``vqrec`` app: the ``-v`` option, and every command group mounted in one place.

    vqrec train {pq,opq,rq}  embeddings -> codebook artifact                       (train.py)
    vqrec train rqvae        embeddings -> semantic-ID tokenizer (RQ-VAE / CoST)    (train_rqvae.py)
    vqrec train {cove,bpr}   interaction log -> user and item embeddings            (train_cove.py)
    vqrec embed              item titles -> content embeddings (MiniLM, offline)     (embed.py)
    vqrec build / eval       codebooks + embeddings -> index artifact; its recall   (index.py)
    vqrec publish / versions / activate / rollback / prune / verify
                             the versioned index store                              (store.py)
    vqrec rebuild            new embeddings -> (re)train -> build -> gate -> publish -> flip alias -> notify
                                                                                     (rebuild.py)
    vqrec serve / demo       serve an index root over REST; a demo index, served    (serve.py)

Each group is a Typer app of its own; the groups without a name add their commands at the top level.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from . import embed, index, rebuild, serve, store, train
from .common import new_app, setup_logging

app = new_app(
    name="vqrec",
    help="Vector-quantization retrieval for recommender embeddings: train codebooks, build a compressed "
    "index, evaluate it, serve top-k over REST.",
    no_args_is_help=True,
)


@app.callback()
def _main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log progress details (INFO). `serve` logs at its --log-level.")
    ] = False,
) -> None:
    setup_logging(verbose)


app.add_typer(train.app, name="train")
for _group in (embed, store, rebuild, index, serve):
    app.add_typer(_group.app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)
    except ModuleNotFoundError as e:  # the serving image installs vqrec without its trainers (setup.py)
        if not (e.name or "").startswith("vqrec.trainers"):
            raise
        typer.echo(
            f"error: this vqrec is installed without its trainers ({e.name} is missing; the serving image has "
            "none): run this command where vqrec is fully installed.",
            err=True,
        )
        sys.exit(1)
