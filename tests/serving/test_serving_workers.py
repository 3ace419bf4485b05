"""Several worker processes: requests are served and /metrics adds up every worker's counts."""

from __future__ import annotations

from modelserver import metric_names as m
from servingkit import metric, v2_body


def test_two_workers(start_server, models) -> None:  # type: ignore[no-untyped-def]
    server = start_server("--model-uri", str(models.lr), "--workers", "2")
    server.wait_ready()
    body = v2_body(models.x[:1].tolist())
    for _ in range(30):  # fresh connections land on either worker
        assert server.post("/v2/models/model/infer", body).status == 200
    for _ in range(4):
        total = metric(server.metrics(), m.REQUESTS_TOTAL, endpoint="infer", code="200")
        assert total == 30
    assert server.stop() == 0
