"""Payload logging for audit: sampled inference exchanges sent to an HTTP sink as CloudEvents.

Each logged exchange becomes one or two CloudEvents in HTTP *binary* mode: the request or response
body is the HTTP body, the event's attributes are ``ce-*`` headers. The event types and extension
attributes are KServe's logger's (``pkg/logger/worker.go``), so a sink written for KServe works:

===========================  ==================================================================
``ce-specversion``           ``1.0``
``ce-id``                    one id per exchange, the same on its request and its response event
``ce-type``                  ``org.kubeflow.serving.inference.request`` / ``...response``
``ce-source``                ``/modelserver/<model name>/<revision>``
``ce-time``                  when the event was made (RFC 3339, UTC)
``ce-inferenceservicename``  the ModelDeployment's name (KServe: the InferenceService)
``ce-namespace``             its namespace
``ce-component``             ``predictor``
``ce-endpoint``              the revision (KServe: ``default`` or ``canary``)
``ce-metadata``              request events: the request's headers as JSON ``{name: [values]}``,
                             with ``authorization``, ``cookie`` and the listed names redacted
``ce-modelid``               the served model's name
``ce-modelversion``          the model's human version label (empty when it has none)
``ce-revision``              the revision that answered
===========================  ==================================================================

Inference never waits on the sink: ``PayloadLogger.log`` only appends to a bounded queue and drops
(counting ``dropped``) when it is full. One sender thread takes up to ``batch_size`` events at a
time and sends them back to back on one keep-alive connection, counting each ``sent`` (a 2xx) or
``failed`` (any other answer, or no answer).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import logging
import queue
import random
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

log = logging.getLogger("modelserver.payload_log")

SPEC_VERSION = "1.0"
REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
COMPONENT = "predictor"
MODES = ("requests", "responses", "both")
ALWAYS_REDACTED = ("authorization", "cookie", "proxy-authorization")
"""Credentials never reach a sink, whatever ``redactHeaders`` lists."""
REDACTED = "REDACTED"
OUTCOME_SENT, OUTCOME_FAILED, OUTCOME_DROPPED = "sent", "failed", "dropped"
OUTCOMES = (OUTCOME_SENT, OUTCOME_FAILED, OUTCOME_DROPPED)


@dataclass(frozen=True)
class Identity:
    """Who is logging: the attributes every event of this server carries."""

    model: str
    revision: str
    model_version: str = ""
    deployment: str = ""
    namespace: str = ""

    def source(self) -> str:
        return f"/modelserver/{self.model}/{self.revision}"

    def attributes(self) -> list[tuple[str, str]]:
        return [
            ("ce-source", self.source()),
            ("ce-inferenceservicename", self.deployment or self.model),
            ("ce-namespace", self.namespace),
            ("ce-component", COMPONENT),
            ("ce-endpoint", self.revision),
            ("ce-modelid", self.model),
            ("ce-modelversion", self.model_version),
            ("ce-revision", self.revision),
        ]


@dataclass(frozen=True)
class Event:
    """One CloudEvent in HTTP binary mode: the headers to send and the body."""

    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


def sampled(rate: float, draw: Callable[[], float] = random.random) -> bool:
    """Whether to log this exchange: true for a share ``rate`` of draws (1 always, 0 never)."""
    return rate >= 1.0 or (rate > 0.0 and draw() < rate)


def redact(
    headers: Iterable[tuple[bytes, bytes]], names: Iterable[str] = ()
) -> dict[str, list[str]]:
    """Request headers as ``{lower-case name: [values]}`` with sensitive values replaced.

    >>> redact([(b"authorization", b"Bearer x"), (b"x-user", b"7"), (b"X-User", b"8")], ["X-USER"])
    {'authorization': ['REDACTED'], 'x-user': ['REDACTED', 'REDACTED']}
    """
    hidden = {*ALWAYS_REDACTED, *(n.lower() for n in names)}
    out: dict[str, list[str]] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        value = REDACTED if name in hidden else raw_value.decode("latin-1")
        out.setdefault(name, []).append(value)
    return out


def event_id(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The exchange's id: the caller's ``x-request-id`` if it sent one (so its logs join ours),
    else a fresh UUID."""
    for name, value in headers:
        if name == b"x-request-id" and value and len(value) <= 200:
            return value.decode("latin-1")
    return str(uuid.uuid4())


