"""``vqrec`` commands for the versioned index store (index/store.py).

    vqrec versions NAME      list a name's versions, newest first, with their evaluation
    vqrec publish            copy an index artifact (from `vqrec build`) in as a new version
    vqrec activate NAME VER  point the alias at a version (it must load and verify)
    vqrec rollback NAME      flip the alias back to the previous version
    vqrec prune NAME --keep  delete the oldest versions beyond a count (never active or previous)
    vqrec verify NAME        check stored versions against their manifests (every sha256, shapes, values)

Errors print one line ``error: ...`` to stderr and exit 1, with nothing changed. An unreadable ACTIVE
alias is a warning for ``versions`` (the versions are listed), an error for ``rollback`` and ``prune``, and is
repaired by ``activate`` (the previous version is then unknown). ``publish`` of a version already stored with
the same content says "already published" and goes on (``--activate``, ``--keep``): a rerun after a kill.
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


def _activate(store: IndexStore, name: str, version: str) -> dict[str, object]:
    """``store.activate``, with a warning on stderr when it replaced an unreadable alias."""
    from vqrec.index.errors import ArtifactCorrupt

    try:
        store.read_alias(name)
        unreadable = False
    except ArtifactCorrupt:
        unreadable = True
    alias = store.activate(name, version)
    if unreadable:
        typer.echo(
            f"warning: replaced the unreadable alias {store.alias_path(name)}; the previous version is unknown.",
            err=True,
        )
    return alias


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
    from vqrec.index.errors import ArtifactCorrupt

    alias_error = None
    with _store(index_root) as store:
        infos = store.versions(name)
        try:
            active = store.active(name)
        except ArtifactCorrupt as e:  # list the versions all the same: `vqrec activate` repairs the alias
            active, alias_error = None, str(e)
    if alias_error is not None:
        typer.echo(f"warning: {alias_error}", err=True)
    if as_json:
        out = {"name": name, "active": active, "alias_error": alias_error, "versions": [i.to_dict() for i in infos]}
        typer.echo(json.dumps(out, indent=2))
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
    state = "; alias unreadable" if alias_error is not None else ("" if active else "; no active version")
    typer.echo(f"{len(infos)} version(s); * active, - previous{state}")
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
    the copy (checksums, shapes) before it appears. The alias changes only with --activate. A version
    already stored with the same content is "already published" (not an error): --activate and --keep
    still run, so a publish killed midway can simply be run again."""
    from vqrec.index.errors import ConfigError, VqrecError

    with _store(index_root) as store:
        if keep is not None and keep < 1:
            raise ConfigError(f"--keep must be >= 1, got {keep}.")
        version, published = store.publish_dir_status(index, name)
        if activate:
            try:
                _activate(store, name, version)
            except BaseException:
                if published:  # only what this run added: a version stored before stays
                    with contextlib.suppress(VqrecError):
                        store.discard(name, version)
                raise
        pruned = store.prune(name, keep) if keep is not None else []
    where = store.version_dir(name, version)
    if published:
        typer.echo(f"published {name} version {version} at {where}")
    else:
        typer.echo(f"{name} version {version} already published at {where} (same content)")
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
    """Point an index's alias at a stored version (atomically), after checking it loads and verifies.
    An unreadable alias is replaced (the previous version is then unknown)."""
    with _store(index_root) as store:
        _echo_alias(name, _activate(store, name, version))


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


@app.command()
def verify(
    name: Name,
    index_root: IndexRoot,
    version: Annotated[
        str | None, typer.Option("--version", help="The version to check (default: the active one).")
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Check every stored version.")] = False,
) -> None:
    """Check stored versions on demand: every file's size and sha256 against the manifest, the arrays' shapes
    and values, the packed codes against codes.npy (what a load with checksums checks). Servers that map the
    store's versions may load them without checksums (VQREC_VERIFY_CHECKSUMS=false); this is the check they
    skip. Exit 1 when any version fails, naming the file."""
    import time

    from vqrec.index import load_index
    from vqrec.index.errors import VqrecError

    if every and version is not None:
        raise fail("give --version or --all, not both.")
    with _store(index_root) as store:
        if every:
            targets = [i.version for i in store.versions(name)]
        elif version is not None:
            targets = [version]
        else:
            active = store.active(name)
            if active is None:
                raise fail(f"index {name!r} has no active version in {index_root}; give --version or --all.")
            targets = [active]
        if not targets:
            raise fail(f"index {name!r} has no stored versions in {index_root}.")
        failed = 0
        for v in targets:
            t = time.perf_counter()
            try:
                index = load_index(store.path(name, v), mmap=True, verify=True)
            except VqrecError as e:
                failed += 1
                typer.echo(f"error: {name} version {v}: {e}", err=True)
                continue
            typer.echo(
                f"ok {name} version {v}: {len(index):,} items, {len(index.manifest['files'])} files verified "
                f"in {time.perf_counter() - t:.2f} s"
            )
    if failed:
        raise fail(f"{failed} of {len(targets)} version(s) of {name!r} failed verification.")
