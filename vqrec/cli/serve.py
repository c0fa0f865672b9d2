"""``vqrec serve`` and ``vqrec demo``: serve an index root over REST, or make a demo index and serve it.

vqrec serve   serve every index under an index root over REST (vqrec.service; no trainer is imported)
vqrec demo    make recommender embeddings, build an index, serve it on localhost
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from .common import Host, Method, Port, Quiet, fail, new_app, summary

app = new_app()


@app.command()
def serve(
    index_root: Annotated[
        str,
        typer.Option(
            "--index-root", envvar="VQREC_INDEX_ROOT", help="Directory of named index artifacts (or one artifact)."
        ),
    ],
    host: Host = "127.0.0.1",
    port: Port = 8000,
    log_level: Annotated[
        str,
        typer.Option(
            envvar="VQREC_LOG_LEVEL",
            help="Log level of the service and uvicorn: critical, error, warning, info (one JSON access line per "
            "request), debug or trace.",
        ),
    ] = "info",
    workers: Annotated[
        int,
        typer.Option(
            envvar="VQREC_WORKERS",
            help="Server processes sharing the port (uvicorn workers); each loads every index. With more than one, "
            "a reload request reaches one worker and the others follow the alias poller (VQREC_POLL_SECONDS, "
            "5 s when unset), and /metrics counts per worker.",
        ),
    ] = 1,
) -> None:
    """Serve every index under --index-root over REST (docs at /docs). Other settings: VQREC_* env.
    Logs go to stderr at --log-level (the CLI's own WARNING setting and -v do not apply here)."""
    if not os.path.isdir(index_root):
        raise fail(FileNotFoundError(f"index root not found: {index_root}"))
    from pydantic import ValidationError

    from vqrec.service.main import configure_logging, run
    from vqrec.service.settings import Settings

    try:
        settings = Settings(index_root=index_root, host=host, port=port, log_level=log_level, workers=workers)
    except ValidationError as e:
        bad = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise fail(ValueError(f"invalid settings: {bad}")) from None
    # the service's handler and level replace the CLI's (WARNING, which would drop the INFO access lines)
    configure_logging(settings.log_level, force=True)
    run(settings)


@app.command()
def demo(
    out: Annotated[str, typer.Option("--out", "-o", help="Where the demo's embeddings and index go.")] = "vqrec-demo",
    movielens: Annotated[
        str | None, typer.Option(help="A MovieLens-100k directory (u.data) to factorize instead of synthetic data.")
    ] = None,
    method: Annotated[Method, typer.Option(help="Quantizer for the demo index.")] = Method.pq,
    M: Annotated[int, typer.Option("--M", "-M", help="Code bytes per item.")] = 16,
    host: Host = "127.0.0.1",
    port: Port = 8000,
    serve_: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve the index after building it.")] = True,
    quiet: Quiet = False,
) -> None:
    """Make recommender embeddings (matrix factorization of a seeded synthetic interaction log, or of
    MovieLens), train codebooks, build an index named "demo" under OUT/indexes and serve it."""
    from vqrec.index.artifact import save_index
    from vqrec.index.build import build_index
    from vqrec.index.embeddings import save_embeddings
    from vqrec.index.errors import VqrecError
    from vqrec.index.eval import evaluate_index
    from vqrec.trainers.config import TrainConfig
    from vqrec.trainers.demo_data import demo_embeddings
    from vqrec.trainers.quantizers import train as run_train

    try:
        items, users = demo_embeddings(movielens)
        os.makedirs(os.path.join(out, "data"), exist_ok=True)
        save_embeddings(os.path.join(out, "data", "items.npz"), items.ids, items.vectors)
        save_embeddings(os.path.join(out, "data", "users.npz"), users.ids, users.vectors)
        cfg = TrainConfig(method=method.value, M=M, beam_size=4)
        cfg.check_dim(items.d)
        cb = run_train(items, cfg, queries=users, show_progress=not quiet)
        cb.save(os.path.join(out, "codebooks"), overwrite=True)
        index = build_index(cb, items, users=users, item_vectors="float16", show_progress=not quiet)
        report = evaluate_index(index, items, users, nq=500)
        path = os.path.join(out, "indexes", "demo")
        save_index(index, path, overwrite=True, evaluation=report)
    except VqrecError as e:
        raise fail(e) from None
    summary(
        f"demo index written to {path}",
        {
            "data": f"{items.n} items, {users.n} users, d={items.d} ({items.source})",
            "index": f"{method.value} M={M}: {M} bytes/item vs {4 * items.d} float32",
            "user->item recall@10": report["user_to_item"]["recall@10"],
            "  with rerank": report.get("user_to_item_rerank", {}).get("recall@10"),
            "item->item recall@10": report["item_to_item"]["recall@10"],
        },
    )
    if serve_:
        typer.echo(
            f"serving on http://{host}:{port}  (try: curl -s -X POST http://{host}:{port}/v1/indexes/demo/"
            f'recommend -H \'content-type: application/json\' -d \'{{"user_id": "{users.ids[0]}", "k": 5}}\')'
        )
        serve(index_root=os.path.join(out, "indexes"), host=host, port=port, log_level="info")
