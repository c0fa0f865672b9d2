"""``vqrec``: the one command line in front of every step.

    vqrec train {pq,opq,rq}  embeddings -> codebook artifact
    vqrec train rqvae        embeddings -> semantic-ID tokenizer (RQ-VAE / CoST; torch)
    vqrec train {cove,bpr}   interaction log -> user and item embeddings (+ cascaded codes; torch)
    vqrec embed              item titles -> content embeddings (MiniLM; torch, offline)
    vqrec publish / versions / activate / rollback / prune
                             the versioned index store: {root}/{name}/versions/{version} + ACTIVE alias
    vqrec rebuild            new embeddings -> (re)train -> build -> gate -> publish -> flip alias -> notify
    vqrec build              codebook artifact + embeddings -> index artifact (with its evaluation)
    vqrec eval               an index artifact against exact search (and leave-one-out HR@k)
    vqrec serve              serve every index under an index root over REST
    vqrec demo               make recommender embeddings, build an index, serve it on localhost

Each step is imported lazily, so ``vqrec serve`` never loads the trainers. Errors print one line
``error: ...`` to stderr and exit 1; usage errors exit 2.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from enum import StrEnum
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="vqrec",
    help="Vector-quantization retrieval for recommender embeddings: train codebooks, build a compressed "
    "index, evaluate it, serve top-k over REST.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
logger = logging.getLogger("vqrec")


class Method(StrEnum):
    pq = "pq"
    opq = "opq"
    rq = "rq"


class Metric(StrEnum):
    ip = "ip"
    cosine = "cosine"
    l2 = "l2"


class UserStorage(StrEnum):
    float32 = "float32"
    float16 = "float16"
    codes = "codes"


class ItemVectors(StrEnum):
    none = "none"
    float16 = "float16"
    float32 = "float32"


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)


def _fail(e: Exception) -> typer.Exit:
    typer.echo(f"error: {e}", err=True)
    return typer.Exit(1)


def _summary(title: str, rows: dict[str, Any]) -> None:
    typer.echo(title)
    width = max(len(k) for k in rows)
    for k, v in rows.items():
        typer.echo(f"  {k:<{width}}  {'-' if v is None else v}")


def _register_learned(app: typer.Typer, train_app: typer.Typer) -> None:
    from . import cli_cove, cli_embed, cli_rebuild, cli_rqvae, cli_store

    cli_rqvae.register(app, train_app)
    cli_cove.register(app, train_app)
    cli_embed.register(app, train_app)
    cli_store.register(app, train_app)
    cli_rebuild.register(app, train_app)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details (INFO).")] = False,
) -> None:
    _setup_logging(verbose)


train_app = typer.Typer(
    help="Train a quantizer or a learned model. pq/opq/rq write codebooks for the ADC index (faiss); rqvae writes "
    "a semantic-ID tokenizer (RQ-VAE / CoST); cove and bpr train recommender embeddings from an interaction log. "
    "rqvae, cove and bpr need the 'train' extra (torch).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(train_app, name="train")

_FAISS_HELP = {
    Method.pq: "Product quantization: M sub-vectors, 2**nbits codewords each (faiss k-means).",
    Method.opq: "OPQ: a learned rotation, then product quantization (faiss OPQMatrix + k-means).",
    Method.rq: "Residual quantization: M stages, each quantizing the previous residual (faiss, beam search).",
}


def _faiss_trainer(method: Method):  # type: ignore[no-untyped-def]
    def command(
        embeddings: Annotated[
            str, typer.Option("--embeddings", "-e", help="Item embeddings: .npy (+ ids file) or .npz (ids, vectors).")
        ],
        out: Annotated[
            str,
            typer.Option(
                "--out", "-o", help="Directory to write the codebook artifact to (must not exist unless --force)."
            ),
        ],
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
        config: Annotated[
            str | None,
            typer.Option("--config", "-c", help="JSON or TOML file with trainer settings (see trainers/config.py)."),
        ] = None,
        set_: Annotated[
            list[str] | None, typer.Option("--set", help="Override one config key: --set niter=50 (repeatable).")
        ] = None,
        M: Annotated[
            int | None,
            typer.Option("--M", "-M", help="Sub-quantizers (pq/opq) or stages (rq) = code bytes per item. Default 16."),
        ] = None,
        nbits: Annotated[int | None, typer.Option(help="Bits per code, 1..8 (2**nbits codewords). Default 8.")] = None,
        metric: Annotated[
            Metric | None, typer.Option(help="ip (maximum inner product), cosine, or l2. Default ip.")
        ] = None,
        seed: Annotated[int | None, typer.Option(help="Random seed (sample and k-means). Default 1234.")] = None,
        force: Annotated[bool, typer.Option(help="Replace an existing artifact at --out.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    ) -> None:
        from index.embeddings import load_embeddings
        from index.errors import VqrecError

        from .config import load_config
        from .quantizers import train as run_train

        try:
            cfg = load_config(
                config, set_, method=method.value, M=M, nbits=nbits, metric=metric.value if metric else None, seed=seed
            )
            if os.path.exists(out) and not force:
                raise VqrecError(f"{out} already exists; choose another --out or pass --force.")
            emb = load_embeddings(embeddings, ids)
            q = load_embeddings(queries) if queries else None
            cb = run_train(emb, cfg, queries=q, show_progress=not quiet)
            cb.save(out, overwrite=force)
        except VqrecError as e:
            raise _fail(e) from None
        rep = cb.report
        _summary(
            f"codebooks written to {out}",
            {
                "method": f"{cfg.method} M={cfg.M} nbits={cfg.nbits} metric={cfg.metric} norm_explicit={cb.norm_explicit}",
                "trained on": f"{rep['n_train']} of {rep['n_items']} vectors in {rep['train_seconds']}s",
                "relative mse": f"{rep['relative_mse']:.4f}",
                "recall@10/@100": f"{rep['eval']['recall@10']:.4f} / {rep['eval']['recall@100']:.4f} "
                f"({rep['eval']['queries']} queries from {rep['eval']['queries_from']})",
                "codebook usage": f"{rep['usage']['utilization_mean']:.3f} utilization, "
                f"perplexity {rep['usage']['perplexity_mean']:.1f} of {cb.ksub}",
            },
        )

    command.__doc__ = _train_doc(method)
    return command


def _train_doc(method: Method) -> str:
    return (
        f"{_FAISS_HELP[method]} Trains on item embeddings and writes a codebook artifact with its report.\n\n"
        "Settings come from, in increasing precedence: built-in defaults, --config, --set, and the explicit "
        "flags (--M, --nbits, --metric, --seed)."
    )


for _m in Method:
    train_app.command(_m.value)(_faiss_trainer(_m))

# learned trainers and offline embedding live in their own modules (torch is imported inside the commands)
_register_learned(app, train_app)


@app.command()
def build(
    codebooks: Annotated[str, typer.Option("--codebooks", help="Codebook artifact directory (from `vqrec train`).")],
    items: Annotated[str, typer.Option("--items", help="Item embeddings: .npy (+ ids file) or .npz.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Index artifact directory to publish (atomically).")],
    item_ids: Annotated[str | None, typer.Option(help="Ids file for --items .npy.")] = None,
    users: Annotated[
        str | None, typer.Option(help="User embeddings for queries by user id (.npy + ids or .npz).")
    ] = None,
    user_ids: Annotated[str | None, typer.Option(help="Ids file for --users .npy.")] = None,
    user_storage: Annotated[
        UserStorage, typer.Option(help="How user vectors are kept: float32, float16, or codes (M bytes).")
    ] = UserStorage.float32,
    item_vectors: Annotated[
        ItemVectors, typer.Option(help="Keep float item vectors for exact re-ranking (off by default).")
    ] = ItemVectors.none,
    pair_tables: Annotated[
        bool,
        typer.Option(
            "--pair-tables/--no-pair-tables",
            help="Store codeword-pair tables so LUTs of queries by id are gathered, not decoded "
            "(off: decoding measured faster; see README).",
        ),
    ] = False,
    evaluate: Annotated[
        bool, typer.Option("--eval/--no-eval", help="Measure recall against exact search and store it in the manifest.")
    ] = True,
    eval_queries: Annotated[int, typer.Option(help="Queries sampled for the evaluation.")] = 1000,
    batch_size: Annotated[int, typer.Option(help="Items encoded per batch.")] = 65536,
    semantic_ids: Annotated[
        str | None,
        typer.Option(help="Tokenizer artifact (`vqrec train rqvae`): give every item a semantic id (codes + suffix)."),
    ] = None,
    semantic_items: Annotated[
        str | None,
        typer.Option(help="Embeddings the tokenizer reads for items, matched by id (default: --items), e.g. titles."),
    ] = None,
    semantic_item_ids: Annotated[str | None, typer.Option(help="Ids file for --semantic-items .npy.")] = None,
    tokenize_users: Annotated[
        bool, typer.Option(help="Give users semantic ids too (from --semantic-users, default --users).")
    ] = False,
    semantic_users: Annotated[
        str | None, typer.Option(help="Embeddings the tokenizer reads for users, matched by id (default: --users).")
    ] = None,
    semantic_user_ids: Annotated[str | None, typer.Option(help="Ids file for --semantic-users .npy.")] = None,
    ray: Annotated[
        bool,
        typer.Option(
            "--ray/--no-ray",
            help="Encode and evaluate on Ray Data (the 'distributed' extra): a local Ray on this machine, "
            "or --ray-address.",
        ),
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(envvar="RAY_ADDRESS", help="Ray cluster to encode on, e.g. ray://head:10001 (implies --ray)."),
    ] = None,
    shards: Annotated[
        int | None, typer.Option(help="Blocks the rows are split into on Ray (default 2 x CPUs).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing index at --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Encode items with trained codebooks into an index artifact: codes, precomputed lookups,
    id maps, optional user/item vectors and semantic ids, manifest with checksums and the evaluation report."""
    from index.artifact import save_index
    from index.build import build_index
    from index.codebooks import Codebooks
    from index.embeddings import load_embeddings
    from index.errors import VqrecError
    from index.eval import evaluate_index

    try:
        if os.path.exists(out) and not force:
            raise VqrecError(f"{out} already exists; choose another --out or pass --force.")
        cb = Codebooks.load(codebooks)
        it = load_embeddings(items, item_ids)
        us = load_embeddings(users, user_ids) if users else None
        encoder = runner = None
        if ray or ray_address:
            from index.distributed import ray_encoder, ray_eval_runner

            encoder = ray_encoder(shards=shards, batch_size=batch_size, address=ray_address)
            runner = ray_eval_runner(address=ray_address)
        index = build_index(
            cb,
            it,
            users=us,
            user_storage=user_storage.value,
            item_vectors=item_vectors.value,
            pair_tables=pair_tables,
            batch_size=batch_size,
            show_progress=not quiet,
            encoder=encoder,
        )
        if semantic_ids:
            from index.build import attach_semantic_ids
            from index.semantic import Tokenizer

            if tokenize_users and us is None:
                raise VqrecError("--tokenize-users needs --users (the index's users).")
            tok = Tokenizer.load(semantic_ids)
            s_items = load_embeddings(semantic_items, semantic_item_ids) if semantic_items else it
            s_users = None
            if tokenize_users:
                s_users = load_embeddings(semantic_users, semantic_user_ids) if semantic_users else us
            attach_semantic_ids(index, tok, s_items, users=s_users)
        elif semantic_items or tokenize_users or semantic_users:
            raise VqrecError("--semantic-items / --tokenize-users / --semantic-users need --semantic-ids TOKENIZER.")
        report = evaluate_index(index, it, us, nq=eval_queries, runner=runner) if evaluate else {}
        manifest = save_index(index, out, overwrite=force, evaluation=report)
    except VqrecError as e:
        raise _fail(e) from None
    rows = {
        "index_version": manifest["index_version"],
        "items / users": f"{manifest['n_items']} / {manifest['n_users']}",
        "bytes per item": f"{manifest['bytes']['code_bytes_per_item']} code, "
        f"{manifest['bytes']['index_bytes_per_item']} with norms and ids "
        f"(float32: {manifest['bytes']['float32_bytes_per_item']})",
        "artifact bytes": manifest["bytes"]["total"],
        "queries by id": f"lookup tables from {manifest['lut_path']}",
    }
    if report:
        rows["user->item recall@10"] = report["user_to_item"]["recall@10"]
        if "user_to_item_rerank" in report:
            rows["  with rerank"] = report["user_to_item_rerank"]["recall@10"]
        rows[f"item->item recall@10 ({report['item_to_item']['metric']})"] = report["item_to_item"]["recall@10"]
    sem = manifest.get("semantic_ids")
    if sem:
        for kind in ("items", "users"):
            rep = sem.get(kind)
            if rep:
                rows[f"semantic ids ({kind})"] = (
                    f"{rep['n']} ids, {sem['levels']} levels, codes used "
                    + ", ".join(f"{lv['used']}/{lv['codebook_size']}" for lv in rep["levels"])
                    + f"; collisions before dedup {rep['collisions_before_dedup']['collision_rate']:.4f}, "
                    f"after {rep['collisions_after_dedup']}"
                )
    _summary(f"index written to {out}", rows)


