"""Offline rebuild job (`vqrec rebuild --config rebuild.toml`): new embeddings -> codebooks (retrained,
or the active version's reused when the drift is small) -> index -> recall gate -> publish -> alias flip
-> optional notification of the service.

Steps, each recorded in ``{root}/{name}/.rebuild/state.json`` (hidden: the service and the store skip it)
together with a fingerprint of the inputs (embeddings, trainer config, drift threshold):

    train    codebooks saved to .rebuild/codebooks (reused from the active version when the relative
             reconstruction MSE of the new items under them exceeds the MSE of their own training report
             by at most ``drift.max_relative_mse_increase``, relative; the decision and both figures are
             logged, printed and stored in the new manifest under ``rebuild``)
    build    index built and evaluated against exact search on a sample of queries, saved to .rebuild/index
    gate     user->item recall@k must be >= ``gate.recall_floor`` and at most ``gate.max_drop`` below the
             active version's (from its manifest); otherwise nothing is published
    publish  the index copied into versions/ (staged under a hidden name and renamed: all or nothing)
    activate the alias flipped atomically (the old version becomes ``previous``); then prune, notify

With ``[distributed] ray = true`` (or ``vqrec rebuild --ray``) the encoding and the evaluation of the
build step run on Ray Data (index/distributed.py); training stays on the driver (on a sample, as
always). The artifact is the same byte for byte on the codes, and the evaluation report is identical.

One rebuild per name at a time: ``{root}/{name}/.rebuild.lock`` (flock) is held for the whole run; a
second run exits 7 at once.

The alias only changes in ``activate``, so a kill -9 at any earlier point leaves the active version served
and untouched. The next run resumes from the last completed step when the fingerprint matches; otherwise
it deletes the work directory and any version it had published but not activated. Interrupted store
stagings (``versions/.publish-*``) are removed under the store lock.

Exit codes (one meaning each):

    0  published and activated (or already up to date: the active version was built from these inputs)
    1  anything else (unexpected error)
    2  usage or config error (rebuild.toml)
    3  input error (embeddings missing, unreadable or of the wrong dimension)
    4  gate refused: recall under the floor or dropped more than max_drop (the message names the figures)
    5  publish or activate failed (the alias is unchanged)
    6  notify failed (the new version IS published and active; only the service was not told)
    7  another rebuild of this name is running (nothing done)

Test hook: ``VQREC_REBUILD_CRASH_AFTER=<point>`` ends the process with ``os._exit(137)`` (as kill -9
would) at one of: ``train`` (codebooks saved and recorded), ``mid-build`` (items encoded, nothing of the
index saved), ``build`` (index saved and recorded), ``mid-publish`` (one file copied into the store's
staging directory), ``publish`` (published, the alias not flipped).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from vqrec.index.errors import ConfigError, InputError, RebuildError, VqrecError

from .configfile import check_types, read_config_file

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_INPUT = 3
EXIT_GATE = 4
EXIT_PUBLISH = 5
EXIT_NOTIFY = 6
EXIT_BUSY = 7

CRASH_ENV = "VQREC_REBUILD_CRASH_AFTER"
WORK_DIR = ".rebuild"
STATE = "state.json"
STEPS = ("train", "build", "publish", "activate")
LOCK = ".rebuild.lock"


@dataclass
class RebuildConfig:
    root: str
    name: str
    items: str
    users: str | None = None
    item_ids: str | None = None
    user_ids: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    max_relative_mse_increase: float = 0.1
    recall_floor: float = 0.8
    max_drop: float = 0.02
    k: int = 10
    queries: int = 500
    notify_url: str | None = None
    admin_key_env: str = "VQREC_ADMIN_KEY"
    keep: int = 5
    ray: bool = False
    ray_address: str | None = None
    shards: int | None = None


# the tables of rebuild.toml: section -> {key: RebuildConfig field}; the types are the fields' (configfile)
_SECTIONS: dict[str, dict[str, str]] = {
    "index": {"root": "root", "name": "name"},
    "data": {"items": "items", "users": "users", "item_ids": "item_ids", "user_ids": "user_ids"},
    "drift": {"max_relative_mse_increase": "max_relative_mse_increase"},
    "gate": {"recall_floor": "recall_floor", "max_drop": "max_drop", "k": "k", "queries": "queries"},
    "notify": {"url": "notify_url", "admin_key_env": "admin_key_env"},
    "store": {"keep": "keep"},
    "distributed": {"ray": "ray", "address": "ray_address", "shards": "shards"},
}


def load_rebuild_config(path: str) -> RebuildConfig:
    """Read and validate rebuild.toml (relative data paths are taken from the file's directory)."""
    from .config import TrainConfig

    data = read_config_file(path, fmt="toml")
    unknown = sorted(set(data) - {*_SECTIONS, "train"})
    if unknown:
        raise ConfigError(f"{path}: unknown sections {unknown}; known: {sorted([*_SECTIONS, 'train'])}.")
    values: dict[str, Any] = {}
    for section, keys in _SECTIONS.items():
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{section}] must be a table.")
        bad = sorted(set(table) - set(keys))
        if bad:
            raise ConfigError(f"{path}: unknown keys {bad} in [{section}]; known: {sorted(keys)}.")
        found = {keys[key]: v for key, v in table.items()}
        where = {attr: f"{path}: [{section}] {key}" for key, attr in keys.items()}
        check_types(RebuildConfig, found, where=where.__getitem__)
        values.update(found)
    for req, section in (("root", "index"), ("name", "index"), ("items", "data")):
        if req not in values:
            raise ConfigError(f"{path}: [{section}] {req} is required.")
    train = data.get("train", {})
    if not isinstance(train, dict):
        raise ConfigError(f"{path}: [train] must be a table.")
    TrainConfig.from_dict(dict(train))  # validate now: a bad key is a config error, before any work
    values["train"] = dict(train)
    base = os.path.dirname(os.path.abspath(path))
    for attr in ("root", "items", "users", "item_ids", "user_ids"):
        if values.get(attr):
            values[attr] = os.path.join(base, os.path.expanduser(values[attr]))
    explicit_ray = "ray" in values
    cfg = RebuildConfig(**values)
    from vqrec.index.store import IndexStore

    try:
        IndexStore(cfg.root).name_dir(cfg.name)  # the name must be a plain store name (no '/', no '..')
    except VqrecError as e:
        raise ConfigError(f"{path}: [index] name: {e}") from None
    if cfg.max_relative_mse_increase < 0:
        raise ConfigError(f"{path}: [drift] max_relative_mse_increase must be >= 0.")
    if not 0 <= cfg.recall_floor <= 1 or cfg.max_drop < 0:
        raise ConfigError(f"{path}: [gate] recall_floor must be in 0..1 and max_drop >= 0.")
    if cfg.k < 1 or cfg.queries < 1 or cfg.keep < 1:
        raise ConfigError(f"{path}: [gate] k, [gate] queries and [store] keep must be >= 1.")
    if cfg.shards is not None and cfg.shards < 1:
        raise ConfigError(f"{path}: [distributed] shards must be >= 1.")
    if cfg.ray_address and not explicit_ray:
        cfg.ray = True  # an address means Ray, unless the config says ray = false
    return cfg


