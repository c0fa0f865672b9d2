"""COVE: BPR matrix factorization with cascaded vector quantizers on user and item embeddings (torch).

From an implicit-feedback log (``user TAB item`` lines) it learns, from random initialisation and end to end:

    e            user / item embedding tables (dim), N(0, init_std)
    q_1 = VQ_1(e)        level 1: nearest of K_1 codewords (finest)
    q_l = VQ_l(q_{l-1})  level l quantizes level l-1's codeword (coarser: K_l <= K_{l-1})
    e' = e + alpha * mean(q_1 .. q_L)          the enhanced embedding; score(u, i) = <u', i'>
    loss = BPR(u, i, sampled negatives) + omega * sum_l (|sg(z_l) - c_l|^2 + beta |z_l - sg(c_l)|^2)
           + reg * (|e_u|^2 + |e_i|^2 + |e_j|^2)

One cascade per side (users, items). Each q_l goes on with the straight-through estimator, so the ranking
gradient reaches e; codebooks learn from the codebook term; codewords no entity picked during an epoch are
re-seeded from that level's inputs (seeded generator) so every level keeps its codes in use. Because level
l+1 sees only level l's codeword, every fine code has exactly one coarse parent: the codes of each side form
a tree (a learned category tree), which the report checks.

``quantize=False`` is the plain BPR-MF baseline on the same code path (alpha, omega, beta, levels unused):
with alpha = omega = 0 COVE computes exactly the same embeddings as the baseline.

Output (an artifact directory, published atomically): ``users.npy`` + ``user_ids.txt`` and ``items.npy`` +
``item_ids.txt`` (the enhanced e' used for scoring, float32, in vqrec's embeddings format so ``vqrec build``
indexes them directly), ``user_codes.npy`` / ``item_codes.npy`` (n, L) int32 (column 0 = finest level),
``codebooks.npz`` (``user_level{l}`` / ``item_level{l}`` (K_l, dim) float32) and ``manifest.json`` with the
config and the report (time, losses, per-level utilization and perplexity, the tree check and, with a
held-out file, leave-one-out HR@k / NDCG@k with training items excluded, by exact inner-product search).

Deterministic: the same config (seed) and thread count on one machine give identical files; initial tables
and codebooks, the data order, negatives and dead-code re-seeding each come from their own seeded generator.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vqrec.index.artifact_io import atomic_dir, write_manifest
from vqrec.index.errors import ConfigError, InputError
from vqrec.index.progress import progress
from vqrec.trainers.configfile import config_from_dict

from ._torch import require_torch

torch = require_torch()
nn = torch.nn
F = torch.nn.functional

ARTIFACT = "cove"
FORMAT_VERSION = 1


# ---- configuration -------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class CoveConfig:
    """COVE / BPR-MF settings. Defaults measured on ml-100k leave-one-out (see bench/cove.py)."""

    quantize: bool = True  # False: plain BPR-MF (alpha, omega, beta, levels unused)
    dim: int = 64  # embedding size
    levels: tuple[int, ...] = (100, 10)  # codebook sizes, fine -> coarse
    alpha: float = 0.3  # weight of mean(q_1..q_L) added to e
    omega: float = 0.001  # weight of the quantization losses
    beta: float = 0.25  # commitment weight inside each level's quantization loss
    epochs: int = 30
    batch_size: int = 1024  # positive pairs per step
    lr: float = 0.005  # Adam
    reg: float = 0.01  # L2 on the batch's raw embeddings (user, positive, negatives), per example
    negatives: int = 4  # uniformly sampled negative items per positive
    init_std: float = 0.1  # N(0, init_std) initial embeddings
    dead_code_reset: bool = True  # re-seed codewords unused during an epoch from that level's inputs
    eval_k: int = 10  # k of HR@k / NDCG@k in the report
    threads: int = 1  # torch intra-op threads while training (0 = leave torch's setting)
    seed: int = 1234

    def __post_init__(self) -> None:
        for name in ("quantize", "dead_code_reset"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}.")
        object.__setattr__(self, "levels", _as_levels(self.levels))
        for name in ("dim", "epochs", "batch_size", "negatives", "eval_k"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}.")
        for name in ("seed", "threads"):
            v = getattr(self, name)
            if not _is_int(v) or v < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {v!r}.")
        for name, positive in (("alpha", False), ("omega", False), ("beta", False), ("reg", False), ("lr", True)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ConfigError(f"{name} must be a finite number, got {v!r}.")
            if v < 0 or (positive and v == 0):
                raise ConfigError(f"{name} must be {'> 0' if positive else '>= 0'}, got {v!r}.")
            object.__setattr__(self, name, float(v))
        v = self.init_std
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
            raise ConfigError(f"init_std must be a finite number > 0, got {v!r}.")
        object.__setattr__(self, "init_std", float(v))

    @property
    def kind(self) -> str:
        return "cove" if self.quantize else "bpr"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["levels"] = list(self.levels)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CoveConfig:
        return config_from_dict(cls, data)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _as_levels(v: Any) -> tuple[int, ...]:
    """(100, 10), [100, 10] or "100,10" -> (100, 10): at least one level, each >= 2 codes, fine -> coarse."""
    raw = v
    if isinstance(v, str):
        try:
            v = [int(s) for s in v.replace(" ", "").split(",") if s != ""]
        except ValueError:
            raise ConfigError(f"levels must be codebook sizes like 100,10; got {raw!r}.") from None
    if not isinstance(v, list | tuple) or not v or not all(_is_int(k) for k in v):
        raise ConfigError(f"levels must be a non-empty list of integers (codebook sizes, fine -> coarse); got {raw!r}.")
    if any(k < 2 for k in v):
        raise ConfigError(f"levels: every level needs at least 2 codes; got {list(v)}.")
    if any(b > a for a, b in zip(v, v[1:], strict=False)):
        raise ConfigError(
            f"levels go from fine to coarse (each level at most as many codes as the one before); got {list(v)}."
        )
    return tuple(v)


# ---- data ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Interactions:
    """A deduplicated implicit-feedback log: ids in order of first appearance, pairs as row indices."""

    user_ids: list[str]
    item_ids: list[str]
    users: NDArray[np.int64]  # (n,) user row of each pair
    items: NDArray[np.int64]  # (n,) item row of each pair
    source: str = ""
    lines: int = 0
    duplicates: int = 0
    sha256: str = ""
    user_rows: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    item_rows: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def n(self) -> int:
        return int(len(self.users))

    def seen(self) -> dict[str, list[str]]:
        """{user id: [item ids]} in log order (the training items excluded at evaluation)."""
        out: dict[str, list[str]] = {}
        for u, i in zip(self.users.tolist(), self.items.tolist(), strict=True):
            out.setdefault(self.user_ids[u], []).append(self.item_ids[i])
        return out


def read_pairs_strict(path: str) -> tuple[list[tuple[str, str]], int, str]:
    """``user TAB item [TAB ...]`` lines -> ([(user, item)], lines read, sha256). Blank lines are skipped,
    further columns ignored; a line without two non-empty tab-separated fields is an error naming it."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"interactions file not found: {path}")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, expected a `user TAB item` file.")
    with open(path, "rb") as f:
        blob = f.read()
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 ({e.reason} at byte {e.start}).") from None
    pairs: list[tuple[str, str]] = []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for no, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or not parts[0].strip() or not parts[1].strip():
            raise InputError(f"{path}: line {no} is not `user TAB item`: {line[:80]!r}.")
        pairs.append((parts[0].strip(), parts[1].strip()))
    return pairs, len(lines), hashlib.sha256(blob).hexdigest()


