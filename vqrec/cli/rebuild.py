"""``vqrec rebuild --config rebuild.toml``: the offline rebuild job (vqrec.trainers.rebuild).

Errors print one line ``error: ...`` to stderr; the exit code says which kind (see ``rebuild --help``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from .common import Quiet, fail, new_app, summary

app = new_app()

_HELP = """Rebuild an index from new embeddings: train codebooks (or reuse the active ones when the drift
is small), build, evaluate against exact search, gate on recall, publish, flip the alias, and tell the
service when [notify] url is set. Resumable: a killed run leaves the active version untouched and the
next run resumes (same inputs) or cleans up.

Exit codes: 0 published (or already up to date); 1 unexpected error; 2 usage/config error; 3 input
error (embeddings); 4 gate refused (recall under the floor or dropped more than max_drop); 5 publish
or activate failed (alias unchanged); 6 notify failed (the new version is published and active); 7 another
rebuild of this index is running.

--ray (or [distributed] ray = true) encodes and evaluates on Ray Data; the artifact is the same."""


@app.command("rebuild", help=_HELP)
def rebuild(
    config: Annotated[
        str,
        typer.Option("--config", "-c", help="rebuild.toml (keys: docs/operations.md, trainers/rebuild/config.py)."),
    ],
    no_notify: Annotated[bool, typer.Option("--no-notify", help="Do not call [notify] url.")] = False,
    quiet: Quiet = False,
    ray: Annotated[
        bool | None,
        typer.Option(
            "--ray/--no-ray",
            help="Encode and evaluate on Ray Data (default: [distributed] ray in the config).",
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster, e.g. ray://head:10001 (implies --ray; overrides the config). RAY_ADDRESS alone "
            "does not turn Ray on; with Ray on and no address, Ray itself reads RAY_ADDRESS."
        ),
    ] = None,
) -> None:
    from vqrec.index.errors import ConfigError, InputError, VqrecError
    from vqrec.trainers.rebuild import (
        EXIT_CONFIG,
        EXIT_ERROR,
        EXIT_INPUT,
        RebuildError,
        load_rebuild_config,
        run_rebuild,
    )

    try:
        cfg = load_rebuild_config(config)
    except VqrecError as e:
        raise fail(e, EXIT_CONFIG) from None
    if ray_address:
        cfg.ray, cfg.ray_address = True, ray_address
    if ray is not None:
        cfg.ray = ray
        if not ray:
            cfg.ray_address = None
    try:
        rows = run_rebuild(
            cfg, do_notify=not no_notify, show_progress=not quiet, echo=lambda s: typer.echo(s, err=True)
        )
    except RebuildError as e:
        raise fail(e, e.exit_code) from None
    except ConfigError as e:
        raise fail(e, EXIT_CONFIG) from None
    except InputError as e:
        raise fail(e, EXIT_INPUT) from None
    except (VqrecError, OSError) as e:
        raise fail(e, EXIT_ERROR) from None
    summary(f"rebuild of {cfg.name}: {rows.get('result', 'done')}", rows)
