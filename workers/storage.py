"""One fsspec abstraction for every byte we read or write (local, file://, s3://).

Credentials and the endpoint come from the standard AWS environment variables
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL[_S3], AWS_REGION)
or from explicit `StorageOptions` (CLI flags). Nothing else in the project
builds a filesystem object itself.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import posixpath
import random
import time
import uuid
from collections.abc import Callable
from typing import Any, Optional, TypeVar

import fsspec
from fsspec.core import split_protocol
from pydantic import BaseModel, ConfigDict, Field, SecretStr

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_BACKOFF_S = 5.0  # small: once the storage is back, a shard waits at most this long


class StorageUnavailable(RuntimeError):
    """The storage service could not be reached or timed out: worth a retry."""


class StorageAccessDenied(RuntimeError):
    """Credentials were refused: retrying will not help."""


class DestinationFull(OSError):
    """No space left where we write: one line naming the destination, never retried."""


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
    read_timeout_s: float = Field(
        default=60.0, gt=0,
        description="Seconds one read of a source object may take; a local read that outlasts it "
        "(a hung mount) becomes a read_timeout row, an S3 read is retried within the retry budget.",
    )
    retry_budget_s: float = Field(
        default=180.0, ge=0,
        description="Seconds an unreachable storage (S3 outage, network) is retried, with exponential "
        "backoff and jitter, before the read or write fails.",
    )

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
        # Fail fast: `retrying` spends the retry budget with backoff, instead of botocore's long default.
        kwargs["config_kwargs"] = {
            "connect_timeout": min(10.0, self.read_timeout_s), "read_timeout": self.read_timeout_s,
            "retries": {"max_attempts": 2},
        }
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


def write_bytes_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes, options: StorageOptions | None = None) -> None:
    """Readers see the old file or the whole new one, never a partial write.

    Locally: write a temp file next to the target, then rename (atomic on POSIX);
    the temp file is removed whatever fails. On object stores a single PUT is
    already atomic; an unreachable store is retried within `options.retry_budget_s`.
    """
    parent = posixpath.dirname(path)
    if not is_local(fs):
        retrying(options or StorageOptions(), f"writing {to_uri(fs, path)}", lambda: fs.pipe_file(path, data))
        return
    # Hidden, and not ending in .parquet/.json: globs over the outputs never see it.
    prefix = f".{posixpath.basename(path)}."
    tmp = posixpath.join(parent, f"{prefix}{uuid.uuid4().hex}.tmp")
    try:
        fs.makedirs(parent, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise_if_full(exc, parent)
        raise
    # A writer killed mid-write left its temp file behind: the committed file supersedes it.
    for name in os.listdir(parent):
        if name.startswith(prefix) and name.endswith(".tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(posixpath.join(parent, name))


def raise_if_full(exc: BaseException, where: str) -> None:
    """A full disk or quota becomes DestinationFull, one line naming where we were writing."""
    if isinstance(exc, OSError) and not isinstance(exc, DestinationFull) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise DestinationFull(exc.errno, f"no space left on the destination {where}") from None


def retrying(options: StorageOptions, what: str, operation: Callable[[], T]) -> T:
    """Run `operation`; while the storage is unreachable, retry with exponential backoff and
    jitter until `options.retry_budget_s` is spent. Anything else is raised at once."""
    deadline = time.monotonic() + options.retry_budget_s
    attempt = 0
    while True:
        try:
            return operation()
        except Exception as exc:  # noqa: BLE001 - classified below
            mapped = classify_storage_error(exc)
            if not isinstance(mapped, StorageUnavailable):
                raise
            attempt += 1
            delay = min(MAX_BACKOFF_S, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            if time.monotonic() + delay > deadline:
                raise mapped from exc
            log.warning("%s: %s; retry %d in %.1fs", what, mapped, attempt, delay)
            time.sleep(delay)


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    return tuple(fs.protocol) if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = _protocols(fs)
    return "file" in protocols or "local" in protocols


def arrow_filesystem(fs: fsspec.AbstractFileSystem) -> Any:
    """The filesystem a pyarrow dataset over `fs`'s paths reads through: pyarrow's own for local and
    S3 storage (same paths, credentials, endpoint, timeouts and retries), `fs` itself otherwise.

    Why: pyarrow reads a dataset on its IO threads, and through an fsspec filesystem those need the
    GIL, while DuckDB scans a registered dataset from a thread that holds the GIL in
    `Scanner.to_reader()`. A planning run over an S3 ledger deadlocked that way (the full suite,
    2026-12-03). pyarrow's native filesystems read without the GIL."""
    import pyarrow.fs as pafs

    if is_local(fs):
        return pafs.LocalFileSystem()
    if not {"s3", "s3a"} & set(_protocols(fs)):
        return fs
    from urllib.parse import urlsplit

    client: dict[str, Any] = getattr(fs, "client_kwargs", None) or {}
    config: dict[str, Any] = getattr(fs, "config_kwargs", None) or {}
    kwargs: dict[str, Any] = {"anonymous": bool(getattr(fs, "anon", False))}
    if getattr(fs, "key", None) and getattr(fs, "secret", None):
        kwargs.update(access_key=fs.key, secret_key=fs.secret, session_token=getattr(fs, "token", None))
    endpoint = client.get("endpoint_url") or getattr(fs, "endpoint_url", None)
    if endpoint:
        parts = urlsplit(endpoint)
        kwargs.update(endpoint_override=parts.netloc or parts.path, scheme=parts.scheme or "https")
    if client.get("region_name"):
        kwargs["region"] = client["region_name"]
    if config.get("connect_timeout"):
        kwargs["connect_timeout"] = float(config["connect_timeout"])
    if config.get("read_timeout"):
        kwargs["request_timeout"] = float(config["read_timeout"])
    attempts = (config.get("retries") or {}).get("max_attempts")
    if attempts:
        kwargs["retry_strategy"] = pafs.AwsStandardS3RetryStrategy(max_attempts=int(attempts))
    return pafs.S3FileSystem(**kwargs)


def classify_storage_error(exc: BaseException) -> BaseException:
    """Map client exceptions onto ours: AccessDenied is final, connectivity is retryable."""
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return exc  # about the object (whatever words its path holds), not the service
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if isinstance(exc, PermissionError) or any(
        s in lowered for s in ("accessdenied", "access denied", "signaturedoesnotmatch", "invalidaccesskeyid", "forbidden")
    ):
        return StorageAccessDenied(f"storage refused the credentials ({text[:300]})")
    if isinstance(exc, (TimeoutError, ConnectionError)) or any(s in lowered for s in _UNREACHABLE_WORDS):
        return StorageUnavailable(f"storage unreachable ({text[:300]})")
    return exc


# What clients say when the service, not the object, is the problem: a refused or dropped connection
# (botocore, aiohttp: "ServerDisconnectedError", "ResponseStreamingError"), or a 5xx/throttling answer.
_UNREACHABLE_WORDS = (
    "timeout", "timed out", "connection", "endpoint", "cannot connect", "disconnected", "broken pipe",
    "incompleteread", "incomplete read", "responsestreamingerror", "clientpayloaderror",
    "serviceunavailable", "service unavailable", "slowdown", "slow down", "internalerror", "we encountered an internal error",
)
