"""Leader election rules on a Lease held in memory: who leads, when a standby takes over, when a
leader stands down. Time is a fake clock each candidate reads; no threads, no API server."""

from __future__ import annotations

import copy
from typing import Any

from kubernetes.client.exceptions import ApiException
from modeldeploy.leader import LeaderElector


class FakeKube:
    """One Lease with resourceVersions: a write on an old version gets 409, as on the server."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ApiException(status=0, reason="connection refused")

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict | None:
        self._check()
        return copy.deepcopy(self.lease)

    def create(self, body: dict) -> dict:
        self._check()
        if self.lease is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._store(body)

    def replace(self, body: dict) -> dict:
        self._check()
        assert self.lease is not None
        if body["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        return self._store(body)

    def _store(self, body: dict) -> dict:
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.lease)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def candidate(kube: FakeKube, clock: Clock, identity: str, log: list[str]) -> LeaderElector:
    return LeaderElector(
        kube,  # type: ignore[arg-type]
        "ns",
        on_started=lambda: log.append(f"{identity} started"),
        on_stopped=lambda: log.append(f"{identity} stopped"),
        identity=identity,
        duration=15,
        retry=3,
        clock=clock,
    )


def test_one_leads_the_other_takes_over_once_renewals_stop_for_the_lease_duration():
    kube, clock, log = FakeKube(), Clock(), []
    a, b = candidate(kube, clock, "a", log), candidate(kube, clock, "b", log)
    a.step()
    b.step()
    assert a.leading.is_set() and not b.leading.is_set()
    for _ in range(10):  # a renews every 3 s for 30 s: b never takes over
        clock.now += 3
        a.step()
        b.step()
    assert not b.leading.is_set() and kube.lease["spec"]["holderIdentity"] == "a"
    # a is killed: b sees the same renewTime from now on, and takes over after 15 s of it.
    clock.now += 12
    b.step()
    assert not b.leading.is_set()
    clock.now += 4  # 16 s since b last saw the renewTime change
    b.step()
    assert b.leading.is_set() and kube.lease["spec"]["holderIdentity"] == "b"
    assert kube.lease["spec"]["leaseTransitions"] == 1
    assert log == ["a started", "b started"]


def test_a_leader_that_cannot_renew_stands_down_before_anyone_may_take_over():
    kube, clock, log = FakeKube(), Clock(), []
    a = candidate(kube, clock, "a", log)
    a.step()
    kube.down = True
    clock.now += 9
    a.step()
    assert a.leading.is_set(), "three missed renewals are tolerated"
    clock.now += 2  # 11 s without renewal: past the renew deadline (10 s), before 15 s
    a.step()
    assert not a.leading.is_set() and log == ["a started", "a stopped"]
    kube.down = False
    clock.now += 3
    a.step()  # still the holder in the Lease: leads again at once
    assert a.leading.is_set() and log[-1] == "a started"


def test_a_stopped_leader_gives_the_lease_up_and_a_standby_takes_over_at_once():
    kube, clock, log = FakeKube(), Clock(), []
    a, b = candidate(kube, clock, "a", log), candidate(kube, clock, "b", log)
    a.step()
    b.step()
    a.stop()
    assert kube.lease["spec"]["holderIdentity"] == ""
    clock.now += 3
    b.step()
    assert b.leading.is_set() and log == ["a started", "a stopped", "b started"]


def test_a_create_that_loses_the_race_for_a_new_lease_is_not_leadership():
    kube, clock, log = FakeKube(), Clock(), []
    a, b = candidate(kube, clock, "a", log), candidate(kube, clock, "b", log)
    real_get = kube.get
    kube.get = lambda *args: None  # type: ignore[method-assign]  # both read "no Lease yet"
    a.step()
    b.step()  # its create gets 409 AlreadyExists
    kube.get = real_get  # type: ignore[method-assign]
    assert [a.leading.is_set(), b.leading.is_set()] == [True, False]
    assert kube.lease["spec"]["holderIdentity"] == "a"
