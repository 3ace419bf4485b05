"""Malformed requests get a 4xx JSON error naming the problem, and good clients see no error."""

from __future__ import annotations

import http.client
import json
import threading

import pytest
from servingkit import N_FEATURES, Server, request, v2_body

ROW = [0.5] * N_FEATURES
INFER = "/v2/models/iris/infer"
JSON = {"Content-Type": "application/json"}


def tensor(**overrides):  # type: ignore[no-untyped-def]
    t = {"name": "input-0", "shape": [1, N_FEATURES], "datatype": "FP32", "data": ROW}
    t.update(overrides)
    return json.dumps({"inputs": [t]}).encode()


# (method, path, body, headers, status, text the error must contain)
CASES = [
    ("POST", INFER, b"{not json", JSON, 400, "not valid JSON"),
    ("POST", INFER, b"", JSON, 400, "body is empty"),
    ("POST", INFER, b'"a string"', JSON, 400, "must be a JSON object"),
    ("POST", INFER, b"{}", JSON, 400, "'inputs' must be a non-empty list"),
    ("POST", INFER, b'{"inputs": {}}', JSON, 400, "'inputs' must be a non-empty list"),
    ("POST", INFER, b'{"inputs": [1]}', JSON, 400, "inputs[0] must be an object"),
    ("POST", INFER, tensor(name=5), JSON, 400, "inputs[0].name must be a string"),
    ("POST", INFER, tensor(datatype="FLOAT"), JSON, 400, "'FLOAT' is not a tensor datatype"),
    ("POST", INFER, tensor(datatype="BYTES"), JSON, 400, "BYTES is not accepted"),
    ("POST", INFER, tensor(data=["1"] * N_FEATURES), JSON, 400, "string '1' is not a number"),
    ("POST", INFER, tensor(data=[1.5] * N_FEATURES, datatype="INT32"), JSON, 400, "non-integer"),
    ("POST", INFER, tensor(data=ROW[:-1]), JSON, 400, "has 19 values"),
    ("POST", INFER, tensor(shape=[1, 19], data=ROW[:-1]), JSON, 400, "model takes 20 features"),
    ("POST", INFER, tensor(shape=[N_FEATURES]), JSON, 400, "must be [rows, 20]"),
    ("POST", INFER, tensor(shape=[1, -20]), JSON, 400, "two non-negative integers"),
    ("POST", INFER, tensor(shape="1x20"), JSON, 400, "two non-negative integers"),
    ("POST", INFER, tensor(data=[ROW, ROW[:5]], shape=[2, N_FEATURES]), JSON, 400, "ragged"),
    ("POST", INFER, tensor(data=[None, *ROW[1:]]), JSON, 400, "does not accept missing values"),
    ("POST", INFER, tensor(data=[1e300, *ROW[1:]]), JSON, 400, "infinite value at row 0, column 0"),
    (
        "POST",
        INFER,
        b'{"inputs": [{"name": "x", "shape": [1, 20], "datatype": "FP32", "data": [NaN]}]}',
        JSON,
        400,
        "not valid JSON",
    ),
    (
        "POST",
        INFER,
        tensor(shape=[20000, N_FEATURES], data=[]),
        JSON,
        413,
        "at most 10000 are accepted",
    ),
    (
        "POST",
        INFER,
        tensor(data=[]),
        JSON,
        400,
        "data has 0 values",
    ),
    (
        "POST",
        INFER,
        json.dumps({**json.loads(tensor()), "outputs": [{"name": "logits"}]}).encode(),
        JSON,
        400,
        "'logits' is not an output",
    ),
    (
        "POST",
        INFER,
        json.dumps({**json.loads(tensor()), "id": 7}).encode(),
        JSON,
        400,
        "'id' must be a string",
    ),
    (
        "POST",
        INFER,
        tensor(),
        {"Content-Type": "text/plain"},
        415,
        "content type 'text/plain' is not supported",
    ),
    (
        "POST",
        INFER,
        tensor(),
        {"Content-Type": "application/x-www-form-urlencoded"},
        415,
        "Content-Type: application/json",
    ),
    ("POST", INFER, b"x" * (2 * 1024 * 1024), JSON, 413, "over the limit of 1048576 bytes"),
    ("POST", "/v2/models/nope/infer", tensor(), JSON, 404, "'nope' is not served here"),
    ("POST", "/v2/models/iris/versions/9/infer", tensor(), JSON, 404, "version '9'"),
    ("GET", INFER, None, {}, 405, "use POST"),
    ("POST", "/v2/models/iris/explain", tensor(), JSON, 404, "no such endpoint"),
    (
        "POST",
        "/v1/models/iris:predict",
        b'{"instances": [[1, 2], [3]]}',
        JSON,
        400,
        "model takes 20 features",
    ),
    (
        "POST",
        "/v1/models/iris:predict",
        b'{"instances": "rows"}',
        JSON,
        400,
        "non-empty list of rows",
    ),
    (
        "POST",
        "/v1/models/iris:predict",
        json.dumps({"instances": [ROW, ROW[:3]]}).encode(),
        JSON,
        400,
        "ragged",
    ),
]


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory, models):  # type: ignore[no-untyped-def]
    server = Server(
        ["--model-uri", str(models.lr), "--model-name", "iris",
         "--max-request-bytes", str(1 << 20)],
        models.env(), log_dir=tmp_path_factory.mktemp("strict"),
    )  # fmt: skip
    server.wait_ready()
    yield server
    server.stop()


def test_malformed_requests_are_named_4xx_while_good_clients_succeed(strict_server) -> None:  # type: ignore[no-untyped-def]
    assert len(CASES) >= 25
    stop = threading.Event()
    good: list[int] = []
    failures: list[str] = []

    def good_client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", strict_server.port, timeout=30)
        body = json.dumps(v2_body([ROW, ROW])).encode()
        while not stop.is_set():
            try:
                conn.request("POST", INFER, body, JSON)
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    failures.append(f"{resp.status} {data[:200]!r}")
                good.append(resp.status)
            except Exception as exc:
                failures.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", strict_server.port, timeout=30)
        conn.close()

    clients = [threading.Thread(target=good_client) for _ in range(2)]
    for t in clients:
        t.start()
    try:
        for _round in range(2):
            for method, path, body, headers, status, text in CASES:
                reply = request(strict_server.port, method, path, body, headers)
                assert reply.status == status, (path, body[:120] if body else body, reply.body)
                assert reply.headers["content-type"] == "application/json"
                assert text in reply.json()["error"], (text, reply.json())
    finally:
        stop.set()
        for t in clients:
            t.join()
    assert failures == []
    assert len(good) > 0
    assert strict_server.get("/v2/health/ready").status == 200
    assert strict_server.proc.poll() is None


def test_a_request_the_model_rejects_is_a_500_for_that_request_only(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server("--format", "custom", "--model-class", "ms_test_models:GateModel",
                          env={"GATE_DIR": "/nonexistent"})  # fmt: skip
    server.wait_ready()
    reply = server.post("/v2/models/model/infer", v2_body([[-1.0] * N_FEATURES]))
    assert reply.status == 500 and "row rejected by GateModel" in reply.json()["error"]
    assert server.get("/v2/health/ready").status == 200
