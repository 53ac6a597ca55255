"""Read one source object's bytes: regular files only, a timeout, S3 keys as keys, outages ridden out.

Whatever a listing met under an image name, reading it never hangs and never
aborts the run: a FIFO, socket or device is refused from its stat (and again
from fstat after an O_NONBLOCK open, so a swap in between cannot block us), a
symlink loop or a dangling symlink is named as such, a read that outlasts
`StorageOptions.read_timeout_s` is abandoned. Each of these is an
`UnreadableObject` carrying the row's error kind. S3 objects are fetched by
bucket and key as listed: s3fs would read `?versionId=` in a key as a version.
An unreachable storage is retried for `StorageOptions.retry_budget_s`.
"""

from __future__ import annotations

import errno
import os
import queue
import stat
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Optional, TypeVar

import fsspec

from humantag.workers.records import ErrorKind
from humantag.workers.storage import (
    StorageAccessDenied,
    StorageOptions,
    StorageUnavailable,
    classify_storage_error,
    filesystem,
    is_local,
    protocol_of,
    retrying,
)

T = TypeVar("T")


class UnreadableObject(Exception):
    """This object cannot be read, whatever the storage's health: its row gets `kind`."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def read_bytes(uri: str, options: StorageOptions, max_bytes: Optional[int] = None) -> bytes:
    """The bytes of one source object, read as a key/file, never following anything but a symlink.

    Raises UnreadableObject (a row's error kind: missing, fifo, socket, device,
    symlink_loop, dangling_symlink, read_timeout, too large), StorageAccessDenied,
    or StorageUnavailable once the retry budget is spent. Never blocks longer
    than about `options.read_timeout_s` per attempt.
    """
    fs, path = filesystem(uri, options)
    if is_local(fs):
        try:
            return with_timeout(lambda: _read_local(path, max_bytes), options.read_timeout_s, uri)
        except OSError as exc:  # permissions, EIO...: this file's row
            raise UnreadableObject(ErrorKind.READ_ERROR, f"{type(exc).__name__}: {exc}"[:2000]) from exc
    protocol = protocol_of(uri)

    def attempt() -> bytes:
        try:
            if protocol in ("s3", "s3a"):
                data = _read_s3(fs, path, options.read_timeout_s)
            else:
                data = with_timeout(lambda: fs.cat_file(path), options.read_timeout_s, uri)
        except FileNotFoundError:
            raise UnreadableObject(ErrorKind.MISSING, "the object was listed but no longer exists") from None
        if max_bytes is not None and len(data) > max_bytes:
            raise UnreadableObject(ErrorKind.TOO_LARGE, f"{len(data)} bytes exceeds the limit of {max_bytes}")
        return data

    try:
        return retrying(options, f"reading {uri}", attempt)
    except (UnreadableObject, StorageUnavailable):
        raise
    except Exception as exc:  # noqa: BLE001 - refused credentials are final; the rest is this object's row
        mapped = classify_storage_error(exc)
        if isinstance(mapped, StorageAccessDenied):
            raise mapped from exc
        raise UnreadableObject(ErrorKind.READ_ERROR, f"{type(exc).__name__}: {exc}"[:2000]) from exc


def _read_s3(fs: fsspec.AbstractFileSystem, path: str, timeout_s: float) -> bytes:
    """GET bucket/key as given: s3fs would read `?versionId=` in a key as a version."""
    from fsspec.asyn import sync

    bucket, _, key = path.partition("/")

    async def get() -> bytes:
        response = await fs._call_s3("get_object", Bucket=bucket, Key=key)
        body = response["Body"]
        try:
            return await body.read()
        finally:
            body.close()

    return sync(fs.loop, get, timeout=timeout_s)


_SPECIAL_KINDS = (
    (stat.S_ISFIFO, ErrorKind.FIFO, "a named pipe (FIFO), not a file"),
    (stat.S_ISSOCK, ErrorKind.SOCKET, "a socket, not a file"),
    (stat.S_ISCHR, ErrorKind.DEVICE, "a character device, not a file"),
    (stat.S_ISBLK, ErrorKind.DEVICE, "a block device, not a file"),
    (stat.S_ISDIR, ErrorKind.READ_ERROR, "a directory, not a file"),
)


def regular_file_error(mode: int) -> Optional[UnreadableObject]:
    """Why a file of this `st_mode` is not read (None for a regular file)."""
    for test, kind, message in _SPECIAL_KINDS:
        if test(mode):
            return UnreadableObject(kind, f"the path is {message}")
    return None if stat.S_ISREG(mode) else UnreadableObject(ErrorKind.READ_ERROR, "the path is not a regular file")


def stat_local(path: str) -> os.stat_result:
    """os.stat, with the ways a name can fail to lead to a file mapped to UnreadableObject."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise UnreadableObject(ErrorKind.DANGLING_SYMLINK, f"the symlink points to {os.readlink(path)!r}, which does not exist") from None
        raise UnreadableObject(ErrorKind.MISSING, "the object was listed but no longer exists") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnreadableObject(ErrorKind.SYMLINK_LOOP, "the symlink resolves to itself (too many levels of links)") from None
        raise


def _read_local(path: str, max_bytes: Optional[int]) -> bytes:
    problem = regular_file_error(stat_local(path).st_mode)
    if problem is not None:  # refused before open(): opening a FIFO or a device can block or act
        raise problem
    # O_NONBLOCK: if the name became a FIFO since the stat, open() still returns at once; fstat decides.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        problem = regular_file_error(st.st_mode)
        if problem is not None:
            raise problem
        if max_bytes is not None and st.st_size > max_bytes:
            raise UnreadableObject(ErrorKind.TOO_LARGE, f"{st.st_size} bytes exceeds the limit of {max_bytes}")
        os.set_blocking(fd, True)
        return fh.read() if max_bytes is None else fh.read(max_bytes + 1)


class _DaemonReaders:
    """A few reused daemon threads for blocking reads: a read stuck in the kernel (a hung mount)
    holds one of them, never the caller, and never the process's exit (unlike ThreadPoolExecutor)."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._started = 0
        self._lock = threading.Lock()

    def submit(self, read: Callable[[], T]) -> Future[T]:
        with self._lock:
            if self._started < self.size:
                self._started += 1
                threading.Thread(target=self._work, name=f"humantag-read-{self._started}", daemon=True).start()
        future: Future[T] = Future()
        self._jobs.put((read, future))
        return future

    def _work(self) -> None:
        while True:
            read, future = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(read())
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                future.set_exception(exc)


_readers = _DaemonReaders()


def with_timeout(read: Callable[[], T], timeout_s: float, uri: str) -> T:
    """Run a blocking read on a reader thread; give up on it after `timeout_s`."""
    future = _readers.submit(read)
    try:
        return future.result(timeout=timeout_s)
    except FutureTimeout:
        future.cancel()  # still queued (every reader stuck): never started
        raise UnreadableObject(ErrorKind.READ_TIMEOUT, f"reading {uri} took longer than {timeout_s:g}s") from None
