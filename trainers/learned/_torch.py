"""Import torch with an actionable error when the ``train`` extra is not installed."""

from __future__ import annotations

from types import ModuleType

from vqrec.index.errors import ConfigError

INSTALL_HINT = 'pip install torch==2.13.0 && pip install -e ".[train]"'


def require_torch() -> ModuleType:
    """``torch``, or ConfigError saying how to install it (the CLI prints it as ``error: ...``)."""
    try:
        import torch
    except ImportError:
        raise ConfigError(f"this command needs torch (the 'train' extra): {INSTALL_HINT}") from None
    return torch
