"""`vqrec rebuild --config rebuild.toml`: the offline rebuild job (trainers/rebuild.py).

Errors print one line ``error: ...`` to stderr; the exit code says which kind (see ``rebuild --help``).
"""

from __future__ import annotations

from typing import Annotated

import typer

_HELP = """Rebuild an index from new embeddings: train codebooks (or reuse the active ones when the drift
is small), build, evaluate against exact search, gate on recall, publish, flip the alias, and tell the
service when [notify] url is set. Resumable: a killed run leaves the active version untouched and the
next run resumes (same inputs) or cleans up.

Exit codes: 0 published (or already up to date); 1 unexpected error; 2 usage/config error; 3 input
error (embeddings); 4 gate refused (recall under the floor or dropped more than max_drop); 5 publish
or activate failed (alias unchanged); 6 notify failed (the new version is published and active); 7 another
rebuild of this index is running.

--ray (or [distributed] ray = true) encodes and evaluates on Ray Data; the artifact is the same."""


def register(app: typer.Typer, train_app: typer.Typer) -> None:  # noqa: ARG001 (same signature as the others)
    @app.command("rebuild", help=_HELP)
    def rebuild(
        config: Annotated[str, typer.Option("--config", "-c", help="rebuild.toml (see trainers/rebuild.py).")],
        no_notify: Annotated[bool, typer.Option("--no-notify", help="Do not call [notify] url.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
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
        from index.errors import ConfigError, InputError, VqrecError

        from .cli import _summary  # imported here: trainers.cli imports this module
        from .rebuild import EXIT_CONFIG, EXIT_ERROR, EXIT_INPUT, RebuildError, load_rebuild_config, run_rebuild

        def fail(msg: str, code: int) -> typer.Exit:
            typer.echo(f"error: {msg}", err=True)
            return typer.Exit(code)

        try:
            cfg = load_rebuild_config(config)
        except VqrecError as e:
            raise fail(str(e), EXIT_CONFIG) from None
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
            raise fail(str(e), e.exit_code) from None
        except ConfigError as e:
            raise fail(str(e), EXIT_CONFIG) from None
        except InputError as e:
            raise fail(str(e), EXIT_INPUT) from None
        except (VqrecError, OSError) as e:
            raise fail(str(e), EXIT_ERROR) from None
        _summary(f"rebuild of {cfg.name}: {rows.get('result', 'done')}", rows)
