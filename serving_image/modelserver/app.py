"""The ASGI application: routing, auth, limits, and the Open Inference Protocol endpoints.

A plain ASGI callable with no web framework on purpose: the per-request work of a framework
(routing tables, request objects, middleware stacks) costs as much as scoring a batched row, and
the server has fewer than ten routes. Each request is answered exactly once, from one place
(``_http``), which also records the metrics, so no code path can forget either.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from . import __version__, payload_log, protocol, shadow
from . import metric_names as m
from .auth import token_source
from .batcher import score
from .config import Settings
from .errors import RequestError
from .metrics import ServerMetrics
from .model import ServedModel

if TYPE_CHECKING:
    from .grpc_service import GrpcServer

log = logging.getLogger("modelserver")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_JSON = b"application/json"
_DRIFT_REFRESH_SECONDS = 5.0
# Scope key: how far the app read the request body (absent: not at all, False: part, True: all).
_BODY_READ = "modelserver.body_read"
# Scope key: the inference request's whole body, once read (for the payload log).
_BODY = "modelserver.body"
# A refused request's unread body is read and dropped up to this size before the answer is
# completed (see ``_answer_then_drain``); a bigger one is not worth reading: the connection is
# just closed.
DRAIN_LIMIT_BYTES = 256 * 1024 * 1024


@dataclass
class Response:
    status: int
    body: bytes
    content_type: bytes = _JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()


def _json(status: int, doc: Any) -> Response:
    return Response(status, protocol.dumps(doc))


def _authorization(scope: Scope) -> bytes | None:
    return next((v for k, v in scope["headers"] if k == b"authorization"), None)


@dataclass
class Route:
    endpoint: str
    method: str
    model: str | None = None  # the model name in the path, if any
    version: str | None = None
    open: bool = False  # answered without auth
    # the operator's token is accepted: the read-only and gate endpoints its checks call
    operator: bool = False


class App:
    """One model server. ``on_fatal`` is called when fail-fast wants the process to exit."""

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry | None = None,
        on_fatal: Callable[[], None] | None = None,
        load_in_background: bool = True,
    ) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = ServerMetrics(self.registry, settings.model_name, settings.model_version)
        self.model = ServedModel(settings, self.metrics)
        self.tokens = token_source(settings)
        self.on_fatal = on_fatal
        # One process answers liveness while it loads; a worker of several loads before it
        # accepts, so a connection never lands on a worker that cannot serve yet.
        self.load_in_background = load_in_background
        self.payload_log = build_payload_logger(settings, self.metrics)
        self.shadow_store = shadow.ShadowStore(
            shadow.store_path(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        )
        self.mirror = shadow.Mirror(
            self.shadow_store, self.metrics.count_shadow, self.metrics.observe_shadow
        )
        self.draining = False
        self.exit_code = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.grpc: GrpcServer | None = None
        self._grpc_stop: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.model.ready and not self.draining

    def start_draining(self) -> None:
        """SIGTERM: readiness answers false from now on; requests are still served until the drain.

        Only sets a flag, so a signal handler may call it; ``report_draining`` follows from the
        event loop with what takes locks.
        """
        self.draining = True

    def report_draining(self) -> None:
        """The ready gauge and a log line for a drain that started.

        Never from a signal handler: the gauge update takes prometheus_client's lock, which the
        interrupted code may hold (with several workers one lock guards every metric).
        """
        self.metrics.set_ready(False)
        log.info("draining: readiness is now false; in-flight requests will complete")

    async def _load(self) -> None:
        if await self.model.load():
            # Everything loaded so far (frameworks, the model) lives for the whole process: move
            # it out of the cyclic GC's view, so full collections stop scanning it (a full pass
            # over scikit-learn's object graph is tens of ms: a p99 spike).
            gc.collect()
            gc.freeze()
            self.metrics.set_ready(not self.draining)
        elif self.settings.fail_fast:
            self.exit_code = 1
            log.error("fail-fast: exiting because the model could not be loaded")
            if self.on_fatal is not None:
                self.on_fatal()

    async def _refresh_drift(self) -> None:
        while True:
            await asyncio.sleep(_DRIFT_REFRESH_SECONDS)
            self.model.refresh_drift()

    async def startup(self) -> None:
        sys.setswitchinterval(self.settings.switch_interval_ms / 1000)
        if self.payload_log is not None:
            self.payload_log.start()
        self.mirror.start()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._refresh_drift(), name="drift")]
        if self.load_in_background:
            self._tasks.append(loop.create_task(self._load(), name="load-model"))
        else:
            await self._load()
        if self.settings.grpc_port is not None:
            # After the load when workers load first: no call lands on a worker still loading.
            from .grpc_service import GrpcServer

            self.grpc = GrpcServer(self)
            await self.grpc.start()

    def stop_grpc_soon(self) -> None:
        """The drain ended: gRPC refuses new calls (GOAWAY) and lets in-flight ones finish, at
        the same time as REST closes its listener, so neither waits for the other's drain."""
        if self.grpc is not None and self._grpc_stop is None:
            stop = self.grpc.stop(self.settings.shutdown_timeout)
            self._grpc_stop = asyncio.get_running_loop().create_task(stop, name="grpc-stop")

    async def shutdown(self) -> None:
        self.stop_grpc_soon()  # already under way after a drain; now for any other exit
        if self._grpc_stop is not None:
            await self._grpc_stop
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.model.close()
        await asyncio.to_thread(self.mirror.stop)
        if self.payload_log is not None:
            # What is queued gets a short chance to reach the sink; the pod is going away.
            await asyncio.to_thread(self.payload_log.stop, 2.0)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    # --- routing ---------------------------------------------------------------------------
    def route(self, method: str, path: str) -> Route:
        s = self.settings
        if path == "/v2/health/live":
            return Route(m.ENDPOINT_LIVE, "GET", open=not s.auth_protect_health, operator=True)
        if path == "/v2/health/ready":
            return Route(m.ENDPOINT_READY, "GET", open=not s.auth_protect_health, operator=True)
        if path == "/metrics":
            return Route(m.ENDPOINT_METRICS, "GET", open=not s.auth_protect_metrics, operator=True)
        if path == "/v2/shadow":
            # Any method: _handle answers GET, PUT and DELETE, each with a credential (see
            # shadow_refusal), whether or not users need a token.
            return Route(m.ENDPOINT_SHADOW, method, open=True)
        if path in ("/v2", "/v2/"):
            return Route(m.ENDPOINT_SERVER_METADATA, "GET", operator=True)
        if path.startswith("/v2/models/"):
            name, *rest = path[len("/v2/models/") :].split("/")
            version = None
            if len(rest) >= 2 and rest[0] == "versions":
                version, rest = rest[1], rest[2:]
            tail = "/".join(rest)
            endpoint = {"": m.ENDPOINT_MODEL_METADATA, "ready": m.ENDPOINT_MODEL_READY}.get(tail)
            if endpoint is not None:
                return Route(endpoint, "GET", name, version, operator=True)
            if tail == "infer":
                return Route(m.ENDPOINT_INFER, "POST", name, version, operator=True)
        elif path.startswith("/v1/models/"):
            v1_name = path[len("/v1/models/") :]
            if v1_name.endswith(":predict"):
                return Route(m.ENDPOINT_PREDICT, "POST", v1_name[: -len(":predict")])
            if v1_name and "/" not in v1_name and ":" not in v1_name:
                return Route(m.ENDPOINT_MODEL_READY, "GET", v1_name)
        raise RequestError(404, f"no such endpoint: {method} {path:.200}")

    def check_model(self, name: str | None, version: str | None) -> None:
        """404 unless ``name`` (and ``version``, when given) is the served model (REST and gRPC)."""
        if name != self.model.name:
            raise RequestError(
                404, f"model {name!r:.100} is not served here; this server serves "
                f"{self.model.name!r}"
            )  # fmt: skip
        if version is not None and version != self.model.version:
            raise RequestError(
                404, f"version {version!r:.100} of model {self.model.name!r} is not served "
                f"here; the served version is {self.model.version!r}"
            )  # fmt: skip

    # --- request handling ------------------------------------------------------------------
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        endpoint, model_label = m.ENDPOINT_OTHER, ""
        self.metrics.inflight_child.inc()
        try:
            try:
                route = self.route(scope["method"], scope["path"])
                endpoint = route.endpoint
                if route.model is not None:
                    model_label = (
                        self.model.name if route.model == self.model.name else m.UNKNOWN_MODEL
                    )
                response = await self._handle(route, scope, receive)
            except RequestError as exc:
                if exc.status == 404 and endpoint == m.ENDPOINT_OTHER and self._denied(scope):
                    exc = RequestError(401, "missing or invalid bearer token")
                response = self._error(exc)
            except Exception as exc:
                log.exception("unhandled error on %s %s", scope["method"], scope["path"])
                response = _json(500, {"error": f"internal error: {type(exc).__name__}: {exc}"})
            unread = _unread_body(scope) if response.status >= 400 else 0
            headers = [
                (b"content-type", response.content_type),
                (b"content-length", str(len(response.body)).encode()),
                *response.headers,
            ]
            if unread != 0:
                headers.append((b"connection", b"close"))
            await send(
                {"type": "http.response.start", "status": response.status, "headers": headers}
            )
            if unread == 0:
                await send({"type": "http.response.body", "body": response.body})
            else:
                await self._answer_then_drain(response, unread, receive, send)
        finally:
            self.metrics.inflight_child.dec()
        self.metrics.observe_request(
            model_label, endpoint, response.status, time.perf_counter() - start
        )
        if endpoint in m.INFERENCE_ENDPOINTS and model_label == self.model.name:
            if self.payload_log is not None:
                self._log_payload(scope, response)
            if response.status == 200:
                self._mirror(scope, endpoint, response)

    def _mirror(self, scope: Scope, endpoint: str, response: Response) -> None:
        """Offer the exchange to the shadow mirror, after the answer was sent: a draw and at
        most a queue append, never a wait, and never failing the request."""
        body = scope.get(_BODY)
        if body is None:
            return
        try:
            self.mirror.offer(endpoint, scope["headers"], body, response.body)
        except Exception:
            log.exception("shadow: could not queue a copy")

    async def _shadow(self, scope: Scope, receive: Receive) -> Response:
        """GET: the shadow configuration in force. PUT: mirror to the revision the body names
        (see ``shadow.ShadowConfig``). DELETE: stop mirroring."""
        method = scope["method"]
        now = time.time()
        if method == "GET":
            return _json(200, shadow.describe(self.shadow_store.current(), now))
        if method == "DELETE":
            self.shadow_store.set(None)
            log.info("shadow: mirroring stopped")
            return _json(200, shadow.describe(None, now))
        if method != "PUT":
            allow = ((b"allow", b"GET, PUT, DELETE"),)
            msg = f"method {method} is not allowed on /v2/shadow; use GET, PUT or DELETE"
            return Response(405, protocol.dumps({"error": msg}), headers=allow)
        raw = await self._read_body(scope, receive, 64 * 1024)
        try:
            config = shadow.ShadowConfig.parse(json.loads(raw), now)
        except ValueError as error:  # ShadowConfigError and JSON errors alike
            raise RequestError(400, f"shadow configuration: {error}") from error
        previous = self.shadow_store.current()
        self.shadow_store.set(config)
        if previous is None or previous.revision != config.revision:
            log.info(
                "shadow: mirroring %.0f%% of inference requests to revision %s (%d pods)",
                config.fraction * 100, config.revision, len(config.targets),
            )  # fmt: skip
        return _json(200, shadow.describe(config, now))

    def _log_payload(self, scope: Scope, response: Response) -> None:
        """Queue the exchange for the payload log: after the answer was sent, and never failing
        the request (the logger only queues; this guards against a bug in building events)."""
        assert self.payload_log is not None
        try:
            self.payload_log.log(scope["headers"], scope.get(_BODY), response.body)
        except Exception:
            log.exception("payload log: could not queue an exchange")

    async def _answer_then_drain(
        self, response: Response, unread: int | None, receive: Receive, send: Send
    ) -> None:
        """Send a refusal's body, read and drop what is left of the request, then finish.

        Most clients send the whole request body before they read the answer. Closing the
        connection with their data unread makes the kernel reset it, and the reset throws away
        the answer already sent: the client sees "connection reset" instead of, say, the 413
        that says why. So the rest of the body is read (up to ``DRAIN_LIMIT_BYTES``) before the
        response is completed and the connection closed.
        """
        await send({"type": "http.response.body", "body": response.body, "more_body": True})
        if unread is None or unread <= DRAIN_LIMIT_BYTES:
            dropped = 0
            while dropped <= DRAIN_LIMIT_BYTES:
                message = await receive()
                dropped += len(message.get("body", b""))
                if message["type"] == "http.disconnect" or not message.get("more_body", False):
                    break
        await send({"type": "http.response.body", "body": b""})

    def _error(self, exc: RequestError) -> Response:
        headers: tuple[tuple[bytes, bytes], ...] = ()
        if exc.status == 401:
            headers = ((b"www-authenticate", b'Bearer realm="modelserver"'),)
        return Response(exc.status, protocol.dumps({"error": exc.message}), headers=headers)

    def _denied(self, scope: Scope, operator: bool = False) -> bool:
        return self.denied(_authorization(scope), operator)

    def denied(self, authorization: bytes | None, operator: bool = False) -> bool:
        """Whether auth is on and ``authorization`` (a header or gRPC metadata value) carries no
        token good here.

        The user's token is good everywhere; the operator's only where ``operator`` says so.
        """
        if self.tokens is None or not self.tokens.users_need_a_token:
            return False
        if self.tokens.check(authorization):
            return False
        return not (operator and self.tokens.check_operator(authorization))

    def shadow_refusal(self, authorization: bytes | None) -> RequestError | None:
        """Why a request to ``/v2/shadow`` is refused, or None when it carries the user's or
        the operator's token.

        Never open, with or without user auth: whoever configures mirroring decides where
        copies of every caller's requests (and their bearer tokens) go. A server with neither
        credential configured refuses it outright; the operator sets its token's digest on
        every model with ``spec.rollout.shadow``.
        """
        if self.tokens is None:
            return RequestError(
                403,
                "/v2/shadow needs a credential and this server has none: start it with "
                "MODELSERVER_AUTH_TOKEN(_FILE) or MODELSERVER_OPERATOR_TOKEN_SHA256 (the operator "
                "sets the latter on models with spec.rollout.shadow)",
            )
        if self.tokens.check(authorization) or self.tokens.check_operator(authorization):
            return None
        return RequestError(401, "missing or invalid bearer token")

    async def _handle(self, route: Route, scope: Scope, receive: Receive) -> Response:
        if not route.open and self._denied(scope, route.operator):
            raise RequestError(401, "missing or invalid bearer token")
        if route.endpoint == m.ENDPOINT_SHADOW:
            refusal = self.shadow_refusal(_authorization(scope))
            if refusal is not None:
                raise refusal
        if scope["method"] != route.method:
            allow = ((b"allow", route.method.encode()),)
            msg = (
                f"method {scope['method']} is not allowed on {scope['path']:.200}; "
                f"use {route.method}"
            )
            return Response(405, protocol.dumps({"error": msg}), headers=allow)
        if route.endpoint == m.ENDPOINT_SHADOW:
            return await self._shadow(scope, receive)
        if route.model is not None:
            self.check_model(route.model, route.version)
        if route.method == "POST":
            return await self._inference(route, scope, receive)
        return self._get(route)

    def _get(self, route: Route) -> Response:
        ep = route.endpoint
        if ep == m.ENDPOINT_LIVE:
            return _json(200, {"live": True})
        if ep == m.ENDPOINT_READY:
            if self.ready:
                return _json(200, {"ready": True})
            reason = "draining (shutting down)" if self.draining else self.model.status
            return _json(503, {"ready": False, "reason": reason})
        if ep == m.ENDPOINT_METRICS:
            self.model.refresh_drift()
            return Response(200, self.metrics.exposition(), CONTENT_TYPE_LATEST.encode())
        if ep == m.ENDPOINT_SERVER_METADATA:
            return _json(200, {"name": "modelserver", "version": __version__, "extensions": []})
        if ep == m.ENDPOINT_MODEL_READY:
            doc = {"name": self.model.name, "ready": self.ready}
            if not self.ready:
                doc["reason"] = "draining (shutting down)" if self.draining else self.model.status
            return _json(200 if self.ready else 503, doc)
        return _json(200, self.model.metadata())  # model metadata

    async def _inference(self, route: Route, scope: Scope, receive: Receive) -> Response:
        length, content_type = None, None
        for key, value in scope["headers"]:
            if key == b"content-length":
                length = value
            elif key == b"content-type":
                content_type = value
        limit = self.settings.max_request_bytes
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise RequestError(
                413, f"request body of {length.decode('latin-1'):.20} bytes is over the limit of "
                f"{limit} bytes (MODELSERVER_MAX_REQUEST_BYTES)"
            )  # fmt: skip
        if content_type is not None:
            media = content_type.split(b";", 1)[0].strip().lower()
            if media != _JSON and not media.endswith(b"+json"):
                raise RequestError(
                    415, f"content type {media.decode('latin-1')!r:.60} is not supported: send "
                    "the body as JSON with 'Content-Type: application/json'"
                )  # fmt: skip
        model = self.model
        if model.batcher is None or model.contract is None:
            raise model.not_ready()
        batcher = model.batcher
        batcher.incoming += 1
        try:
            body = await self._read_body(scope, receive, limit)
            scope[_BODY] = body
            parse = protocol.parse_v2 if route.endpoint == m.ENDPOINT_INFER else protocol.parse_v1
            request = parse(body, model.contract)
        finally:
            batcher.incoming -= 1
        outputs = await score(batcher, request)
        if route.endpoint == m.ENDPOINT_INFER:
            body = protocol.encode_v2(model.name, model.version, request.request_id, outputs)
        else:
            body = protocol.encode_v1(outputs, self.settings.output_list[0])
        return Response(200, body)

    async def _read_body(self, scope: Scope, receive: Receive, limit: int) -> bytes:
        """The whole request body; 413 as soon as it grows over ``limit``.

        Records in the scope how far it read, so that a refusal drains the rest (``_http``).
        """
        message = await receive()
        body = message.get("body", b"")
        if not message.get("more_body", False):
            scope[_BODY_READ] = True
            if message["type"] == "http.disconnect":
                raise RequestError(400, "client disconnected before sending the body")
            return body
        scope[_BODY_READ] = False
        chunks = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()
            if message["type"] == "http.disconnect":
                scope[_BODY_READ] = True
                raise RequestError(400, "client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestError(
                    413, f"request body is over the limit of {limit} bytes "
                    "(MODELSERVER_MAX_REQUEST_BYTES)"
                )  # fmt: skip
            chunks.append(chunk)
        scope[_BODY_READ] = True
        return b"".join(chunks)


