"""The rebuild job as named steps, run in order by ``run_rebuild`` (under the rebuild lock):

    read_inputs    embeddings and trainer config, checked                           (exit 3 / 2)
    open_run       the store, its active version and that version's recall
    step_resume    the recorded state: resumed (same inputs), discarded (other inputs: with the version
                   it published but did not activate) or started afresh; nothing to do when the active
                   version was built from these embeddings
    step_train     drift decision: reuse the active codebooks or retrain             crash point: train
    step_build     build the index, evaluate it against exact search     crash points: mid-build, build
    step_gate      recall floor, and the drop from the active version                (exit 4)
    step_publish   the index copied into versions/, all or nothing       crash points: mid-publish, publish
    step_activate  the alias flipped (exit 5 if not); then prune
    step_notify    the service told to reload ([notify] url)                         (exit 6)

A step that does work records its result in state.json (``Run.done``) before the next one starts; a
recorded step is skipped and its result read back, so a resumed run goes on where the killed one stopped.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vqrec.index.errors import ConfigError, InputError, RebuildError, VqrecError

from .codes import EXIT_CONFIG, EXIT_GATE, EXIT_INPUT, EXIT_NOTIFY, EXIT_PUBLISH
from .config import RebuildConfig
from .notify import notify
from .state import (
    STEPS,
    WORK_DIR,
    crash_hook,
    fingerprint,
    read_state,
    rebuild_lock,
    record_step,
    write_state,
)

logger = logging.getLogger(__name__)


@dataclass
class Run:
    """What the steps share: the config and inputs, the store and its active version, the work directory
    and its recorded state, how to report (echo, progress bars), and the summary rows being filled in."""

    cfg: RebuildConfig
    items: Any
    users: Any
    tcfg: Any
    store: Any
    active_version: str | None
    active: Any  # the active version's index (memory-mapped, verified), or None
    active_recall: float | None
    echo: Callable[[str], None]
    show_progress: bool
    rows: dict[str, Any]
    state: dict[str, Any] = field(default_factory=lambda: {"steps": {}})

    @property
    def work(self) -> str:
        return os.path.join(self.store.name_dir(self.cfg.name), WORK_DIR)

    @property
    def cb_dir(self) -> str:
        return os.path.join(self.work, "codebooks")

    @property
    def idx_dir(self) -> str:
        return os.path.join(self.work, "index")

    @property
    def steps(self) -> dict[str, Any]:
        return self.state["steps"]

    def done(self, step: str, info: dict[str, Any]) -> None:
        """Record ``step`` in state.json; then the crash point of that name."""
        record_step(self.work, self.state, step, info)


def run_rebuild(
    cfg: RebuildConfig,
    *,
    do_notify: bool = True,
    show_progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run (or resume) the rebuild; returns the summary rows. Raises RebuildError with an exit code."""
    if cfg.ray:  # fail now, not after training: Ray Data must be importable
        from vqrec.index.distributed import require_ray

        try:
            require_ray()
        except ConfigError as e:
            raise RebuildError(str(e), EXIT_CONFIG) from None
    with rebuild_lock(cfg.root, cfg.name):  # before reading anything: a second run exits 7 at once
        items, users, tcfg = read_inputs(cfg)
        run = open_run(cfg, items, users, tcfg, show_progress=show_progress, echo=echo)
        if not step_resume(run):
            return run.rows  # already up to date
        decision = step_train(run)
        version, recall = step_build(run, decision)
        step_gate(run, recall)
        step_publish(run, version)
        step_activate(run, version)
        step_notify(run, version, enabled=do_notify)
        return run.rows


def read_inputs(cfg: RebuildConfig) -> tuple[Any, Any, Any]:
    """(items, users or None, trainer config), checked; RebuildError EXIT_INPUT / EXIT_CONFIG otherwise."""
    from vqrec.index.embeddings import load_embeddings

    from ..config import TrainConfig

    try:
        items = load_embeddings(cfg.items, cfg.item_ids)
        users = load_embeddings(cfg.users, cfg.user_ids) if cfg.users else None
    except VqrecError as e:
        raise RebuildError(str(e), EXIT_INPUT) from None
    try:
        # the job's default is auto: it picks the code family by recall on held-out queries each retrain
        tcfg = TrainConfig.from_dict({"method": "auto", **cfg.train})
        tcfg.check_dim(items.d)
    except ConfigError as e:
        raise RebuildError(str(e), EXIT_CONFIG) from None
    except VqrecError as e:
        raise RebuildError(str(e), EXIT_INPUT) from None
    if users is not None and users.d != items.d:
        raise RebuildError(f"{users.source}: user dimension ({users.d}) != item dimension ({items.d}).", EXIT_INPUT)
    return items, users, tcfg


