"""Payload logging for audit: sampled inference exchanges sent to an HTTP sink as CloudEvents.

Each logged exchange becomes one or two CloudEvents in HTTP *binary* mode: the request or response
body is the HTTP body, the event's attributes are ``ce-*`` headers. The event types and extension
attributes are KServe's logger's (``pkg/logger/worker.go``), so a sink written for KServe works:

===========================  ==================================================================
``ce-specversion``           ``1.0``
``ce-id``                    one id per exchange, the same on its request and its response event
``ce-type``                  ``org.kubeflow.serving.inference.request`` / ``...response``
``ce-source``                ``/modelserver/<model name>/<revision>``
``ce-time``                  when the exchange was logged (RFC 3339, UTC)
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
(counting ``dropped``) when it is full. One sender thread builds the events' headers, takes up to
``batch_size`` events at a time and writes them in one go on one keep-alive connection, counting
each ``sent`` (a 2xx) or ``failed`` (any other answer, or no answer). The HTTP client is a small
one of its own (``encode_request``, ``read_response``): with ``http.client`` an event cost about
twice the CPU (measured here), and that CPU is taken from inference under the same GIL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import io
import itertools
import json
import logging
import random
import socket
import ssl
import threading
import time
import urllib.parse
import uuid
from collections import deque
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


@dataclass(frozen=True, slots=True)
class Pending:
    """One event waiting in the queue: what the request path knows, cheap to make.

    The headers are built, and redacted, on the sender thread (``event_headers``).
    """

    kind: str
    exchange_id: str
    when: float  # seconds since the epoch
    body: bytes
    content_type: str = "application/json"
    request_headers: Sequence[tuple[bytes, bytes]] | None = None  # request events only


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


_ID_PREFIX = uuid.uuid4().hex  # per process: worker processes import this module each
_ID_COUNTER = itertools.count(1)


def event_id(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The exchange's id: the caller's ``x-request-id`` if it sent one (so its logs join ours),
    else this process's random prefix and a counter — unique like a UUID, at a fraction of the
    cost of making one per request."""
    for name, value in headers:
        if name == b"x-request-id" and value and len(value) <= 200:
            return value.decode("latin-1")
    return f"{_ID_PREFIX}-{next(_ID_COUNTER)}"