@app.command("eval")
def eval_(
    index_dir: Annotated[str, typer.Option("--index", help="Index artifact directory.")],
    items: Annotated[
        str, typer.Option("--items", help="The item embeddings the index was built from (exact search truth).")
    ],
    item_ids: Annotated[str | None, typer.Option(help="Ids file for --items .npy.")] = None,
    users: Annotated[
        str | None, typer.Option(help="User embeddings used as queries (default: a sample of items).")
    ] = None,
    user_ids: Annotated[str | None, typer.Option(help="Ids file for --users .npy.")] = None,
    seen: Annotated[
        str | None, typer.Option(help="`user TAB item` interactions to exclude (leave-one-out HR@k).")
    ] = None,
    heldout: Annotated[
        str | None, typer.Option(help="`user TAB item` held-out interactions (leave-one-out HR@k).")
    ] = None,
    k: Annotated[int, typer.Option(help="k for HR@k.")] = 10,
    queries: Annotated[int, typer.Option(help="Queries sampled for recall.")] = 1000,
    rerank: Annotated[int, typer.Option(help="Candidates re-ranked exactly (needs item vectors in the index).")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Recall@10/@100 of an index against exact search, and leave-one-out HR@k when given interactions."""
    from index.artifact import load_index
    from index.embeddings import load_embeddings
    from index.errors import InputError, VqrecError
    from index.eval import evaluate_index, exact_hit_rate, hit_rate, read_pairs

    try:
        index = load_index(index_dir)
        it = load_embeddings(items, item_ids)
        if it.d != index.d or it.n != len(index):
            raise InputError(f"{items}: {it.n}x{it.d} embeddings, but the index holds {len(index)}x{index.d}.")
        us = load_embeddings(users, user_ids) if users else None
        report = evaluate_index(index, it, us, nq=queries, rerank=rerank if index.item_vectors is not None else 0)
        if seen and heldout:
            if us is None or index.users is None:
                raise InputError("HR@k needs --users and an index built with users.")
            s = read_pairs(seen)
            h = {u: v[-1] for u, v in read_pairs(heldout).items()}
            report[f"hr@{k}"] = {
                "exact": round(exact_hit_rate(it, us, s, h, k=k), 4),
                "index": round(hit_rate(index, s, h, k=k), 4),
            }
            if index.item_vectors is not None and rerank:
                report[f"hr@{k}"]["index_rerank"] = round(hit_rate(index, s, h, k=k, rerank=rerank), 4)
    except (VqrecError, OSError) as e:
        raise _fail(e) from None
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    rows = {f"user->item {key}": v for key, v in report["user_to_item"].items()}
    rows.update({f"user->item rerank {key}": v for key, v in report.get("user_to_item_rerank", {}).items()})
    rows.update({f"item->item {key}": v for key, v in report["item_to_item"].items()})
    if f"hr@{k}" in report:
        rows.update({f"HR@{k} {key}": v for key, v in report[f"hr@{k}"].items()})
    _summary(f"{index_dir} ({report['nq']} queries from {report['user_queries']})", rows)


@app.command()
def serve(
    index_root: Annotated[
        str,
        typer.Option(
            "--index-root", envvar="VQREC_INDEX_ROOT", help="Directory of named index artifacts (or one artifact)."
        ),
    ],
    host: Annotated[str, typer.Option(envvar="VQREC_HOST", help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="VQREC_PORT", help="TCP port.")] = 8000,
    log_level: Annotated[str, typer.Option(envvar="VQREC_LOG_LEVEL", help="uvicorn log level.")] = "info",
) -> None:
    """Serve every index under --index-root over REST (docs at /docs). Other settings: VQREC_* env."""
    if not os.path.isdir(index_root):
        raise _fail(FileNotFoundError(f"index root not found: {index_root}"))
    from pydantic import ValidationError

    from service.main import run
    from service.settings import Settings

    try:
        settings = Settings(index_root=index_root, host=host, port=port, log_level=log_level)
    except ValidationError as e:
        bad = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise _fail(ValueError(f"invalid settings: {bad}")) from None
    run(settings)


@app.command()
def demo(
    out: Annotated[str, typer.Option("--out", "-o", help="Where the demo's embeddings and index go.")] = "vqrec-demo",
    movielens: Annotated[
        str | None, typer.Option(help="A MovieLens-100k directory (u.data) to factorize instead of synthetic data.")
    ] = None,
    method: Annotated[Method, typer.Option(help="Quantizer for the demo index.")] = Method.pq,
    M: Annotated[int, typer.Option("--M", "-M", help="Code bytes per item.")] = 16,
    host: Annotated[str, typer.Option(envvar="VQREC_HOST", help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="VQREC_PORT", help="TCP port.")] = 8000,
    serve_: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve the index after building it.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Make recommender embeddings (matrix factorization of a seeded synthetic interaction log, or of
    MovieLens), train codebooks, build an index named "demo" under OUT/indexes and serve it."""
    from index.artifact import save_index
    from index.build import build_index
    from index.embeddings import save_embeddings
    from index.errors import VqrecError
    from index.eval import evaluate_index

    from .config import TrainConfig
    from .demo_data import demo_embeddings
    from .quantizers import train as run_train

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
        raise _fail(e) from None
    _summary(
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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)


if __name__ == "__main__":
    main()
