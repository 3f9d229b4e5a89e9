"""A bounded hand-off between a fast frame producer and a slower consumer: the newest frames win.

A live source (a camera, a browser tab) produces frames at its own pace; the encoder
takes one whenever it is free. :class:`LatestFrameSlot` sits between them:

* ``put`` never blocks and never grows the slot past ``capacity`` items: when the slot is
  full the *oldest* pending item is dropped (and counted), so the consumer always gets the
  most recent frames and memory stays flat however fast the producer is;
* ``get`` blocks (with an optional timeout) until an item is pending; ``take`` does not wait.

Every item put is either taken, dropped, or still pending:
``received == taken + dropped + pending`` at all times. Thread-safe.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..validators import check_positive_int

__all__ = ["LatestFrameSlot", "SlotCounts"]

T = TypeVar("T")


@dataclass(frozen=True)
class SlotCounts:
    """Counters of a :class:`LatestFrameSlot` (``received == taken + dropped + pending``)."""

    received: int
    taken: int
    dropped: int
    pending: int
    max_pending: int  # the most items ever pending at once (never above capacity)


class LatestFrameSlot(Generic[T]):
    """Newest-wins bounded slot of at most ``capacity`` pending items (1: only the latest frame waits)."""

    def __init__(self, capacity: int = 1):
        self.capacity = check_positive_int("capacity", capacity)
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._received = self._taken = self._dropped = self._max_pending = 0

    def put(self, item: T) -> bool:
        """Add ``item``; return True if an older pending item was dropped to make room.

        Raises:
            RuntimeError: the slot is closed.
        """
        with self._cond:
            if self._closed:
                raise RuntimeError("put() on a closed LatestFrameSlot")
            dropped = False
            if len(self._items) >= self.capacity:
                self._items.popleft()
                self._dropped += 1
                dropped = True
            self._items.append(item)
            self._received += 1
            self._max_pending = max(self._max_pending, len(self._items))
            self._cond.notify()
            return dropped

    def take(self) -> T | None:
        """The oldest pending item (the newest when capacity is 1), or None if none is pending."""
        with self._cond:
            return self._pop()

    def get(self, timeout: float | None = None) -> T | None:
        """Wait until an item is pending and return it; None on timeout or once the slot is closed and empty."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._closed, timeout=timeout)
            return self._pop()

    def close(self) -> None:
        """Refuse further puts and wake every waiting ``get`` (pending items can still be taken)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def counts(self) -> SlotCounts:
        with self._cond:
            return SlotCounts(received=self._received, taken=self._taken, dropped=self._dropped,
                              pending=len(self._items), max_pending=self._max_pending)

    def _pop(self) -> T | None:
        if not self._items:
            return None
        self._taken += 1
        return self._items.popleft()
