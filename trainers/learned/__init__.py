"""Learned quantizers and recommenders trained with torch (optional extra ``train``).

    rqvae   RQ-VAE / CoST tokenizer: MLP encoder -> L residual levels x K codes -> MLP decoder;
            mse (TIGER), contrastive (CoST) or both; writes a tokenizer artifact that ``index/``
            reads with numpy only (semantic IDs are computed at build time without torch)
    cove    BPR matrix factorization with cascaded vector quantizers on user and item embeddings,
            trained end to end from random initialisation; ``bpr`` is the plain baseline

Nothing under ``index/`` or ``service/`` imports this package: torch never reaches the serving path.
"""
