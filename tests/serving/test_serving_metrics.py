"""Metrics move as requests are made: counters, histograms, batch sizes, load time, drift."""

from __future__ import annotations

import threading
import time

from modelserver import metric_names as m
from servingkit import N_FEATURES, metric, v2_body


def test_metrics_move(lr_server, models) -> None:  # type: ignore[no-untyped-def]
    before = lr_server.metrics()
    body = v2_body(models.x[:4].tolist())
    for _ in range(5):
        assert lr_server.post("/v2/models/iris/infer", body).status == 200
    assert (
        lr_server.post(
            "/v2/models/iris/infer", b"{", headers={"Content-Type": "application/json"}
        ).status
        == 400
    )
    assert lr_server.post("/v2/models/ghost/infer", body).status == 404
    after = lr_server.metrics()

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    ok = {"model": "iris", "version": "7", "endpoint": "infer"}
    assert delta(m.REQUESTS_TOTAL, **ok, code="200") == 5
    assert delta(m.REQUESTS_TOTAL, **ok, code="400") == 1
    assert delta(m.REQUEST_DURATION_SECONDS + "_count", **ok, code="200") == 5
    assert delta(m.REQUEST_DURATION_SECONDS + "_sum", **ok, code="200") > 0
    # the unknown model's name is not a label value
    assert delta(m.REQUESTS_TOTAL, model=m.UNKNOWN_MODEL, endpoint="infer", code="404") == 1
    assert not any("ghost" in k for k in after)
    assert delta(m.BATCH_SIZE + "_sum", model="iris", version="7") == 20  # 5 requests x 4 rows
    assert delta(m.INFERENCE_DURATION_SECONDS + "_count", model="iris", version="7") >= 1
    assert metric(after, m.MODEL_LOAD_DURATION_SECONDS, model="iris", version="7") > 0
    assert metric(after, m.MODEL_READY, model="iris", version="7") == 1


def test_batches_form_under_concurrency(start_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """While a predict call runs, concurrent requests queue, and the next call scores them together.

    The model holds its first call until released, so the queue is built by events, not by
    luck: release only once every client's request is in the server (the in-flight gauge).
    """
    gate = tmp_path / "gate"
    gate.mkdir()
    server = start_server("--format", "custom", "--model-class", "ms_test_models:GateModel",
                          env={"GATE_DIR": str(gate)})  # fmt: skip
    server.wait_ready()
    before = server.metrics()
    body = v2_body([[1.0] * N_FEATURES])
    clients = 8
    statuses: list[int] = []

    def client() -> None:
        statuses.append(server.post("/v2/models/model/infer", body).status)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        # one call is in the model, holding the only inference slot; the rest queue behind it
        _wait(lambda: (gate / "started").exists(), server)
        # every request is in the server, plus the scrape that reads the gauge
        _wait(lambda: metric(server.metrics(), m.INFLIGHT_REQUESTS) == clients + 1, server)
    finally:
        (gate / "release").touch()
        for t in threads:
            t.join(60)
    after = server.metrics()

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert statuses == [200] * clients
    rows = delta(m.BATCH_SIZE + "_sum")
    calls = delta(m.BATCH_SIZE + "_count")
    one_row_calls = delta(m.BATCH_SIZE + "_bucket", le="1.0")
    assert rows == clients
    assert calls - one_row_calls >= 1  # at least one predict call scored several requests' rows
    assert calls < rows


def _wait(condition, server, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    """Poll ``condition`` until true; fail with the server's log if it never is."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.02)


def test_drift_reacts_to_shifted_inputs(lr_server, models) -> None:  # type: ignore[no-untyped-def]
    shifted = (models.x[:400] + 5.0).tolist()  # every feature moved far from the reference
    for i in range(0, 400, 20):
        assert lr_server.post("/v2/models/iris/infer", v2_body(shifted[i : i + 20])).status == 200
    values = lr_server.metrics()
    psi = [v for k, v in values.items() if k.startswith(m.FEATURE_DRIFT_PSI + "{")]
    assert len(psi) == 20
    assert max(psi) > 0.25
    assert metric(values, m.DRIFT_ROWS_TOTAL, model="iris") >= 400