def read_interactions(path: str) -> Interactions:
    """Read and validate a training log (see read_pairs_strict); duplicate pairs are kept once."""
    pairs, nlines, digest = read_pairs_strict(path)
    if not pairs:
        raise InputError(f"{path}: no interactions (the file has no `user TAB item` lines).")
    urow: dict[str, int] = {}
    irow: dict[str, int] = {}
    seen: set[tuple[int, int]] = set()
    us: list[int] = []
    its: list[int] = []
    for u, i in pairs:
        a = urow.setdefault(u, len(urow))
        b = irow.setdefault(i, len(irow))
        if (a, b) in seen:
            continue
        seen.add((a, b))
        us.append(a)
        its.append(b)
    return Interactions(
        user_ids=list(urow),
        item_ids=list(irow),
        users=np.asarray(us, np.int64),
        items=np.asarray(its, np.int64),
        source=path,
        lines=nlines,
        duplicates=len(pairs) - len(us),
        sha256=digest,
        user_rows=urow,
        item_rows=irow,
    )


def read_heldout(path: str) -> dict[str, str]:
    """Held-out ``user TAB item`` lines -> {user: item} (a user's last line wins, as in ``vqrec eval``)."""
    pairs, _, _ = read_pairs_strict(path)
    if not pairs:
        raise InputError(f"{path}: no held-out interactions (the file has no `user TAB item` lines).")
    return dict(pairs)


