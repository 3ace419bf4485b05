"""Process-wide state the operator's threads share, and who owns what.

Threads:
- kopf's handler threads (up to `execution.max_workers`) run passes for create, update, resume
  and child events;
- the resync thread (`handlers.resync_forever`) runs the periodic pass over every object and the
  requeued passes of canaries whose analysis or step is due, and retries failed passes;
- the metrics and health servers' threads only read.

Ownership:
- one pass per ModelDeployment at a time: `lock(key)`; different objects run in parallel;
- every map below (phases, due times, failure counts, per-object locks) is read and written only
  under `_guard`, and never iterated outside it;
- `snapshots` (evidence.Snapshots) and `slots` (reconcile.RolloutSlots) have their own locks;
  prometheus_client metrics are thread-safe.

`forget(key)` drops everything held for a ModelDeployment once it is deleted, so a deleted
object is neither fetched again nor left in the gauges.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .api import Phase
from .config import OperatorConfig
from .credential import Credential
from .evidence import Snapshots
from .kube import Kube
from .metrics import OperatorMetrics
from .reconcile import RolloutSlots

Key = tuple[str, str]  # (namespace, name)
MAX_BACKOFF_SECONDS = 60.0


def backoff_seconds(failures: int) -> float:
    """Wait before retrying a pass that failed `failures` times in a row.

    Example: 1 → 1 s, 2 → 2 s, 3 → 4 s, … capped at 60 s.
    """
    return min(MAX_BACKOFF_SECONDS, 2.0 ** max(0, failures - 1))


@dataclass
class Runtime:
    """Settings, the API client, metrics and the shared maps (see the module docstring)."""

    config: OperatorConfig
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    kube: Kube | None = None
    credential: Credential | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    snapshots: Snapshots = field(default_factory=Snapshots)
    slots: RolloutSlots = field(init=False)
    # The resync thread's last sign of life (monotonic) and what it was doing then.
    heartbeat: tuple[float, str] = field(default_factory=lambda: (time.monotonic(), "starting"))
    _phases: dict[Key, str] = field(default_factory=dict)
    _due: dict[Key, float] = field(default_factory=dict)
    _failures: dict[Key, int] = field(default_factory=dict)
    _locks: dict[Key, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.slots = RolloutSlots(self.config.max_concurrent_rollouts)

    @property
    def tokens(self) -> tuple[str, ...]:
        return self.credential.tokens if self.credential else ()

    def lock(self, key: Key) -> threading.Lock:
        """Timer, change and child handlers may run at once; one pass per object at a time."""
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def beat(self, activity: str) -> None:
        self.heartbeat = (time.monotonic(), activity)

    def record_phase(self, key: Key, phase: str | None) -> None:
        """Remember the object's phase and publish the count per phase (0 for unused phases,
        so a phase that empties shows 0 rather than its last count)."""
        with self._guard:
            if phase is None:
                self._phases.pop(key, None)
            else:
                self._phases[key] = phase
            counts = {p.value: 0 for p in Phase}
            for value in self._phases.values():
                counts[value] = counts.get(value, 0) + 1
        for value, count in counts.items():
            self.metrics.by_phase.labels(phase=value).set(count)

    def schedule(self, key: Key, after: float | None) -> None:
        """Run the object's next pass `after` seconds from now (None: only on events/resync)."""
        with self._guard:
            if after is None:
                self._due.pop(key, None)
            else:
                self._due[key] = time.monotonic() + after

    def due_now(self) -> list[Key]:
        now = time.monotonic()
        with self._guard:
            return [key for key, due in self._due.items() if due <= now]

    def failed(self, key: Key) -> float:
        """Count a failed pass and schedule the retry; returns the back-off in seconds."""
        with self._guard:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
        delay = backoff_seconds(failures)
        self.schedule(key, delay)
        return delay

    def succeeded(self, key: Key) -> None:
        with self._guard:
            self._failures.pop(key, None)

    def failures(self, key: Key) -> int:
        with self._guard:
            return self._failures.get(key, 0)

    def known(self) -> set[Key]:
        """Every object the operator holds state for."""
        with self._guard:
            return set(self._phases) | set(self._due) | set(self._failures)

    def forget(self, key: Key) -> None:
        """Drop all state of a deleted ModelDeployment: schedule, backoff, lock, phase, gauges
        and metric snapshots."""
        with self._guard:
            self._due.pop(key, None)
            self._failures.pop(key, None)
            self._locks.pop(key, None)
        self.record_phase(key, None)
        with contextlib.suppress(KeyError):  # it may never have had a canary gauge
            self.metrics.canary_weight.remove(*key)
        self.snapshots.forget(*key)
        self.slots.release(key)