def build_event(
    kind: str,
    exchange_id: str,
    identity: Identity,
    body: bytes,
    content_type: str,
    now: dt.datetime,
    metadata: dict[str, list[str]] | None = None,
) -> Event:
    """One binary-mode CloudEvent; ``kind`` is ``REQUEST_TYPE`` or ``RESPONSE_TYPE``."""
    headers = [
        ("ce-specversion", SPEC_VERSION),
        ("ce-id", exchange_id),
        ("ce-type", kind),
        ("ce-time", now.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")),
        *identity.attributes(),
        ("content-type", content_type),
    ]
    if metadata is not None:
        headers.append(("ce-metadata", json.dumps(metadata, separators=(",", ":"))))
    return Event(tuple(headers), body)


@dataclass(frozen=True)
class Sink:
    """Where events go: an http(s) URL split into what ``http.client`` needs."""

    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Sink:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"payload log URL {url!r} must be http:// or https:// with a host")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme, parts.hostname, port, path)

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


Count = Callable[[str, int], None]
"""Called with an outcome (sent, failed, dropped) and how many events had it."""


class PayloadLogger:
    """A bounded queue of events and the thread that sends them.

    ``log`` is called on the event loop and never blocks: a full queue drops the events. The
    sender takes up to ``batch_size`` events at a time and sends them on one connection; a
    sink that refuses or times out costs the sender ``timeout`` seconds, never a request.
    """

    def __init__(
        self,
        sink: Sink,
        identity: Identity,
        count: Count,
        mode: str = "both",
        sample_rate: float = 1.0,
        redact_headers: Sequence[str] = (),
        queue_size: int = 10_000,
        batch_size: int = 64,
        timeout: float = 2.0,
    ) -> None:
        self.sink = sink
        self.identity = identity
        self.count = count
        self.requests = mode in ("requests", "both")
        self.responses = mode in ("responses", "both")
        self.sample_rate = sample_rate
        self.redact_headers = tuple(h.lower() for h in redact_headers)
        self.batch_size = batch_size
        self.timeout = timeout
        self._queue: queue.Queue[Event | None] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._conn: http.client.HTTPConnection | None = None

    # --- the request path ------------------------------------------------------------------
    def log(
        self,
        request_headers: Sequence[tuple[bytes, bytes]],
        request_body: bytes | None,
        response_body: bytes | None,
        content_type: str = "application/json",
    ) -> None:
        """Queue this exchange's events if it is sampled; drops (and counts) what does not fit."""
        if not sampled(self.sample_rate):
            return
        exchange = event_id(request_headers)
        now = dt.datetime.now(dt.UTC)
        events = []
        if self.requests and request_body is not None:
            metadata = redact(request_headers, self.redact_headers)
            events.append(
                build_event(REQUEST_TYPE, exchange, self.identity, request_body, content_type,
                            now, metadata)
            )  # fmt: skip
        if self.responses and response_body is not None:
            events.append(
                build_event(RESPONSE_TYPE, exchange, self.identity, response_body,
                            "application/json", now)
            )  # fmt: skip
        for event in events:
            try:
                self._queue.put_nowait(event)
            except queue.Full:
                self.count(OUTCOME_DROPPED, 1)

    # --- the sender ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="payload-log", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued (for up to ``timeout`` seconds), then stop the sender."""
        if self._thread is None:
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)
        self._thread = None

    def _take(self) -> tuple[list[Event], bool]:
        """Up to ``batch_size`` events: waits for the first, takes what else is queued."""
        first = self._queue.get()
        if first is None:
            return [], True
        batch = [first]
        while len(batch) < self.batch_size:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                break
            if event is None:
                return batch, True
            batch.append(event)
        return batch, False

    def _run(self) -> None:
        while True:
            batch, done = self._take()
            if batch:
                sent = self.send_batch(batch)
                if sent:
                    self.count(OUTCOME_SENT, sent)
                if len(batch) - sent:
                    self.count(OUTCOME_FAILED, len(batch) - sent)
            if done:
                self._close()
                return

    def send_batch(self, batch: Sequence[Event]) -> int:
        """Send events back to back on one connection; returns how many the sink took (2xx).

        After a connection error the rest of the batch fails without being tried: a dead sink
        then costs one connection attempt per batch, not one per event.
        """
        sent = 0
        for event in batch:
            try:
                status = self._post(event)
            except (OSError, http.client.HTTPException) as exc:
                self._close()
                log.debug("payload log sink %s: %s", self.sink.host, exc)
                return sent
            if 200 <= status < 300:
                sent += 1
        return sent

    def _post(self, event: Event) -> int:
        if self._conn is None:
            self._conn = self.sink.connect(self.timeout)
        conn = self._conn
        conn.putrequest("POST", self.sink.path, skip_accept_encoding=True)
        for name, value in event.headers:
            conn.putheader(name, value)
        conn.putheader("content-length", str(len(event.body)))
        conn.endheaders(event.body)
        response = conn.getresponse()
        response.read()
        if response.will_close:
            self._close()
        return response.status

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