# ---- evaluation ----------------------------------------------------------------------------------
def leave_one_out(
    user_vectors: NDArray[np.float32],
    item_vectors: NDArray[np.float32],
    user_ids: list[str],
    item_ids: list[str],
    seen: dict[str, list[str]],
    heldout: dict[str, str],
    *,
    k: int = 10,
) -> dict[str, Any]:
    """Leave-one-out HR@k and NDCG@k by exact inner-product search, the user's seen items excluded.

    Ties are broken by item order (as index.eval.exact_hit_rate). Users unknown to the model are left
    out (counted); a held-out item unknown to the model is a miss (counted). NDCG@k = 1/log2(rank+2)."""
    urow = {u: r for r, u in enumerate(user_ids)}
    irow = {i: r for r, i in enumerate(item_ids)}
    users = [u for u in heldout if u in urow]
    hits = 0
    ndcg = 0.0
    unknown_items = 0
    for start in range(0, len(users), 1024):
        chunk = users[start : start + 1024]
        s = user_vectors[[urow[u] for u in chunk]] @ item_vectors.T
        for q, u in enumerate(chunk):
            excl = [irow[i] for i in seen.get(u, []) if i in irow]
            s[q, excl] = -np.inf
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]
        for q, u in enumerate(chunk):
            target = irow.get(heldout[u])
            if target is None:
                unknown_items += 1
                continue
            pos = np.flatnonzero(top[q] == target)
            if len(pos):
                hits += 1
                ndcg += 1.0 / math.log2(int(pos[0]) + 2)
    n = len(users)
    return {
        f"hr@{k}": round(hits / n, 4) if n else float("nan"),
        f"ndcg@{k}": round(ndcg / n, 4) if n else float("nan"),
        "users": n,
        "users_unknown": len(heldout) - n,
        "heldout_items_unknown": unknown_items,
        "seen_excluded": True,
        "search": "exact inner product over the enhanced embeddings",
    }


def code_usage(codes: NDArray[np.integer], K: int) -> dict[str, float]:
    counts = np.bincount(codes, minlength=K).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return {
        "codes": int(K),
        "used": int((counts > 0).sum()),
        "utilization": round(float((counts > 0).mean()), 4),
        "perplexity": round(float(np.exp(-(p * np.log(p)).sum())), 2),
    }


