"""Shadow traffic: copy a share of live inference requests to a new revision and compare answers.

A rollout can try a new revision on real requests before any user sees its answers. The stable
server is the one that mirrors: it already holds the request and its own answer, so comparing
the two needs no service mesh and no second copy of the traffic anywhere else.

How the mirror target reaches a running server: the operator ``PUT``s a small document to
``/v2/shadow`` (with its own credential when auth is on) naming the shadow revision, its pods'
addresses, the share to mirror and the tolerance. Stable pods are not restarted and need no
volume; the document carries its own expiry (``ttlSeconds``), so a server whose operator went
away, or missed the end of the phase, stops mirroring by itself. With several worker processes
the document is written to a file in the shared metrics directory and each worker picks it up
within a second (``ShadowStore``), whichever worker the operator's request landed on.

What the live request pays: after its answer was sent, one random draw and, for the sampled
share, an append to a bounded deque (``Mirror.offer``). Never a wait: a full queue drops the
copy and counts it. Sender threads POST the copies to the shadow, time them, and compare the
shadow's answer with the one stable gave (``answers_agree``: same output names, datatypes and
shapes, numbers within the tolerance, anything else equal — the smoke tests' semantics, with
tolerance 0 meaning exactly equal), and count mirrored, dropped, agreed, disagreed and errors.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import logging
import math
import os
import random
import re
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import metric_names as m

log = logging.getLogger("modelserver.shadow")

MAX_TARGETS = 100
MAX_QUEUE = 100_000
MAX_TTL_SECONDS = 3600.0
SENDERS = 4
"""Sender threads: a slow shadow (hundreds of ms per answer) still takes a few copies a second
each; more would only compete with live inference for the GIL."""
STORE_RECHECK_SECONDS = 1.0
BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0
"""After a copy the shadow did not answer (refused, timed out), each sender waits this long,
doubling, before the next: a dead shadow costs a connect attempt now and then while the queue
fills and copies are dropped, not a busy loop competing with live inference."""
FILE_NAME = "shadow.json"
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_TARGET = re.compile(r"^http://[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
# Request headers passed on to the shadow: the caller's credential (the shadow is the same
# ModelDeployment and accepts the same token) and what ties its logs to the live request.
FORWARDED = (b"authorization", b"x-request-id")

OUTCOME_MIRRORED, OUTCOME_DROPPED = "mirrored", "dropped"
OUTCOME_AGREED, OUTCOME_DISAGREED, OUTCOME_ERROR = "agreed", "disagreed", "error"


class ShadowConfigError(ValueError):
    """The operator's document is not a valid shadow configuration."""


