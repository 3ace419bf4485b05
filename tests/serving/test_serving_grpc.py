"""The Open Inference Protocol over gRPC: a real grpc client against real server processes.

Every RPC of GRPCInferenceService, typed and raw tensor contents, answers equal to REST's for the
same rows, one batcher and one set of metrics for both protocols, auth from the ``authorization``
metadata, and refusals with the right status code and a message naming the field.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from modelserver import __version__
from modelserver import metric_names as m
from modelserver.grpc_protocol import decode_raw_output
from modelserver.proto import pb, pb_grpc
from servingkit import N_FEATURES, Server, free_port, metric, parse_metrics, v2_body
from servingkit import request as http

TOKEN = "grpc-user-token"
OPERATOR_TOKEN = "grpc-operator-token"
OUTPUTS = ["predict", "predict_proba"]


class Grpc:
    """A blocking stub on a server's gRPC port, with optional bearer token metadata."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)

    def __call__(self, rpc: str, request: Any, token: str | None = None, auth: str = "") -> Any:
        """Call ``rpc``; ``token`` is sent as ``authorization: Bearer <token>``, ``auth`` as is."""
        value = f"Bearer {token}" if token is not None else auth
        metadata = (("authorization", value),) if value else None
        return getattr(self.stub, rpc)(request, metadata=metadata, timeout=30)

    def error(self, rpc: str, request: Any, token: str | None = None, auth: str = "") -> Any:
        """The grpc.RpcError that calling ``rpc`` raises (the test fails if it succeeds)."""
        with pytest.raises(grpc.RpcError) as caught:
            self(rpc, request, token, auth)
        return caught.value


def infer_request(
    rows: np.ndarray,
    raw: bool = False,
    datatype: str = "FP32",
    outputs: list[str] | None = None,
    model: str = "iris",
    **fields: Any,
) -> Any:
    req = pb.ModelInferRequest(model_name=model, **fields)
    tensor = req.inputs.add(name="input-0", datatype=datatype, shape=list(rows.shape))
    if raw:
        dtype = {"FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "FP16": "<f2"}[datatype]
        req.raw_input_contents.append(np.ascontiguousarray(rows, dtype=dtype).tobytes())
    else:
        field = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT32": "int_contents"}
        getattr(tensor.contents, field[datatype]).extend(rows.reshape(-1).tolist())
    for name in outputs or []:
        req.outputs.add(name=name)
    return req


def outputs_of(response: Any) -> dict[str, tuple[str, list[int], np.ndarray]]:
    """{name: (datatype, shape, values)} of a ModelInferResponse, raw or typed."""
    out = {}
    for i, t in enumerate(response.outputs):
        shape = list(t.shape)
        if response.raw_output_contents:
            values = decode_raw_output(response.raw_output_contents[i], t.datatype, shape)
        else:
            field = {"INT64": "int64_contents", "FP64": "fp64_contents", "FP32": "fp32_contents"}
            values = np.array(getattr(t.contents, field[t.datatype])).reshape(shape)
        out[t.name] = (t.datatype, shape, values)
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, models: Any) -> Iterator[tuple[Server, Grpc]]:
    """An open LogisticRegression server with gRPC, shared by the read-only tests."""
    port = free_port()
    server = Server(
        ["--model-uri", str(models.lr), "--model-name", "iris", "--model-version", "7",
         "--default-outputs", "predict", "--max-request-rows", "100",
         "--max-request-bytes", "65536", "--grpc-port", str(port)],
        models.env(), log_dir=tmp_path_factory.mktemp("grpc-server"),
    )  # fmt: skip
    server.wait_ready()
    client = Grpc(port)
    yield server, client
    client.channel.close()
    server.stop()


