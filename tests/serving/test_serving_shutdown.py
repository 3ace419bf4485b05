"""SIGTERM: readiness goes false first, in-flight requests finish, no accepted request is lost."""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time

from servingkit import N_FEATURES, v2_body


def test_in_flight_requests_finish_after_sigterm(start_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    gate = tmp_path / "gate"
    gate.mkdir()
    server = start_server("--format", "custom", "--model-class", "ms_test_models:GateModel",
                          "--shutdown-delay", "1", env={"GATE_DIR": str(gate)})  # fmt: skip
    server.wait_ready()
    results: list[int] = []
    body = v2_body([[1.0] * N_FEATURES])

    def call() -> None:
        results.append(server.post("/v2/models/model/infer", body).status)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while not (gate / "started").exists():  # a predict call is now blocked inside the model
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.01)
    server.proc.send_signal(signal.SIGTERM)
    ready = server.wait_for(lambda r: r.status == 503, "/v2/health/ready", 10)
    assert ready.json()["reason"] == "draining (shutting down)"
    (gate / "release").touch()
    for t in threads:
        t.join(30)
    assert results == [200] * 6
    assert server.proc.wait(30) == 0
    assert "draining" in server.log()


def test_sigterm_under_load_loses_no_accepted_request(start_server, models) -> None:  # type: ignore[no-untyped-def]
    """Clients behave like a Service: they stop sending once readiness is false."""
    server = start_server("--format", "custom", "--model-class", "ms_test_models:SlowModel",
                          "--shutdown-delay", "1.5")  # fmt: skip
    server.wait_ready()
    not_ready = threading.Event()
    sent: list[int] = []
    failures: list[str] = []
    body = json.dumps(v2_body([[0.5] * N_FEATURES])).encode()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        while not not_ready.is_set():
            try:
                conn.request(
                    "POST", "/v2/models/model/infer", body, {"Content-Type": "application/json"}
                )
                resp = conn.getresponse()
                resp.read()
                sent.append(resp.status)
                if resp.status != 200:
                    failures.append(str(resp.status))
            except Exception as exc:
                failures.append(repr(exc))
                break
        conn.close()

    def watcher() -> None:
        while server.get("/v2/health/ready").status == 200:
            time.sleep(0.05)
        not_ready.set()

    clients = [threading.Thread(target=client) for _ in range(16)]
    for t in clients:
        t.start()
    time.sleep(1.0)
    watch = threading.Thread(target=watcher)
    watch.start()
    server.proc.send_signal(signal.SIGTERM)
    watch.join(30)
    for t in clients:
        t.join(30)
    assert failures == []
    assert len(sent) > 16
    assert server.proc.wait(30) == 0
