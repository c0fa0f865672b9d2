"""Shared setup of the RQ-VAE tests (test_rqvae.py, test_rqvae_config.py): a small, fast config."""

from __future__ import annotations

from vqrec.trainers.learned.rqvae import RQVAEConfig

SMALL = {"codebook_size": 16, "latent_dim": 8, "hidden": (32,), "epochs": 3, "batch_size": 64, "report_queries": 200}


def small(**kw):  # type: ignore[no-untyped-def]
    return RQVAEConfig(**{**SMALL, **kw})
