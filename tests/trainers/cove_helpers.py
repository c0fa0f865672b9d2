"""Shared setup of the COVE tests (test_cove.py, test_cove_cli.py): a small synthetic log and fast settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# small and fast: 160 users, 240 items, 8 taste groups
FAST = {"dim": 16, "levels": (24, 6), "epochs": 12, "batch_size": 256, "lr": 0.02, "seed": 7}


def make_log(tmp: Path, *, n_users: int = 160, n_items: int = 240, groups: int = 8, per_user: int = 14, seed: int = 0):
    """A log where each user picks items of their own taste group (popularity-skewed) plus 2 random others; one
    own-group pick per user is held out (never in that user's training lines). Returns (train.tsv, test.tsv)."""
    rng = np.random.default_rng(seed)
    item_group = np.arange(n_items) % groups
    pop = rng.lognormal(0, 1.0, n_items)
    train, test = [], []
    for u in range(n_users):
        own = np.flatnonzero(item_group == u % groups)
        picks = rng.choice(own, per_user - 1, replace=False, p=pop[own] / pop[own].sum())
        noise = rng.choice(np.flatnonzero(item_group != u % groups), 2, replace=False)
        test.append(f"u{u}\ti{picks[0]}\n")
        train += [f"u{u}\ti{i}\n" for i in rng.permutation([*picks[1:], *noise])]
    (tmp / "train.tsv").write_text("".join(train))
    (tmp / "test.tsv").write_text("".join(test))
    return tmp / "train.tsv", tmp / "test.tsv"
