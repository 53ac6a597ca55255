"""`humantag` command line: one typer app, one module per command in flows/commands/."""

from __future__ import annotations

import importlib
import logging
import sys
import traceback

import typer

from flows.errors import HideRunFailureLogs, UserError, format_failure
from flows.runtime import apply_default_environment

# Each module defines `register(app: typer.Typer) -> None`.
COMMAND_MODULES = [
    "flows.commands.run",
    "flows.commands.eval",
    "flows.commands.deploy",
    "flows.commands.index",
    "flows.commands.serve",
    "flows.commands.search",
    "flows.commands.doctor",
]

app = typer.Typer(
    name="humantag",
    help="Label image archives by the people in them, and search the labels.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _main(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-v info, -vv debug)."),
) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(HideRunFailureLogs())
    # opensearch-py logs every failed request with a traceback; ours say what happened in one line.
    logging.getLogger("opensearch").setLevel(logging.DEBUG if verbose >= 2 else logging.ERROR)


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    """Entry point: user errors are one line on stderr and exit code 2, never a traceback."""
    apply_default_environment()
    try:
        exit_code = app(standalone_mode=False)
    except typer.Exit as exc:
        raise SystemExit(getattr(exc, "exit_code", 0)) from None
    except typer.Abort:
        typer.echo("humantag: aborted", err=True)
        raise SystemExit(130) from None
    except typer.TyperException as exc:
        # Usage errors as one line (the default is a multi-line box).
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if message.strip():
            typer.echo(f"humantag: error: {message} (see --help)", err=True)
        raise SystemExit(getattr(exc, "exit_code", 2)) from None
    except UserError as exc:
        typer.echo(f"humantag: error: {exc}", err=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        typer.echo("humantag: interrupted; rerun the same command to resume", err=True)
        raise SystemExit(130) from None
    except Exception as exc:  # noqa: BLE001 - a failed run: one line per cause, the traceback only with -v
        for line in format_failure(exc):
            typer.echo(f"humantag: error: {line}", err=True)
        if logging.getLogger().isEnabledFor(logging.INFO):
            traceback.print_exception(exc)
        raise SystemExit(1) from None
    raise SystemExit(exit_code if isinstance(exit_code, int) else 0)


if __name__ == "__main__":
    main()
