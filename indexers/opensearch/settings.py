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
from typing import Any, ClassVar, Literal, Optional
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

_INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,100}$")


class OpenSearchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ENV_PREFIX: ClassVar[str] = "OPENSEARCH_"  # a field's env var: OPENSEARCH_<NAME> unless it names one
    urls: list[str] = Field(min_length=1, description="OpenSearch URL(s), comma-separated. Unset: no indexing; "
                            "search reads the Parquet output.", json_schema_extra={"flag": "--opensearch-url", "env": "OPENSEARCH_URL"})
    username: Optional[str] = Field(default=None, description="Basic-auth user.",
                                    json_schema_extra={"flag": "--opensearch-user", "env": "OPENSEARCH_USER"})
    password: Optional[SecretStr] = Field(default=None, description="Basic-auth password (prefer the environment variable).")
    ca_certs: Optional[str] = Field(default=None, description="CA bundle (PEM) to verify the server's certificate.",
                                    json_schema_extra={"flag": "--opensearch-ca", "env": "OPENSEARCH_CA_FILE"})
    verify_certs: bool = Field(default=True, description="Verify TLS certificates (--opensearch-insecure: test clusters only).",
                               json_schema_extra={"flag": "--opensearch-verify-certs/--opensearch-insecure"})
    aws_region: Optional[str] = Field(default=None, description="Sign requests with AWS SigV4 for Amazon OpenSearch Service in this region.")
    aws_service: Literal["es", "aoss"] = Field(default="es", description="SigV4 service: es (OpenSearch Service) or aoss (Serverless).")
    index: str = Field(default="humantag", description="Index name: the read alias; runs write to <index>-write, physical "
                       "indices are <index>-v<N>.", json_schema_extra={"flag": "--index", "env": "HUMANTAG_INDEX"})
    timeout_s: float = Field(default=60.0, gt=0, description="Seconds per OpenSearch request.")
    max_retries: int = Field(default=6, ge=0, description="Retries per bulk request (429, 5xx, connection errors), with backoff.")
    bulk_bytes: int = Field(default=10 * 2**20, ge=4096, description="Bytes of NDJSON per bulk request.")
    retry_after_s: float = Field(default=60.0, gt=0, description="After OpenSearch failed during a run, seconds "
                                 "before a shard tries it again (meanwhile shards wait for the sync at the end).")

    @model_validator(mode="before")
    @classmethod
    def _url_credentials(cls, data: Any) -> Any:
        return _move_url_credentials(dict(data)) if isinstance(data, dict) and data.get("urls") else data

    @field_validator("urls", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        parts = value.split(",") if isinstance(value, str) else [p for item in value for p in str(item).split(",")]
        return [u.strip().rstrip("/") for u in parts if u and u.strip()]

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
        """Settings from each field's env var (flags in `overrides` win); None when no URL is configured."""
        values: dict[str, Any] = {}
        for name, info in cls.model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            env = extra.get("env") or f"{cls.ENV_PREFIX}{name.upper()}"
            if os.environ.get(env):
                values[name] = os.environ[env]
        values.update({k: v for k, v in overrides.items() if v is not None})
        if not values.get("urls"):
            return None
        return cls(**values)

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
    urls = [part for url in ([urls] if isinstance(urls, str) else urls) for part in str(url).split(",") if part.strip()]
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