def open_run(
    cfg: RebuildConfig, items: Any, users: Any, tcfg: Any, *, show_progress: bool, echo: Callable[[str], None]
) -> Run:
    """The run's context: the store, its active version (loaded and verified) and that version's recall."""
    from vqrec.index.artifact import load_index
    from vqrec.index.store import IndexStore

    store = IndexStore(cfg.root)
    active_version = store.active(cfg.name) if os.path.isdir(store.name_dir(cfg.name)) else None
    active = load_index(store.path(cfg.name), mmap=True, verify=True) if active_version else None
    active_recall = _recall(active.manifest.get("evaluation"), cfg.k) if active is not None else None
    rows: dict[str, Any] = {"index": f"{cfg.name} at {store.name_dir(cfg.name)}", "active before": active_version}
    return Run(cfg, items, users, tcfg, store, active_version, active, active_recall, echo, show_progress, rows)


def step_resume(run: Run) -> bool:
    """Resume the recorded state (same inputs) or start afresh; False when already up to date (nothing done)."""
    cfg, store, work = run.cfg, run.store, run.work
    store.clean_stagings(cfg.name)  # leftovers of any killed publish, also when nothing is left to do
    fp = fingerprint(cfg, run.items, run.users)
    state = read_state(work)
    if state is not None and state.get("fingerprint") != fp:
        run.echo(f"rebuild: discarding an unfinished rebuild of other inputs ({work})")
        orphan = (state["steps"].get("publish") or {}).get("version")
        if orphan and orphan != run.active_version and orphan != store.previous(cfg.name):
            with contextlib.suppress(VqrecError):
                store.discard(cfg.name, orphan)
        state = None
    if state is None:
        shutil.rmtree(work, ignore_errors=True)
        if _built_from_these_inputs(run):
            run.rows["result"] = (
                f"already up to date: active version {run.active_version} was built from these embeddings"
            )
            return False
        os.makedirs(work, exist_ok=True)
        state = {"fingerprint": fp, "started_at": datetime.datetime.now(datetime.UTC).isoformat(), "steps": {}}
        write_state(work, state)
    else:
        run.echo(f"rebuild: resuming after step(s) {', '.join(s for s in STEPS if s in state['steps'])}")
    run.state = state
    return True


def _built_from_these_inputs(run: Run) -> bool:
    """The active version's manifest names these items and users (by sha256)."""
    src = (run.active.manifest.get("source") or {}) if run.active is not None else {}
    same_users = (src.get("users") or {}).get("sha256") == (run.users.fingerprint() if run.users is not None else None)
    return run.active is not None and (src.get("items") or {}).get("sha256") == run.items.fingerprint() and same_users


def step_train(run: Run) -> dict[str, Any]:
    """Reuse the active codebooks or retrain (drift decision); codebooks saved to .rebuild/codebooks.
    Returns the recorded decision."""
    cfg = run.cfg
    if "train" not in run.steps:
        from ..quantizers import train

        run.echo("rebuild [1/5] train: measuring drift against the active codebooks")
        active_cb = run.active.codebooks if run.active is not None else None
        decision = drift_decision(active_cb, run.items, run.tcfg, cfg.max_relative_mse_increase)
        logger.info("codebooks: %s (%s)", decision["decision"], decision["reason"])
        run.echo(f"rebuild [1/5] train: {decision['decision']} codebooks ({decision['reason']})")
        try:
            cb = (
                active_cb
                if decision["decision"] == "reuse"
                else train(run.items, run.tcfg, queries=run.users, show_progress=run.show_progress)
            )
        except ConfigError as e:
            raise RebuildError(str(e), EXIT_CONFIG) from None
        except InputError as e:
            raise RebuildError(str(e), EXIT_INPUT) from None
        cb.save(run.cb_dir, overwrite=True)
        run.done("train", decision)
    decision = run.steps["train"]
    run.rows["codebooks"] = f"{decision['decision']} ({decision['reason']})"
    if "relative_mse_new" in decision:
        run.rows["drift"] = (
            f"relative MSE {decision['relative_mse_new']} under the active codebooks vs "
            f"{decision['relative_mse_trained']} at training (threshold +{decision['threshold']:.1%})"
        )
    return decision


