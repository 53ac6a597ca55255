"""The OpenSearch connection flags of `index`, `search` and `serve`, generated from OpenSearchSettings.

The same fields make the `--opensearch-*` flags and `--index` of `run` (flows/config.py):
one declaration of each flag, its help and its environment variable (OPENSEARCH_URL,
OPENSEARCH_USER, OPENSEARCH_PASSWORD, ...), read once, by the flag.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional, TypeVar

from humantag.flows import options
from humantag.indexers.opensearch.settings import OpenSearchSettings


@functools.cache
def opensearch_options() -> list[options.Option]:
    return options.options_of(OpenSearchSettings, flag_prefix="opensearch-", env_prefix=OpenSearchSettings.ENV_PREFIX,
                              optional_group=())


def opensearch_settings(url: Optional[str], **values: Any) -> Optional[OpenSearchSettings]:
    """OpenSearchSettings from flag values (keyed by parameter name), or None without a URL."""
    return OpenSearchFlags({"opensearch_url": url, **values}).settings()


@dataclass(frozen=True)
class OpenSearchFlags:
    """What the user passed for OpenSearch; `settings()` validates it when the command needs it."""

    values: dict[str, Any] = field(default_factory=dict)

    def settings(self) -> Optional[OpenSearchSettings]:
        if not self.values.get("opensearch_url"):
            return None
        return options.model_from_values(OpenSearchSettings, opensearch_options(), self.values)


Command = TypeVar("Command", bound=Callable[..., Any])


def with_opensearch_flags(*, password: bool = True) -> Callable[[Command], Command]:
    """Give a typer command the OpenSearch flags; it receives them as `opensearch: OpenSearchFlags`.

    `password=False` leaves out the secrets (--opensearch-password).
    """
    flags = [o for o in opensearch_options() if password or not o.secret]

    def decorate(func: Command) -> Command:
        signature = inspect.signature(func)
        own = [p for p in signature.parameters.values() if p.name != "opensearch"]
        added = [options.typer_parameter(o) for o in flags]

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            values = {o.param: kwargs.pop(o.param) for o in flags if o.param in kwargs}
            return func(**kwargs, opensearch=OpenSearchFlags(values))

        command.__signature__ = signature.replace(parameters=own + added)  # type: ignore[attr-defined]
        command.__annotations__ = {k: v for k, v in func.__annotations__.items() if k != "opensearch"} | {
            p.name: p.annotation for p in added
        }
        return command  # type: ignore[return-value]

    return decorate
