"""``vqrec`` commands for the versioned index store (index/store.py).

    vqrec versions NAME      list a name's versions, newest first, with their evaluation
    vqrec publish            copy an index artifact (from `vqrec build`) in as a new version
    vqrec activate NAME VER  point the alias at a version (it must load and verify)
    vqrec rollback NAME      flip the alias back to the previous version
    vqrec prune NAME --keep  delete the oldest versions beyond a count (never active or previous)

Errors print one line ``error: ...`` to stderr and exit 1, with nothing changed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

import typer

from .common import IndexRoot, fail, new_app

if TYPE_CHECKING:
    from vqrec.index.store import IndexStore

app = new_app()
Name = Annotated[str, typer.Argument(help="Index name.")]


def _fmt(v: object) -> str:
    return "-" if v is None else str(v)


@contextlib.contextmanager
def _store(index_root: str) -> Iterator[IndexStore]:
    """The store at ``index_root``; a VqrecError inside is the command's one-line error (exit 1)."""
    from vqrec.index.errors import VqrecError
    from vqrec.index.store import IndexStore

    try:
        yield IndexStore(index_root)
    except VqrecError as e:
        raise fail(e) from None


def _echo_alias(name: str, alias: dict[str, object]) -> None:
    typer.echo(f"active version of {name}: {alias['version']} (previous: {_fmt(alias.get('previous'))})")


@app.command()
def versions(
    name: Name,
    index_root: IndexRoot,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the stored versions of an index, newest first: created, active (*) / previous (-) marker,
    items, method and recall@10 (user->item, item->item) from the manifest's evaluation."""
    with _store(index_root) as store:
        infos = store.versions(name)
        active = store.active(name)
    if as_json:
        typer.echo(json.dumps({"name": name, "active": active, "versions": [i.to_dict() for i in infos]}, indent=2))
        return
    header = ("", "version", "created", "items", "method", "u->i r@10", "i->i r@10")
    rows = [header]
    for i in infos:
        mark = "*" if i.active else ("-" if i.previous else "")
        if i.error is not None:
            rows.append((mark, i.version, "unreadable", "-", "-", "-", "-"))
            continue
        ev = i.evaluation
        rows.append(
            (
                mark,
                i.version,
                _fmt(i.created_at),
                _fmt(i.n_items),
                _fmt(i.method),
                _fmt(ev.get("user_to_item_recall@10")),
                _fmt(ev.get("item_to_item_recall@10")),
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    for r in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    typer.echo(f"{len(infos)} version(s); * active, - previous" + ("" if active else "; no active version"))
    for i in infos:
        if i.error is not None:
            typer.echo(f"warning: {i.version}: {i.error}", err=True)


@app.command()
def publish(
    index: Annotated[str, typer.Option("--index", help="Index artifact directory (from `vqrec build`).")],
    name: Annotated[str, typer.Option("--name", help="Index name in the store.")],
    index_root: IndexRoot,
    activate: Annotated[bool, typer.Option("--activate", help="Point the alias at the new version.")] = False,
    keep: Annotated[
        int | None,
        typer.Option("--keep", help="Then delete the oldest versions beyond this many (never active or previous)."),
    ] = None,
) -> None:
    """Copy an index artifact into the store as a new version (named by its index_version), verifying
    the copy (checksums, shapes) before it appears. The alias changes only with --activate."""
    from vqrec.index.errors import ConfigError

    with _store(index_root) as store:
        if keep is not None and keep < 1:
            raise ConfigError(f"--keep must be >= 1, got {keep}.")
        version = store.publish_dir(index, name)
        if activate:
            try:
                store.activate(name, version)
            except BaseException:
                store.discard(name, version)
                raise
        pruned = store.prune(name, keep) if keep is not None else []
    typer.echo(f"published {name} version {version} at {store.version_dir(name, version)}")
    if activate:
        typer.echo(f"active version of {name}: {version}")
    for v in pruned:
        typer.echo(f"pruned {name} version {v}")


@app.command("activate")
def activate_(
    name: Name,
    version: Annotated[str, typer.Argument(help="Version id (see `vqrec versions NAME`).")],
    index_root: IndexRoot,
) -> None:
    """Point an index's alias at a stored version (atomically), after checking it loads and verifies."""
    with _store(index_root) as store:
        _echo_alias(name, store.activate(name, version))


@app.command()
def rollback(
    name: Name,
    index_root: IndexRoot,
) -> None:
    """Flip an index's alias back to its previous version (atomically)."""
    with _store(index_root) as store:
        _echo_alias(name, store.rollback(name))


@app.command()
def prune(
    name: Name,
    index_root: IndexRoot,
    keep: Annotated[int, typer.Option("--keep", help="Versions to keep (the active and previous are always kept).")],
) -> None:
    """Delete an index's oldest versions beyond --keep; never the active or previous version."""
    with _store(index_root) as store:
        pruned = store.prune(name, keep)
    for v in pruned:
        typer.echo(f"pruned {name} version {v}")
    typer.echo(f"{len(pruned)} version(s) deleted")
