"""Process-wide defaults (telemetry off, quiet terminal) and where humantag's log lines go.

Logs to the Prefect API: on when PREFECT_API_URL names a server, off without one
(Prefect's temporary local server keeps nothing worth the traffic). Prefect's own
switch PREFECT_LOGGING_TO_API_ENABLED=true|false overrides that default. When on,
the flow attaches Prefect's API handler to humantag's loggers, so their lines
(plan, labeler, per-shard results) appear in `prefect flow-run logs` and the UI.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

from humantag.flows.errors import HideRunFailureLogs

# humantag's loggers: -v raises these, and only these (no HTTP request lines from libraries).
OUR_LOGGERS = ("humantag",)  # every module logs under humantag.* (its import name)
TERMINAL_HANDLER = "humantag-terminal"

DEFAULT_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Quiet by default; -v raises our own loggers, not Prefect's chatter.
    "PREFECT_LOGGING_LEVEL": "WARNING",
    # Our lines from threads outside a flow run (the stall watch) are not an error.
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    # Prefect's temporary server gets 20 s to answer by default; on a busy 2-core machine (Ray
    # starting beside it) that is not always enough, and the run would fail before it began.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}


def apply_default_environment() -> None:
    """Set our defaults unless the user set them. Must run before prefect/ray import."""
    for key, value in DEFAULT_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "true" if os.environ.get("PREFECT_API_URL") else "false")


def configure_terminal_logging(verbose: int) -> None:
    """Warnings on stderr; -v shows humantag's info lines, -vv its debug lines. Libraries stay at warnings."""
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(TERMINAL_HANDLER)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.WARNING - 10 * min(verbose, 2))
    if not verbose:  # a failed run ends with flows.errors.format_failure's lines instead of Prefect's traceback
        handler.addFilter(HideRunFailureLogs())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == handler.get_name()]:  # main() called again in-process
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in OUR_LOGGERS:
        # Records are made at info even when the terminal shows warnings only: the Prefect API may want them.
        logging.getLogger(name).setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
    # opensearch-py logs every failed request with a traceback; ours say what happened in one line.
    logging.getLogger("opensearch").setLevel(logging.DEBUG if verbose >= 2 else logging.ERROR)
    # Ray's notice that token authentication is on, printed by every local start.
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    # The flow starts Ray outside the main thread, where Ray cannot take SIGTERM over: as we want (flows/interrupts.py).
    logging.getLogger("ray._private.worker").addFilter(lambda record: "SIGTERM handler is not set" not in record.getMessage())


def terminal_is_verbose() -> bool:
    """-v was given: the terminal shows humantag's info lines (and tracebacks of failed runs)."""
    return any(h.get_name() == TERMINAL_HANDLER and h.level <= logging.INFO for h in logging.getLogger().handlers)


def send_logs_to_prefect() -> None:
    """Inside a flow run: humantag's log lines also go to the Prefect API, if logging to the API is on."""
    from prefect.logging.handlers import APILogHandler
    from prefect.settings import PREFECT_LOGGING_TO_API_ENABLED

    if not PREFECT_LOGGING_TO_API_ENABLED.value():
        return
    for name in OUR_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(h, APILogHandler) for h in logger.handlers):
            logger.addHandler(APILogHandler())
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)


_temporary_server_lock = threading.Lock()


def start_temporary_prefect_server() -> None:
    """Without PREFECT_API_URL, start Prefect's temporary server now, once per process.

    Prefect starts it lazily from whichever thread first needs a client, and its start is not
    guarded: two flows starting at once in one process each spawn a server, one of which is never
    stopped (it keeps the terminal's output open after we exit) or one times out waiting.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return
    from prefect.server.api.server import SubprocessASGIServer

    with _temporary_server_lock:
        SubprocessASGIServer().start()
