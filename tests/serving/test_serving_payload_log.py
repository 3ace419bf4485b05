"""Payload logging: CloudEvents reach a real HTTP sink, pair up, and never hold inference back.

The sink is a stdlib ``http.server`` on 127.0.0.1 in this process; the model server is a real
``python -m modelserver`` process sending to it. The pure parts (sampling, redaction, event
headers, the bounded queue) are tested without a server.
"""

from __future__ import annotations

import datetime as dt
import http.client
import io
import json
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import joblib
import pytest
from devcluster.ports import free_port
from modelserver import metric_names as m
from modelserver import payload_log as pl
from modelserver.config import ConfigError, load_settings
from servingkit import Server, metric, v2_body

# --- a real sink ---------------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int = 202  # what the sink answered

    @property
    def id(self) -> str:
        return self.headers["ce-id"]

    @property
    def type(self) -> str:
        return self.headers["ce-type"]


@dataclass
class Sink:
    """Records every POST; ``hold`` makes handlers wait until it is set (a stuck sink)."""

    port: int = 0
    events: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    hold: threading.Event | None = None
    arrived: threading.Event = field(default_factory=threading.Event)
    unavailable: int = 0  # answer this many posts 503, then 202
    refuse: bytes | None = None  # answer a post with this body 400

    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/events"

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.events)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        deadline = threading.Event()
        timer = threading.Timer(timeout, deadline.set)
        timer.start()
        try:
            while not deadline.is_set():
                events = self.received()
                if len(events) >= count:
                    return events
                deadline.wait(0.02)
        finally:
            timer.cancel()
        raise AssertionError(f"the sink got {len(self.received())} events, expected {count}")


@pytest.fixture
def sink() -> Iterator[Sink]:
    yield from serve_sink(Sink())


def serve_sink(state: Sink, tls: ssl.SSLContext | None = None) -> Iterator[Sink]:
    """Run a sink for ``state`` on 127.0.0.1 (https with ``tls``) until the generator closes."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the logger uses it

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            with state.lock:
                headers = {k.lower(): v for k, v in self.headers.items()}
                headers["x-client-port"] = str(self.client_address[1])  # which connection
                status = 202
                if state.unavailable > 0:
                    state.unavailable, status = state.unavailable - 1, 503
                elif state.refuse is not None and body == state.refuse:
                    status = 400
                state.events.append(Received(headers, body, status))
            state.arrived.set()
            if state.hold is not None:
                state.hold.wait(60)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", state.port), Handler)  # 0: any free port
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
        state.scheme = "https"
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    if state.hold is not None:
        state.hold.set()
    server.shutdown()
    server.server_close()


# --- helpers -------------------------------------------------------------------------------------


class Client:
    """One keep-alive connection to the model server (hundreds of requests in well under 1 s)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
        self.conn.request(
            "POST", path, body, {"Content-Type": "application/json", **(headers or {})}
        )
        response = self.conn.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self.conn.close()


def start_logging_server(start_server: Any, models: Any, *extra: str) -> Server:
    server: Server = start_server(
        "--model-uri", str(models.lr), "--model-name", "fraud", "--model-version", "rev-abc12",
        "--default-outputs", "predict", *extra,
    )  # fmt: skip
    server.wait_ready()
    return server


def payload_metrics(server: Server) -> dict[str, float]:
    values = server.metrics()
    return {
        o: metric(values, m.PAYLOAD_LOG_EVENTS_TOTAL, model="fraud", version="rev-abc12", outcome=o)
        for o in pl.OUTCOMES
    }


def wait_metrics(server: Server, ok: Any, timeout: float = 20.0) -> dict[str, float]:
    deadline = threading.Event()
    timer = threading.Timer(timeout, deadline.set)
    timer.start()
    try:
        while not deadline.is_set():
            counts = payload_metrics(server)
            if ok(counts):
                return counts
            deadline.wait(0.05)
    finally:
        timer.cancel()
    raise AssertionError(f"payload log counters never got there: {payload_metrics(server)}")


# --- through a real server -----------------------------------------------------------------------


