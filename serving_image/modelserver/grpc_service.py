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

from . import __version__, grpc_protocol
from . import metric_names as m
from .errors import RequestError
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
    ) -> Any:
        """Auth, model check, ``answer()``, metrics; a RequestError becomes a gRPC status."""
        app = self.app
        start = time.perf_counter()
        code, model_label = 200, ""
        app.metrics.inflight_child.inc()
        try:
            if not open and app.denied(_authorization(context), True):
                raise RequestError(401, "missing or invalid bearer token")
            if model is not None:
                model_label = model if model == self.model.name else m.UNKNOWN_MODEL
                app.check_model(model, version or None)
            return await answer()
        except RequestError as exc:
            code = exc.status
            status = STATUS_BY_HTTP.get(code, grpc.StatusCode.UNKNOWN)
            await context.abort(status, exc.message)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code = 500
            log.exception("unhandled error in %s", endpoint)
            await context.abort(
                grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
            )
        finally:
            app.metrics.inflight_child.dec()
            app.metrics.observe_request(
                model_label, endpoint, code, time.perf_counter() - start, m.PROTOCOL_GRPC
            )

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
            try:
                outputs = await batcher.submit(parsed.x, parsed.outputs)
            except Exception as exc:
                log.warning("inference failed: %s: %s", type(exc).__name__, exc)
                raise RequestError(500, f"inference failed: {type(exc).__name__}: {exc}") from exc
            return grpc_protocol.encode_infer(
                pb.ModelInferResponse(), model.name, model.version, parsed.request_id, outputs, raw
            )

        return await self._call(
            m.ENDPOINT_INFER,
            context,
            answer,
            model=request.model_name,
            version=request.model_version,
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
