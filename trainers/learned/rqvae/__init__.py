"""RQ-VAE / CoST tokenizer: MLP encoder -> latent -> L residual levels x K codes -> MLP decoder (torch).

    config   RQVAEConfig (every setting, validated) and LOSSES
    model    ResidualVQ, RQVAE, the losses (sq_err, info_nce): the equations and the losses' scales
    train    train_rqvae: k-means initialisation, the loop, dead-code reset, checkpoints (TrainState)

The trained weights are written as a tokenizer artifact (index.semantic.Tokenizer, numpy), which
``vqrec build --semantic-ids`` uses to give every item its semantic id without torch.
"""

from .config import LOSSES, RQVAEConfig
from .model import RQVAE, ResidualVQ, info_nce, sq_err
from .train import CHECKPOINT_VERSION, TrainState, load_checkpoint, read_checkpoint, reset_dead_codes, train_rqvae

__all__ = [
    "CHECKPOINT_VERSION",
    "LOSSES",
    "RQVAE",
    "RQVAEConfig",
    "ResidualVQ",
    "TrainState",
    "info_nce",
    "load_checkpoint",
    "read_checkpoint",
    "reset_dead_codes",
    "sq_err",
    "train_rqvae",
]