def drift_decision(active_cb: Any, items: Any, cfg: Any, threshold: float) -> dict[str, Any]:
    """Reuse the active codebooks or retrain: relative MSE of ``items`` under them vs their training report's."""
    from vqrec.index.eval import reconstruction_mse

    out: dict[str, Any] = {"threshold": threshold}
    if active_cb is None:
        return {**out, "decision": "retrain", "reason": "no active version"}
    # auto: any family it chose before is the same config (a new choice needs a retrain anyway)
    kind = active_cb.kind if cfg.method == "auto" and "auto" in (active_cb.report or {}) else cfg.method
    same = (active_cb.kind, active_cb.M, active_cb.nbits, active_cb.metric, active_cb.d) == (
        kind,
        cfg.M,
        cfg.nbits,
        cfg.metric,
        items.d,
    )
    if not same:
        return {**out, "decision": "retrain", "reason": "trainer config or dimension differs from the active codebooks"}
    ref = (active_cb.report or {}).get("relative_mse")
    if not isinstance(ref, int | float) or ref <= 0:
        return {**out, "decision": "retrain", "reason": "active codebooks have no training relative MSE"}
    new = reconstruction_mse(active_cb, items.vectors, active_cb.encode(items.vectors))["relative_mse"]
    increase = (new - ref) / ref
    out.update(relative_mse_new=round(new, 5), relative_mse_trained=round(float(ref), 5), increase=round(increase, 4))
    if increase <= threshold:
        return {**out, "decision": "reuse", "reason": f"drift {increase:+.1%} <= {threshold:.1%}"}
    return {**out, "decision": "retrain", "reason": f"drift {increase:+.1%} > {threshold:.1%}"}


def step_build(run: Run, decision: dict[str, Any]) -> tuple[str, float | None]:
    """Build the index and evaluate it against exact search; saved to .rebuild/index.
    Returns the recorded (version, user->item recall@k)."""
    cfg = run.cfg
    if "build" not in run.steps:
        from vqrec.index.artifact import save_index
        from vqrec.index.build import build_index
        from vqrec.index.codebooks import Codebooks
        from vqrec.index.eval import evaluate_index

        where = f"Ray ({cfg.ray_address or os.environ.get('RAY_ADDRESS') or 'local'})" if cfg.ray else "this process"
        run.echo(f"rebuild [2/5] build: encoding items and evaluating against exact search in {where}")
        cb = Codebooks.load(run.cb_dir)
        encoder, runner = _encoder_and_runner(run)

        def encode(codebooks: Any, x: Any, what: str) -> Any:
            out = encoder(codebooks, x, what)
            if what == "items":
                crash_hook("mid-build")
            return out

        index = build_index(cb, run.items, users=run.users, show_progress=run.show_progress, encoder=encode)
        index.manifest["rebuild"] = {"codebooks": decision, "base_version": run.active_version}
        ks = tuple(sorted({cfg.k, 10, 100}))
        ev = evaluate_index(index, run.items, run.users, nq=cfg.queries, ks=ks, runner=runner)
        manifest = save_index(index, run.idx_dir, overwrite=True, evaluation=ev)
        run.done("build", {"version": manifest["index_version"], "recall": _recall(ev, cfg.k)})
    version = run.steps["build"]["version"]
    recall = run.steps["build"]["recall"]
    run.rows["new version"] = version
    run.rows[f"user->item recall@{cfg.k}"] = (
        f"{recall} (active: {run.active_recall if run.active_recall is not None else '-'}; "
        f"floor {cfg.recall_floor}, max drop {cfg.max_drop})"
    )
    return version, recall


