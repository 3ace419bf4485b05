"""The work queue as worked examples: dedup, coalescing, delayed adds, priority, fairness."""

from __future__ import annotations

import threading

import pytest
from modeldeploy.workqueue import SWEEP, URGENT, ShutDown, WorkQueue


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def drain(queue: WorkQueue) -> list:
    """Every key ready now, in order, each marked done."""
    out = []
    while (key := queue.get(timeout=0)) is not None:
        out.append(key)
        queue.done(key)
    return out


@pytest.mark.parametrize(
    ("adds", "order"),
    [
        ([("a", URGENT), ("a", URGENT), ("b", URGENT)], ["a", "b"]),  # dedup
        ([("s1", SWEEP), ("s2", SWEEP), ("due", URGENT)], ["due", "s1", "s2"]),  # due first
        ([("s1", SWEEP), ("s2", SWEEP), ("s2", URGENT)], ["s2", "s1"]),  # promoted, queued once
        ([("a", URGENT), ("a", SWEEP)], ["a"]),  # never demoted
    ],
)
def test_order(adds, order):
    queue = WorkQueue()
    for key, priority in adds:
        queue.add(key, priority)
    assert drain(queue) == order


def test_a_due_analysis_is_not_starved_by_a_thousand_idle_objects():
    queue = WorkQueue()
    for i in range(1000):
        queue.add(f"idle-{i}", SWEEP)
    for _ in range(10):  # a worker is through ten of them when the canary's analysis comes due
        queue.done(queue.get(timeout=0))
    queue.add("canary", URGENT)
    assert queue.get(timeout=0) == "canary"


def test_a_key_added_while_its_pass_runs_runs_once_more_afterwards_never_twice_at_once():
    queue = WorkQueue()
    queue.add("a")
    assert queue.get(timeout=0) == "a"
    queue.add("a")
    queue.add("a")
    assert queue.get(timeout=0) is None, "not handed out again while it runs"
    queue.done("a")
    assert drain(queue) == ["a"], "coalesced into one follow-up pass"


def test_delayed_adds_come_due_and_the_earliest_wins():
    clock = FakeClock()
    queue = WorkQueue(clock)
    queue.add_after("a", 30)
    queue.add_after("a", 10)
    queue.add_after("a", 20)
    assert queue.delayed() == 1 and drain(queue) == []
    clock.now = 10
    assert drain(queue) == ["a"]
    clock.now = 30
    assert drain(queue) == [], "the superseded 30 s add does not run a second pass"


def test_forget_drops_waiting_and_delayed_entries():
    clock = FakeClock()
    queue = WorkQueue(clock)
    queue.add("gone")
    queue.add_after("gone", 5)
    queue.forget("gone")
    clock.now = 10
    assert drain(queue) == [] and len(queue) == 0


def test_workers_block_until_work_arrives_and_stop_on_shutdown():
    queue = WorkQueue()
    got, stopped = [], threading.Event()

    def worker() -> None:
        try:
            while True:
                key = queue.get()
                got.append(key)
                queue.done(key)
        except ShutDown:
            stopped.set()

    thread = threading.Thread(target=worker)
    thread.start()
    queue.add("a")
    queue.add_after("b", 0.05)
    deadline = threading.Event()
    for _ in range(200):
        if got == ["a", "b"]:
            break
        deadline.wait(0.01)
    queue.shutdown()
    thread.join(timeout=5)
    assert got == ["a", "b"] and stopped.is_set()


# ------------------------------------------------------------------ slow passes are reported once
def test_a_slow_pass_is_reported_once_and_the_next_pass_of_the_worker_again() -> None:
    from modeldeploy.workers import slow_passes

    reported: set[tuple[str, float]] = set()
    activity = {
        "worker-0": (100.0, "pass of ml/fraud"),  # 45 s: slow
        "worker-1": (140.0, "pass of ml/churn"),  # 5 s: fine
        "worker-2": (10.0, "idle"),  # idle for long: not a pass
    }
    assert slow_passes(activity, 145.0, 30.0, reported) == [("worker-0", "pass of ml/fraud", 45.0)]
    assert slow_passes(activity, 160.0, 30.0, reported) == []  # the same pass: said already
    activity["worker-0"] = (150.0, "pass of ml/fraud")  # its next pass, slow in turn
    assert slow_passes(activity, 190.0, 30.0, reported) == [
        ("worker-0", "pass of ml/fraud", 40.0),
        ("worker-1", "pass of ml/churn", 50.0),
    ]


# -------------------------------------------------- a replica that stood down does not take work
def test_a_key_taken_as_the_replica_stands_down_goes_back_to_the_queue() -> None:
    from modeldeploy.config import OperatorConfig
    from modeldeploy.runtime import Runtime
    from modeldeploy.workers import take

    runtime = Runtime(OperatorConfig())

    class StandsDownDuringGet(WorkQueue):
        """Its Lease renewal fails while the worker waits in get()."""

        def get(self, timeout: float | None = None):  # type: ignore[no-untyped-def]
            key = super().get(timeout)
            runtime.leading.clear()
            return key

    runtime.queue = StandsDownDuringGet()
    runtime.leading.set()
    runtime.queue.add(("ml", "fraud"))
    assert take(runtime) is None  # not worked on by a replica that no longer leads
    assert len(runtime.queue) == 1  # kept for when it leads again
    runtime.leading.set()
    runtime.queue = WorkQueue()
    runtime.queue.add(("ml", "fraud"))
    assert take(runtime) == ("ml", "fraud")
