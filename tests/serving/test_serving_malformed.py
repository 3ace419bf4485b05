"""Malformed requests get a 4xx JSON error naming the problem, and good clients see no error."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import urllib.error
import urllib.request

import pytest
from servingkit import N_FEATURES, Server, request, v2_body

ROW = [0.5] * N_FEATURES
INFER = "/v2/models/iris/infer"
JSON = {"Content-Type": "application/json"}


def tensor(**overrides):  # type: ignore[no-untyped-def]
    t = {"name": "input-0", "shape": [1, N_FEATURES], "datatype": "FP32", "data": ROW}
    t.update(overrides)
    return json.dumps({"inputs": [t]}).encode()


def request_with(**fields):  # type: ignore[no-untyped-def]
    """A valid one-row request with request-level fields added (outputs, parameters, id)."""
    return json.dumps({**json.loads(tensor()), **fields}).encode()


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
    # JSON booleans are data only for datatype BOOL, wherever they sit in flat or nested data
    (
        "POST",
        INFER,
        tensor(data=[True] * N_FEATURES),
        JSON,
        400,
        "inputs[0].data[0] is true, a boolean: datatype FP32 needs numbers (booleans are only valid for datatype BOOL)",
    ),
    (
        "POST",
        INFER,
        tensor(data=[*ROW[:-1], False]),
        JSON,
        400,
        "inputs[0].data[19] is false, a boolean: datatype FP32 needs numbers",
    ),
    (
        "POST",
        INFER,
        tensor(data=[[*ROW[:-1], True]]),
        JSON,
        400,
        "inputs[0].data[19] is true, a boolean: datatype FP32",
    ),
    (
        "POST",
        INFER,
        tensor(data=[True, *[1] * 19], datatype="INT32"),
        JSON,
        400,
        "inputs[0].data[0] is true, a boolean: datatype INT32 needs numbers",
    ),
    (
        "POST",
        INFER,
        tensor(data=[False, "1", *ROW[2:]]),
        JSON,
        400,
        "inputs[0].data[0] is false, a boolean: datatype FP32",
    ),
    (
        "POST",
        "/v1/models/iris:predict",
        json.dumps({"instances": [[*ROW[:-1], True]]}).encode(),
        JSON,
        400,
        "instances[19] is true, a boolean",
    ),
    # parameters are objects at every level the protocol has them
    (
        "POST",
        INFER,
        request_with(parameters=[1, 2]),
        JSON,
        400,
        "'parameters' must be a JSON object (name: value), got list",
    ),
    (
        "POST",
        INFER,
        request_with(parameters="fast"),
        JSON,
        400,
        "'parameters' must be a JSON object (name: value), got string",
    ),
    (
        "POST",
        INFER,
        tensor(parameters=5),
        JSON,
        400,
        "inputs[0].parameters must be a JSON object (name: value), got int",
    ),
    (
        "POST",
        INFER,
        tensor(parameters=True),
        JSON,
        400,
        "inputs[0].parameters must be a JSON object (name: value), got bool",
    ),
    (
        "POST",
        INFER,
        request_with(outputs=[{"name": "predict", "parameters": ["x"]}]),
        JSON,
        400,
        "outputs[0].parameters must be a JSON object (name: value), got list",
    ),
    (
        "POST",
        INFER,
        request_with(outputs=[{"name": "predict"}, {"name": "predict_proba", "parameters": "x"}]),
        JSON,
        400,
        "outputs[1].parameters must be a JSON object",
    ),
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


def test_booleans_for_bool_and_object_parameters_are_accepted(strict_server) -> None:  # type: ignore[no-untyped-def]
    flags = [True, False] * (N_FEATURES // 2)
    reply = strict_server.post(INFER, tensor(data=flags, datatype="BOOL"), headers=JSON)
    assert reply.status == 200, reply.body
    body = request_with(
        parameters={"content_type": "np", "priority": 1},
        outputs=[{"name": "predict", "parameters": {"binary_data": False}}],
    )
    body = json.loads(body)
    body["inputs"][0]["parameters"] = {"content_type": "np"}
    reply = strict_server.post(INFER, body)
    assert reply.status == 200, reply.body
    assert reply.json()["outputs"][0]["name"] == "predict"
    # a body that mentions true/false outside the data is not mistaken for boolean data
    reply = strict_server.post(
        INFER, request_with(id="true false", parameters={"x": True}), headers=JSON
    )
    assert reply.status == 200, reply.body


def _post_whole_body(
    port: int, path: str, body: bytes, headers: dict[str, str], chunked: bool
) -> tuple[int, str, bytes]:
    """POST the whole body, then read the answer, as most HTTP clients do."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        if chunked:
            chunks = (body[i : i + (1 << 20)] for i in range(0, len(body), 1 << 20))
            conn.request("POST", path, chunks, headers, encode_chunked=True)
        else:
            conn.request("POST", path, body, headers)
        resp = conn.getresponse()
        return resp.status, resp.getheader("content-type", ""), resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("path", "connection", "chunked", "status", "text"),
    [
        (
            INFER,
            "keep-alive",
            False,
            413,
            "over the limit of 1048576 bytes (MODELSERVER_MAX_REQUEST_BYTES)",
        ),
        (
            INFER,
            "close",
            False,
            413,
            "over the limit of 1048576 bytes (MODELSERVER_MAX_REQUEST_BYTES)",
        ),
        (
            INFER,
            "close",
            True,
            413,
            "over the limit of 1048576 bytes (MODELSERVER_MAX_REQUEST_BYTES)",
        ),
        ("/v2/models/nope/infer", "close", False, 404, "'nope' is not served here"),
    ],
)
def test_a_64_mib_body_gets_an_answer_the_client_can_read(
    strict_server, path, connection, chunked, status, text
) -> None:  # type: ignore[no-untyped-def]
    """A refused body is read and dropped, so a client that sends it all still sees why.

    ``Connection: close`` is what urllib and many other clients send.
    """
    body = b"x" * (64 * 1024 * 1024)
    headers = {**JSON, "Connection": connection}
    got, content_type, answer = _post_whole_body(strict_server.port, path, body, headers, chunked)
    assert (got, content_type) == (status, "application/json"), answer[:200]
    assert text in json.loads(answer)["error"]
    assert strict_server.get("/v2/health/ready").status == 200


def test_urllib_posting_64_mib_reads_the_413(strict_server) -> None:  # type: ignore[no-untyped-def]
    url = f"http://127.0.0.1:{strict_server.port}{INFER}"
    req = urllib.request.Request(url, data=b"x" * (64 * 1024 * 1024), headers=JSON)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=120)
    assert err.value.code == 413
    assert "over the limit of 1048576 bytes" in json.loads(err.value.read())["error"]


def test_a_client_that_expects_100_continue_is_refused_without_sending_the_body(
    strict_server,
) -> None:  # type: ignore[no-untyped-def]
    """It sends no body until told to continue, so the server must not wait to drain one."""
    head = (
        f"POST {INFER} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {64 * 1024 * 1024}\r\nExpect: 100-continue\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", strict_server.port), timeout=30) as sock:
        sock.sendall(head.encode())
        answer = b""
        while chunk := sock.recv(65536):  # the server closes after answering
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large", answer[:200]
    assert b"over the limit of 1048576 bytes" in rest