def test_health_and_metadata_rpcs(served: tuple[Server, Grpc]) -> None:
    server, client = served
    assert client("ServerLive", pb.ServerLiveRequest()).live is True
    assert client("ServerReady", pb.ServerReadyRequest()).ready is True
    assert client("ModelReady", pb.ModelReadyRequest(name="iris")).ready is True
    assert client("ModelReady", pb.ModelReadyRequest(name="iris", version="7")).ready is True
    meta = client("ServerMetadata", pb.ServerMetadataRequest())
    assert (meta.name, meta.version) == ("modelserver", __version__)

    model = client("ModelMetadata", pb.ModelMetadataRequest(name="iris"))
    rest = server.get("/v2/models/iris").json()
    assert (model.name, list(model.versions), model.platform) == (
        rest["name"], rest["versions"], rest["platform"],
    )  # fmt: skip
    for key in ("inputs", "outputs"):
        got = [(t.name, t.datatype, list(t.shape)) for t in getattr(model, key)]
        assert got == [(t["name"], t["datatype"], t["shape"]) for t in rest[key]]
    assert model.parameters["allows_missing"].bool_param == rest["parameters"]["allows_missing"]


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
@pytest.mark.parametrize("n_rows", [1, 32])
def test_infer_answers_as_rest_does(
    served: tuple[Server, Grpc], models: Any, raw: bool, n_rows: int
) -> None:
    server, client = served
    rows = models.x[:n_rows]
    reply = client("ModelInfer", infer_request(rows, raw, outputs=OUTPUTS, id=f"req-{n_rows}"))
    rest = server.post("/v2/models/iris/infer", v2_body(rows.tolist(), OUTPUTS)).json()
    assert (reply.model_name, reply.model_version, reply.id) == ("iris", "7", f"req-{n_rows}")
    assert bool(reply.raw_output_contents) is raw  # answered in the request's form
    got = outputs_of(reply)
    assert list(got) == [o["name"] for o in rest["outputs"]]
    for o in rest["outputs"]:
        datatype, shape, values = got[o["name"]]
        assert (datatype, shape) == (o["datatype"], o["shape"])
        np.testing.assert_allclose(values.reshape(-1), o["data"], rtol=1e-6)
    assert got["predict"][2].tolist() == rest["outputs"][0]["data"]


def test_default_outputs_and_other_datatypes(served: tuple[Server, Grpc], models: Any) -> None:
    server, client = served
    rows = models.x[:3]
    rest = server.post("/v2/models/iris/infer", v2_body(rows.tolist())).json()["outputs"]
    for req in (
        infer_request(rows),  # no outputs named: the server's default (predict)
        infer_request(rows.astype(np.float64), datatype="FP64"),
        infer_request(rows.astype(np.float64), raw=True, datatype="FP64"),
    ):
        got = outputs_of(client("ModelInfer", req))
        assert list(got) == ["predict"]
        assert got["predict"][2].tolist() == rest[0]["data"]
    half = rows.astype(np.float16)  # raw only: FP16 has no typed contents field
    rest16 = server.post("/v2/models/iris/infer", v2_body(half.astype(np.float32).tolist()))
    got16 = outputs_of(client("ModelInfer", infer_request(half, raw=True, datatype="FP16")))
    assert got16["predict"][2].tolist() == rest16.json()["outputs"][0]["data"]
    ints = np.arange(2 * N_FEATURES).reshape(2, N_FEATURES) % 3
    typed = outputs_of(client("ModelInfer", infer_request(ints, datatype="INT32")))
    as_raw = outputs_of(client("ModelInfer", infer_request(ints, raw=True, datatype="INT32")))
    assert typed["predict"][2].tolist() == as_raw["predict"][2].tolist()


def bad(rows: np.ndarray, change: Any) -> Any:
    req = infer_request(rows)
    change(req)
    return req


ROWS = np.zeros((2, N_FEATURES), dtype=np.float32)
MALFORMED = [
    # (what is wrong, the request, the words the message must contain)
    ("two inputs", bad(ROWS, lambda r: r.inputs.add(name="b", datatype="FP32", shape=[1, 1])),
     "exactly one input tensor"),
    ("unknown datatype", bad(ROWS, lambda r: setattr(r.inputs[0], "datatype", "FP99")),
     "inputs[0].datatype 'FP99'"),
    ("BYTES", bad(ROWS, lambda r: setattr(r.inputs[0], "datatype", "BYTES")),
     "inputs[0].datatype BYTES"),
    ("1-D shape", bad(ROWS, lambda r: r.inputs[0].ClearField("shape")), "inputs[0].shape"),
    ("features", bad(ROWS, lambda r: r.inputs[0].shape.__setitem__(1, 3)),
     f"inputs[0].shape[1] is 3 but the model takes {N_FEATURES}"),
    ("too few values", bad(ROWS, lambda r: r.inputs[0].contents.fp32_contents.pop()),
     "inputs[0].contents.fp32_contents has 39 values"),
    ("wrong field", bad(ROWS, lambda r: r.inputs[0].contents.fp64_contents.append(1.0)),
     "inputs[0].contents.fp64_contents is set but datatype FP32"),
    ("raw and typed", bad(ROWS, lambda r: r.raw_input_contents.append(ROWS.tobytes())),
     "inputs[0].contents.fp32_contents is set as well as raw_input_contents"),
    ("raw length", bad(ROWS, lambda r: (r.inputs[0].ClearField("contents"),
                                        r.raw_input_contents.append(b"\0" * 8))),
     "raw_input_contents[0] has 8 bytes but inputs[0].shape [2, 20] of FP32 needs 160"),
    ("two raw entries", bad(ROWS, lambda r: (r.inputs[0].ClearField("contents"),
                                             r.raw_input_contents.extend([b"", b""]))),
     "raw_input_contents has 2 entries but there is 1 input"),
    ("NaN", infer_request(np.full((1, N_FEATURES), np.nan)),
     "inputs[0].contents.fp32_contents has NaN at row 0, column 0"),
    ("FP16 typed", bad(ROWS, lambda r: setattr(r.inputs[0], "datatype", "FP16")),
     "datatype FP16 has no typed contents field"),
    ("unknown output", infer_request(ROWS, outputs=["nope"]),
     "outputs[0].name 'nope' is not an output"),
]  # fmt: skip


