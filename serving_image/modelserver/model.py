"""The served model: fetch, verify, load, warm up, then answer through the batcher.

Loading happens in the background after the server starts listening, so liveness answers at once
and readiness turns true only when the model can really serve. Any failure leaves the server up,
not ready, with ``status`` (and one log line) saying exactly why; with fail-fast the process exits
non-zero instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from . import artifacts, drift
from .batcher import Batcher
from .config import Settings
from .errors import ModelLoadError, RequestError
from .metrics import ServerMetrics
from .protocol import InputContract, v2_datatype
from .runtimes import LoadOptions, Runtime, load_runtime

log = logging.getLogger("modelserver.model")


class ServedModel:
    def __init__(self, settings: Settings, metrics: ServerMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.name = settings.model_name
        self.version = settings.model_version
        self.runtime: Runtime | None = None
        self.contract: InputContract | None = None
        self.batcher: Batcher | None = None
        self.drift: drift.DriftTracker | None = None
        self.status = "loading"
        self.executor = ThreadPoolExecutor(settings.inference_threads, "inference")
        self._drift_rows_reported = 0

    @property
    def ready(self) -> bool:
        return self.batcher is not None

    async def load(self) -> bool:
        """Fetch and load the model; returns whether it is ready. Never raises."""
        start = time.perf_counter()
        try:
            runtime, tracker = await asyncio.to_thread(self._load_blocking)
        except ModelLoadError as exc:
            self.status = f"failed: {exc}"
        except Exception as exc:  # a framework's surprise must not kill the server silently
            log.exception("unexpected error while loading the model")
            self.status = f"failed: unexpected {type(exc).__name__}: {exc}"
        else:
            self._activate(runtime, tracker)
            seconds = time.perf_counter() - start
            self.metrics.set_load_seconds(seconds)
            self.status = "ready"
            log.info(
                "model %r version %r READY in %.2fs (%s, %s features, outputs %s)",
                self.name, self.version, seconds, runtime.platform, runtime.n_features,
                ", ".join(runtime.outputs),
            )  # fmt: skip
            return True
        log.error("model %r version %r is NOT READY: %s", self.name, self.version, self.status[8:])
        return False

    def _load_blocking(self) -> tuple[Runtime, drift.DriftTracker | None]:
        s = self.settings
        path = None
        if s.model_uri:
            path = artifacts.fetch(s.model_uri, s.cache_dir, s.model_sha256)
        runtime = load_runtime(
            s.format, path, LoadOptions(s.fast_path, s.model_class, s.inference_threads)
        )
        unknown = [o for o in s.output_list if o not in runtime.outputs]
        if unknown:
            raise ModelLoadError(
                f"--default-outputs names {', '.join(unknown)}, which this model does not have: "
                f"one of {', '.join(runtime.outputs)}"
            )
        try:
            runtime.warm_up(min(s.max_batch_size, 32))
        except Exception as exc:
            raise ModelLoadError(f"the model failed its warm-up predict on zeros: {exc!r}") from exc
        tracker = None
        if s.reference_stats_uri:
            ref_path = artifacts.fetch(s.reference_stats_uri, s.cache_dir, None)
            try:
                reference = drift.load_reference(ref_path, runtime.n_features)
            except (ValueError, json.JSONDecodeError) as exc:
                raise ModelLoadError(
                    f"reference statistics {artifacts.redact(s.reference_stats_uri)}: {exc}"
                ) from exc
            tracker = drift.DriftTracker(reference, s.drift_window)
        return runtime, tracker

    def _activate(self, runtime: Runtime, tracker: drift.DriftTracker | None) -> None:
        s = self.settings
        allows_missing = {"allow": True, "reject": False}.get(
            s.missing_values, runtime.allows_missing
        )
        self.runtime = runtime
        self.drift = tracker
        self.contract = InputContract(
            n_features=runtime.n_features,
            dtype=runtime.input_dtype,
            allows_missing=allows_missing,
            max_rows=s.max_request_rows,
            output_names=tuple(runtime.outputs),
            default_outputs=frozenset(s.output_list),
        )
        batcher = Batcher(
            runtime.predict,
            self.executor,
            slots=s.inference_threads,
            max_batch_size=s.max_batch_size if s.batching else 1,
            max_wait=s.max_batch_wait_ms / 1000 if s.batching else 0.0,
            on_batch=self._on_batch,
            inline_rows=runtime.inline_rows if s.inline_budget_us > 0 else 0,
            inline_budget=s.inline_budget_us / 1e6,
        )
        batcher.start()
        self.batcher = batcher

    def _on_batch(self, x: np.ndarray, seconds: float) -> None:
        self.metrics.observe_batch(len(x), seconds)
        if self.drift is not None:
            self.drift.update(x)

    def refresh_drift(self) -> None:
        """Publish the drift statistics (called before each scrape and periodically)."""
        if self.drift is None:
            return
        snapshot = self.drift.snapshot()
        rows = self.drift.rows_total
        if snapshot is not None:
            self.metrics.set_drift(snapshot, rows - self._drift_rows_reported)
            self._drift_rows_reported = rows

    async def infer(self, x: np.ndarray, outputs: frozenset[str]) -> dict[str, np.ndarray]:
        if self.batcher is None:
            raise self.not_ready()
        return await self.batcher.submit(x, outputs)

    def not_ready(self) -> RequestError:
        return RequestError(503, f"model {self.name!r} is not ready: {self.status}")

    def metadata(self) -> dict[str, Any]:
        rt = self.runtime
        if rt is None or self.contract is None:
            raise self.not_ready()
        inputs = [
            {
                "name": self.settings.input_name,
                "datatype": v2_datatype(rt.input_dtype),
                "shape": [-1, rt.n_features if rt.n_features is not None else -1],
            }
        ]
        outputs = [
            {"name": o.name, "datatype": o.datatype, "shape": [-1, *o.row_shape]}
            for o in rt.outputs.values()
        ]
        params: dict[str, Any] = {"allows_missing": self.contract.allows_missing}
        if rt.feature_names:
            params["feature_names"] = rt.feature_names
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": rt.platform,
            "inputs": inputs,
            "outputs": outputs,
            "parameters": params,
        }

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