def test_request_and_response_events_pair_up_and_carry_the_exchange(
    start_server: Any, models: Any, sink: Sink
) -> None:
    server = start_logging_server(
        start_server, models, "--payload-log-url", sink.url,
        "--payload-log-redact-headers", "X-User-Id, x-session",
        "--deployment-name", "fraud-detector", "--namespace", "risk",
        "--model-version-label", "v7",
    )  # fmt: skip
    client = Client(server.port)
    sent: dict[str, tuple[bytes, bytes]] = {}
    for i in range(10):
        body = json.dumps(v2_body(models.x[i : i + 2].tolist())).encode()
        headers = {"x-request-id": f"req-{i}", "x-user-id": "alice", "x-trace": f"t{i}"}
        status, answer = client.post("/v2/models/fraud/infer", body, headers)
        assert status == 200
        sent[f"req-{i}"] = (body, answer)
    v1 = json.dumps({"instances": models.x[:1].tolist()}).encode()
    status, v1_answer = client.post("/v1/models/fraud:predict", v1)  # no id: the server makes one
    assert status == 200
    client.close()

    events = sink.wait_for(22)
    by_id: dict[str, dict[str, Received]] = {}
    for event in events:
        by_id.setdefault(event.id, {})[event.type] = event
    assert len(by_id) == 11
    assert all(set(pair) == {pl.REQUEST_TYPE, pl.RESPONSE_TYPE} for pair in by_id.values())
    for request_id, (body, answer) in sent.items():
        pair = by_id[request_id]
        assert pair[pl.REQUEST_TYPE].body == body
        assert pair[pl.RESPONSE_TYPE].body == answer
        assert json.loads(answer)["outputs"][0]["name"] == "predict"
    (server_made_id,) = set(by_id) - set(sent)
    assert by_id[server_made_id][pl.REQUEST_TYPE].body == v1
    assert by_id[server_made_id][pl.RESPONSE_TYPE].body == v1_answer

    request = by_id["req-3"][pl.REQUEST_TYPE]
    expected = {
        "ce-specversion": "1.0",
        "ce-source": "/modelserver/fraud/rev-abc12",
        "ce-inferenceservicename": "fraud-detector",
        "ce-namespace": "risk",
        "ce-component": "predictor",
        "ce-endpoint": "rev-abc12",
        "ce-modelid": "fraud",
        "ce-modelversion": "v7",
        "ce-revision": "rev-abc12",
        "content-type": "application/json",
    }
    for event in by_id["req-3"].values():
        assert {k: event.headers.get(k) for k in expected} == expected
        when = dt.datetime.fromisoformat(event.headers["ce-time"])
        assert abs((dt.datetime.now(dt.UTC) - when).total_seconds()) < 60
    metadata = json.loads(request.headers["ce-metadata"])
    assert metadata["x-user-id"] == [pl.REDACTED]
    assert metadata["x-trace"] == ["t3"]
    assert "ce-metadata" not in by_id["req-3"][pl.RESPONSE_TYPE].headers

    counts = wait_metrics(server, lambda c: c["sent"] == 22)
    assert counts == {"sent": 22, "failed": 0, "dropped": 0}


