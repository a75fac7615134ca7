"""A bounded least-recently-used cache, the one rule behind every per-process cache that grows with the data:
caption tokens in a loader worker (entries), open shard files (entries, closed when dropped) and prompt
embeddings on the generating device (bytes).

A cache that empties itself when full looks bounded, but a caller that fills it and then reads back what it
put in before the clear fails (synscale's caption-token cache did, past a million captions); here an entry is
dropped only when it is the least recently used and something else needs its room."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """At most `capacity` of cost (entries, by default) of the most recently used values. `cost(value)`: what
    one value counts against the capacity (bytes, say); `on_evict(key, value)`: called for every value dropped
    (closing a file). A value larger than the whole capacity is not kept."""

    def __init__(self, capacity: int, cost: Callable[[V], int] | None = None,
                 on_evict: Callable[[K, V], None] | None = None) -> None:
        if capacity < 0:
            raise ValueError(f"an LRU capacity must be >= 0, got {capacity}")
        self.capacity, self._cost, self._on_evict = capacity, cost or (lambda v: 1), on_evict
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self.total = 0  # the cost of what is kept

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: K, default: V | None = None) -> V | None:
        """The value (now the most recently used), or `default`."""
        hit = self._items.get(key)
        if hit is None:
            return default
        self._items.move_to_end(key)
        return hit[0]

    def put(self, key: K, value: V) -> None:
        """Keep `value` under `key`, dropping the least recently used values while over capacity."""
        if key in self._items:
            self._drop(key)
        cost = self._cost(value)
        if cost > self.capacity:
            if self._on_evict is not None:
                self._on_evict(key, value)
            return
        self._items[key] = (value, cost)
        self.total += cost
        while self.total > self.capacity:
            self._drop(next(iter(self._items)))

    def clear(self) -> None:
        while self._items:
            self._drop(next(iter(self._items)))

    def _drop(self, key: K) -> None:
        value, cost = self._items.pop(key)
        self.total -= cost
        if self._on_evict is not None:
            self._on_evict(key, value)
