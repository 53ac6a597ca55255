"""One fsspec abstraction for every byte we read or write (local, file://, s3://).

Credentials and the endpoint come from the standard AWS environment variables
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL[_S3], AWS_REGION)
or from explicit `StorageOptions` (CLI flags). Nothing else in the project
builds a filesystem object itself.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import uuid
from typing import Any, Optional

import fsspec
from fsspec.core import split_protocol
from pydantic import BaseModel, ConfigDict, Field, SecretStr


class StorageUnavailable(RuntimeError):
    """The storage service could not be reached or timed out: worth a retry."""


class StorageAccessDenied(RuntimeError):
    """Credentials were refused: retrying will not help."""


class StorageOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    endpoint_url: Optional[str] = Field(default=None, description="S3 endpoint (for S3-compatible servers).",
                                        json_schema_extra={"env": ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]})
    key: Optional[str] = Field(default=None, description="S3 access key.", json_schema_extra={
        "flag": "--aws-access-key-id", "env": "AWS_ACCESS_KEY_ID", "secret": True})
    secret: Optional[SecretStr] = Field(default=None, description="S3 secret key (prefer the environment variable).",
                                        json_schema_extra={"flag": "--aws-secret-access-key", "env": "AWS_SECRET_ACCESS_KEY"})
    region: Optional[str] = Field(default=None, description="S3 region.", json_schema_extra={"env": ["AWS_REGION", "AWS_DEFAULT_REGION"]})
    anon: bool = Field(default=False, description="Read S3 without credentials (public buckets).", json_schema_extra={"flag": "--s3-anon"})

    @classmethod
    def from_env(cls, **overrides: Any) -> "StorageOptions":
        env = os.environ
        values: dict[str, Any] = {
            "endpoint_url": env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
            "key": env.get("AWS_ACCESS_KEY_ID"),
            "secret": env.get("AWS_SECRET_ACCESS_KEY"),
            "region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def fsspec_kwargs(self, protocol: str) -> dict[str, Any]:
        if protocol not in ("s3", "s3a"):
            return {}
        kwargs: dict[str, Any] = {"anon": self.anon}
        if self.key:
            kwargs["key"] = self.key
        if self.secret:
            kwargs["secret"] = self.secret.get_secret_value()
        client: dict[str, Any] = {}
        if self.endpoint_url:
            client["endpoint_url"] = self.endpoint_url
        if self.region:
            client["region_name"] = self.region
        if client:
            kwargs["client_kwargs"] = client
        # Fail fast and let the task-level retry decide, instead of botocore's long default.
        kwargs["config_kwargs"] = {"connect_timeout": 10, "read_timeout": 60, "retries": {"max_attempts": 3}}
        return kwargs


def protocol_of(url: str) -> str:
    protocol, _ = split_protocol(url)
    return protocol or "file"


def filesystem(url: str, options: StorageOptions | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for `url` and the path inside it (no protocol)."""
    options = options or StorageOptions.from_env()
    protocol = protocol_of(url)
    fs = fsspec.filesystem(protocol, **options.fsspec_kwargs(protocol))
    path = fs._strip_protocol(url)
    if protocol == "file":
        path = os.path.abspath(path)
    return fs, path


def to_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A full URI for a path of `fs` (s3://bucket/key or file:///abs/path)."""
    return fs.unstrip_protocol(path)


def write_bytes_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Readers see the old file or the whole new one, never a partial write.

    Locally: write a temp file next to the target, then rename (atomic on POSIX).
    On object stores a single PUT is already atomic.
    """
    parent = posixpath.dirname(path)
    if _is_local(fs):
        fs.makedirs(parent, exist_ok=True)
        # Hidden, and not ending in .parquet/.json: globs over the outputs never see it.
        prefix = f".{posixpath.basename(path)}."
        tmp = posixpath.join(parent, f"{prefix}{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        # A writer killed mid-write left its temp file behind: the committed file supersedes it.
        for name in os.listdir(parent):
            if name.startswith(prefix) and name.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(posixpath.join(parent, name))
    else:
        fs.pipe_file(path, data)


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def classify_storage_error(exc: BaseException) -> BaseException:
    """Map client exceptions onto ours: AccessDenied is final, connectivity is retryable."""
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if isinstance(exc, PermissionError) or any(
        s in lowered for s in ("accessdenied", "access denied", "signaturedoesnotmatch", "invalidaccesskeyid", "forbidden")
    ):
        return StorageAccessDenied(f"storage refused the credentials ({text[:300]})")
    if isinstance(exc, (TimeoutError, ConnectionError)) or any(
        s in lowered for s in ("timeout", "timed out", "connection", "endpoint", "cannot connect")
    ):
        return StorageUnavailable(f"storage unreachable ({text[:300]})")
    return exc