def test_grpc_calls_are_logged_in_the_shape_of_the_same_rest_exchange(
    start_server: Any, models: Any, sink: Sink
) -> None:
    """One sink parser for both protocols: a ModelInfer call's events carry REST's JSON for the
    same call, typed or raw, answered or refused, with the call's metadata and :path."""
    import grpc
    from test_serving_grpc import Grpc, infer_request

    port = free_port()
    server = start_logging_server(
        start_server, models, "--payload-log-url", sink.url, "--grpc-port", str(port)
    )
    client = Grpc(port)
    rows = models.x[:2]
    metadata = (("x-request-id", "typed-1"), ("authorization", "Bearer secret"))
    request = infer_request(rows, outputs=["predict"], model="fraud", id="call-1")
    client.stub.ModelInfer(request, metadata=metadata, timeout=30)
    raw = infer_request(rows, raw=True, datatype="FP64", model="fraud")
    client.stub.ModelInfer(raw, metadata=(("x-request-id", "raw-1"),), timeout=30)
    bad = infer_request(rows, model="fraud")
    del bad.inputs[0].contents.fp32_contents[-1]  # one value short of the shape
    with pytest.raises(grpc.RpcError) as refused:
        client.stub.ModelInfer(bad, metadata=(("x-request-id", "bad-1"),), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    client.channel.close()
    # The same typed call over REST, for its answer.
    rest_body = {**v2_body(rows.tolist(), ["predict"]), "id": "call-1"}
    rest = server.post("/v2/models/fraud/infer", rest_body, headers={"x-request-id": "rest-1"})
    assert rest.status == 200

    by_id: dict[str, dict[str, Received]] = {}
    for event in sink.wait_for(8):
        by_id.setdefault(event.id, {})[event.type] = event
    assert set(by_id) == {"typed-1", "raw-1", "bad-1", "rest-1"}
    typed = by_id["typed-1"]
    logged = json.loads(typed[pl.REQUEST_TYPE].body)
    assert logged["id"] == "call-1" and logged["outputs"] == [{"name": "predict"}]
    (tensor,) = logged["inputs"]
    assert (tensor["name"], tensor["datatype"], tensor["shape"]) == ("input-0", "FP32", [2, 20])
    assert tensor["data"] == pytest.approx(rows.reshape(-1).tolist(), rel=1e-6)
    assert typed[pl.RESPONSE_TYPE].body == by_id["rest-1"][pl.RESPONSE_TYPE].body  # REST's answer
    meta = json.loads(typed[pl.REQUEST_TYPE].headers["ce-metadata"])
    assert meta[":path"] == ["/inference.GRPCInferenceService/ModelInfer"]
    assert meta["authorization"] == [pl.REDACTED] and meta["x-request-id"] == ["typed-1"]

    raw_logged = json.loads(by_id["raw-1"][pl.REQUEST_TYPE].body)["inputs"][0]
    assert raw_logged["datatype"] == "FP64" and raw_logged["data"] == rows.reshape(-1).tolist()
    answer = json.loads(by_id["raw-1"][pl.RESPONSE_TYPE].body)  # raw over gRPC, data in JSON
    assert answer["outputs"][0]["name"] == "predict" and len(answer["outputs"][0]["data"]) == 2

    refusal = json.loads(by_id["bad-1"][pl.RESPONSE_TYPE].body)
    assert refusal == {"error": refused.value.details()} and "needs 40" in refusal["error"]
    assert len(json.loads(by_id["bad-1"][pl.REQUEST_TYPE].body)["inputs"][0]["data"]) == 39
    counts = wait_metrics(server, lambda c: c["sent"] == 8)
    assert counts == {"sent": 8, "failed": 0, "dropped": 0}


def test_an_https_sink_with_a_private_ca_is_trusted_through_the_ca_file(
    start_server: Any, models: Any, tmp_path: Any
) -> None:
    """A sink whose certificate comes from the cluster's own CA (cert-manager, say): with the
    CA's file the events arrive over TLS; with the system's CAs (or another CA) they fail and
    are counted, and inference answers either way."""
    from devcluster.pki import write_pki

    pki = write_pki(tmp_path / "sink-ca")  # a CA, and a certificate for 127.0.0.1 it signed
    other = write_pki(tmp_path / "other-ca")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(pki.serving_cert, pki.serving_key)
    serving = serve_sink(Sink(), tls)
    sink = next(serving)
    try:
        trusting = start_logging_server(
            start_server, models, "--payload-log-url", sink.url,
            "--payload-log-ca-file", str(pki.ca_cert),
        )  # fmt: skip
        strangers = [
            start_logging_server(start_server, models, "--payload-log-url", sink.url),
            start_logging_server(
                start_server, models, "--payload-log-url", sink.url,
                "--payload-log-ca-file", str(other.ca_cert),
            ),
        ]  # fmt: skip
        body = json.dumps(v2_body(models.x[:1].tolist())).encode()
        for server in (trusting, *strangers):
            client = Client(server.port)
            for i in range(3):
                status, _ = client.post("/v2/models/fraud/infer", body, {"x-request-id": f"{i}"})
                assert status == 200
            client.close()
        assert len(sink.wait_for(6)) == 6
        assert wait_metrics(trusting, lambda c: c["sent"] == 6)["failed"] == 0
        for server in strangers:  # the handshake fails: certificate verify failed
            counts = wait_metrics(server, lambda c: c["failed"] == 6)
            assert counts["sent"] == 0, counts
        assert len(sink.received()) == 6  # nothing reached the sink from the other two
    finally:
        serving.close()


def test_the_ca_file_is_checked_at_start(tmp_path: Any) -> None:
    base = ["--model-uri", "m.joblib", "--payload-log-url", "https://sink.example/events"]
    with pytest.raises(ConfigError, match="no CA certificate could be read"):
        load_settings([*base, "--payload-log-ca-file", str(tmp_path / "missing.pem")], {})
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="no CA certificate could be read"):
        load_settings([*base, "--payload-log-ca-file", str(tmp_path / "junk.pem")], {})
    http = ["--model-uri", "m.joblib", "--payload-log-url", "http://sink/events"]
    with pytest.raises(ConfigError, match="needs an https://"):
        load_settings([*http, "--payload-log-ca-file", str(tmp_path / "junk.pem")], {})