def build_payload_logger(
    settings: Settings, metrics: ServerMetrics
) -> payload_log.PayloadLogger | None:
    """The payload logger the settings ask for, or None when no sink URL is set."""
    if settings.payload_log_url is None:
        return None
    for outcome in payload_log.OUTCOMES:  # every series exists from the start, at 0
        metrics.count_payload_log(outcome, 0)
    identity = payload_log.Identity(
        model=settings.model_name,
        revision=settings.model_version,
        model_version=settings.model_version_label,
        deployment=settings.deployment_name,
        namespace=settings.namespace,
    )
    return payload_log.PayloadLogger(
        payload_log.Sink.parse(settings.payload_log_url, settings.payload_log_ca_file),
        identity,
        metrics.count_payload_log,
        mode=settings.payload_log_mode,
        sample_rate=settings.payload_log_sample_rate,
        redact_headers=settings.redacted_headers,
        queue_size=settings.payload_log_queue_size,
        batch_size=settings.payload_log_batch_size,
        timeout=settings.payload_log_timeout,
    )


def _unread_body(scope: Scope) -> int | None:
    """Bytes of request body the client sends that the app has not read: 0 for none, None when
    unknown (chunked, or partly read).

    A client that asked ``Expect: 100-continue`` sends no body unless the app reads it first.
    """
    read = scope.get(_BODY_READ)
    if read is True:
        return 0
    length, chunked, expect = 0, False, False
    for key, value in scope["headers"]:
        if key == b"content-length":
            length = int(value) if value.isdigit() else 0
        elif key == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif key == b"expect":
            expect = value.lower() == b"100-continue"
    if read is None and expect:
        return 0
    if chunked or (read is False and length):
        return None
    return length
