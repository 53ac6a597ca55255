"""The OpenSearch connection flags shared by `run`, `index`, `search` and `serve`.

Each flag also reads its environment variable, so a deployment configures
OpenSearch once (OPENSEARCH_URL, OPENSEARCH_USER, OPENSEARCH_PASSWORD, ...).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, TypeVar

import typer
from pydantic import ValidationError

from flows.errors import UserError

URL = typer.Option(None, "--opensearch-url", envvar="OPENSEARCH_URL", show_envvar=True,
                   help="OpenSearch URL(s), comma-separated. Unset: no indexing; search reads the Parquet output.",
                   show_default=False)
USERNAME = typer.Option(None, "--opensearch-user", envvar="OPENSEARCH_USER", help="Basic-auth user.", show_default=False)
PASSWORD = typer.Option(None, "--opensearch-password", envvar="OPENSEARCH_PASSWORD",
                        help="Basic-auth password (prefer the environment variable).", show_default=False)
CA_CERTS = typer.Option(None, "--opensearch-ca", envvar="OPENSEARCH_CA_FILE", help="CA bundle (PEM) to verify the server's certificate.", show_default=False)
NO_VERIFY = typer.Option(False, "--opensearch-insecure", help="Do not verify TLS certificates (test clusters only).")
AWS_REGION = typer.Option(None, "--opensearch-aws-region", envvar="OPENSEARCH_AWS_REGION",
                          help="Sign requests with AWS SigV4 for Amazon OpenSearch Service in this region.", show_default=False)
INDEX = typer.Option("humantag", "--index", envvar="HUMANTAG_INDEX",
                     help="Index name: the read alias; runs write to <index>-write, physical indices are <index>-v<N>.")


def opensearch_settings(url: Optional[str], username: Optional[str] = None, password: Optional[str] = None,
                        ca_certs: Optional[str] = None, insecure: bool = False, aws_region: Optional[str] = None,
                        index: str = "humantag") -> Any:
    """OpenSearchSettings from the flags (and OPENSEARCH_* for the rest), or None without a URL."""
    from indexers.opensearch.settings import OpenSearchSettings

    overrides: dict[str, Any] = {"urls": url, "username": username, "password": password, "ca_certs": ca_certs,
                                 "aws_region": aws_region, "index": index}
    if insecure:
        overrides["verify_certs"] = False
    try:
        return OpenSearchSettings.from_env(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserError(f"OpenSearch settings: {first['msg']}") from None


@dataclass(frozen=True)
class OpenSearchFlags:
    """What the user passed for OpenSearch; `settings()` validates and resolves it when the command needs it."""

    url: Optional[str] = None
    user: Optional[str] = None
    password: Optional[str] = None
    ca: Optional[str] = None
    insecure: bool = False
    aws_region: Optional[str] = None
    index: str = "humantag"

    def settings(self) -> Any:
        return opensearch_settings(self.url, self.user, self.password, self.ca, self.insecure, self.aws_region, self.index)


# (parameter name, type, typer option, OpenSearchFlags field), in --help order.
_FLAGS: tuple[tuple[str, Any, Any, str], ...] = (
    ("opensearch_url", Optional[str], URL, "url"),
    ("opensearch_user", Optional[str], USERNAME, "user"),
    ("opensearch_password", Optional[str], PASSWORD, "password"),
    ("opensearch_ca", Optional[str], CA_CERTS, "ca"),
    ("opensearch_insecure", bool, NO_VERIFY, "insecure"),
    ("opensearch_aws_region", Optional[str], AWS_REGION, "aws_region"),
    ("index", str, INDEX, "index"),
)

Command = TypeVar("Command", bound=Callable[..., Any])


def with_opensearch_flags(*, password: bool = True) -> Callable[[Command], Command]:
    """Give a typer command the --opensearch-* flags and --index; it receives them as `opensearch: OpenSearchFlags`.

    `password=False` leaves out --opensearch-password (deployments must not store it).
    """
    flags = [flag for flag in _FLAGS if password or flag[3] != "password"]

    def decorate(func: Command) -> Command:
        signature = inspect.signature(func)
        own = [p for p in signature.parameters.values() if p.name != "opensearch"]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
                 for name, kind, option, _ in flags]

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            values = {field: kwargs.pop(name) for name, _, _, field in flags if name in kwargs}
            return func(**kwargs, opensearch=OpenSearchFlags(**values))

        command.__signature__ = signature.replace(parameters=own + added)  # type: ignore[attr-defined]
        command.__annotations__ = {k: v for k, v in func.__annotations__.items() if k != "opensearch"} | {
            name: kind for name, kind, _, _ in flags
        }
        return command  # type: ignore[return-value]

    return decorate
