"""Process-wide state the operator's threads share, and who owns what.

Threads:
- kopf's watch of ModelDeployments (its handler threads) puts each object into `models` and
  queues it when its spec, annotations or deletion changed;
- one reflector thread per child kind (informer.py) keeps `children` current and queues owners;
- the sweep thread queues every cached object each resync period (no API call);
- `config.workers` worker threads take keys from `queue` and run passes, only while this replica
  leads (`leading`);
- the leader-election thread (leader.py); the metrics and health servers' threads only read.

Ownership:
- one pass per ModelDeployment at a time: the work queue never hands a key to two workers;
- `models`, `children`, `queue`, `snapshots`, `slots` each carry their own lock;
- `_phases`, `_failures` and `_settled` are read and written only under `_guard`, never iterated
  outside it;
- prometheus_client metrics are thread-safe.

`forget(key)` drops everything held for a ModelDeployment once it is deleted, so a deleted
object is neither worked on again nor left in the gauges.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from .api import GROUP, KIND, VERSION, Phase
from .config import OperatorConfig
from .credential import Credential
from .evidence import Snapshots
from .informer import ChildCache, Store
from .kube import Kube
from .leader import LeaderElector
from .metrics import OperatorMetrics
from .reconcile import RolloutSlots
from .workqueue import WorkQueue

Key = tuple[str, str]  # (namespace, name)
MAX_BACKOFF_SECONDS = 60.0


def backoff_seconds(failures: int) -> float:
    """Wait before retrying a pass that failed `failures` times in a row.

    Example: 1 → 1 s, 2 → 2 s, 3 → 4 s, … capped at 60 s.
    """
    return min(MAX_BACKOFF_SECONDS, 2.0 ** max(0, failures - 1))


@dataclass
class Runtime:
    """Settings, the API client, caches, the work queue and metrics (see the module docstring)."""

    config: OperatorConfig
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    kube: Kube | None = None
    credential: Credential | None = None
    elector: LeaderElector | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    leading: threading.Event = field(default_factory=threading.Event)
    models: Store = field(default_factory=lambda: Store(f"{GROUP}/{VERSION}", KIND))
    children: ChildCache = field(default_factory=ChildCache)
    queue: WorkQueue = field(default_factory=WorkQueue)
    snapshots: Snapshots = field(default_factory=Snapshots)
    slots: RolloutSlots = field(init=False)
    # Each worker's current activity and since when (monotonic), for /healthz.
    activity: dict[str, tuple[float, str]] = field(default_factory=dict)
    _phases: dict[Key, str] = field(default_factory=dict)
    _failures: dict[Key, int] = field(default_factory=dict)
    # What each settled ModelDeployment's last pass planned from (see workers.settled).
    _settled: dict[Key, Hashable] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.slots = RolloutSlots(self.config.max_concurrent_rollouts)

    @property
    def tokens(self) -> tuple[str, ...]:
        return self.credential.tokens if self.credential else ()

    def beat(self, worker: str, activity: str) -> None:
        """Record what `worker` is doing from now on."""
        self.activity[worker] = (time.monotonic(), activity)

    def busiest(self) -> tuple[float, str]:
        """The longest-running activity of any worker that is not idle, else (now, "idle")."""
        busy = [(since, what) for since, what in list(self.activity.values()) if what != "idle"]
        return min(busy) if busy else (time.monotonic(), "idle")

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

    def failed(self, key: Key) -> float:
        """Count a failed pass; returns the back-off before retrying it, in seconds."""
        with self._guard:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
        return backoff_seconds(failures)

    def succeeded(self, key: Key) -> None:
        with self._guard:
            self._failures.pop(key, None)

    def failures(self, key: Key) -> int:
        with self._guard:
            return self._failures.get(key, 0)

    def settle(self, key: Key, inputs: Hashable | None) -> None:
        """Remember that a pass from `inputs` found `key` settled (None: it did not)."""
        with self._guard:
            if inputs is None:
                self._settled.pop(key, None)
            else:
                self._settled[key] = inputs

    def settled_on(self, key: Key, inputs: Hashable) -> bool:
        """Whether `key`'s last pass found it settled, planning from these same inputs."""
        with self._guard:
            return self._settled.get(key) == inputs

    def forget(self, key: Key) -> None:
        """Drop all state of a deleted ModelDeployment: queue entries, back-off, phase, gauges,
        metric snapshots and its rollout slot."""
        self.queue.forget(key)
        self.models.delete(*key)
        with self._guard:
            self._failures.pop(key, None)
            self._settled.pop(key, None)
        self.record_phase(key, None)
        with contextlib.suppress(KeyError):  # it may never have had a canary gauge
            self.metrics.canary_weight.remove(*key)
        self.snapshots.forget(*key)
        self.slots.release(key)
