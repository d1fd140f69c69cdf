"""Bounded, thread-safe LRU caches with hit/miss counters.

cachetools caches are not thread-safe; a composer may be shared by threads (e.g. when a caller
uses ``asyncio.to_thread``), so every access takes a lock. The lock is held only for the
dictionary operation, never while compiling or rendering: two concurrent misses may both do
the work, and the second result simply replaces the first (both are identical).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from cachetools import LRUCache

V = TypeVar("V")


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0


class LockedLRU(Generic[V]):
    def __init__(self, maxsize: int) -> None:
        self._data: LRUCache[Hashable, V] = LRUCache(maxsize=maxsize)
        self._lock = threading.Lock()
        self.stats = CacheStats()

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.stats.misses += 1
            else:
                self.stats.hits += 1
            return value

    def put(self, key: Hashable, value: V) -> None:
        with self._lock:
            self._data[key] = value

    def __len__(self) -> int:
        return len(self._data)
