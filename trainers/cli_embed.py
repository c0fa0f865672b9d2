"""`vqrec` commands for the embed step (torch is imported inside the command, never at CLI start)."""

from __future__ import annotations

import typer


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add this module's commands to the `vqrec` app (and its `train` group)."""
