"""How to reach OpenSearch: URLs, basic auth, TLS, or AWS SigV4. Secrets never printed.

Read from flags or the environment: OPENSEARCH_URL (comma-separated for
several nodes), OPENSEARCH_USER / OPENSEARCH_PASSWORD, OPENSEARCH_CA_FILE,
OPENSEARCH_VERIFY_CERTS (on by default), OPENSEARCH_AWS_REGION (+
OPENSEARCH_AWS_SERVICE: es for OpenSearch Service, aoss for Serverless; AWS
credentials from the standard chain), HUMANTAG_INDEX (the index name).
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal, Optional
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

_INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,100}$")


class OpenSearchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    urls: list[str] = Field(min_length=1)
    username: Optional[str] = None
    password: Optional[SecretStr] = None
    ca_certs: Optional[str] = None
    verify_certs: bool = True
    aws_region: Optional[str] = None  # set: sign requests with SigV4 instead of basic auth
    aws_service: Literal["es", "aoss"] = "es"
    index: str = "humantag"  # read alias; the write alias is <index>-write
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=6, ge=0)  # per bulk request: 429, 5xx and connection errors, with backoff
    bulk_bytes: int = Field(default=10 * 2**20, ge=4096)  # one bulk request, in bytes of NDJSON

    @field_validator("urls", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in value.split(",")]
        return [u.strip().rstrip("/") for u in value if u and u.strip()]

    @field_validator("urls")
    @classmethod
    def _check_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"OpenSearch URL must be http(s)://host[:port], got {redact_url(url)!r}")
        return urls

    @field_validator("index")
    @classmethod
    def _check_index(cls, name: str) -> str:
        if not _INDEX_NAME.match(name):
            raise ValueError(f"index name {name!r}: lowercase letters, digits, - and _ only")
        return name

    @classmethod
    def from_env(cls, **overrides: Any) -> Optional["OpenSearchSettings"]:
        """Settings from OPENSEARCH_* (flags in `overrides` win); None when no URL is configured."""
        env = os.environ
        values: dict[str, Any] = {
            "urls": env.get("OPENSEARCH_URL"),
            "username": env.get("OPENSEARCH_USER"),
            "password": env.get("OPENSEARCH_PASSWORD"),
            "ca_certs": env.get("OPENSEARCH_CA_FILE"),
            "aws_region": env.get("OPENSEARCH_AWS_REGION"),
            "aws_service": env.get("OPENSEARCH_AWS_SERVICE"),
            "index": env.get("HUMANTAG_INDEX"),
        }
        if env.get("OPENSEARCH_VERIFY_CERTS"):
            values["verify_certs"] = env["OPENSEARCH_VERIFY_CERTS"].strip().lower() not in ("0", "false", "no")
        values.update(overrides)
        values = {k: v for k, v in values.items() if v is not None}
        if not values.get("urls"):
            return None
        return cls(**_move_url_credentials(values))

    def with_env_secrets(self) -> "OpenSearchSettings":
        """Deployments store no secrets: the worker's OPENSEARCH_PASSWORD fills the gap."""
        if self.password is None and self.username and os.environ.get("OPENSEARCH_PASSWORD"):
            return self.model_copy(update={"password": SecretStr(os.environ["OPENSEARCH_PASSWORD"])})
        return self

    def safe_urls(self) -> str:
        """The URLs without credentials: what logs and errors may show."""
        return ", ".join(redact_url(u) for u in self.urls)

    def client(self) -> Any:
        """An opensearch-py client. Connection-level retries are ours (indexers.opensearch.bulk), not the transport's."""
        from opensearchpy import OpenSearch, RequestsHttpConnection

        kwargs: dict[str, Any] = {
            "hosts": self.urls,
            "timeout": self.timeout_s,
            "max_retries": 0,
            "verify_certs": self.verify_certs,
            "ssl_show_warn": self.verify_certs,
            "http_compress": False,
        }
        if self.ca_certs:
            kwargs["ca_certs"] = self.ca_certs
        if self.aws_region:
            import botocore.session
            from opensearchpy import AWSV4SignerAuth

            credentials = botocore.session.Session().get_credentials()
            if credentials is None:
                raise ValueError("OPENSEARCH_AWS_REGION is set but no AWS credentials were found (AWS_* or a profile)")
            kwargs["http_auth"] = AWSV4SignerAuth(credentials, self.aws_region, self.aws_service)
            kwargs["connection_class"] = RequestsHttpConnection
            kwargs["pool_maxsize"] = 8
        else:
            kwargs["maxsize"] = 8  # shard tasks index from several threads
            if self.username:
                kwargs["http_auth"] = (self.username, self.password.get_secret_value() if self.password else "")
        return OpenSearch(**kwargs)


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))
    return url


def _move_url_credentials(values: dict[str, Any]) -> dict[str, Any]:
    """https://user:pass@host → the URL without them, and username/password (unless set explicitly)."""
    urls = values["urls"]
    urls = urls.split(",") if isinstance(urls, str) else list(urls)
    clean = []
    for url in urls:
        parts = urlsplit(url.strip())
        if parts.username:
            values.setdefault("username", parts.username)
            if parts.password:
                values.setdefault("password", parts.password)
            host = parts.hostname or ""
            if parts.port:
                host = f"{host}:{parts.port}"
            url = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
        clean.append(url)
    values["urls"] = clean
    return values
