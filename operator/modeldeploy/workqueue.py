"""A work queue of ModelDeployment keys: client-go's workqueue, with two priorities.

Why: passes are triggered by watch events, by due analyses and by the periodic resync. Without a
queue, an event storm or a fleet-wide resync runs one pass per trigger, and a canary whose
analysis is due waits behind all of them. The queue gives:

- dedup per key: a key waiting in the queue is queued once, however many triggers arrive;
- coalescing: a key that is added while its pass runs is run once more afterwards, never twice
  at the same time (so one pass per object at a time needs no lock);
- delayed adds: `add_after` for analyses and steps that are due later, and for back-off;
- priority: events and due work (`URGENT`) go before the resync's sweep (`SWEEP`), so a due
  analysis is not starved by a resync of a thousand idle objects; a swept key that becomes
  urgent moves ahead.

Workers call `get()` (blocking), run the pass, then `done(key)`.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable

URGENT, SWEEP = 0, 1


class ShutDown(Exception):
    """The queue was shut down: the worker should exit."""


class WorkQueue:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._queues: tuple[deque[Hashable], deque[Hashable]] = (deque(), deque())
        self._queued: dict[Hashable, int] = {}  # key -> priority it waits at
        self._processing: set[Hashable] = set()
        self._dirty: dict[Hashable, int] = {}  # added while processing -> priority
        self._delayed: list[tuple[float, int, Hashable, int]] = []
        self._due: dict[Hashable, float] = {}  # earliest delayed add per key
        self._counter = itertools.count()
        self._shutdown = False

    # --- adding ----------------------------------------------------------------------------
    def add(self, key: Hashable, priority: int = URGENT) -> None:
        with self._cond:
            self._add(key, priority)

    def _add(self, key: Hashable, priority: int) -> None:
        if self._shutdown:
            return
        if key in self._processing:
            self._dirty[key] = min(priority, self._dirty.get(key, priority))
            return
        waiting = self._queued.get(key)
        if waiting is not None and waiting <= priority:
            return
        if waiting is not None:  # promote: drop it from the slower lane
            self._queues[waiting].remove(key)
        self._queued[key] = priority
        self._queues[priority].append(key)
        self._cond.notify()

    def add_after(self, key: Hashable, seconds: float, priority: int = URGENT) -> None:
        """Add `key` once `seconds` have passed (at once when <= 0)."""
        if seconds <= 0:
            self.add(key, priority)
            return
        with self._cond:
            at = self._clock() + seconds
            if self._due.get(key, float("inf")) <= at:
                return  # an earlier delayed add of this key is pending: that one will do
            self._due[key] = at
            heapq.heappush(self._delayed, (at, next(self._counter), key, priority))
            self._cond.notify()

    # --- taking ----------------------------------------------------------------------------
    def get(self, timeout: float | None = None) -> Hashable | None:
        """The next key to work on (None on timeout); raises ShutDown once shut down."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                if self._shutdown:
                    raise ShutDown
                wait = self._release_due()
                for lane in self._queues:
                    if lane:
                        key = lane.popleft()
                        del self._queued[key]
                        self._processing.add(key)
                        return key
                now = self._clock()
                if deadline is not None:
                    if now >= deadline:
                        return None
                    wait = min(wait, deadline - now) if wait is not None else deadline - now
                self._cond.wait(wait)

    def _release_due(self) -> float | None:
        """Move due delayed keys into the queue; seconds until the next one (None: none)."""
        now = self._clock()
        while self._delayed and self._delayed[0][0] <= now:
            at, _, key, priority = heapq.heappop(self._delayed)
            if self._due.get(key) != at:
                continue  # superseded by an earlier add of the same key
            del self._due[key]
            self._add(key, priority)
        return self._delayed[0][0] - now if self._delayed else None

    def done(self, key: Hashable) -> None:
        """The pass of `key` finished; run it again if it was added meanwhile."""
        with self._cond:
            self._processing.discard(key)
            priority = self._dirty.pop(key, None)
            if priority is not None:
                self._add(key, priority)

    def forget(self, key: Hashable) -> None:
        """Drop a deleted object's waiting and delayed entries."""
        with self._cond:
            priority = self._queued.pop(key, None)
            if priority is not None:
                self._queues[priority].remove(key)
            self._dirty.pop(key, None)
            self._due.pop(key, None)  # its heap entries are skipped when they come due

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()

    # --- looking ---------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._cond:
            return len(self._queued)

    def delayed(self) -> int:
        with self._cond:
            return len(self._due)
