"""Process-wide defaults: telemetry off, Prefect without a server unless configured."""

from __future__ import annotations

import os

DEFAULT_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Quiet by default; -v raises our own loggers, not Prefect's chatter.
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_LOGGING_TO_API_ENABLED": "false",
}


def apply_default_environment() -> None:
    """Set our defaults unless the user set them. Must run before prefect/ray import."""
    for key, value in DEFAULT_ENV.items():
        os.environ.setdefault(key, value)
