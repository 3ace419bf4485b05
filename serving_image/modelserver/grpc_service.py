"""The Open Inference Protocol's GRPCInferenceService, served next to REST by the same App.

Why in the same process and event loop as the REST app: the batcher is an asyncio object, and
sharing it means a gRPC call and a REST request that arrive together are scored in one predict
call. Auth (the bearer token in the ``authorization`` metadata, the operator's token where REST
takes it), the readiness and drain state and the metrics are the App's own, so the two
protocols cannot disagree on who may call, whether the model is ready, or what was served.

Each call is answered from one place (``_call``), which also records the metrics: the endpoint
of the REST twin, the HTTP status REST would have answered, ``protocol="grpc"``. Refusals are
the App's ``RequestError``s, turned into a gRPC status by ``STATUS_BY_HTTP`` with the same
message naming the field.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from . import __version__, grpc_protocol, protocol
from . import metric_names as m
from .batcher import score
from .errors import RequestError
from .payload_log import sampled
from .proto import pb, pb_grpc

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("modelserver.grpc")

# The gRPC status for each HTTP status the App refuses with.
STATUS_BY_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
}
assert all(m.GRPC_STATUS_CODES[s.name] == h for h, s in STATUS_BY_HTTP.items())


GRPC_INFER_PATH = b"/inference.GRPCInferenceService/ModelInfer"


def _metadata(context: grpc.aio.ServicerContext) -> list[tuple[bytes, bytes]]:
    """The call's metadata as header pairs (``-bin`` values are bytes already)."""
    return [
        (key.encode(), value.encode() if isinstance(value, str) else value)
        for key, value in context.invocation_metadata() or ()
    ]


