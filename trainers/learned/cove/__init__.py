"""COVE: BPR matrix factorization with cascaded vector quantizers on user and item embeddings (torch).

    config     CoveConfig: every setting and its validation (``quantize=False``: the plain BPR-MF baseline)
    data       Interactions: the ``user TAB item`` training log, read and validated; held-out pairs
    model      CascadeVQ and CoveModel: embedding tables and cascades, initialisation, dead-code re-seeding, export
    evaluate   leave-one-out HR@k / NDCG@k, per-level code usage, the tree check (numpy only)
    train      train_cove: the training loop and its report; CoveResult and the artifact it publishes

The names used outside are re-exported here; importing the package needs torch (the ``train`` extra).
"""

from .config import CoveConfig
from .data import Interactions, read_heldout, read_interactions
from .evaluate import code_usage, leave_one_out, tree_check
from .model import CascadeVQ, CoveModel
from .train import ARTIFACT, FORMAT_VERSION, CoveResult, train_cove

__all__ = [
    "ARTIFACT",
    "FORMAT_VERSION",
    "CascadeVQ",
    "CoveConfig",
    "CoveModel",
    "CoveResult",
    "Interactions",
    "code_usage",
    "leave_one_out",
    "read_heldout",
    "read_interactions",
    "train_cove",
    "tree_check",
]
