"""Where the leader keeps the process dictionary: (group, key) -> Location.

The leader talks to the dictionary only through :class:`Store`, so another engine
(etcd, for a highly available leader) can replace :class:`MemoryStore` without
touching the decision logic.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from .protocol import Location


class Store(Protocol):
    def get(self, group: str, key: str) -> Location | None: ...
    def put(self, location: Location) -> None: ...
    def delete(self, group: str, key: str) -> Location | None: ...
    def on_node(self, node: str) -> list[Location]: ...
    def count(self, node: str) -> int: ...
    def items(self, group: str | None = None) -> Iterable[Location]: ...
    def __len__(self) -> int: ...


class MemoryStore:
    """The "memory" backend: two dicts, every operation O(1) but listing."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], Location] = {}
        self._by_node: dict[str, dict[tuple[str, str], None]] = {}

    def get(self, group: str, key: str) -> Location | None:
        return self._by_key.get((group, key))

    def put(self, location: Location) -> None:
        k = (location.group, location.key)
        old = self._by_key.get(k)
        if old is not None:
            self._by_node[old.node].pop(k, None)
        self._by_key[k] = location
        self._by_node.setdefault(location.node, {})[k] = None

    def delete(self, group: str, key: str) -> Location | None:
        old = self._by_key.pop((group, key), None)
        if old is not None:
            self._by_node[old.node].pop((group, key), None)
        return old

    def on_node(self, node: str) -> list[Location]:
        return [self._by_key[k] for k in self._by_node.get(node, ())]

    def count(self, node: str) -> int:
        return len(self._by_node.get(node, ()))

    def items(self, group: str | None = None) -> Iterator[Location]:
        for loc in self._by_key.values():
            if group is None or loc.group == group:
                yield loc

    def __len__(self) -> int:
        return len(self._by_key)


# `cluster.backend` -> the store it names; config.py refuses any other name. With "etcd",
# etcd holds the election, not the dictionary: a new leader rebuilds it from the workers'
# hellos, as after a restart, so the hot path never waits on etcd.
BACKENDS: dict[str, type] = {"memory": MemoryStore, "etcd": MemoryStore}


def open_store(backend: str) -> Store:
    return BACKENDS[backend]()