def test_sample_rate_logs_about_that_share_of_exchanges(
    start_server: Any, models: Any, sink: Sink
) -> None:
    server = start_logging_server(
        start_server, models, "--payload-log-url", sink.url,
        "--payload-log-sample-rate", "0.25", "--payload-log-mode", "requests",
    )  # fmt: skip
    client = Client(server.port)
    body = json.dumps(v2_body(models.x[:1].tolist())).encode()
    n = 400
    for _ in range(n):
        assert client.post("/v2/models/fraud/infer", body)[0] == 200
    client.close()
    counts = wait_metrics(server, lambda c: c["sent"] > 0)
    # All events the server made reach the sink; wait until the counter stops short of none.
    logged = int(wait_metrics(server, lambda c: len(sink.received()) == c["sent"])["sent"])
    # Binomial(400, 0.25): mean 100, standard deviation 8.7; 5 deviations either side.
    assert 56 <= logged <= 144, logged
    assert counts["failed"] == 0 and counts["dropped"] == 0
    assert {e.type for e in sink.received()} == {pl.REQUEST_TYPE}  # mode requests


def test_a_dead_sink_fails_and_counts_while_inference_answers_correctly(
    start_server: Any, models: Any
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    server = start_logging_server(
        start_server, models, "--payload-log-url", dead, "--payload-log-queue-size", "16"
    )
    model = joblib.load(models.lr)
    client = Client(server.port)
    n = 60
    for i in range(n):
        rows = models.x[i : i + 1]
        status, answer = client.post("/v2/models/fraud/infer", json.dumps(v2_body(rows.tolist())))
        assert status == 200
        assert json.loads(answer)["outputs"][0]["data"] == model.predict(rows).tolist()
    client.close()
    # The queue buffers what fits (16 events, and one batch in flight) and drops the rest; none
    # is failed: a sink that is down has refused nothing.
    counts = wait_metrics(server, lambda c: c["dropped"] >= 2 * n - 16 - 64)
    assert counts["sent"] == 0 and counts["failed"] == 0, counts
    assert server.get("/v2/health/ready").status == 200


def test_a_sink_that_comes_back_gets_what_was_buffered_while_it_was_down(
    start_server: Any, models: Any
) -> None:
    """A collector's restart loses nothing that fits in the queue: events go back to the front
    while the sink refuses connections or answers 503, and are sent once it takes them."""
    port = free_port()
    server = start_logging_server(
        start_server, models, "--payload-log-url", f"http://127.0.0.1:{port}/events"
    )
    client = Client(server.port)
    body = json.dumps(v2_body(models.x[:1].tolist())).encode()
    for i in range(5):  # nothing listens yet
        assert client.post("/v2/models/fraud/infer", body, {"x-request-id": f"down-{i}"})[0] == 200
    time.sleep(1.0)  # a few refused connection attempts
    busy = Sink(port=port, unavailable=2)  # up, but answering 503 to its first two posts
    serving = serve_sink(busy)
    next(serving)
    try:
        for i in range(5):
            status, _ = client.post("/v2/models/fraud/infer", body, {"x-request-id": f"up-{i}"})
            assert status == 200
        client.close()
        counts = wait_metrics(server, lambda c: c["sent"] == 20, timeout=30)
        assert counts == {"sent": 20, "failed": 0, "dropped": 0}
        taken = Counter(e.id for e in busy.received() if e.status == 202)
        assert set(taken) == {f"{w}-{i}" for w in ("down", "up") for i in range(5)}
        assert all(n == 2 for n in taken.values())  # request and response, each once
    finally:
        serving.close()


def test_a_sink_refusing_an_event_for_good_fails_it_and_goes_on(sink: Sink) -> None:
    counted: Counter[str] = Counter()
    sink.refuse = b'{"bad": true}'
    logger = pl.PayloadLogger(
        pl.Sink.parse(sink.url), pl.Identity("fraud", "rev1"),
        lambda outcome, n: counted.update({outcome: n}),
    )  # fmt: skip
    logger.start()
    logger.log([], b'{"bad": true}', b'{"fine": true}')
    logger.stop(timeout=20)
    assert counted == {"sent": 1, "failed": 1}  # the 400 is not sent again


def test_a_full_queue_drops_and_counts_and_the_rest_is_sent_later(sink: Sink) -> None:
    """The sender thread against a stuck sink: the queue fills, the rest is dropped and counted,
    and what was queued is sent once the sink answers again."""
    sink.hold = threading.Event()
    counted: Counter[str] = Counter()
    lock = threading.Lock()

    def count(outcome: str, n: int) -> None:
        with lock:
            counted[outcome] += n

    logger = pl.PayloadLogger(
        pl.Sink.parse(sink.url), pl.Identity("fraud", "rev1"), count, queue_size=4,
        batch_size=1, timeout=60,
    )  # fmt: skip
    logger.start()
    try:
        # The first exchange's request event reaches the sink, which holds it: the sender is
        # stuck, and the response event waits in the queue (1 of 4 places).
        logger.log([(b"x-request-id", b"first")], b'{"in": 0}', b'{"out": 0}')
        assert sink.arrived.wait(20)
        for i in range(1, 20):  # 38 more events: 3 fit, 35 are dropped
            logger.log([], b'{"in": %d}' % i, b'{"out": %d}' % i)
        assert counted == {"dropped": 35}
        sink.hold.set()
        logger.stop(timeout=20)  # sends what is queued, then the thread ends
    finally:
        sink.hold.set()
    assert counted == {"sent": 5, "dropped": 35}
    events = sink.received()
    assert [e.body for e in events[:2]] == [b'{"in": 0}', b'{"out": 0}']
    assert events[0].id == events[1].id == "first"
    assert [e.type for e in events] == [pl.REQUEST_TYPE, pl.RESPONSE_TYPE] * 2 + [pl.REQUEST_TYPE]


def test_without_a_sink_url_there_is_no_logger_and_no_series() -> None:
    from modelserver.app import build_payload_logger
    from modelserver.metrics import ServerMetrics
    from prometheus_client import CollectorRegistry

    metrics = ServerMetrics(CollectorRegistry(), "fraud", "rev1")
    settings = load_settings(["--model-uri", "m.joblib"], {})
    assert build_payload_logger(settings, metrics) is None
    samples = [line for line in metrics.exposition().decode().splitlines() if line[:1] != "#"]
    assert not [line for line in samples if line.startswith(m.PAYLOAD_LOG_EVENTS_TOTAL)]
    with_url = load_settings(["--model-uri", "m.joblib", "--payload-log-url", "http://s/"], {})
    assert build_payload_logger(with_url, metrics) is not None
    exposed = metrics.exposition().decode()
    for outcome in pl.OUTCOMES:  # every outcome is exported from the start, at 0
        assert f'outcome="{outcome}",version="rev1"}} 0.0' in exposed


# --- pure parts ----------------------------------------------------------------------------------


def test_sampling_follows_the_rate_and_its_ends() -> None:
    draws = iter([0.1, 0.3, 0.29999, 0.9])
    assert [pl.sampled(0.3, lambda: next(draws)) for _ in range(4)] == [True, False, True, False]
    assert pl.sampled(1.0, lambda: 0.99999)
    assert not pl.sampled(0.0, lambda: 0.0)


def test_credentials_and_listed_headers_are_redacted_case_insensitively() -> None:
    headers = [(b"Authorization", b"Bearer s3cret"), (b"cookie", b"a=b"),
               (b"x-tenant", b"acme"), (b"X-Tenant", b"other"), (b"accept", b"*/*")]  # fmt: skip
    assert pl.redact(headers, ["X-TENANT"]) == {
        "authorization": ["REDACTED"],
        "cookie": ["REDACTED"],
        "x-tenant": ["REDACTED", "REDACTED"],
        "accept": ["*/*"],
    }


def test_the_exchange_id_is_the_callers_request_id_or_a_fresh_uuid() -> None:
    assert pl.event_id([(b"x-request-id", b"abc-1")]) == "abc-1"
    made = {pl.event_id([]) for _ in range(100)}
    assert len(made) == 100 and all(len(i) > 32 for i in made)
    assert pl.event_id([(b"x-request-id", b"x" * 500)]) != "x" * 500  # too long to be a header


def test_an_event_carries_kserves_attributes_in_binary_mode() -> None:
    identity = pl.Identity("fraud", "rev1", "v7", "fraud-detector", "risk")
    when = dt.datetime(2026, 11, 30, 18, 0, 0, 123000, tzinfo=dt.UTC).timestamp()
    response = pl.Pending(pl.RESPONSE_TYPE, "id-1", when, b"{}")
    assert dict(pl.event_headers(response, identity)) == {
        "ce-specversion": "1.0",
        "ce-id": "id-1",
        "ce-type": "org.kubeflow.serving.inference.response",
        "ce-time": "2026-11-30T18:00:00.123000Z",
        "ce-source": "/modelserver/fraud/rev1",
        "ce-inferenceservicename": "fraud-detector",
        "ce-namespace": "risk",
        "ce-component": "predictor",
        "ce-endpoint": "rev1",
        "ce-modelid": "fraud",
        "ce-modelversion": "v7",
        "ce-revision": "rev1",
        "content-type": "application/json",
    }
    request = pl.Pending(pl.REQUEST_TYPE, "id-1", when, b"{}", "application/json",
                         [(b"x-tenant", b"acme"), (b"authorization", b"Bearer t")])  # fmt: skip
    headers = dict(pl.event_headers(request, identity, ["x-tenant"]))
    assert json.loads(headers["ce-metadata"]) == {
        "x-tenant": ["REDACTED"],
        "authorization": ["REDACTED"],
    }


def test_the_senders_fast_encoding_is_exactly_the_events_headers() -> None:
    identity = pl.Identity("fraud", "rev1", "v7", "fraud-detector", "risk")
    sink = pl.Sink.parse("https://sink.audit/in")
    logger = pl.PayloadLogger(sink, identity, lambda o, n: None, redact_headers=["x-tenant"])
    request = pl.Pending(pl.REQUEST_TYPE, "id-1", 1.5e9, b'{"in":1}', "application/json",
                         [(b"x-tenant", b"acme"), (b"accept", b"*/*")])  # fmt: skip
    response = pl.Pending(pl.RESPONSE_TYPE, "id-1", 1.5e9, b'{"out":1}')
    for event in (request, response):
        headers = pl.event_headers(event, identity, ["x-tenant"])
        assert logger._encode(event) == pl.encode_request(sink, headers, event.body)


def test_an_event_is_one_http_post_on_the_wire() -> None:
    sink = pl.Sink.parse("http://sink.audit:8080/in")
    wire = pl.encode_request(sink, [("ce-id", "a"), ("x-bad", "one\r\ntwo")], b'{"x":1}')
    assert wire == (
        b"POST /in HTTP/1.1\r\nhost: sink.audit:8080\r\nce-id: a\r\nx-bad: one  two\r\n"
        b'content-length: 7\r\n\r\n{"x":1}'
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\nok", (202, True)),
        (b"HTTP/1.1 500 Oops\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", (500, False)),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", (200, True)),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", (204, True)),
        (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", (200, False)),
    ],
    ids=["length", "close", "chunked", "interim", "http10-no-length"],
)
def test_responses_are_read_whole_and_say_whether_the_connection_stays(
    raw: bytes, expected: tuple[int, bool]
) -> None:
    reader = io.BufferedReader(io.BytesIO(raw + b"HTTP/1.1 200 OK\r\n"))  # + the next answer
    assert pl.read_response(reader) == expected
    if expected[1]:
        assert reader.read() == b"HTTP/1.1 200 OK\r\n"  # nothing of the next answer was eaten