def _encoder_and_runner(run: Run) -> tuple[Any, Any]:
    """The item/user encoder of the build and the evaluation runner: on Ray Data, or in this process."""
    if run.cfg.ray:
        from vqrec.index.distributed import ray_encoder, ray_eval_runner

        encoder = ray_encoder(shards=run.cfg.shards, address=run.cfg.ray_address)
        return encoder, ray_eval_runner(address=run.cfg.ray_address)
    from vqrec.index.build import local_encoder

    return local_encoder(show_progress=run.show_progress), None


def _recall(evaluation: Any, k: int) -> float | None:
    if isinstance(evaluation, dict):
        v = (evaluation.get("user_to_item") or {}).get(f"recall@{k}")
        if isinstance(v, int | float):
            return float(v)
    return None


def step_gate(run: Run, recall: float | None) -> None:
    """Before anything reaches the store: recall@k >= the floor and at most max_drop below the active
    version's; RebuildError EXIT_GATE otherwise. Passed already when the publish step is recorded."""
    if "publish" in run.steps:
        return
    cfg, active_recall, active_version = run.cfg, run.active_recall, run.active_version
    why = []
    if recall is None or recall < cfg.recall_floor:
        why.append(f"user->item recall@{cfg.k} {recall} is below the floor {cfg.recall_floor}")
    if recall is not None and active_recall is not None and active_recall - recall > cfg.max_drop:
        why.append(
            f"user->item recall@{cfg.k} {recall} dropped {active_recall - recall:.4f} from the active version "
            f"{active_version}'s {active_recall}, more than max_drop {cfg.max_drop}"
        )
    if why:
        raise RebuildError(
            "gate refused: " + "; ".join(why) + f" (floor {cfg.recall_floor}, active recall "
            f"{active_recall if active_recall is not None else '-'}, max_drop {cfg.max_drop}). "
            f"Nothing published; the alias still points at {active_version or 'nothing'}.",
            EXIT_GATE,
        )
    run.echo("rebuild [3/5] gate: passed")


def step_publish(run: Run, version: str) -> None:
    """Copy the index into versions/ (staged under a hidden name and renamed: all or nothing)."""
    if "publish" in run.steps:
        return
    from vqrec.index.progress import progress

    run.echo(f"rebuild [4/5] publish: {version}")
    try:
        if not os.path.isdir(run.store.version_dir(run.cfg.name, version)):
            with progress(desc="publish", unit="file", disable=not run.show_progress) as bar:

                def copied(fname: str) -> None:
                    bar.update(1)
                    crash_hook("mid-publish")

                run.store.publish_dir(run.idx_dir, run.cfg.name, on_file=copied)
    except VqrecError as e:
        raise RebuildError(f"publish failed: {e}", EXIT_PUBLISH) from None
    run.done("publish", {"version": version})


def step_activate(run: Run, version: str) -> None:
    """Flip the alias (the old version becomes ``previous``), prune to [store] keep, remove the work
    directory. A failed flip discards the new version and is EXIT_PUBLISH (the alias is unchanged)."""
    cfg, store = run.cfg, run.store
    if "activate" not in run.steps:
        run.echo(f"rebuild [5/5] activate: {version}")
        try:
            store.activate(cfg.name, version)
        except VqrecError as e:
            with contextlib.suppress(VqrecError):
                store.discard(cfg.name, version)
            shutil.rmtree(run.work, ignore_errors=True)
            raise RebuildError(f"activate failed: {e}", EXIT_PUBLISH) from None
        run.done("activate", {"version": version})
    run.rows["active now"] = version
    try:
        pruned = store.prune(cfg.name, cfg.keep)
    except VqrecError as e:
        logger.warning("prune failed: %s", e)
        pruned = []
    run.rows["pruned"] = ", ".join(pruned) if pruned else "-"
    shutil.rmtree(run.work, ignore_errors=True)
    run.rows["result"] = f"published and activated {version}"


def step_notify(run: Run, version: str, *, enabled: bool) -> None:
    """Tell the service to reload ``version`` when [notify] url is set; EXIT_NOTIFY (published and active)."""
    if not (run.cfg.notify_url and enabled):
        return
    try:
        run.rows["notified"] = notify(run.cfg, version)
    except RebuildError as e:
        raise RebuildError(f"{e} (version {version} is published and active)", EXIT_NOTIFY) from None