# ---- state ------------------------------------------------------------------------------------
def _write_json(path: str, obj: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read_state(work: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(work, STATE), encoding="utf-8") as f:
            state = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("steps"), dict) else None


def _crash_hook(step: str) -> None:
    if os.environ.get(CRASH_ENV) == step:
        logger.warning("%s=%s: exiting with 137 (test hook)", CRASH_ENV, step)
        os._exit(137)


def _fingerprint(cfg: RebuildConfig, items: Any, users: Any) -> str:
    h = hashlib.sha256()
    h.update(items.fingerprint().encode())
    h.update((users.fingerprint() if users is not None else "-").encode())
    h.update(json.dumps(cfg.train, sort_keys=True).encode())
    h.update(repr(cfg.max_relative_mse_increase).encode())
    return h.hexdigest()


# ---- the job ----------------------------------------------------------------------------------
def _recall(evaluation: Any, k: int) -> float | None:
    if isinstance(evaluation, dict):
        v = (evaluation.get("user_to_item") or {}).get(f"recall@{k}")
        if isinstance(v, int | float):
            return float(v)
    return None


def drift_decision(active_cb: Any, items: Any, cfg: Any, threshold: float) -> dict[str, Any]:
    """Reuse the active codebooks or retrain: relative MSE of ``items`` under them vs their training report's."""
    from vqrec.index.eval import reconstruction_mse

    out: dict[str, Any] = {"threshold": threshold}
    if active_cb is None:
        return {**out, "decision": "retrain", "reason": "no active version"}
    same = (active_cb.kind, active_cb.M, active_cb.nbits, active_cb.metric, active_cb.d) == (
        cfg.method,
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


def _clean_stagings(store: Any, name: str) -> None:
    vdir = store.versions_dir(name)
    if not os.path.isdir(vdir):
        return
    with store._locked(name):  # a live publish holds this lock while it stages
        for e in os.scandir(vdir):
            if e.is_dir() and (e.name.startswith(".publish-") or e.name.startswith(".trash-")):
                shutil.rmtree(e.path, ignore_errors=True)


@contextlib.contextmanager
def rebuild_lock(root: str, name: str) -> Iterator[None]:
    """Hold ``{root}/{name}/.rebuild.lock`` (flock, released by the kernel when the process dies, kill -9
    included) or raise RebuildError(EXIT_BUSY) naming the pid that holds it."""
    from vqrec.index.store import IndexStore

    d = IndexStore(root).name_dir(name)  # validates the name: the lock never lands outside the root
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, LOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise RebuildError(
                f"another rebuild of {name!r} is running (pid {holder}; lock {path}); nothing done.", EXIT_BUSY
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def notify(cfg: RebuildConfig, version: str, *, busy_for: float = 60.0, first_wait: float = 0.5) -> str:
    """POST the reload of ``version``. A 409 (a reload of the name is running: another admin, or the
    service's alias poller already loading this very version) is retried with backoff for ``busy_for``
    seconds; any other failure, or a 409 for longer, is EXIT_NOTIFY."""
    url = f"{cfg.notify_url.rstrip('/')}/v1/admin/indexes/{cfg.name}/reload"  # type: ignore[union-attr]
    key = os.environ.get(cfg.admin_key_env)
    deadline = time.monotonic() + busy_for
    wait = first_wait
    while True:
        req = urllib.request.Request(
            url,
            data=json.dumps({"version": version}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        if key:
            req.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return f"{url}: HTTP {resp.status}"
        except urllib.error.HTTPError as e:
            body = e.read()[:300].decode("utf-8", "replace")
            if e.code == 409 and time.monotonic() + wait < deadline:
                logger.info("notify: %s answered 409 (a reload is running); again in %.1f s", url, wait)
                time.sleep(wait)
                wait = min(2 * wait, 5.0)
                continue
            raise RebuildError(f"notify failed: {url}: HTTP {e.code} {body}", EXIT_NOTIFY) from None
        except (urllib.error.URLError, OSError) as e:
            raise RebuildError(f"notify failed: {url}: {e}", EXIT_NOTIFY) from None


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
        items, users, tcfg = _read_inputs(cfg)
        return _run_locked(cfg, items, users, tcfg, do_notify=do_notify, show_progress=show_progress, echo=echo)


def _read_inputs(cfg: RebuildConfig) -> tuple[Any, Any, Any]:
    """(items, users or None, trainer config), checked; RebuildError EXIT_INPUT / EXIT_CONFIG otherwise."""
    from vqrec.index.embeddings import load_embeddings

    from .config import TrainConfig

    try:
        items = load_embeddings(cfg.items, cfg.item_ids)
        users = load_embeddings(cfg.users, cfg.user_ids) if cfg.users else None
    except VqrecError as e:
        raise RebuildError(str(e), EXIT_INPUT) from None
    try:
        tcfg = TrainConfig.from_dict(dict(cfg.train))
        tcfg.check_dim(items.d)
    except ConfigError as e:
        raise RebuildError(str(e), EXIT_CONFIG) from None
    except VqrecError as e:
        raise RebuildError(str(e), EXIT_INPUT) from None
    if users is not None and users.d != items.d:
        raise RebuildError(f"{users.source}: user dimension ({users.d}) != item dimension ({items.d}).", EXIT_INPUT)
    return items, users, tcfg


def _run_locked(
    cfg: RebuildConfig,
    items: Any,
    users: Any,
    tcfg: Any,
    *,
    do_notify: bool,
    show_progress: bool,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    from vqrec.index.artifact import load_index, save_index
    from vqrec.index.build import build_index, local_encoder
    from vqrec.index.codebooks import Codebooks
    from vqrec.index.eval import evaluate_index
    from vqrec.index.progress import progress
    from vqrec.index.store import IndexStore

    from .quantizers import train

    store = IndexStore(cfg.root)
    active_version = store.active(cfg.name) if os.path.isdir(store.name_dir(cfg.name)) else None
    active = load_index(store.path(cfg.name), mmap=True, verify=True) if active_version else None
    active_recall = _recall(active.manifest.get("evaluation"), cfg.k) if active is not None else None
    fp = _fingerprint(cfg, items, users)
    rows: dict[str, Any] = {"index": f"{cfg.name} at {store.name_dir(cfg.name)}", "active before": active_version}

    work = os.path.join(store.name_dir(cfg.name), WORK_DIR)
    state = _read_state(work)
    if state is not None and state.get("fingerprint") != fp:
        echo(f"rebuild: discarding an unfinished rebuild of other inputs ({work})")
        orphan = (state["steps"].get("publish") or {}).get("version")
        if orphan and orphan != active_version and orphan != store.previous(cfg.name):
            with contextlib.suppress(VqrecError):
                store.discard(cfg.name, orphan)
        state = None
    if state is None:
        shutil.rmtree(work, ignore_errors=True)
        src = (active.manifest.get("source") or {}) if active is not None else {}
        same_users = (src.get("users") or {}).get("sha256") == (users.fingerprint() if users is not None else None)
        if active is not None and (src.get("items") or {}).get("sha256") == items.fingerprint() and same_users:
            rows["result"] = f"already up to date: active version {active_version} was built from these embeddings"
            return rows
        os.makedirs(work, exist_ok=True)
        state = {"fingerprint": fp, "started_at": datetime.datetime.now(datetime.UTC).isoformat(), "steps": {}}
        _write_json(os.path.join(work, STATE), state)
    else:
        echo(f"rebuild: resuming after step(s) {', '.join(s for s in STEPS if s in state['steps'])}")
    _clean_stagings(store, cfg.name)
    steps = state["steps"]

    def done(step: str, info: dict[str, Any]) -> None:
        steps[step] = info
        _write_json(os.path.join(work, STATE), state)
        _crash_hook(step)

    # 1. train (or reuse)
    cb_dir = os.path.join(work, "codebooks")
    if "train" not in steps:
        echo("rebuild [1/5] train: measuring drift against the active codebooks")
        decision = drift_decision(
            active.codebooks if active is not None else None, items, tcfg, cfg.max_relative_mse_increase
        )
        logger.info("codebooks: %s (%s)", decision["decision"], decision["reason"])
        echo(f"rebuild [1/5] train: {decision['decision']} codebooks ({decision['reason']})")
        try:
            cb = (
                active.codebooks
                if decision["decision"] == "reuse"
                else train(  # type: ignore[union-attr]
                    items, tcfg, queries=users, show_progress=show_progress
                )
            )
        except ConfigError as e:
            raise RebuildError(str(e), EXIT_CONFIG) from None
        except InputError as e:
            raise RebuildError(str(e), EXIT_INPUT) from None
        cb.save(cb_dir, overwrite=True)
        done("train", decision)
    decision = steps["train"]
    rows["codebooks"] = f"{decision['decision']} ({decision['reason']})"
    if "relative_mse_new" in decision:
        rows["drift"] = (
            f"relative MSE {decision['relative_mse_new']} under the active codebooks vs "
            f"{decision['relative_mse_trained']} at training (threshold +{decision['threshold']:.1%})"
        )

    # 2. build + evaluate
    idx_dir = os.path.join(work, "index")
    if "build" not in steps:
        where = f"Ray ({cfg.ray_address or os.environ.get('RAY_ADDRESS') or 'local'})" if cfg.ray else "this process"
        echo(f"rebuild [2/5] build: encoding items and evaluating against exact search in {where}")
        cb = Codebooks.load(cb_dir)
        runner = None
        if cfg.ray:
            from vqrec.index.distributed import ray_encoder, ray_eval_runner

            encoder = ray_encoder(shards=cfg.shards, address=cfg.ray_address)
            runner = ray_eval_runner(address=cfg.ray_address)
        else:
            encoder = local_encoder(show_progress=show_progress)

        def encode(codebooks: Any, x: Any, what: str) -> Any:
            out = encoder(codebooks, x, what)
            if what == "items":
                _crash_hook("mid-build")
            return out

        index = build_index(cb, items, users=users, show_progress=show_progress, encoder=encode)
        index.manifest["rebuild"] = {"codebooks": decision, "base_version": active_version}
        ev = evaluate_index(index, items, users, nq=cfg.queries, ks=tuple(sorted({cfg.k, 10, 100})), runner=runner)
        manifest = save_index(index, idx_dir, overwrite=True, evaluation=ev)
        done("build", {"version": manifest["index_version"], "recall": _recall(ev, cfg.k)})
    version = steps["build"]["version"]
    recall = steps["build"]["recall"]
    rows["new version"] = version
    rows[f"user->item recall@{cfg.k}"] = (
        f"{recall} (active: {active_recall if active_recall is not None else '-'}; "
        f"floor {cfg.recall_floor}, max drop {cfg.max_drop})"
    )

    # 3. gate (before anything reaches the store)
    if "publish" not in steps:
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
        echo("rebuild [3/5] gate: passed")

        # 4. publish
        echo(f"rebuild [4/5] publish: {version}")
        try:
            if not os.path.isdir(store.version_dir(cfg.name, version)):
                with progress(desc="publish", unit="file", disable=not show_progress) as bar:

                    def copied(fname: str) -> None:
                        bar.update(1)
                        _crash_hook("mid-publish")

                    store.publish_dir(idx_dir, cfg.name, on_file=copied)
        except VqrecError as e:
            raise RebuildError(f"publish failed: {e}", EXIT_PUBLISH) from None
        done("publish", {"version": version})

    # 5. activate, prune
    if "activate" not in steps:
        echo(f"rebuild [5/5] activate: {version}")
        try:
            store.activate(cfg.name, version)
        except VqrecError as e:
            with contextlib.suppress(VqrecError):
                store.discard(cfg.name, version)
            shutil.rmtree(work, ignore_errors=True)
            raise RebuildError(f"activate failed: {e}", EXIT_PUBLISH) from None
        done("activate", {"version": version})
    rows["active now"] = version
    try:
        pruned = store.prune(cfg.name, cfg.keep)
    except VqrecError as e:
        logger.warning("prune failed: %s", e)
        pruned = []
    rows["pruned"] = ", ".join(pruned) if pruned else "-"
    shutil.rmtree(work, ignore_errors=True)
    rows["result"] = f"published and activated {version}"

    if cfg.notify_url and do_notify:
        try:
            rows["notified"] = notify(cfg, version)
        except RebuildError as e:
            raise RebuildError(f"{e} (version {version} is published and active)", EXIT_NOTIFY) from None
    return rows