def test_a_sink_that_is_not_http_or_hangs_up_is_an_error() -> None:
    with pytest.raises(ValueError, match="not an HTTP response"):
        pl.read_response(io.BufferedReader(io.BytesIO(b"SSH-2.0-OpenSSH\r\n")))
    with pytest.raises(ConnectionError):
        pl.read_response(io.BufferedReader(io.BytesIO(b"")))
    with pytest.raises(ConnectionError):
        pl.read_response(
            io.BufferedReader(io.BytesIO(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nab"))
        )


def test_a_batch_is_pipelined_on_one_connection_to_a_real_sink(sink: Sink) -> None:
    counted: Counter[str] = Counter()
    logger = pl.PayloadLogger(
        pl.Sink.parse(sink.url), pl.Identity("fraud", "rev1"),
        lambda outcome, n: counted.update({outcome: n}), batch_size=64,
    )  # fmt: skip
    batch = [pl.Pending(pl.REQUEST_TYPE, f"id-{i}", 0.0, b'{"i": %d}' % i) for i in range(50)]
    assert logger.send_batch(batch) == pl.Sent(50, 0, [])
    assert logger.send_batch(batch[:3]) == pl.Sent(3, 0, [])  # the same connection, kept alive
    assert [e.body for e in sink.received()] == [e.body for e in batch] + [
        e.body for e in batch[:3]
    ]
    assert len({e.headers["x-client-port"] for e in sink.received()}) == 1


def test_sink_urls_are_split_for_http_client() -> None:
    assert pl.Sink.parse("http://sink.audit:8080/in?x=1") == pl.Sink(
        "http", "sink.audit", 8080, "/in?x=1"
    )
    assert pl.Sink.parse("https://sink.example.com") == pl.Sink(
        "https", "sink.example.com", 443, "/"
    )
    with pytest.raises(ValueError, match="http:// or https://"):
        pl.Sink.parse("ftp://sink/")


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    counted: Counter[str] = Counter()
    logger = pl.PayloadLogger(
        pl.Sink.parse("http://127.0.0.1:9/"), pl.Identity("m", "r"),
        lambda outcome, n: counted.update({outcome: n}), queue_size=5,
    )  # fmt: skip
    for _ in range(4):  # not started: nothing leaves the queue
        logger.log([], b"{}", b"{}")
    assert counted == {"dropped": 3}
    responses_only = pl.PayloadLogger(
        logger.sink, logger.identity, lambda o, n: None, mode="responses", queue_size=5
    )
    responses_only.log([], b"{}", b"{}")
    responses_only.log([], None, b"{}")  # a request refused before its body was read
    assert responses_only.queued == 2


def test_payload_log_settings_are_validated() -> None:
    base = ["--model-uri", "m.joblib"]
    settings = load_settings(
        [*base, "--payload-log-url", "https://sink:8443/x", "--payload-log-redact-headers",
         " X-A ,x-b,"],
        {"MODELSERVER_PAYLOAD_LOG_SAMPLE_RATE": "0.5"},
    )  # fmt: skip
    assert settings.payload_log_sample_rate == 0.5
    assert settings.redacted_headers == ("x-a", "x-b")
    bad = [
        (["--payload-log-url", "sink:8080"], "an http:// or https:// URL"),
        (["--payload-log-sample-rate", "1.5"], "between 0 and 1"),
        (["--payload-log-mode", "all"], "one of requests, responses, both"),
        (["--payload-log-queue-size", "0"], "at least 1"),
    ]
    for args, message in bad:
        with pytest.raises(ConfigError, match=message):
            load_settings([*base, *args], {})


def test_a_grpc_request_as_rest_json_keeps_what_cannot_be_decoded() -> None:
    from modelserver.grpc_protocol import request_as_v2_json
    from modelserver.proto import pb

    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="a", datatype="FP32", shape=[1, 3])
    request.raw_input_contents.append(b"\x00" * 5)  # not a whole number of FP32 values
    request.inputs.add(name="b", datatype="INT32", shape=[2])
    request.inputs[1].contents.int_contents.extend([4, 5])
    request.inputs.add(name="c", datatype="BYTES", shape=[1])
    request.inputs[2].contents.bytes_contents.append(b"caf\xc3\xa9")
    doc = json.loads(request_as_v2_json(request))
    assert doc == {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [1, 3], "raw_input_contents": "AAAAAAA="},
            {"name": "b", "datatype": "INT32", "shape": [2], "data": [4, 5]},
            {"name": "c", "datatype": "BYTES", "shape": [1], "data": ["café"]},
        ]
    }
