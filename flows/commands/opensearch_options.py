"""The OpenSearch connection flags shared by `run`, `index`, `search` and `serve`.

Each flag also reads its environment variable, so a deployment configures
OpenSearch once (OPENSEARCH_URL, OPENSEARCH_USER, OPENSEARCH_PASSWORD, ...).
"""

from __future__ import annotations

from typing import Any, Optional

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
