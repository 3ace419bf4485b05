"""Inference runs off the event loop: a model stuck in predict does not stop the server."""

from __future__ import annotations

import threading
import time

from servingkit import N_FEATURES, v2_body


def test_server_answers_while_a_predict_call_is_blocked(start_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    gate = tmp_path / "gate"
    gate.mkdir()
    server = start_server("--format", "custom", "--model-class", "ms_test_models:GateModel",
                          env={"GATE_DIR": str(gate)})  # fmt: skip
    server.wait_ready()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(
            server.post("/v2/models/model/infer", v2_body([[2.0] * N_FEATURES])).status
        )
    )
    thread.start()
    deadline = time.monotonic() + 30
    while not (gate / "started").exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # The model will not return until we release it; these must still be answered meanwhile.
    assert server.get("/v2/health/live", timeout=10).status == 200
    assert server.get("/v2/models/model", timeout=10).status == 200
    assert server.get("/metrics", timeout=10).status == 200
    bad = server.post(
        "/v2/models/model/infer", b"{", headers={"Content-Type": "application/json"}, timeout=10
    )
    assert bad.status == 400
    (gate / "release").touch()
    thread.join(30)
    assert result == [200]
