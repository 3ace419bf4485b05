"""Drift statistics, the batcher, metric names and packaging: pure units, no server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from modelserver import metric_names
from modelserver.batcher import Batcher
from modelserver.drift import DriftTracker, parse_reference, reference_stats
from servingkit import REPO


def test_psi_is_small_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(5000, 3))
    tracker = DriftTracker(reference_stats(train, ["a", "b", "c"]), window=10_000)
    assert tracker.snapshot() is None  # too few rows yet
    live = rng.normal(size=(2000, 3))
    live[:, 2] += 2.0
    for chunk in np.array_split(live, 50):
        tracker.update(chunk)
    psi = tracker.snapshot()
    assert psi is not None
    assert psi["a"] < 0.05 and psi["b"] < 0.05
    assert psi["c"] > 1.0


def test_reference_stats_are_validated() -> None:
    with pytest.raises(ValueError, match="describe 2 features; model has 3"):
        parse_reference(reference_stats(np.ones((5, 2))), 3)
    with pytest.raises(ValueError, match="format"):
        parse_reference({"features": []}, None)


def test_concurrent_requests_share_one_predict_call() -> None:
    calls: list[int] = []
    release = threading.Event()

    def predict(x: np.ndarray, outputs: frozenset[str]) -> dict[str, np.ndarray]:
        calls.append(len(x))
        release.wait(5)
        return {"predict": x.sum(axis=1)}

    async def main() -> list[dict[str, np.ndarray]]:
        with ThreadPoolExecutor(1) as pool:
            b = Batcher(predict, pool, max_batch_size=64, max_wait=0.01)
            b.start()
            first = asyncio.ensure_future(b.submit(np.ones((1, 2)), frozenset({"predict"})))
            await asyncio.sleep(0.05)  # the first call is now running and holds the only slot
            rest = [
                asyncio.ensure_future(b.submit(np.full((1, 2), i), frozenset({"predict"})))
                for i in range(10)
            ]
            await asyncio.sleep(0.01)
            release.set()
            results = await asyncio.gather(first, *rest)
            await b.stop()
            return results

    results = asyncio.run(main())
    assert calls == [1, 10]  # everything that queued behind the first call went in one batch
    assert [r["predict"].tolist() for r in results[1:]] == [[2.0 * i] for i in range(10)]


def test_a_failing_request_does_not_fail_its_batch() -> None:
    def predict(x: np.ndarray, outputs: frozenset[str]) -> dict[str, np.ndarray]:
        if (x < 0).any():
            raise ValueError("negative")
        return {"predict": x[:, 0]}

    async def main() -> list[object]:
        with ThreadPoolExecutor(1) as pool:
            b = Batcher(predict, pool)
            b.start()
            futs = [b.submit(np.full((1, 1), v), frozenset({"predict"})) for v in (1, -1, 2)]
            results = await asyncio.gather(*futs, return_exceptions=True)
            await b.stop()
            return results

    ok1, bad, ok2 = asyncio.run(main())
    assert isinstance(bad, ValueError)
    assert ok1["predict"].tolist() == [1.0] and ok2["predict"].tolist() == [2.0]  # type: ignore[index]


def test_metric_names_module_is_light_and_builds_promql() -> None:
    heavy = ("numpy", "prometheus_client", "sklearn", "kopf")
    code = f"import sys, modelserver.metric_names; print([m for m in {heavy} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    q = metric_names.error_ratio_query("fraud", "v2")
    assert (
        'modelserver_requests_total{model="fraud",version="v2",endpoint=~"infer|predict",code=~"5.."}'
        in q
    )
    p99 = metric_names.latency_quantile_query("fraud", "v2")
    assert p99.startswith("histogram_quantile(0.99, sum by (le, model, version)")
    assert "modelserver_request_duration_seconds_bucket" in p99


def test_serving_image_and_root_extras_agree() -> None:
    root = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    image = tomllib.loads((REPO / "serving_image" / "pyproject.toml").read_text())["project"]
    assert sorted(root["serving"]) == sorted(image["dependencies"])
    for extra, deps in image["optional-dependencies"].items():
        assert sorted(root[f"serving-{extra}"]) == sorted(deps), extra


def test_grpcio_tools_pins_agree() -> None:
    """The image's build compiles the proto with the grpcio-tools a source checkout uses, so the
    generated code checked by the tests is the code the image carries."""
    root = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    build = tomllib.loads((REPO / "serving_image" / "pyproject.toml").read_text())["build-system"]
    pins = [d for d in (*root["dev"], *build["requires"]) if d.startswith("grpcio-tools")]
    assert len(pins) == 2 and pins[0] == pins[1], pins


def test_serving_package_never_imports_kubernetes() -> None:
    for path in (REPO / "serving_image" / "modelserver").rglob("*.py"):
        text = path.read_text()
        assert "import kopf" not in text and "import kubernetes" not in text, path


def test_cheap_calls_run_inline_and_a_slow_one_moves_to_the_thread() -> None:
    threads: list[int] = []

    def predict(x: np.ndarray, outputs: frozenset[str]) -> dict[str, np.ndarray]:
        threads.append(threading.get_ident())
        if x[0, 0] < 0:  # burn CPU: far over the budget
            end = time.thread_time() + 0.01
            while time.thread_time() < end:
                pass
        return {"predict": x[:, 0]}

    async def main() -> Batcher:
        with ThreadPoolExecutor(1) as pool:
            b = Batcher(predict, pool, inline_rows=8, inline_budget=0.001)
            b.start()
            for v in (1.0, 2.0, -1.0, 3.0):
                await b.submit(np.full((1, 1), v), frozenset({"predict"}))
            await b.stop()
            return b

    b = asyncio.run(main())
    main_thread = threading.get_ident()
    assert threads[:3] == [main_thread] * 3  # inline, including the slow call that is measured
    assert threads[3] != main_thread  # after it, on the inference thread
    assert b.inline_rows == 0
