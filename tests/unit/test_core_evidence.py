"""Reading the model server's /metrics: one model's inference series, and windows between scrapes."""

from __future__ import annotations

import threading

from modeldeploy.evidence import PodSample, Snapshots, _delta, forget_gone_pods, parse_pod_metrics
from modeldeploy.observed import Observed

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
