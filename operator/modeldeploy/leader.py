"""Leader election on a coordination.k8s.io/v1 Lease, so two or more replicas can run: one works,
the others keep their caches warm and take over when it stops renewing.

Why our own Lease loop rather than kopf's peering: peering decides by priority among live peers
(KopfPeering objects) and was built to pause operators, not to hand over within seconds; a Lease
is what kube-controller-manager and every client-go operator use, what admins already know how
to inspect (`kubectl get lease -n modeldeploy-system`), and needs one small RBAC rule.

The rules are client-go's:
- the holder renews every `retry` seconds; a candidate takes the Lease over once it has seen the
  same holder and renewTime for `duration` seconds (measured on its own clock, so clock skew
  between nodes does not matter);
- every write carries the Lease's resourceVersion, so of two candidates only one wins;
- a leader that has not renewed for two thirds of `duration` (client-go's renew deadline: 10 s of
  15) stops working until it leads again, so it stands down before any candidate, which waits the
  full `duration` after the last renewal it saw, may take over;
- a leader that stops normally gives the Lease up, so its successor starts at once.

Status writes also carry the ModelDeployment's resourceVersion (see reconcile), so even a leader
that has not yet noticed it lost cannot overwrite its successor's work: its write fails with 409.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from .kube import Kube

log = logging.getLogger("modeldeploy.leader")
LEASE_API = "coordination.k8s.io/v1"
LEASE_NAME = "modeldeploy-operator"


def default_identity() -> str:
    """Stable across container restarts in one pod (PID 1), distinct between processes."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{os.getpid()}"


def _stamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        on_started: Callable[[], None],
        on_stopped: Callable[[], None],
        *,
        name: str = LEASE_NAME,
        identity: str | None = None,
        duration: float = 15.0,
        retry: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        leading: threading.Event | None = None,
    ) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name
        self.identity = identity or default_identity()
        self.on_started, self.on_stopped = on_started, on_stopped
        self.duration, self.retry, self.clock = duration, retry, clock
        self.renew_deadline = duration * 2 / 3
        self.leading = leading or threading.Event()
        self._stop = threading.Event()
        self._lease: dict[str, Any] | None = None  # as our last write left it
        self._observed: tuple[Any, Any] | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0

    def start(self) -> LeaderElector:
        threading.Thread(target=self._run, name="leader", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop campaigning; a leader gives the Lease up so a standby takes over at once."""
        self._stop.set()
        if self.leading.is_set():
            self._set_stopped()
            self._release()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.step()
            self._stop.wait(self.retry)

    def step(self) -> None:
        """One round: acquire or renew the Lease, and start or stop leading accordingly."""
        try:
            holding = self._try_acquire_or_renew()
        except Exception as error:  # the API server may be unreachable: try again
            log.warning("lease %s/%s: %s", self.namespace, self.name, error)
            holding = False
        now = self.clock()
        if holding:
            self._renewed_at = now
            if not self.leading.is_set():
                log.info("leading (lease %s/%s as %s)", self.namespace, self.name, self.identity)
                self.leading.set()
                self.on_started()
        elif self.leading.is_set() and now - self._renewed_at > self.renew_deadline:
            log.warning("lost the lease %s/%s: standing by", self.namespace, self.name)
            self._set_stopped()

    def _set_stopped(self) -> None:
        self.leading.clear()
        self.on_stopped()

    def _try_acquire_or_renew(self) -> bool:
        now = dt.datetime.now(dt.UTC)
        if self._lease is not None and self.leading.is_set():
            # Renewing: one write, on the version our last write left (409 if anyone else wrote).
            if self._write(self._lease, now, int(self._lease["spec"].get("leaseTransitions", 0))):
                return True
            self._lease = None
        lease = self.kube.get(LEASE_API, "Lease", self.namespace, self.name)
        if lease is None:
            return self._write(None, now, transitions=0)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, spec.get("renewTime"))
        if record != self._observed:
            self._observed, self._observed_at = record, self.clock()
        if holder and holder != self.identity:
            duration = float(spec.get("leaseDurationSeconds") or self.duration)
            if self.clock() - self._observed_at < duration:
                return False  # held and renewed recently enough
        transitions = int(spec.get("leaseTransitions") or 0) + (holder != self.identity)
        return self._write(lease, now, transitions)

    def _write(self, lease: dict[str, Any] | None, now: dt.datetime, transitions: int) -> bool:
        spec = dict((lease or {}).get("spec") or {})
        if spec.get("holderIdentity") != self.identity:
            spec["acquireTime"] = _stamp(now)
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=int(self.duration),
            renewTime=_stamp(now),
            leaseTransitions=transitions,
        )
        body: dict[str, Any] = {
            "apiVersion": LEASE_API,
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec,
        }
        try:
            if lease is None:
                self._lease = self.kube.create(body)
            else:
                body["metadata"]["resourceVersion"] = lease["metadata"]["resourceVersion"]
                self._lease = self.kube.replace(body)
        except ApiException as error:
            if error.status in (409, 422):  # another candidate wrote first
                self._lease = None
                return False
            raise
        return True

    def _release(self) -> None:
        try:
            lease = self.kube.get(LEASE_API, "Lease", self.namespace, self.name)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = ""
                lease["spec"]["leaseDurationSeconds"] = 1
                self.kube.replace(lease)
                log.info("gave up the lease %s/%s", self.namespace, self.name)
        except Exception as error:
            log.warning("could not give up the lease %s/%s: %s", self.namespace, self.name, error)