@dataclass(frozen=True)
class ShadowConfig:
    """Where to mirror, how much, how to compare, and until when.

    Example document (what ``PUT /v2/shadow`` takes)::

        {"revision": "fraud-7c9d", "model": "fraud", "targets": ["http://10.0.0.7:8080"],
         "fraction": 0.1, "tolerance": 0.0, "ttlSeconds": 90, "maxQueue": 1000}
    """

    revision: str
    model: str
    targets: tuple[str, ...]
    fraction: float
    tolerance: float
    expires_at: float  # seconds since the epoch: the servers of one pod share the file
    max_queue: int = 1000
    timeout: float = 2.0

    @classmethod
    def parse(cls, doc: Any, now: float) -> ShadowConfig:
        if not isinstance(doc, dict):
            raise ShadowConfigError("the shadow configuration must be a JSON object")
        revision = doc.get("revision")
        if not isinstance(revision, str) or not _LABEL_VALUE.match(revision):
            raise ShadowConfigError("revision must be a label value (1-63 characters)")
        model = doc.get("model")
        if not isinstance(model, str) or not model or "/" in model or len(model) > 253:
            raise ShadowConfigError("model must be the shadow's model name")
        targets = doc.get("targets")
        if (
            not isinstance(targets, list)
            or not 1 <= len(targets) <= MAX_TARGETS
            or not all(isinstance(t, str) and _TARGET.match(t) for t in targets)
        ):
            raise ShadowConfigError(
                f"targets must list 1 to {MAX_TARGETS} base URLs like http://10.0.0.7:8080"
            )
        fraction = _number(doc, "fraction", 0.0, 1.0, 0.1)
        tolerance = _number(doc, "tolerance", 0.0, math.inf, 0.0)
        ttl = _number(doc, "ttlSeconds", 1.0, MAX_TTL_SECONDS, 60.0)
        max_queue = int(_number(doc, "maxQueue", 1, MAX_QUEUE, 1000))
        timeout = _number(doc, "timeoutSeconds", 0.01, 60.0, 2.0)
        return cls(
            revision, model, tuple(targets), fraction, tolerance, now + ttl, max_queue, timeout
        )

    def to_doc(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "model": self.model,
            "targets": list(self.targets),
            "fraction": self.fraction,
            "tolerance": self.tolerance,
            "expiresAt": self.expires_at,
            "maxQueue": self.max_queue,
            "timeoutSeconds": self.timeout,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> ShadowConfig:
        """Back from ``to_doc`` (the shared file, written by a worker of this same server)."""
        return cls(
            doc["revision"], doc["model"], tuple(doc["targets"]), float(doc["fraction"]),
            float(doc["tolerance"]), float(doc["expiresAt"]), int(doc["maxQueue"]),
            float(doc["timeoutSeconds"]),
        )  # fmt: skip


def _number(doc: dict[str, Any], key: str, low: float, high: float, default: float) -> float:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ShadowConfigError(f"{key} must be a number from {low:g} to {high:g}")
    return float(value)


class ShadowStore:
    """The current shadow configuration of this server, shared by its worker processes.

    ``path`` None (one process): kept in memory. Otherwise written to ``path`` atomically and
    re-read when its modification time changes, at most once per ``STORE_RECHECK_SECONDS``: a
    stat per second per worker, not per request.
    """

    def __init__(self, path: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._config: ShadowConfig | None = None
        self._mtime: float | None = None
        self._checked = -math.inf

    def set(self, config: ShadowConfig | None) -> None:
        self._config = config
        if self.path is None:
            return
        if config is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self._mtime = None
            return
        partial = f"{self.path}.{os.getpid()}.tmp"
        with open(partial, "w", encoding="utf-8") as fh:
            json.dump(config.to_doc(), fh)
        os.replace(partial, self.path)
        self._mtime = os.stat(self.path).st_mtime

    def current(self) -> ShadowConfig | None:
        """The configuration in force now; None when there is none or it expired."""
        now = time.monotonic()
        if self.path is not None and now - self._checked >= STORE_RECHECK_SECONDS:
            self._checked = now
            self._reload()
        config = self._config
        if config is not None and self.clock() >= config.expires_at:
            return None
        return config

    def _reload(self) -> None:
        assert self.path is not None
        try:
            mtime = os.stat(self.path).st_mtime
        except FileNotFoundError:
            self._config, self._mtime = None, None
            return
        if mtime == self._mtime:
            return
        try:
            with open(self.path, encoding="utf-8") as fh:
                self._config = ShadowConfig.from_doc(json.load(fh))
            self._mtime = mtime
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("shadow: cannot read %s: %s", self.path, error)


def _values_agree(ours: Any, theirs: Any, tolerance: float) -> bool:
    if isinstance(ours, list) and isinstance(theirs, list):
        return len(ours) == len(theirs) and all(
            _values_agree(a, b, tolerance) for a, b in zip(ours, theirs, strict=True)
        )
    numbers = (int, float)
    if (
        isinstance(ours, numbers)
        and isinstance(theirs, numbers)
        and not isinstance(ours, bool)
        and not isinstance(theirs, bool)
    ):
        return abs(ours - theirs) <= tolerance
    return bool(ours == theirs)


def answers_agree(ours: Any, theirs: Any, tolerance: float) -> bool:
    """Whether the shadow's answer matches stable's: v2 outputs with the same names, datatypes
    and shapes, and every value within ``tolerance`` (numbers) or equal (anything else); a v1
    answer's predictions likewise.

    >>> a = {"outputs": [{"name": "p", "datatype": "FP64", "shape": [1], "data": [0.50]}]}
    >>> b = {"outputs": [{"name": "p", "datatype": "FP64", "shape": [1], "data": [0.52]}]}
    >>> answers_agree(a, b, 0.05), answers_agree(a, b, 0.0)
    (True, False)
    """
    if not isinstance(ours, dict) or not isinstance(theirs, dict):
        return False
    if "outputs" in ours or "outputs" in theirs:
        try:
            a = {o["name"]: o for o in ours.get("outputs", [])}
            b = {o["name"]: o for o in theirs.get("outputs", [])}
            if a.keys() != b.keys():
                return False
            return all(
                (a[n].get("datatype"), a[n].get("shape"))
                == (b[n].get("datatype"), b[n].get("shape"))
                and _values_agree(a[n].get("data"), b[n].get("data"), tolerance)
                for n in a
            )
        except (TypeError, KeyError, AttributeError):
            return False
    return "predictions" in ours and _values_agree(
        ours["predictions"], theirs.get("predictions"), tolerance
    )


@dataclass(frozen=True, slots=True)
class Copy:
    """One live exchange to replay on the shadow: cheap to make on the request path."""

    config: ShadowConfig
    endpoint: str
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    answer: bytes  # stable's answer, compared on the sender thread


Count = Callable[[str, str], None]
"""Called with an outcome and the shadow revision (from the event loop and sender threads)."""
Observe = Callable[[str, float], None]
"""Called with the shadow revision and the shadow's answer time in seconds."""


def sampled(fraction: float, draw: Callable[[], float] = random.random) -> bool:
    return fraction >= 1.0 or (fraction > 0.0 and draw() < fraction)


class Mirror:
    """The bounded queue of copies and the threads that send them to the shadow."""

    def __init__(
        self,
        store: ShadowStore,
        count: Count,
        observe: Observe,
        senders: int = SENDERS,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.count = count
        self.observe = observe
        self.senders = senders
        self.draw = draw
        # A deque: appends and pops are atomic, and the only producer is the event loop, so a
        # length check before the append keeps the bound without a lock.
        self._copies: deque[Copy] = deque()
        self._wake = threading.Semaphore(0)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._next_target = itertools.count()
        self._local = threading.local()
        self._backoff = 0.0  # shared by the senders: races only make one wait a little off

    # --- the request path ------------------------------------------------------------------
    def offer(
        self, endpoint: str, headers: Iterable[tuple[bytes, bytes]], body: bytes, answer: bytes
    ) -> None:
        """Queue a copy of a live exchange when a shadow is configured and the draw says so."""
        config = self.store.current()
        if config is None or not sampled(config.fraction, self.draw):
            return
        if len(self._copies) >= config.max_queue:
            self.count(OUTCOME_DROPPED, config.revision)
            return
        kept = tuple((k, v) for k, v in headers if k in FORWARDED)
        self._copies.append(Copy(config, endpoint, kept, body, answer))
        self._wake.release()

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        for index in range(self.senders):
            thread = threading.Thread(target=self._run, name=f"shadow-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        for _ in self._threads:
            self._wake.release()
        for thread in self._threads:
            thread.join(timeout=5)

    # --- the sender threads ----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.acquire()
            if self._stopping.is_set():
                return
            try:
                copy = self._copies.popleft()
            except IndexError:
                continue
            try:
                self.send(copy)
            except Exception:  # a bug here must not end the thread
                log.exception("shadow: could not send a copy")
            if self._backoff:
                self._stopping.wait(self._backoff)

    def send(self, copy: Copy) -> str:
        """Replay one copy on the shadow, count the outcome and return it."""
        config = copy.config
        if self.store.current() is None:  # the phase ended while it waited
            return OUTCOME_DROPPED
        target = config.targets[next(self._next_target) % len(config.targets)]
        path = (
            f"/v2/models/{config.model}/infer"
            if copy.endpoint == m.ENDPOINT_INFER
            else f"/v1/models/{config.model}:predict"
        )
        self.count(OUTCOME_MIRRORED, config.revision)
        started = time.perf_counter()
        try:
            status, answer = self._post(target, path, copy, config.timeout)
        except (OSError, http.client.HTTPException) as error:
            log.debug("shadow: %s did not answer: %s", target, error)
            self.count(OUTCOME_ERROR, config.revision)
            self._backoff = min(max(BACKOFF_MIN, self._backoff * 2), BACKOFF_MAX)
            return OUTCOME_ERROR
        self._backoff = 0.0
        self.observe(config.revision, time.perf_counter() - started)
        if not 200 <= status < 300:
            self.count(OUTCOME_ERROR, config.revision)
            return OUTCOME_ERROR
        try:
            agree = answers_agree(json.loads(copy.answer), json.loads(answer), config.tolerance)
        except ValueError:
            agree = False
        outcome = OUTCOME_AGREED if agree else OUTCOME_DISAGREED
        self.count(outcome, config.revision)
        return outcome

    def _post(self, target: str, path: str, copy: Copy, timeout: float) -> tuple[int, bytes]:
        """One POST on this thread's keep-alive connection to ``target`` (reconnects once)."""
        connections: dict[str, http.client.HTTPConnection] = self._local.__dict__.setdefault(
            "connections", {}
        )
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in copy.headers}
        headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            connection = connections.get(target)
            reused = connection is not None
            if connection is None:
                parts = urllib.parse.urlsplit(target)
                connection = http.client.HTTPConnection(
                    parts.hostname or "", parts.port, timeout=timeout
                )
                connections[target] = connection
            try:
                connection.request("POST", path, body=copy.body, headers=headers)
                response = connection.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                del connections[target]
                if attempt or not reused:  # only a kept-alive connection the shadow closed
                    raise
        raise AssertionError("unreachable: the loop returns or raises")


def store_path(directory: str | None) -> str | None:
    """Where workers share the configuration: the multiprocess metrics directory, if any."""
    return os.path.join(directory, FILE_NAME) if directory else None


def describe(config: ShadowConfig | None, now: float) -> dict[str, Any]:
    """What ``GET /v2/shadow`` answers."""
    if config is None:
        return {"active": False}
    doc = config.to_doc()
    doc.pop("expiresAt")
    return {"active": True, **doc, "expiresInSeconds": round(config.expires_at - now, 1)}


__all__: Sequence[str] = (
    "Mirror",
    "ShadowConfig",
    "ShadowConfigError",
    "ShadowStore",
    "answers_agree",
)
