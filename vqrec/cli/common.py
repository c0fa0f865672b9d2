"""What every ``vqrec`` command shares: the option types (``Annotated`` aliases), the choice enums, how
logging is set up, and how a command fails and prints its summary.

A command imports the step it runs inside its body (``vqrec.trainers``, ``vqrec.index``,
``vqrec.service``), so ``vqrec serve`` never loads a trainer and ``vqrec --help`` loads neither numpy nor
torch. Errors print one line ``error: ...`` to stderr and exit 1 (``fail``); usage errors exit 2 (click).
"""

from __future__ import annotations

import logging
import os
from enum import StrEnum
from typing import Annotated, Any

import typer


def new_app(**kwargs: Any) -> typer.Typer:
    """A Typer app with the settings every vqrec command group uses (plain help, plain tracebacks)."""
    return typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None, **kwargs)


# ---- choices --------------------------------------------------------------------------------------
class Method(StrEnum):
    pq = "pq"
    opq = "opq"
    rq = "rq"
    auto = "auto"


class Metric(StrEnum):
    ip = "ip"
    cosine = "cosine"
    l2 = "l2"


class UserStorage(StrEnum):
    float32 = "float32"
    float16 = "float16"
    codes = "codes"


class ItemVectors(StrEnum):
    none = "none"
    float16 = "float16"
    float32 = "float32"
    int8 = "int8"


# ---- options shared by several commands -----------------------------------------------------------
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
OutDir = Annotated[
    str,
    typer.Option("--out", "-o", help="Artifact directory to publish (atomically; must not exist unless --force)."),
]
Force = Annotated[bool, typer.Option(help="Replace an existing artifact at --out.")]
Seed = Annotated[int | None, typer.Option(help="Random seed. Default 1234.")]
ConfigFile = Annotated[str | None, typer.Option("--config", "-c", help="JSON or TOML file with the settings.")]
SetOverrides = Annotated[
    list[str] | None, typer.Option("--set", help="Override one setting: --set key=value (repeatable).")
]
IndexRoot = Annotated[
    str,
    typer.Option(
        "--index-root",
        envvar="VQREC_INDEX_ROOT",
        help="Index root: named index artifacts, or the store's {name}/versions/{version}/ and {name}/ACTIVE alias.",
    ),
]
Host = Annotated[str, typer.Option(envvar="VQREC_HOST", help="Bind address.")]
Port = Annotated[int, typer.Option(envvar="VQREC_PORT", help="TCP port.")]
RayAddress = Annotated[
    str | None,
    typer.Option(envvar="RAY_ADDRESS", help="Ray cluster to encode on, e.g. ray://head:10001 (implies --ray)."),
]


# ---- behaviour shared by every command ------------------------------------------------------------
def setup_logging(verbose: bool) -> None:
    """The CLI is the only place that configures logging: INFO with ``-v``, else WARNING. ``vqrec serve``
    (and ``demo`` when it serves) then hands logging to the service at ``--log-level`` / ``VQREC_LOG_LEVEL``
    (default info: one JSON access line per request), so serving logs requests while the other commands
    stay quiet."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)


def fail(e: Exception | str, code: int = 1) -> typer.Exit:
    """Print ``error: <e>`` to stderr and return the Exit to raise (``raise fail(e) from None``)."""
    typer.echo(f"error: {e}", err=True)
    return typer.Exit(code)


def summary(title: str, rows: dict[str, Any]) -> None:
    """The one-screen summary a command prints when it is done: a title, then aligned ``key  value`` rows."""
    typer.echo(title)
    width = max(len(k) for k in rows)
    for k, v in rows.items():
        typer.echo(f"  {k:<{width}}  {'-' if v is None else v}")


def refuse_existing(out: str, force: bool) -> None:
    """Raise a VqrecError when ``out`` exists and ``force`` is off (nothing is written then)."""
    if os.path.exists(out) and not force:
        from vqrec.index.errors import VqrecError

        raise VqrecError(f"{out} already exists; choose another --out or pass --force.")
