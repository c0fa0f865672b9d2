"""``vqrec build`` and ``vqrec eval``: embeddings + codebooks -> index artifact, and its recall.

vqrec build   codebook artifact + embeddings -> index artifact (with its evaluation)
vqrec eval    an index artifact against exact search (and leave-one-out HR@k)
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .common import Force, ItemVectors, Quiet, RayAddress, UserStorage, fail, new_app, refuse_existing, summary

app = new_app()


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
        ItemVectors,
        typer.Option(
            help="Keep item vectors for exact re-ranking (off by default): float32, float16, or int8 "
            "(d bytes per item, one scale per dimension)."
        ),
    ] = ItemVectors.none,
    pair_tables: Annotated[
        bool,
        typer.Option(
            "--pair-tables/--no-pair-tables",
            help="Store codeword-pair tables so LUTs of queries by id are gathered, not decoded "
            "(off: decoding measured faster; see docs/indexing.md).",
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
    ray_address: RayAddress = None,
    shards: Annotated[
        int | None, typer.Option(help="Blocks the rows are split into on Ray (default 2 x CPUs).")
    ] = None,
    nlist: Annotated[
        int | None,
        typer.Option(
            help="Partition the items into this many lists; queries scan the --nprobe best. "
            "Default: none below 100,000 items, else 2 x sqrt(n); 0 = no partition.",
            min=0,
        ),
    ] = None,
    nprobe: Annotated[
        int | None,
        typer.Option(
            help="Lists a query scans by default (requests may set their own). Default: chosen by the tuning "
            "sweep (--tune), else nlist / 8.",
            min=1,
        ),
    ] = None,
    tune: Annotated[
        bool,
        typer.Option(
            "--tune/--no-tune",
            help="Partitioned index: sweep nprobe x rerank on held-out queries (users, else items) and make the "
            "fastest setting reaching --target-recall the default; the curve goes into the manifest.",
        ),
    ] = True,
    target_recall: Annotated[
        float | None,
        typer.Option(
            help="Recall@10 the default setting must reach. Default: 0.95 with item vectors (re-rank), else the "
            "plateau of the codes-only curve.",
            min=0.0,
            max=1.0,
        ),
    ] = None,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Encode items with trained codebooks into an index artifact: codes, precomputed lookups,
    id maps, optional user/item vectors and semantic ids, manifest with checksums and the evaluation report."""
    from vqrec.index.artifact import save_index
    from vqrec.index.build import build_index
    from vqrec.index.codebooks import Codebooks
    from vqrec.index.embeddings import load_embeddings
    from vqrec.index.errors import VqrecError
    from vqrec.index.eval import evaluate_index

    try:
        refuse_existing(out, force)
        cb = Codebooks.load(codebooks)
        it = load_embeddings(items, item_ids)
        us = load_embeddings(users, user_ids) if users else None
        encoder = runner = None
        if ray or ray_address:
            from vqrec.index.distributed import ray_encoder, ray_eval_runner

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
            nlist=nlist,
            nprobe=nprobe,
            tune=tune,
            target_recall=target_recall,
        )
        if semantic_ids:
            from vqrec.index.build import attach_semantic_ids
            from vqrec.index.semantic import Tokenizer

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
        raise fail(e) from None
    rows = {
        "index_version": manifest["index_version"],
        "items / users": f"{manifest['n_items']} / {manifest['n_users']}",
        "bytes per item": f"{_code_bytes(manifest['method'])} code, "
        f"{manifest['bytes']['index_bytes_per_item']} with norms and ids "
        f"(float32: {manifest['bytes']['float32_bytes_per_item']})",
        "artifact bytes": manifest["bytes"]["total"],
        "queries by id": f"lookup tables from {manifest['lut_path']}",
    }
    if manifest.get("partition"):
        p = manifest["partition"]
        rows["partition"] = f"{p['nlist']} lists, a query scans {p['nprobe']} by default"
    if manifest.get("search"):
        t = manifest["search"]
        met = "met" if t["met"] else "NOT met"
        rows["tuned"] = (
            f"nprobe {t['nprobe']}, rerank {t['rerank']}: recall@{t['k']} {t['recall']} on {t['queries']} "
            f"{t['query_source']} (target {t['target_recall']}, {met})"
        )
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
    summary(f"index written to {out}", rows)


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
    from vqrec.index.artifact import load_index
    from vqrec.index.embeddings import load_embeddings
    from vqrec.index.errors import InputError, VqrecError
    from vqrec.index.eval import evaluate_index, exact_hit_rate, hit_rate
    from vqrec.index.interactions import pairs_by_user

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
            s = pairs_by_user(seen)
            h = {u: v[-1] for u, v in pairs_by_user(heldout).items()}
            report[f"hr@{k}"] = {
                "exact": round(exact_hit_rate(it, us, s, h, k=k), 4),
                "index": round(hit_rate(index, s, h, k=k), 4),
            }
            if index.item_vectors is not None and rerank:
                report[f"hr@{k}"]["index_rerank"] = round(hit_rate(index, s, h, k=k, rerank=rerank), 4)
    except (VqrecError, OSError) as e:
        raise fail(e) from None
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    rows = {f"user->item {key}": v for key, v in report["user_to_item"].items()}
    rows.update({f"user->item rerank {key}": v for key, v in report.get("user_to_item_rerank", {}).items()})
    rows.update({f"item->item {key}": v for key, v in report["item_to_item"].items()})
    if f"hr@{k}" in report:
        rows.update({f"HR@{k} {key}": v for key, v in report[f"hr@{k}"].items()})
    summary(f"{index_dir} ({report['nq']} queries from {report['user_queries']})", rows)


def _code_bytes(method: dict) -> str:  # type: ignore[type-arg]
    """The codes' bytes per item as a loaded index holds them: 4-bit codes two to a byte (the fast-scan layout),
    any other width one byte per code (the artifact stores one byte per code either way)."""
    m, nbits = int(method["M"]), int(method["nbits"])
    if nbits == 4 and m % 2 == 0:
        return f"{m // 2} ({m} x 4 bits)"
    return str(m)
