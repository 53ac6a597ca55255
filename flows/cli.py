"""`humantag` command line: one typer app, one module per command in flows/commands/.

Each command module defines `register(app)` and is listed in COMMAND_MODULES. Run
options are not declared here: `run`, `backfill` and `deploy nightly` generate their
flags from the run configuration (flows/config.py).
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import sys
import traceback
from importlib import metadata
from typing import Optional

import typer

from humantag.flows import interrupts
from humantag.flows.errors import UserError, format_failure
from humantag.flows.runtime import apply_default_environment, configure_terminal_logging, terminal_is_verbose

COMMAND_MODULES = [
    "humantag.flows.commands.run",  # run, backfill
    "humantag.flows.commands.eval",
    "humantag.flows.commands.deploy",  # deploy nightly
    "humantag.flows.commands.index",
    "humantag.flows.commands.serve",
    "humantag.flows.commands.search",
    "humantag.flows.commands.doctor",
]

app = typer.Typer(
    name="humantag",
    help="Label image archives by the people in them, and search the labels.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help wraps at any width; rich's boxes cut flag and env-var names at 80 columns
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


def _version(value: bool) -> None:
    if value:
        try:
            version = metadata.version("humantag")
        except metadata.PackageNotFoundError:
            version = "unknown (not installed)"
        typer.echo(f"humantag {version}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output from humantag (-v info, -vv debug)."),
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    configure_terminal_logging(verbose)


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    """The `humantag` executable: `command()`, then the process ends as soon as the exit hooks ran."""
    # Registered before Ray and Prefect register theirs, so it runs after them (last in, first out).
    # What it skips is Python's finalization: its garbage collection walked every object Prefect, Ray
    # and pydantic had created (~2.5 s after each run that started Ray). Our files are closed by then.
    atexit.register(_end_process)
    try:
        command()
    except SystemExit as exc:
        _exit_status[0] = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        raise
    except BaseException:
        _exit_status[0] = 1  # Python prints it before the exit hooks run
        raise


_exit_status = [0]  # main()'s exit code, for _end_process


def _end_process() -> None:
    logging.shutdown()  # registered at logging's import, before us: it would run after us
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`): nothing more can be said there
            pass
    os._exit(_exit_status[0])


def command() -> None:
    """The CLI in this process (tests call it): user errors are one line on stderr and exit code 2,
    never a traceback."""
    apply_default_environment()
    interrupts.install()
    try:
        _run_app()
    finally:
        interrupts.finishing()


def _run_app() -> None:
    try:
        exit_code = app(standalone_mode=False)
    except typer.Exit as exc:
        raise SystemExit(getattr(exc, "exit_code", 0)) from None
    except typer.Abort:
        typer.echo(interrupts.message(), err=True)
        interrupts.hard_exit(interrupts.exit_code())
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
        typer.echo(interrupts.message(), err=True)
        interrupts.hard_exit(interrupts.exit_code())
    except Exception as exc:  # noqa: BLE001 - a failed run: one line per cause, the traceback only with -v
        for line in format_failure(exc):
            typer.echo(f"humantag: error: {line}", err=True)
        if terminal_is_verbose():
            traceback.print_exception(exc)
        raise SystemExit(1) from None
    raise SystemExit(exit_code if isinstance(exit_code, int) else 0)


if __name__ == "__main__":
    main()
