"""Metrics move as requests are made: counters, histograms, batch sizes, load time, drift."""

from __future__ import annotations

import threading

from modelserver import metric_names as m
from servingkit import metric, v2_body


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


def test_batches_form_under_concurrency(lr_server, models) -> None:  # type: ignore[no-untyped-def]
    before = lr_server.metrics()
    body = v2_body(models.x[:1].tolist())
    errors: list[int] = []

    def client() -> None:
        for _ in range(40):
            status = lr_server.post("/v2/models/iris/infer", body).status
            if status != 200:
                errors.append(status)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = lr_server.metrics()
    rows = metric(after, m.BATCH_SIZE + "_sum") - metric(before, m.BATCH_SIZE + "_sum")
    calls = metric(after, m.BATCH_SIZE + "_count") - metric(before, m.BATCH_SIZE + "_count")
    assert errors == []
    assert rows == 320
    assert calls <= rows  # never more predict calls than rows; usually far fewer


def test_drift_reacts_to_shifted_inputs(lr_server, models) -> None:  # type: ignore[no-untyped-def]
    shifted = (models.x[:400] + 5.0).tolist()  # every feature moved far from the reference
    for i in range(0, 400, 20):
        assert lr_server.post("/v2/models/iris/infer", v2_body(shifted[i : i + 20])).status == 200
    values = lr_server.metrics()
    psi = [v for k, v in values.items() if k.startswith(m.FEATURE_DRIFT_PSI + "{")]
    assert len(psi) == 20
    assert max(psi) > 0.25
    assert metric(values, m.DRIFT_ROWS_TOTAL, model="iris") >= 400
