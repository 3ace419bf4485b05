"""Reading the model server's /metrics: one model's inference series, and windows between scrapes."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from modeldeploy.evidence import PodSample, Snapshots, _delta, forget_gone_pods, parse_pod_metrics
from modeldeploy.observed import Observed
from modeldeploy.rollout import Evidence

TEXT = """
# TYPE modelserver_requests_total counter
modelserver_requests_total{model="fraud",version="r1",endpoint="infer",code="200"} 90
modelserver_requests_total{model="fraud",version="r1",endpoint="infer",code="500"} 10
modelserver_requests_total{model="fraud",version="r1",endpoint="predict",code="503"} 5
modelserver_requests_total{model="fraud",version="r1",endpoint="ready",code="200"} 1000
modelserver_requests_total{model="other",version="r1",endpoint="infer",code="500"} 7
# TYPE modelserver_request_duration_seconds histogram
modelserver_request_duration_seconds_bucket{model="fraud",version="r1",endpoint="infer",le="0.01"} 80
modelserver_request_duration_seconds_bucket{model="fraud",version="r1",endpoint="infer",le="+Inf"} 100
modelserver_request_duration_seconds_count{model="fraud",version="r1",endpoint="infer"} 100
modelserver_request_duration_seconds_sum{model="fraud",version="r1",endpoint="infer"} 1.5
"""


def test_only_this_models_inference_requests_count():
    sample = parse_pod_metrics(TEXT, "fraud")
    assert (sample.requests, sample.errors) == (105, 15), "health checks and other models excluded"
    assert sample.buckets == {0.01: 80, float("inf"): 100}


def test_the_window_is_the_increase_since_the_last_scrape():
    before = PodSample(100, 10, {0.01: 80, float("inf"): 100})
    now = PodSample(150, 12, {0.01: 120, float("inf"): 150})
    window = _delta(now, before)
    assert (window.requests, window.errors) == (50, 2)
    assert window.buckets == {0.01: 40, float("inf"): 50}


def test_a_restarted_pod_counts_from_zero():
    assert _delta(PodSample(5, 0), PodSample(100, 0)).requests == 5
    assert _delta(PodSample(5, 0), None).requests == 5


def test_scrapes_of_deleted_pods_are_forgotten():
    pod = {
        "metadata": {
            "namespace": "ml",
            "name": "fraud-a",
            "labels": {"modeldeploy.io/name": "fraud"},
        }
    }
    snapshots = Snapshots()
    for key in (
        ("ml", "fraud", "fraud-a"),
        ("ml", "fraud", "fraud-gone"),
        ("ml", "other", "other-x"),
    ):
        snapshots.swap(key, PodSample())
    forget_gone_pods(snapshots, Observed(pods=[pod]))
    assert snapshots.keys() == {("ml", "fraud", "fraud-a"), ("ml", "other", "other-x")}


def test_forgetting_while_other_passes_record_scrapes_never_fails_a_pass():
    """Passes of different ModelDeployments run on different threads and share the snapshots;
    with a plain dict, "dictionary changed size during iteration" failed the forgetting pass."""
    snapshots, stop, errors = Snapshots(), threading.Event(), []

    def record_scrapes() -> None:
        i = 0
        while not stop.is_set():
            snapshots.swap(("ml", "other", f"pod-{i}"), PodSample())
            i += 1
            if i % 1000 == 0:
                snapshots.forget("ml", "other")

    writer = threading.Thread(target=record_scrapes)
    writer.start()
    pod = {"metadata": {"namespace": "ml", "name": "a", "labels": {"modeldeploy.io/name": "fraud"}}}
    try:
        for _ in range(20000):
            forget_gone_pods(snapshots, Observed(pods=[pod]))
    except RuntimeError as error:
        errors.append(error)
    finally:
        stop.set()
        writer.join()
    assert errors == []


def test_phases_recorded_and_forgotten_on_many_threads_count_every_model_once():
    """Each worker records its model's phase, and the watch thread forgets deleted ones, into one
    shared map that every record then counts: with a plain dict, a record iterating it while
    another inserted failed with "dictionary changed size during iteration"."""
    from modeldeploy.api.status import Phase
    from modeldeploy.config import OperatorConfig
    from modeldeploy.runtime import Runtime

    runtime, errors = Runtime(OperatorConfig()), []

    def worker(n: int) -> None:
        try:
            for i in range(2000):
                runtime.record_phase(("ml", f"w{n}-m{i}"), Phase.READY.value)
                if i % 2:
                    runtime.record_phase(("ml", f"w{n}-m{i}"), None)  # deleted
        except RuntimeError as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    ready = runtime.metrics.by_phase.labels(phase=Phase.READY.value)._value.get()
    assert ready == 4 * 1000  # the even-numbered models of each worker are left


# ------------------------------------------- what a pass gathers is what its decision reads
def _serving_counter() -> tuple[Any, list[str]]:
    """A real HTTP server on 127.0.0.1 standing in for a model pod: it answers 503 to everything
    and records each path asked, so a test sees whether a pass reached the pod at all."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, asked


def _canary_at_its_gates(port: int, annotations: dict[str, str]) -> tuple[Any, Observed]:
    """Stable r1 and canary r2 with one Ready pod each (both served on `port`), gates not run."""
    from core_fixtures import make_md

    status = {"stableRevision": "r1", "canaryRevision": "r2", "currentStep": 0,
              "stepStartedAt": "2026-11-27T10:00:00Z"}  # fmt: skip
    md = make_md({"serving": {"port": port}}, status, annotations=annotations)
    pods = []
    for revision in ("r1", "r2"):
        labels = {"modeldeploy.io/name": "fraud", "modeldeploy.io/revision": revision}
        pods.append({
            "metadata": {"name": f"fraud-{revision}", "namespace": "ml", "labels": labels},
            "spec": {"containers": [{"name": "server", "ports": [{"name": "http", "containerPort": port}]}]},
            "status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True",
                                                             "lastTransitionTime": "2026-11-27T10:00:00Z"}]},
        })  # fmt: skip
    return md, Observed(pods=pods)


@pytest.mark.parametrize("action", ["abort", "promote"])
def test_a_pending_abort_or_promote_is_carried_out_without_asking_the_pods(action: str) -> None:
    """The pass acts on the person's request whatever the checks would say, so it asks no pod
    anything: an abort of a canary whose pods hang is not held up by their timeouts."""
    import datetime as dt

    from modeldeploy.evidence import gather
    from modeldeploy.pass_phase import phase_of

    server, asked = _serving_counter()
    now = dt.datetime(2026, 11, 27, 10, 5, tzinfo=dt.UTC)
    try:
        for annotations, reaches_pods in (({}, True), ({f"modeldeploy.io/{action}": "t1"}, False)):
            md, observed = _canary_at_its_gates(server.server_address[1], annotations)
            phase = phase_of(md, "r2", {"r1", "r2"}, now)
            asked.clear()
            evidence = gather(md, observed, phase, now, Snapshots())
            assert bool(asked) is reaches_pods, (annotations, asked)
            if not reaches_pods:
                assert evidence == Evidence(), evidence
    finally:
        server.shutdown()