def event_headers(
    event: Pending, identity: Identity, redact_names: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """The CloudEvent attributes of one event as binary-mode HTTP headers, in a fixed order."""
    when = dt.datetime.fromtimestamp(event.when, dt.UTC)
    headers = [
        ("ce-specversion", SPEC_VERSION),
        ("ce-id", event.exchange_id),
        ("ce-type", event.kind),
        ("ce-time", when.isoformat().replace("+00:00", "Z")),
        *identity.attributes(),
        ("content-type", event.content_type),
    ]
    if event.request_headers is not None:
        metadata = redact(event.request_headers, redact_names)
        headers.append(("ce-metadata", json.dumps(metadata, separators=(",", ":"))))
    return headers


@dataclass(frozen=True)
class Sink:
    """Where events go: an http(s) URL split into host, port and request target, and for https
    the CA file its certificate is verified against (None: the system's CAs)."""

    scheme: str
    host: str
    port: int
    path: str
    ca_file: str | None = None

    @classmethod
    def parse(cls, url: str, ca_file: str | None = None) -> Sink:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"payload log URL {url!r} must be http:// or https:// with a host")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme, parts.hostname, port, path, ca_file)

    @functools.cached_property
    def tls(self) -> ssl.SSLContext:
        """Made once: loading CAs costs milliseconds, and a dead sink means many connects."""
        return ssl.create_default_context(cafile=self.ca_file)

    @property
    def authority(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"

    def connect(self, timeout: float) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.scheme == "https":
            return self.tls.wrap_socket(sock, server_hostname=self.host)
        return sock


def encode_request(sink: Sink, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    """One HTTP/1.1 POST of an event, as bytes on the wire.

    Attribute values come from the server's own settings and from request headers that were
    already valid header values; anything else that could split a header is replaced.
    """
    lines = [f"POST {sink.path} HTTP/1.1", f"host: {sink.authority}"]
    for name, value in headers:
        lines.append(f"{name}: {value.replace(chr(13), ' ').replace(chr(10), ' ')}")
    lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body


def read_response(reader: io.BufferedIOBase) -> tuple[int, bool]:
    """Read one HTTP response (status line, headers, body) off ``reader``.

    Returns the status and whether the connection stays open for the next one. Interim (1xx)
    responses are skipped. Raises ``ConnectionError`` when the sink closed, ``ValueError`` on
    something that is not HTTP.
    """
    while True:
        line = reader.readline(65537)
        if not line:
            raise ConnectionError("the sink closed the connection")
        version, status_text = [*line.split(None, 2), b"", b""][:2]
        if not version.startswith(b"HTTP/") or not status_text.isdigit():
            raise ValueError(f"not an HTTP response: {line[:80]!r}")
        status = int(status_text)
        keep = version != b"HTTP/1.0"
        length, chunked = None, False
        while True:
            header = reader.readline(65537)
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value
            elif name == b"connection":
                keep = value == b"keep-alive" if version == b"HTTP/1.0" else value != b"close"
        if 100 <= status < 200:
            continue
        if chunked:
            while True:
                size = int(reader.readline(65537).split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:  # the last chunk: trailers follow, up to a blank line
                    while reader.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                reader.read(size + 2)  # the chunk and its CRLF
        elif length is not None:
            if len(reader.read(length)) != length:
                raise ConnectionError("the sink closed the connection inside a response")
        elif status not in (204, 304):
            reader.read()  # no length: the body runs until the sink closes
            keep = False
        return status, keep


Count = Callable[[str, int], None]
"""Called with an outcome (sent, failed, dropped) and how many events had it."""

# Answers that say "not now" rather than "not this event": the event is sent again.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Sent:
    """What became of a batch: taken by the sink (2xx), refused for good (another answer), or
    to be sent again (``RETRY_STATUSES``, or no answer because the connection failed). A sink
    whose certificate does not verify refuses: that is configuration, not an outage."""

    sent: int
    refused: int
    again: list[Pending]


class PayloadLogger:
    """A bounded queue of events and the thread that sends them.

    ``log`` is called on the event loop and never blocks: a full queue drops the events. The
    sender takes up to ``batch_size`` events at a time and writes them in one go on one
    keep-alive connection (HTTP/1.1 pipelining), then reads the answers in order. An event the
    sink did not take for sure (no answer, or 429/5xx) goes back to the front of the queue and
    is sent again after a wait (0.1 s, doubling up to 5 s): a sink that restarts gets what was
    buffered meanwhile, a dead one costs a connect attempt now and then, not a busy loop
    competing with inference, and the queue (``queue_size``, plus one batch in flight) bounds
    the memory. Delivery is at least once: an event whose answer was lost may arrive twice
    (same ``ce-id`` and ``ce-type``).
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
        # A deque, not queue.Queue: appends and pops are atomic without a lock, and the only
        # producer is the event loop, so checking the length before appending keeps the bound.
        self._events: deque[Pending] = deque()
        self.capacity = queue_size
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._sock: socket.socket | None = None
        self._reader: io.BufferedIOBase | None = None
        self._backoff = 0.0
        # The request line, host and this server's attributes, encoded once (see ``_encode``).
        lines = encode_request(sink, identity.attributes(), b"").split(b"\r\n")
        self._prefix_line = b"\r\n".join(lines[:2]) + b"\r\n"
        self._attributes = b"".join(line + b"\r\n" for line in lines[2:-3])

    # --- the request path ------------------------------------------------------------------
    def log(
        self,
        request_headers: Sequence[tuple[bytes, bytes]],
        request_body: bytes | None,
        response_body: bytes | None,
        content_type: str = "application/json",
        drawn: bool = False,
    ) -> None:
        """Queue this exchange's events if it is sampled (``drawn``: the caller already drew,
        before building the bodies); drops (and counts) what does not fit."""
        if not drawn and not sampled(self.sample_rate):
            return
        exchange = event_id(request_headers)
        now = time.time()
        if self.requests and request_body is not None:
            self._put(
                Pending(REQUEST_TYPE, exchange, now, request_body, content_type, request_headers)
            )
        if self.responses and response_body is not None:
            self._put(Pending(RESPONSE_TYPE, exchange, now, response_body))

    def _put(self, event: Pending) -> None:
        if len(self._events) >= self.capacity:
            self.count(OUTCOME_DROPPED, 1)
            return
        self._events.append(event)
        if not self._wake.is_set():  # a plain read; the lock is taken once per wake-up
            self._wake.set()

    @property
    def queued(self) -> int:
        return len(self._events)

    # --- the sender ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="payload-log", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued (for up to ``timeout`` seconds), then stop the sender."""
        if self._thread is None:
            return
        self._stopping.set()  # no more waiting between attempts; exit once the queue is empty
        self._wake.set()
        self._thread.join(timeout)
        self._thread = None

    def _take(self) -> list[Pending]:
        batch: list[Pending] = []
        while len(batch) < self.batch_size:
            try:
                batch.append(self._events.popleft())
            except IndexError:
                break
        return batch

    def _run(self) -> None:
        while True:
            if self._backoff and not self._stopping.is_set():
                self._stopping.wait(self._backoff)
            batch = self._take()
            if not batch:
                if self._stopping.is_set():
                    self._close()
                    return
                self._wake.clear()
                if not self._events:  # checked after clearing, so no append goes unnoticed
                    self._wake.wait(1.0)
                continue
            result = self.send_batch(batch)
            if result.sent:
                self.count(OUTCOME_SENT, result.sent)
            if result.refused:
                self.count(OUTCOME_FAILED, result.refused)
            if result.again and self._stopping.is_set():
                self.count(OUTCOME_FAILED, len(result.again))  # shutting down: one try only
            elif result.again:
                # Back to the front, in order: the sink is down or busy, and the queue is the
                # buffer that rides it out (new events are dropped while it is full).
                self._events.extendleft(reversed(result.again))

    def send_batch(self, batch: Sequence[Pending]) -> Sent:
        """Send events on one connection; see ``Sent`` for what became of them.

        All requests are written first, then the answers read in order. A sink that closes the
        connection after some answers gets the rest on a new connection. Events the sink may
        not have taken — unanswered when a connection could not be made or broke, or answered
        429 or 5xx — are to be sent again, after a back-off.
        """
        sent, refused, done = 0, 0, 0
        again: list[Pending] = []
        while done < len(batch):
            try:
                if self._sock is None:
                    self._sock = self.sink.connect(self.timeout)
                    self._reader = self._sock.makefile("rb")
                assert self._reader is not None
                rest = batch[done:]
                self._sock.sendall(b"".join(self._encode(e) for e in rest))
                for event in rest:
                    status, keep = read_response(self._reader)
                    done += 1
                    if 200 <= status < 300:
                        sent += 1
                    elif status in RETRY_STATUSES:
                        again.append(event)
                    else:
                        refused += 1
                    if not keep:
                        self._close()
                        break
            except (OSError, ValueError) as exc:
                self._close()
                log.debug("payload log sink %s: %s", self.sink.authority, exc)
                if isinstance(exc, ssl.SSLCertVerificationError):
                    # Not the sink being away: its certificate is not trusted here (the CA
                    # file). Failed and counted, so the misconfiguration shows.
                    refused += len(batch) - done
                    self._backoff = min(max(self._backoff * 2, 0.1), 5.0)
                    return Sent(sent, refused, again)
                again += batch[done:]
                break
        self._backoff = min(max(self._backoff * 2, 0.1), 5.0) if again else 0.0
        return Sent(sent, refused, again)

    def _encode(self, event: Pending) -> bytes:
        """``encode_request(sink, event_headers(...), body)``, with the attributes that never
        change encoded once: this runs for every event, on a thread that shares the GIL with
        inference."""
        when = dt.datetime.fromtimestamp(event.when, dt.UTC).isoformat().replace("+00:00", "Z")
        head = (
            f"ce-specversion: {SPEC_VERSION}\r\nce-id: {event.exchange_id}\r\n"
            f"ce-type: {event.kind}\r\nce-time: {when}\r\n"
        )
        tail = f"content-type: {event.content_type}\r\n"
        if event.request_headers is not None:
            metadata = redact(event.request_headers, self.redact_headers)
            tail += f"ce-metadata: {json.dumps(metadata, separators=(',', ':'))}\r\n"
        tail += f"content-length: {len(event.body)}\r\n\r\n"
        return b"".join((self._prefix_line, head.encode("latin-1"), self._attributes,
                         tail.encode("latin-1"), event.body))  # fmt: skip

    def _close(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(OSError):
                self._reader.close()
            self._reader = None
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