@pytest.mark.parametrize(("request_", "words"), [c[1:] for c in MALFORMED],
                         ids=[c[0] for c in MALFORMED])  # fmt: skip
def test_malformed_requests_are_invalid_argument_naming_the_field(
    served: tuple[Server, Grpc], request_: Any, words: str
) -> None:
    _, client = served
    err = client.error("ModelInfer", request_)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in err.details()


def test_unknown_model_and_limits(served: tuple[Server, Grpc]) -> None:
    server, client = served
    before = server.metrics()
    err = client.error("ModelInfer", infer_request(ROWS, model="ghost"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "model 'ghost' is not served here" in err.details()
    err = client.error("ModelInfer", infer_request(ROWS, model_version="8"))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "version '8'" in err.details()
    err = client.error("ModelMetadata", pb.ModelMetadataRequest(name="ghost"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = client.error("ModelReady", pb.ModelReadyRequest(name="iris", version="1"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    # Rows over MODELSERVER_MAX_REQUEST_ROWS (100), and a message over the byte limit (64 KiB).
    err = client.error("ModelInfer", infer_request(np.zeros((101, N_FEATURES))))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "inputs[0].shape has 101 rows" in err.details()
    big = infer_request(np.zeros((450, N_FEATURES)), raw=True, datatype="FP64")  # 72 kB
    assert client.error("ModelInfer", big).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    after = server.metrics()
    grpc_infer = {"endpoint": "infer", "protocol": "grpc"}
    assert (
        metric(after, m.REQUESTS_TOTAL, model=m.UNKNOWN_MODEL, code="404", **grpc_infer)
        - (metric(before, m.REQUESTS_TOTAL, model=m.UNKNOWN_MODEL, code="404", **grpc_infer))
        == 1
    )  # fmt: skip  (the wrong version counts under the served model, as over REST)
    assert not any("ghost" in k for k in after)


def test_grpc_and_rest_share_metrics(served: tuple[Server, Grpc], models: Any) -> None:
    server, client = served
    before = server.metrics()
    for _ in range(3):
        client("ModelInfer", infer_request(models.x[:4]))
    client.error("ModelInfer", infer_request(ROWS, outputs=["nope"]))
    assert server.post("/v2/models/iris/infer", v2_body(models.x[:4].tolist())).status == 200
    after = server.metrics()

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    ok = {"model": "iris", "version": "7", "endpoint": "infer", "code": "200"}
    assert delta(m.REQUESTS_TOTAL, **ok, protocol="grpc") == 3
    assert delta(m.REQUESTS_TOTAL, **ok, protocol="http") == 1
    assert delta(m.REQUESTS_TOTAL, **ok) == 4  # the canary's queries see both protocols
    assert delta(m.REQUESTS_TOTAL, model="iris", endpoint="infer", code="400", protocol="grpc") == 1
    assert delta(m.REQUEST_DURATION_SECONDS + "_count", **ok, protocol="grpc") == 3
    # one batcher: its histograms count the rows of both protocols' requests
    assert delta(m.BATCH_SIZE + "_sum", model="iris", version="7") == 16


def test_one_batch_holds_grpc_and_rest_requests(
    start_server: Any, models: Any, tmp_path: Path
) -> None:
    """While the model is busy, a gRPC and a REST request queue up and share the next call."""
    gate = tmp_path / "gate"
    gate.mkdir()
    port = free_port()
    server = start_server("--format", "custom", "--model-class", "ms_test_models:GateModel",
                          "--grpc-port", str(port), env={"GATE_DIR": str(gate)})  # fmt: skip
    server.wait_ready()
    client = Grpc(port)
    before = server.metrics()
    busy = client.stub.ModelInfer.future(infer_request(np.ones((1, N_FEATURES)), model="model"))
    while not (gate / "started").exists():
        assert not busy.done(), busy.exception()
    queued_grpc = client.stub.ModelInfer.future(
        infer_request(np.ones((3, N_FEATURES)), model="model")
    )
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        queued_rest = pool.submit(
            server.post, "/v2/models/model/infer", v2_body(np.ones((2, N_FEATURES)).tolist())
        )
        # All three are in flight (the REST one counted before it reads its body, which is
        # already there): the busy call and the two queued behind the one inference thread.
        server.wait_for(
            lambda r: metric(parse_metrics(r.body), m.INFLIGHT_REQUESTS) >= 4, "/metrics"
        )  # 4: the /metrics request itself is in flight too
        (gate / "release").touch()
        assert outputs_of(busy.result(30))["predict"][2].tolist() == [N_FEATURES]
        assert outputs_of(queued_grpc.result(30))["predict"][2].tolist() == [N_FEATURES] * 3
        assert queued_rest.result(30).status == 200
    after = server.metrics()
    calls = metric(after, m.BATCH_SIZE + "_count") - metric(before, m.BATCH_SIZE + "_count")
    rows = metric(after, m.BATCH_SIZE + "_sum") - metric(before, m.BATCH_SIZE + "_sum")
    assert (calls, rows) == (2, 6)  # the busy call (1 row), then 3 + 2 rows in one predict call
    client.channel.close()


def test_auth(start_server: Any, models: Any) -> None:
    digest = hashlib.sha256(OPERATOR_TOKEN.encode()).hexdigest()
    port = free_port()
    server = start_server("--model-uri", str(models.lr), "--grpc-port", str(port),
                          env={"MODELSERVER_AUTH_TOKEN": TOKEN,
                               "MODELSERVER_OPERATOR_TOKEN_SHA256": digest})  # fmt: skip
    server.wait_ready()
    client = Grpc(port)
    infer = infer_request(models.x[:2], model="model")
    for token in (None, "wrong", OPERATOR_TOKEN + "x"):
        err = client.error("ModelInfer", infer, token)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, token
        assert "bearer token" in err.details()
    for value in (TOKEN, f"Basic {TOKEN}"):  # not "Bearer <token>": no token
        assert (
            client.error("ModelInfer", infer, auth=value).code() == grpc.StatusCode.UNAUTHENTICATED
        )
    assert len(outputs_of(client("ModelInfer", infer, TOKEN))["predict"][2]) == 2
    # Health is open by default, as over REST.
    assert client("ServerLive", pb.ServerLiveRequest()).live
    assert client("ServerReady", pb.ServerReadyRequest()).ready
    # The operator's token opens each RPC exactly where it opens the RPC's REST twin.
    twins = [
        ("ModelInfer", infer, "POST", "/v2/models/model/infer"),
        ("ModelMetadata", pb.ModelMetadataRequest(name="model"), "GET", "/v2/models/model"),
        ("ModelReady", pb.ModelReadyRequest(name="model"), "GET", "/v2/models/model/ready"),
        ("ServerMetadata", pb.ServerMetadataRequest(), "GET", "/v2"),
    ]
    operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    for rpc, request, method, path in twins:
        body = v2_body(models.x[:2].tolist()) if method == "POST" else None
        rest = http(server.port, method, path, body, headers=operator)
        assert rest.status == 200, (path, rest.body)
        client(rpc, request, OPERATOR_TOKEN)  # raises unless OK
        assert client.error(rpc, request).code() == grpc.StatusCode.UNAUTHENTICATED
    # ... and KServe v1 predict, which has no gRPC twin, refuses it over REST.
    v1 = server.post("/v1/models/model:predict", {"instances": models.x[:1].tolist()},
                     headers=operator)  # fmt: skip
    assert v1.status == 401
    values = server.metrics()
    assert metric(values, m.REQUESTS_TOTAL, endpoint="infer", code="401", protocol="grpc") == 6
    client.channel.close()


def test_protected_health(start_server: Any, models: Any) -> None:
    port = free_port()
    server = start_server("--model-uri", str(models.lr), "--grpc-port", str(port),
                          "--auth-protect-health", env={"MODELSERVER_AUTH_TOKEN": TOKEN})  # fmt: skip
    server.wait_for(lambda r: r.status == 200, "/v2/health/ready",
                    headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    client = Grpc(port)
    for rpc, req in (
        ("ServerLive", pb.ServerLiveRequest()),
        ("ServerReady", pb.ServerReadyRequest()),
    ):
        assert client.error(rpc, req).code() == grpc.StatusCode.UNAUTHENTICATED
        client(rpc, req, TOKEN)
    client.channel.close()


def test_queue_full_is_resource_exhausted(start_server: Any, tmp_path: Path) -> None:
    """With MODELSERVER_MAX_CONCURRENCY calls in flight, the next one is refused at once."""
    gate = tmp_path / "gate"
    gate.mkdir()
    port = free_port()
    server = start_server("--format", "custom", "--model-class", "ms_test_models:GateModel",
                          "--grpc-port", str(port), "--max-concurrency", "2",
                          env={"GATE_DIR": str(gate)})  # fmt: skip
    server.wait_ready()
    client = Grpc(port)
    one_row = infer_request(np.ones((1, N_FEATURES)), model="model")
    busy = client.stub.ModelInfer.future(one_row)  # blocks in predict
    while not (gate / "started").exists():
        assert not busy.done(), busy.exception()
    queued = client.stub.ModelInfer.future(one_row)  # waits for the busy inference thread
    server.wait_for(  # 3: the /metrics request is in flight too
        lambda r: metric(parse_metrics(r.body), m.INFLIGHT_REQUESTS) >= 3, "/metrics"
    )
    err = client.error("ModelInfer", one_row)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    (gate / "release").touch()
    for call in (busy, queued):
        assert outputs_of(call.result(30))["predict"][2].tolist() == [N_FEATURES]
    client.channel.close()


def test_not_ready_and_inference_failure(start_server: Any, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    port = free_port()
    server = start_server("--format", "custom", "--model-class", "ms_test_models:LoadGateModel",
                          "--grpc-port", str(port), env={"GATE_DIR": str(gate)})  # fmt: skip
    server.wait_live()
    client = Grpc(port)
    while not list(gate.glob("loading-*")):
        assert server.proc.poll() is None, server.log()
    assert client("ServerReady", pb.ServerReadyRequest()).ready is False
    assert client("ModelReady", pb.ModelReadyRequest(name="model")).ready is False
    err = client.error("ModelInfer", infer_request(np.ones((1, N_FEATURES)), model="model"))
    assert err.code() == grpc.StatusCode.UNAVAILABLE and "is not ready" in err.details()
    (gate / "release").touch()
    server.wait_ready()
    assert client("ServerReady", pb.ServerReadyRequest()).ready is True
    client.channel.close()


def test_workers_share_the_grpc_port(start_server: Any, models: Any) -> None:
    port = free_port()
    server = start_server("--model-uri", str(models.lr), "--grpc-port", str(port),
                          "--workers", "2")  # fmt: skip
    server.wait_ready()
    client = Grpc(port)
    for _ in range(3):  # new channels: connections may land on either worker
        fresh = Grpc(port)
        assert (
            len(
                outputs_of(fresh("ModelInfer", infer_request(models.x[:2], model="model")))[
                    "predict"
                ][2]
            )
            == 2
        )
        fresh.channel.close()
    total = metric(server.metrics(), m.REQUESTS_TOTAL, endpoint="infer", protocol="grpc")
    assert total == 3  # the workers' metrics are merged, gRPC calls included
    client.channel.close()


def test_grpc_port_settings() -> None:
    from modelserver.config import ConfigError, load_settings

    base = ["--model-uri", "x.joblib"]
    assert load_settings(base, {}).grpc_port is None
    assert load_settings(base, {"MODELSERVER_GRPC_PORT": "9000"}).grpc_port == 9000
    with pytest.raises(ConfigError, match="must differ from --port"):
        load_settings([*base, "--grpc-port", "8080"], {})
    both = load_settings([*base, "--grpc-port", "9000", "--payload-log-url", "http://sink"], {})
    assert both.grpc_port == 9000 and both.payload_log_url == "http://sink"  # gRPC is logged too


def test_sigterm_drains_grpc_like_rest(start_server: Any, models: Any) -> None:
    """After SIGTERM: not ready at once, calls still served during the delay, then exit 0."""
    port = free_port()
    server = start_server("--model-uri", str(models.lr), "--grpc-port", str(port),
                          "--shutdown-delay", "5")  # fmt: skip
    server.wait_ready()
    client = Grpc(port)
    infer = infer_request(models.x[:2], model="model")
    server.proc.send_signal(signal.SIGTERM)
    while client("ServerReady", pb.ServerReadyRequest()).ready:
        assert server.proc.poll() is None, server.log()
    assert client("ModelReady", pb.ModelReadyRequest(name="model")).ready is False
    assert len(outputs_of(client("ModelInfer", infer))["predict"][2]) == 2  # still served
    assert server.proc.wait(60) == 0, server.log()
    client.channel.close()