def _authorization(context: grpc.aio.ServicerContext) -> bytes | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value.encode() if isinstance(value, str) else value
    return None


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The six RPCs, each a thin shell around the App's own checks and batcher."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.model = app.model

    async def _call(
        self,
        endpoint: str,
        context: grpc.aio.ServicerContext,
        answer: Callable[[], Awaitable[Any]],
        *,
        open: bool = False,
        model: str | None = None,
        version: str = "",
        done: Callable[[str], None] | None = None,
    ) -> Any:
        """Auth, model check, ``answer()``, metrics; a RequestError becomes a gRPC status.
        ``done`` is told the refusal's message ("" when answered) once the call is over."""
        app = self.app
        start = time.perf_counter()
        code, model_label, refusal = 200, "", ""
        app.metrics.inflight_child.inc()
        try:
            if not open and app.denied(_authorization(context), True):
                raise RequestError(401, "missing or invalid bearer token")
            if model is not None:
                model_label = model if model == self.model.name else m.UNKNOWN_MODEL
                app.check_model(model, version or None)
            return await answer()
        except RequestError as exc:
            code, refusal = exc.status, exc.message
            status = STATUS_BY_HTTP.get(code, grpc.StatusCode.UNKNOWN)
            await context.abort(status, exc.message)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code, refusal = 500, f"internal error: {type(exc).__name__}: {exc}"
            log.exception("unhandled error in %s", endpoint)
            await context.abort(grpc.StatusCode.INTERNAL, refusal)
        finally:
            app.metrics.inflight_child.dec()
            app.metrics.observe_request(
                model_label, endpoint, code, time.perf_counter() - start, m.PROTOCOL_GRPC
            )
            if done is not None and model_label == self.model.name:
                done(refusal)

    # --- health and metadata ---------------------------------------------------------------
    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def answer() -> Any:
            return pb.ServerLiveResponse(live=True)

        protect = self.app.settings.auth_protect_health
        return await self._call(m.ENDPOINT_LIVE, context, answer, open=not protect)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def answer() -> Any:
            return pb.ServerReadyResponse(ready=self.app.ready)

        protect = self.app.settings.auth_protect_health
        return await self._call(m.ENDPOINT_READY, context, answer, open=not protect)

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def answer() -> Any:
            return pb.ModelReadyResponse(ready=self.app.ready)

        return await self._call(
            m.ENDPOINT_MODEL_READY, context, answer, model=request.name, version=request.version
        )

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def answer() -> Any:
            return pb.ServerMetadataResponse(name="modelserver", version=__version__)

        return await self._call(m.ENDPOINT_SERVER_METADATA, context, answer)

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def answer() -> Any:
            doc = self.model.metadata()
            out = pb.ModelMetadataResponse(
                name=doc["name"], versions=doc["versions"], platform=doc["platform"]
            )
            for key in ("inputs", "outputs"):
                for t in doc[key]:
                    getattr(out, key).add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
            params = doc["parameters"]
            out.parameters["allows_missing"].bool_param = params["allows_missing"]
            if "feature_names" in params:  # a list has no parameter type: one name a line
                out.parameters["feature_names"].string_param = "\n".join(params["feature_names"])
            return out

        return await self._call(
            m.ENDPOINT_MODEL_METADATA, context, answer, model=request.name, version=request.version
        )

    # --- inference -------------------------------------------------------------------------
    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        logger = self.app.payload_log
        logged = logger is not None and sampled(logger.sample_rate)
        answered: list[bytes] = []  # the answer as REST's JSON, when this call is logged

        async def answer() -> Any:
            model = self.model
            batcher, contract = model.batcher, model.contract
            if batcher is None or contract is None:
                raise model.not_ready()
            batcher.incoming += 1
            try:
                parsed, raw = grpc_protocol.parse_infer(request, contract)
            finally:
                batcher.incoming -= 1
            outputs = await score(batcher, parsed)
            if logged:
                answered.append(
                    protocol.encode_v2(model.name, model.version, parsed.request_id, outputs)
                )
            return grpc_protocol.encode_infer(
                pb.ModelInferResponse(), model.name, model.version, parsed.request_id, outputs, raw
            )

        def log_exchange(refusal: str) -> None:
            """Into the payload log like a REST exchange: REST's JSON for the request and the
            answer (or the refusal), the call's metadata and its :path as the headers."""
            assert logger is not None
            try:
                headers = [(b":path", GRPC_INFER_PATH), *_metadata(context)]
                body = answered[0] if answered else protocol.dumps({"error": refusal})
                request_json = grpc_protocol.request_as_v2_json(request)
                logger.log(headers, request_json, body, drawn=True)
            except Exception:
                log.exception("payload log: could not queue a gRPC exchange")

        return await self._call(
            m.ENDPOINT_INFER,
            context,
            answer,
            model=request.model_name,
            version=request.model_version,
            done=log_exchange if logged else None,
        )


class GrpcServer:
    """A grpc.aio server on ``settings.grpc_port``, on the App's event loop."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.server: grpc.aio.Server | None = None

    async def start(self) -> None:
        s = self.app.settings
        options = [
            # The REST body limit applies to a call's message too: over it, RESOURCE_EXHAUSTED.
            ("grpc.max_receive_message_length", s.max_request_bytes),
            ("grpc.max_send_message_length", -1),
            # Worker processes each bind the port (the kernel spreads connections); a single
            # process must fail on a port someone else holds, not share it.
            ("grpc.so_reuseport", 1 if s.workers > 1 else 0),
        ]
        server = grpc.aio.server(options=options, maximum_concurrent_rpcs=s.max_concurrency)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(self.app), server)
        host = f"[{s.host}]" if ":" in s.host else s.host
        if server.add_insecure_port(f"{host}:{s.grpc_port}") == 0:
            raise RuntimeError(f"cannot listen for gRPC on {host}:{s.grpc_port}")
        await server.start()
        self.server = server
        log.info("serving gRPC (GRPCInferenceService) on %s:%s", host, s.grpc_port)

    async def stop(self, grace: float) -> None:
        """Refuse new calls and let in-flight ones finish, for up to ``grace`` seconds."""
        if self.server is not None:
            await self.server.stop(grace)
