"""Where HumanVLM's weights come from, and the identity recorded as labeler_version.

A model spec is one of:
- a Hugging Face hub id, optionally `id@revision`   -> version `id@<commit>`
- a local directory                                   -> version `<dir name>@sha256-<content hash>`
- an object-storage URL (s3://bucket/prefix)          -> copied once per node into the
  node cache, then loaded from there by every actor; version `<url>@sha256-<listing hash>`
  (keys, sizes and ETags, so a changed object gives a new version and a new cache entry).

`identify()` gives the same version without loading or copying anything (the
driver plans incremental runs with it): the revision itself when it is a commit,
else the cached snapshot's commit (or the hub's answer for the revision, metadata
only); the memoised content hash of a directory; the hash of an object listing.

The node cache is a plain directory (`cache_dir`); concurrent actors on one node
take a file lock, the first one copies into a temporary directory and renames it
into place, the others wait and reuse it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from filelock import FileLock

from humantag.workers.storage import StorageOptions, filesystem, protocol_of

log = logging.getLogger(__name__)

DEFAULT_MODEL = "OpenFace-CQUPT/Human_LLaVA"
_HASH_CHUNK = 8 * 1024 * 1024


def default_cache_dir() -> Path:
    env = os.environ.get("HUMANTAG_MODEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "humantag" / "models"


@dataclass(frozen=True)
class ModelSource:
    kind: Literal["hub", "local", "remote"]
    location: str  # repo id, absolute directory, or URL
    revision: Optional[str] = None  # hub only

    @classmethod
    def parse(cls, spec: str) -> "ModelSource":
        protocol = protocol_of(spec)
        if protocol not in ("file", "local"):
            return cls("remote", spec.rstrip("/"))
        path = Path(spec.removeprefix("file://")).expanduser()
        # Decided by syntax, not by looking: on a cluster the directory may exist only on the
        # worker nodes. Existence is checked in resolve(), where the actor runs.
        if path.is_dir() or spec.startswith(("/", ".", "~", "file://")):
            return cls("local", str(path.resolve()))
        repo, _, revision = spec.partition("@")
        return cls("hub", repo, revision or None)


@dataclass(frozen=True)
class ResolvedModel:
    path: str  # what from_pretrained gets: a local directory or a hub id
    revision: Optional[str]
    version: str


def resolve(source: ModelSource, cache_dir: Path, storage: StorageOptions | None = None) -> ResolvedModel:
    """Make the weights loadable from this node; returns where, and their identity."""
    if source.kind == "local":
        return ResolvedModel(source.location, None, identify(source, cache_dir, storage))
    if source.kind == "remote":
        path, digest, _ = fetch_to_node_cache(source.location, cache_dir, storage)
        return ResolvedModel(str(path), None, _remote_version(source.location, digest))
    commit = _hub_commit(source.location, source.revision)
    return ResolvedModel(source.location, commit, f"{source.location}@{commit}")


def identify(source: ModelSource, cache_dir: Path, storage: StorageOptions | None = None) -> str:
    """The version `resolve()` would give, without copying, loading or downloading weights."""
    if source.kind == "local":
        if not Path(source.location).is_dir():
            raise FileNotFoundError(f"model directory {source.location} does not exist on this node")
        digest = local_dir_hash(Path(source.location), cache_dir)
        return f"{Path(source.location).name}@sha256-{digest[:16]}"
    if source.kind == "remote":
        return _remote_version(source.location, RemoteListing.of(source.location, storage).digest)
    return f"{source.location}@{_hub_commit_without_download(source.location, source.revision)}"


def _remote_version(url: str, digest: str) -> str:
    return f"{url}@sha256-{digest[:16]}"


_COMMIT = re.compile(r"[0-9a-f]{40}")


def _hub_commit(repo: str, revision: Optional[str]) -> str:
    """The commit a hub revision points at (from the local HF cache when offline)."""
    from huggingface_hub import hf_hub_download

    config_path = Path(hf_hub_download(repo, "config.json", revision=revision))
    # .../models--org--name/snapshots/<commit>/config.json
    return config_path.parent.name


def _hub_commit_without_download(repo: str, revision: Optional[str]) -> str:
    """A commit as given, else the cached snapshot's, else the hub's answer (metadata, no files)."""
    if revision and _COMMIT.fullmatch(revision):
        return revision
    from huggingface_hub import HfApi, constants, try_to_load_from_cache

    cached = try_to_load_from_cache(repo, "config.json", revision=revision)
    if isinstance(cached, str):
        return Path(cached).parent.name  # .../snapshots/<commit>/config.json
    if constants.HF_HUB_OFFLINE:
        raise FileNotFoundError(
            f"{repo}@{revision or 'main'} is not in this machine's Hugging Face cache and the hub is offline "
            f"(HF_HUB_OFFLINE): pin the commit, e.g. --model {repo}@<40-hex commit>"
        )
    sha = HfApi().model_info(repo, revision=revision).sha
    if not sha:
        raise FileNotFoundError(f"the hub gave no commit for {repo}@{revision or 'main'}")
    return sha


# ---- local directories: content hash, memoized per (path, file stats) --------------------------


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".humantag"))


def local_dir_hash(root: Path, cache_dir: Path) -> str:
    """sha256 over relative names and contents. Hashing 17 GB takes a while, so it is memoized."""
    stats = [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in _files(root)]
    signature = hashlib.sha256(json.dumps([str(root), stats]).encode()).hexdigest()
    memo = cache_dir / "hashes" / f"{signature}.txt"
    if memo.exists():
        return memo.read_text().strip()
    digest = hashlib.sha256()
    for rel, _, _ in stats:
        digest.update(rel.encode() + b"\0")
        with open(root / rel, "rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                digest.update(chunk)
    value = digest.hexdigest()
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(value)
    os.replace(tmp, memo)
    return value


# ---- object storage: copy once per node --------------------------------------------------------


@dataclass(frozen=True)
class RemoteListing:
    """The objects under a URL (relative key, size, ETag) and their hash: the weights' identity."""

    fs: Any
    root: str
    entries: list[tuple[str, int, str]]
    digest: str

    @classmethod
    def of(cls, url: str, storage: StorageOptions | None = None) -> "RemoteListing":
        fs, root = filesystem(url, storage)
        listing = fs.find(root, detail=True)
        if not listing:
            raise FileNotFoundError(f"no objects under {url}")
        entries = sorted(
            (key[len(root):].lstrip("/"), int(info.get("size") or 0), str(info.get("ETag") or info.get("etag") or ""))
            for key, info in listing.items()
        )
        return cls(fs, root, entries, hashlib.sha256(json.dumps([url, entries]).encode()).hexdigest())


def fetch_to_node_cache(url: str, cache_dir: Path, storage: StorageOptions | None = None) -> tuple[Path, str, bool]:
    """Copy the objects under `url` into the node cache, once. Returns (dir, listing hash, copied here)."""
    listing = RemoteListing.of(url, storage)
    fs, root, entries, digest = listing.fs, listing.root, listing.entries, listing.digest
    target = cache_dir / digest[:32]
    if target.is_dir():
        return target, digest, False
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.is_dir():  # another actor on this node copied it while we waited
            return target, digest, False
        partial = cache_dir / f".partial-{digest[:32]}-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        log.info("copying %d objects from %s into the node cache %s", len(entries), url, target)
        for rel, _, _ in entries:
            local = partial / rel
            local.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f"{root}/{rel}", str(local))
        (partial / ".humantag-source.json").write_text(json.dumps({"url": url, "objects": entries}))
        os.replace(partial, target)
    return target, digest, True
