"""Versioned physical indices behind a read alias and a write alias.

    <index>-v1, <index>-v2, ...   physical indices (the template applies to <index>-v*)
    <index>                       read alias: what searches use
    <index>-write                 write alias: where runs index

A rebuild fills <index>-v<N+1> while searches keep reading the old one, then
moves both aliases in one `_aliases` request, so no search ever sees a
half-filled index.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Optional

from humantag.indexers.opensearch.mapping import add_new_fields, put_templates

log = logging.getLogger(__name__)


class AliasClash(ValueError):
    """A concrete index holds a name humantag needs for an alias: an operator's decision, not an outage."""


@dataclass(frozen=True)
class IndexNames:
    base: str

    @property
    def read_alias(self) -> str:
        return self.base

    @property
    def write_alias(self) -> str:
        return f"{self.base}-write"

    @property
    def pattern(self) -> str:
        return f"{self.base}-v*"

    def physical(self, generation: int) -> str:
        return f"{self.base}-v{generation}"

    def generation(self, index: str) -> Optional[int]:
        match = re.fullmatch(re.escape(self.base) + r"-v(\d+)", index)
        return int(match.group(1)) if match else None


def physical_indices(client: Any, names: IndexNames) -> dict[str, int]:
    """Existing physical indices of this base name, by name → generation."""
    found = client.indices.get(index=names.pattern, ignore_unavailable=True, allow_no_indices=True)
    return {name: gen for name in found if (gen := names.generation(name)) is not None}


def alias_target(client: Any, alias: str) -> Optional[str]:
    if not client.indices.exists_alias(name=alias):
        return None
    targets = sorted(client.indices.get_alias(name=alias))
    return targets[-1] if targets else None


def ensure_index(client: Any, names: IndexNames) -> str:
    """Templates in place and both aliases pointing somewhere; returns the physical index written to."""
    put_templates(client, names.base)
    current = alias_target(client, names.write_alias)
    if current:
        add_new_fields(client, current)
        return current
    existing = physical_indices(client, names)
    target = max(existing, key=existing.__getitem__) if existing else names.physical(1)
    for alias in (names.read_alias, names.write_alias):
        if client.indices.exists(index=alias) and not client.indices.exists_alias(name=alias):
            raise AliasClash(
                f"an index named {alias!r} exists where humantag needs an alias; rename or delete it, "
                "or choose another index name"
            )
    if not existing:
        client.indices.create(index=target)
        log.info("created index %s", target)
    swap_aliases(client, names, target)
    return target


def next_index(client: Any, names: IndexNames) -> str:
    """The index a rebuild fills: an unaliased newer one left by an interrupted rebuild, else a new one."""
    put_templates(client, names.base)
    existing = physical_indices(client, names)
    current = alias_target(client, names.read_alias)
    current_gen = existing.get(current, 0) if current else 0
    newer = sorted((gen, name) for name, gen in existing.items() if gen > current_gen)
    if newer:
        log.info("resuming the rebuild into %s", newer[-1][1])
        return newer[-1][1]
    target = names.physical(max(existing.values(), default=0) + 1)
    client.indices.create(index=target)
    log.info("created index %s for the rebuild", target)
    return target


def swap_aliases(client: Any, names: IndexNames, target: str) -> None:
    """Point the read and write aliases at `target` in one atomic request."""
    actions: list[dict[str, Any]] = []
    for alias in (names.read_alias, names.write_alias):
        if client.indices.exists_alias(name=alias):
            for index in client.indices.get_alias(name=alias):
                if index != target:
                    actions.append({"remove": {"index": index, "alias": alias}})
    actions.append({"add": {"index": target, "alias": names.read_alias}})
    actions.append({"add": {"index": target, "alias": names.write_alias, "is_write_index": True}})
    client.indices.update_aliases(body={"actions": actions})
    log.info("aliases %s and %s now point at %s", names.read_alias, names.write_alias, target)


def drop_old_indices(client: Any, names: IndexNames, keep: str, keep_previous: int = 1) -> list[str]:
    """Delete physical indices older than `keep`, except the `keep_previous` newest (for a rollback)."""
    existing = physical_indices(client, names)
    current_gen = existing.get(keep, 0)
    older = sorted((gen, name) for name, gen in existing.items() if gen < current_gen)
    doomed = [name for _, name in older[: max(0, len(older) - keep_previous)]]
    for name in doomed:
        client.indices.delete(index=name, ignore_unavailable=True)
        log.info("deleted old index %s", name)
    return doomed