def tree_check(codes: NDArray[np.integer], levels: tuple[int, ...]) -> dict[str, Any]:
    """Do the (n, L) codes form a tree: does every code at level l have exactly one parent at level l+1?"""
    out: dict[str, Any] = {"is_tree": True, "levels": []}
    for lvl in range(codes.shape[1] - 1):
        fine, coarse = codes[:, lvl].astype(np.int64), codes[:, lvl + 1].astype(np.int64)
        pairs = np.unique(fine * levels[lvl + 1] + coarse)
        parents_per_child = np.bincount(pairs // levels[lvl + 1], minlength=levels[lvl])
        children = np.bincount(pairs % levels[lvl + 1], minlength=levels[lvl + 1])
        used_parents = children[children > 0]
        bad = int((parents_per_child > 1).sum())
        out["is_tree"] = out["is_tree"] and bad == 0
        out["levels"].append(
            {
                "from": lvl,
                "to": lvl + 1,
                "codes_with_several_parents": bad,
                "children_per_parent_mean": round(float(used_parents.mean()), 2),
                "children_per_parent_max": int(used_parents.max()),
            }
        )
    return out


# ---- model ---------------------------------------------------------------------------------------
class CascadeVQ(nn.Module):
    """Cascaded vector quantizers: level l quantizes level l-1's (straight-through) output."""

    def __init__(self, levels: tuple[int, ...], dim: int) -> None:
        super().__init__()
        self.levels = levels
        self.codebooks = nn.ParameterList([nn.Parameter(torch.zeros(K, dim)) for K in levels])

    @staticmethod
    def nearest(z: Any, cb: Any) -> Any:
        d = (z * z).sum(1, keepdim=True) - 2.0 * z @ cb.T + (cb * cb).sum(1)[None, :]
        return d.argmin(1)

    def forward(self, e: Any, beta: float) -> tuple[Any, Any, list[Any], list[Any]]:
        """-> (mean of the level outputs, sum of quantization losses, codes per level, inputs per level)."""
        z = e
        outs, codes, inputs = [], [], []
        loss = e.new_zeros(())
        for cb in self.codebooks:
            with torch.no_grad():
                k = self.nearest(z, cb)
            c = cb[k]
            zd = z.detach()
            loss = loss + ((c - zd) ** 2).sum(1).mean() + beta * ((z - c.detach()) ** 2).sum(1).mean()
            q = z + (c - z).detach()  # straight-through: value c, gradient to z (and on to e)
            outs.append(q)
            codes.append(k)
            inputs.append(zd)
            z = q
        return torch.stack(outs).mean(0), loss, codes, inputs


class CoveModel(nn.Module):
    def __init__(self, n_users: int, n_items: int, cfg: CoveConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.user = nn.Parameter(torch.zeros(n_users, cfg.dim))
        self.item = nn.Parameter(torch.zeros(n_items, cfg.dim))
        self.user_vq = CascadeVQ(cfg.levels, cfg.dim) if cfg.quantize else None
        self.item_vq = CascadeVQ(cfg.levels, cfg.dim) if cfg.quantize else None

    def side(self, table: Any, vq: CascadeVQ | None, rows: Any) -> tuple[Any, Any, Any, list[Any]]:
        """-> (enhanced rows e', quantization loss, raw rows e, codes per level of the distinct rows).

        Each distinct entity of the batch is quantized once (the quantization loss is a mean over them);
        plain BPR-MF takes the same path with no quantizer."""
        uniq, inv = torch.unique(rows, return_inverse=True)
        e = table[uniq]
        if vq is None:
            return e[inv], e.new_zeros(()), e[inv], []
        qm, qloss, codes, _ = vq(e, self.cfg.beta)
        return (e + self.cfg.alpha * qm)[inv], qloss, e[inv], codes


def _init(model: CoveModel, cfg: CoveConfig) -> None:
    g = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        model.user.copy_(torch.randn(model.user.shape, generator=g) * cfg.init_std)
        model.item.copy_(torch.randn(model.item.shape, generator=g) * cfg.init_std)
        if cfg.quantize:
            gc = torch.Generator().manual_seed(cfg.seed + 1)
            for table, vq in ((model.user, model.user_vq), (model.item, model.item_vq)):
                src = table
                for cb in vq.codebooks:  # type: ignore[union-attr]
                    cb.copy_(src[torch.randperm(len(src), generator=gc)[: len(cb)]])
                    src = cb


@torch.no_grad()
def _reset_dead(vq: CascadeVQ, table: Any, used: list[Any], g: Any, beta: float) -> list[int]:
    """Re-seed every codeword no entity picked during the epoch with a random input of its level."""
    _, _, codes, inputs = vq(table, beta)
    n_reset = []
    for lvl, cb in enumerate(vq.codebooks):
        dead = torch.nonzero(~used[lvl]).flatten()
        n_reset.append(int(len(dead)))
        if len(dead):
            z = torch.unique(inputs[lvl], dim=0)  # distinct inputs (level >= 2: the used finer codewords)
            pick = torch.randperm(len(z), generator=g)[: len(dead)]
            cb[dead[: len(pick)]] = z[pick]
    return n_reset


@torch.no_grad()
def _export(model: CoveModel, cfg: CoveConfig) -> tuple[dict[str, Any], dict[str, NDArray[np.float32]]]:
    """{side: (enhanced vectors (n, dim) float32, codes (n, L) int32 or None)} and the codebooks."""
    out: dict[str, Any] = {}
    codebooks: dict[str, NDArray[np.float32]] = {}
    for side, table, vq in (("users", model.user, model.user_vq), ("items", model.item, model.item_vq)):
        enh, _, _, cl = model.side(table, vq, torch.arange(len(table)))
        codes = torch.stack(cl, 1).numpy().astype(np.int32) if cl else None
        if vq is not None:
            for lvl, cb in enumerate(vq.codebooks):
                codebooks[f"{side[:-1]}_level{lvl}"] = cb.detach().numpy().astype(np.float32).copy()
        out[side] = (np.ascontiguousarray(enh.numpy(), dtype=np.float32), codes)
    return out, codebooks


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class CoveResult:
    """Trained embeddings (enhanced e'), codes, codebooks, config and report."""

    config: CoveConfig
    user_ids: list[str]
    item_ids: list[str]
    user_vectors: NDArray[np.float32]
    item_vectors: NDArray[np.float32]
    user_codes: NDArray[np.int32] | None
    item_codes: NDArray[np.int32] | None
    codebooks: dict[str, NDArray[np.float32]]
    report: dict[str, Any]
    source: dict[str, Any]

    def save(self, path: str, *, overwrite: bool = False) -> dict[str, Any]:
        """Publish the artifact directory atomically; returns the manifest."""
        with atomic_dir(path, overwrite=overwrite) as tmp:
            np.save(os.path.join(tmp, "users.npy"), self.user_vectors)
            np.save(os.path.join(tmp, "items.npy"), self.item_vectors)
            for name, ids in (("user_ids.txt", self.user_ids), ("item_ids.txt", self.item_ids)):
                with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                    f.writelines(f"{i}\n" for i in ids)
            if self.user_codes is not None and self.item_codes is not None:
                np.save(os.path.join(tmp, "user_codes.npy"), self.user_codes)
                np.save(os.path.join(tmp, "item_codes.npy"), self.item_codes)
                np.savez(os.path.join(tmp, "codebooks.npz"), **self.codebooks)
            manifest = write_manifest(
                tmp,
                {
                    "artifact": ARTIFACT,
                    "format_version": FORMAT_VERSION,
                    "kind": self.config.kind,
                    "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "d": int(self.user_vectors.shape[1]),
                    "n_users": len(self.user_ids),
                    "n_items": len(self.item_ids),
                    "levels": list(self.config.levels) if self.config.quantize else [],
                    "embeddings": "enhanced e' = e + alpha * mean(q_1..q_L); score = <user, item>"
                    if self.config.quantize
                    else "plain BPR-MF embeddings; score = <user, item>",
                    "source": self.source,
                    "config": self.config.to_dict(),
                    "report": self.report,
                },
            )
        return manifest


def train_cove(
    data: Interactions,
    cfg: CoveConfig,
    *,
    heldout: dict[str, str] | None = None,
    eval_every: int = 0,
    show_progress: bool = True,
) -> CoveResult:
    """Train COVE (or plain BPR-MF with ``cfg.quantize=False``) on ``data``; evaluate on ``heldout`` at the
    end (and every ``eval_every`` epochs into ``report["eval_history"]``, outside the training time)."""
    nu, ni = len(data.user_ids), len(data.item_ids)
    seen = data.seen() if heldout is not None else {}
    eval_history: list[dict[str, Any]] = []
    eval_seconds = 0.0
    if cfg.quantize:
        for side, n in (("users", nu), ("items", ni)):
            if cfg.levels[0] > n:
                raise ConfigError(
                    f"levels[0]={cfg.levels[0]} codes but the log has only {n} {side}; "
                    "a level cannot have more codes than entities"
                    + (f" (e.g. --set levels={n // 4},2)." if n >= 8 else "; train bpr instead.")
                )
    if heldout is not None and not any(u in data.user_rows for u in heldout):
        raise InputError(
            f"none of the {len(heldout)} held-out users appears in the training log {data.source}; "
            "is --test the held-out split of --interactions?"
        )
    with _torch_threads(cfg.threads):
        t0 = time.perf_counter()
        model = CoveModel(nu, ni, cfg)
        _init(model, cfg)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        g_data = torch.Generator().manual_seed(cfg.seed + 2)
        g_dead = torch.Generator().manual_seed(cfg.seed + 3)
        pu = torch.from_numpy(data.users)
        pi = torch.from_numpy(data.items)
        n = data.n
        history: list[dict[str, float]] = []
        resets = {"users": [0] * len(cfg.levels), "items": [0] * len(cfg.levels)} if cfg.quantize else {}
        bar = progress(total=cfg.epochs, desc=f"train {cfg.kind}", unit="epoch", disable=not show_progress)
        with bar:
            for epoch in range(cfg.epochs):
                perm = torch.randperm(n, generator=g_data)
                negs = torch.randint(ni, (n, cfg.negatives), generator=g_data)
                sums = torch.zeros(3, dtype=torch.float64)
                used = {
                    "users": [torch.zeros(K, dtype=torch.bool) for K in cfg.levels],
                    "items": [torch.zeros(K, dtype=torch.bool) for K in cfg.levels],
                }
                for start in range(0, n, cfg.batch_size):
                    b = perm[start : start + cfg.batch_size]
                    u, i, j = pu[b], pi[b], negs[b]
                    uq, lu, ue, ucodes = model.side(model.user, model.user_vq, u)
                    rows = torch.cat([i, j.reshape(-1)])
                    iq, li, ie, icodes = model.side(model.item, model.item_vq, rows)
                    pos, neg = iq[: len(b)], iq[len(b) :].reshape(len(b), cfg.negatives, -1)
                    diff = (uq * pos).sum(1, keepdim=True) - (uq[:, None, :] * neg).sum(2)
                    bpr = F.softplus(-diff).mean()
                    reg = cfg.reg * ((ue**2).sum() + (ie**2).sum()) / len(b) if cfg.reg else torch.zeros(())
                    qloss = lu + li if cfg.quantize else torch.zeros(())
                    loss = bpr + cfg.omega * qloss + reg if cfg.quantize else bpr + reg
                    if not torch.isfinite(loss):
                        raise ConfigError(
                            f"training diverged in epoch {epoch + 1} (loss {float(loss.detach())}); "
                            f"lower lr ({cfg.lr}) or init_std ({cfg.init_std}). Nothing was written."
                        )
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    w = len(b) / n
                    bpr, qloss, reg = bpr.detach(), qloss.detach(), reg.detach()
                    sums += torch.tensor([float(bpr), float(qloss), float(reg)], dtype=torch.float64) * w
                    for lvl, (ku, ki) in enumerate(zip(ucodes, icodes, strict=True)):
                        used["users"][lvl][ku] = True
                        used["items"][lvl][ki] = True
                if cfg.quantize and cfg.dead_code_reset and epoch < cfg.epochs - 1:
                    for side, table, vq in (("users", model.user, model.user_vq), ("items", model.item, model.item_vq)):
                        assert vq is not None
                        for lvl, c in enumerate(_reset_dead(vq, table.detach(), used[side], g_dead, cfg.beta)):
                            resets[side][lvl] += c
                ep = {"bpr": float(sums[0]), "quantization": float(sums[1]), "reg": float(sums[2])}
                history.append({k: round(v, 5) for k, v in ep.items()})
                bar.set_postfix(bpr=f"{ep['bpr']:.4f}", vq=f"{ep['quantization']:.4f}", refresh=False)
                bar.update(1)
                if heldout is not None and eval_every and (epoch + 1) % eval_every == 0 and epoch + 1 < cfg.epochs:
                    t1 = time.perf_counter()
                    o, _ = _export(model, cfg)
                    ev = leave_one_out(
                        o["users"][0], o["items"][0], data.user_ids, data.item_ids, seen, heldout, k=cfg.eval_k
                    )
                    eval_history.append(
                        {"epoch": epoch + 1, **{k: ev[k] for k in (f"hr@{cfg.eval_k}", f"ndcg@{cfg.eval_k}")}}
                    )
                    eval_seconds += time.perf_counter() - t1
        train_seconds = time.perf_counter() - t0 - eval_seconds

        out, codebooks = _export(model, cfg)

    report: dict[str, Any] = {
        "kind": cfg.kind,
        "n_users": nu,
        "n_items": ni,
        "n_interactions": n,
        "duplicates_dropped": data.duplicates,
        "train_seconds": round(train_seconds, 3),
        "torch_threads": cfg.threads or torch.get_num_threads(),
        "loss": "bpr + omega * quantization + reg (quantization: unweighted, summed over levels and both sides)"
        if cfg.quantize
        else "bpr + reg",
        "final_losses": history[-1],
        "loss_history": history,
    }
    if cfg.quantize:
        report["quantization"] = {}
        for side in ("users", "items"):
            codes = out[side][1]
            report["quantization"][side] = {
                "levels": [code_usage(codes[:, lvl], K) for lvl, K in enumerate(cfg.levels)],
                "dead_code_resets": resets[side],
                "tree": tree_check(codes, cfg.levels),
            }
    if heldout is not None:
        report["eval"] = leave_one_out(
            out["users"][0], out["items"][0], data.user_ids, data.item_ids, seen, heldout, k=cfg.eval_k
        )
        if eval_history:
            report["eval_history"] = eval_history
    return CoveResult(
        config=cfg,
        user_ids=list(data.user_ids),
        item_ids=list(data.item_ids),
        user_vectors=out["users"][0],
        item_vectors=out["items"][0],
        user_codes=out["users"][1],
        item_codes=out["items"][1],
        codebooks=codebooks,
        report=report,
        source={"interactions": data.source, "sha256": data.sha256, "lines": data.lines},
    )
