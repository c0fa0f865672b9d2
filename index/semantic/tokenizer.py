"""The numpy tokenizer of semantic IDs: the forward of a trained RQ-VAE (RQ-VAE / CoST) and its artifact.

numpy only: the tokenizer is trained with torch under ``trainers/learned``, but its weights are plain
arrays here, so ``vqrec build`` and the service compute and serve semantic IDs without torch.

    Tokenizer          numpy forward of a trained RQ-VAE: encode (MLP -> greedy residual
                       quantization over L levels) and decode (sum of codewords -> MLP);
                       save / load as a tokenizer artifact (manifest.json + weights.npz)
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..artifact_io import atomic_dir, read_manifest, verify_files, write_manifest
from ..errors import ArtifactCorrupt, ConfigError, DimensionMismatchError

TOKENIZER_FORMAT_VERSION = 1
INPUT_NORMS = ("none", "l2")


# ---- tokenizer (numpy forward) -----------------------------------------------------------------
Layer = tuple[NDArray[np.float32], NDArray[np.float32]]  # (W (out, in), b (out,)), torch.nn.Linear layout


def _mlp(x: NDArray[np.float32], layers: Sequence[Layer]) -> NDArray[np.float32]:
    """Linear layers with ReLU between them (none after the last), as the torch model."""
    for i, (w, b) in enumerate(layers):
        x = x @ w.T + b
        if i < len(layers) - 1:
            np.maximum(x, 0.0, out=x)
    return x


def residual_quantize(z: NDArray[np.float32], codebooks: Sequence[NDArray[np.float32]]) -> NDArray[np.int64]:
    """Greedy residual quantization: level l picks the codeword nearest (L2) to what levels < l left."""
    r = np.array(z, dtype=np.float32, copy=True)
    codes = np.empty((len(z), len(codebooks)), dtype=np.int64)
    for lvl, c in enumerate(codebooks):
        # argmin |r - c|^2 = argmin |c|^2 - 2 r.c
        d = (c * c).sum(1)[None, :] - 2.0 * (r @ c.T)
        idx = np.argmin(d, axis=1)
        codes[:, lvl] = idx
        r -= c[idx]
    return codes


@dataclass
class Tokenizer:
    """A trained RQ-VAE in numpy: ``encode(x) -> (n, L) codes``, ``decode(codes) -> (n, d)``."""

    encoder: list[Layer]
    codebooks: list[NDArray[np.float32]]  # L x (K_l, latent)
    decoder: list[Layer]
    input_norm: str = "l2"  # "l2": inputs are L2-normalised before encoding (and reconstructions compared so)
    latent_norm: bool = False  # the encoder output is L2-normalised before quantization
    config: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    def __post_init__(self) -> None:
        if self.input_norm not in INPUT_NORMS:
            raise ConfigError(f"input_norm must be one of {list(INPUT_NORMS)}, got {self.input_norm!r}.")
        if not self.encoder or not self.decoder or not self.codebooks:
            raise ConfigError("a tokenizer needs encoder layers, decoder layers and at least one codebook.")
        latent = self.encoder[-1][0].shape[0]
        for lvl, c in enumerate(self.codebooks):
            if c.ndim != 2 or c.shape[1] != latent:
                raise ConfigError(f"codebook {lvl} has shape {c.shape}, expected (K, {latent}).")
        if self.decoder[0][0].shape[1] != latent or self.decoder[-1][0].shape[0] != self.d:
            raise ConfigError("decoder shapes do not match the encoder's latent and input dimensions.")

    @property
    def d(self) -> int:
        return int(self.encoder[0][0].shape[1])

    @property
    def latent_dim(self) -> int:
        return int(self.encoder[-1][0].shape[0])

    @property
    def levels(self) -> int:
        return len(self.codebooks)

    @property
    def sizes(self) -> list[int]:
        return [int(c.shape[0]) for c in self.codebooks]

    def prepare(self, x: NDArray[Any]) -> NDArray[np.float32]:
        """The model's input: float32, L2-normalised when ``input_norm == "l2"`` (zero rows stay zero)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise DimensionMismatchError(f"embeddings must be an (n, {self.d}) array, got shape {x.shape}.")
        if x.shape[1] != self.d:
            raise DimensionMismatchError(f"embeddings have dimension {x.shape[1]}, the tokenizer expects {self.d}.")
        if self.input_norm == "l2":
            n = np.linalg.norm(x, axis=1, keepdims=True)
            x = x / np.where(n > 0, n, 1.0).astype(np.float32)
        return np.ascontiguousarray(x, dtype=np.float32)

    def encode(self, x: NDArray[Any], *, batch_size: int = 65536) -> NDArray[np.int64]:
        x = self.prepare(x)
        out = np.empty((len(x), self.levels), dtype=np.int64)
        for s in range(0, len(x), batch_size):
            out[s : s + batch_size] = residual_quantize(self.embed(x[s : s + batch_size]), self.codebooks)
        return out

    def embed(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """Encoder output (the latent that is quantized) of prepared inputs."""
        z = _mlp(x, self.encoder)
        if self.latent_norm:
            n = np.linalg.norm(z, axis=1, keepdims=True)
            z = z / np.maximum(n, 1e-12)
        return z

    def latent(self, codes: NDArray[Any]) -> NDArray[np.float32]:
        codes = np.asarray(codes)
        z = np.zeros((len(codes), self.latent_dim), dtype=np.float32)
        for lvl, c in enumerate(self.codebooks):
            z += c[codes[:, lvl]]
        return z

    def decode(self, codes: NDArray[Any]) -> NDArray[np.float32]:
        return _mlp(self.latent(codes), self.decoder)

    # ---- artifact ----------------------------------------------------------------------------
    def arrays(self) -> dict[str, NDArray[np.float32]]:
        out: dict[str, NDArray[np.float32]] = {}
        for part, layers in (("encoder", self.encoder), ("decoder", self.decoder)):
            for i, (w, b) in enumerate(layers):
                out[f"{part}.{i}.weight"] = np.ascontiguousarray(w, np.float32)
                out[f"{part}.{i}.bias"] = np.ascontiguousarray(b, np.float32)
        for lvl, c in enumerate(self.codebooks):
            out[f"codebook.{lvl}"] = np.ascontiguousarray(c, np.float32)
        return out

    def header(self) -> dict[str, Any]:
        return {
            "kind": "rqvae",
            "d": self.d,
            "latent_dim": self.latent_dim,
            "levels": self.levels,
            "codebook_sizes": self.sizes,
            "input_norm": self.input_norm,
            "latent_norm": self.latent_norm,
            "loss": self.config.get("loss"),
        }

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for name, a in sorted(self.arrays().items()):
            h.update(name.encode())
            h.update(a.tobytes())
        return h.hexdigest()[:16]

    def save(
        self, path: str, *, overwrite: bool = False, extra_files: dict[str, bytes] | None = None
    ) -> dict[str, Any]:
        """Publish atomically: manifest.json (header, config, report, checksums), weights.npz, and any
        ``extra_files`` (the trainer's checkpoint.pt)."""
        with atomic_dir(path, overwrite=overwrite) as tmp:
            np.savez(os.path.join(tmp, "weights.npz"), **self.arrays())
            for name, data in (extra_files or {}).items():
                with open(os.path.join(tmp, name), "wb") as f:
                    f.write(data)
            manifest = write_manifest(
                tmp,
                {
                    "artifact": "tokenizer",
                    "format_version": TOKENIZER_FORMAT_VERSION,
                    **self.header(),
                    "fingerprint": self.fingerprint(),
                    "config": self.config,
                    "report": self.report,
                },
            )
        self.path = path
        return manifest

    @classmethod
    def load(cls, path: str, *, verify: bool = True) -> Tokenizer:
        manifest = read_manifest(path, artifact="tokenizer", versions=(TOKENIZER_FORMAT_VERSION,))
        verify_files(path, manifest, checksums=verify)
        wpath = os.path.join(path, "weights.npz")
        if "weights.npz" not in manifest["files"]:
            raise ArtifactCorrupt(f"{wpath}: missing from the manifest.")
        try:
            with np.load(wpath, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # a bad CRC is BadZipFile
            raise ArtifactCorrupt(f"{wpath}: unreadable ({e}).") from None

        def layers(part: str) -> list[Layer]:
            out = []
            while f"{part}.{len(out)}.weight" in arrays:
                i = len(out)
                out.append((arrays[f"{part}.{i}.weight"], arrays[f"{part}.{i}.bias"]))
            return out

        codebooks = []
        while f"codebook.{len(codebooks)}" in arrays:
            codebooks.append(arrays[f"codebook.{len(codebooks)}"])
        try:
            tok = cls(
                encoder=layers("encoder"),
                codebooks=codebooks,
                decoder=layers("decoder"),
                input_norm=manifest.get("input_norm", "l2"),
                latent_norm=bool(manifest.get("latent_norm", False)),
                config=manifest.get("config", {}),
                report=manifest.get("report", {}),
                path=path,
            )
        except (ConfigError, IndexError, KeyError) as e:  # KeyError: a layer's weight without its bias
            raise ArtifactCorrupt(f"{wpath}: does not hold a usable tokenizer ({e}).") from None
        if tok.sizes != manifest.get("codebook_sizes") or tok.d != manifest.get("d"):
            raise ArtifactCorrupt(f"{wpath}: shapes do not match the manifest.")
        return tok
