"""Prometheus metrics of one server process, in a registry that is passed in.

No global registry: the app owns a ``CollectorRegistry`` (tests make their own, several servers
can live in one process). With several worker processes the metric values live in files under a
shared directory (prometheus-client's multiprocess mode) and ``/metrics`` merges them, so a scrape
sees the whole pod whichever worker answers it.

Per-request work is a dictionary lookup of pre-made label children plus one ``inc`` and one
``observe``: label resolution is cached because ``labels()`` costs more than the update itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from . import metric_names as m

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(_MULTIPROC_ENV))


class ServerMetrics:
    """Every metric the server updates, labelled with this model's name and version."""

    def __init__(self, registry: CollectorRegistry, model: str, version: str) -> None:
        self.registry = registry
        self.model = model
        self.version = version
        self.multiprocess = multiprocess_enabled()
        # In multiprocess mode values go to files, and the registry only holds the collector.
        target = None if self.multiprocess else registry
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(registry)
        request_labels = (
            m.LABEL_MODEL, m.LABEL_VERSION, m.LABEL_ENDPOINT, m.LABEL_CODE, m.LABEL_PROTOCOL,
        )  # fmt: skip
        model_labels = (m.LABEL_MODEL, m.LABEL_VERSION)
        self.requests = Counter(
            m.REQUESTS_TOTAL,
            "Requests (HTTP and gRPC) by model, version, endpoint, status code and protocol.",
            request_labels, registry=target,
        )  # fmt: skip
        self.request_seconds = Histogram(
            m.REQUEST_DURATION_SECONDS, "Time from request start to response sent, seconds.",
            request_labels, buckets=m.LATENCY_BUCKETS, registry=target,
        )  # fmt: skip
        self.inference_seconds = Histogram(
            m.INFERENCE_DURATION_SECONDS, "Time of one predict call (one batch), seconds.",
            model_labels, buckets=m.LATENCY_BUCKETS, registry=target,
        )  # fmt: skip
        self.batch_size = Histogram(
            m.BATCH_SIZE, "Rows per predict call.", model_labels,
            buckets=m.BATCH_SIZE_BUCKETS, registry=target,
        )  # fmt: skip
        self.load_seconds = Gauge(
            m.MODEL_LOAD_DURATION_SECONDS, "Time to fetch, verify and load the model, seconds.",
            model_labels, registry=target, multiprocess_mode="max",
        )  # fmt: skip
        self.ready = Gauge(
            m.MODEL_READY, "1 when the model is loaded and the server is not draining.",
            model_labels, registry=target, multiprocess_mode="livemin",
        )  # fmt: skip
        self.inflight = Gauge(
            m.INFLIGHT_REQUESTS, "Requests being handled now.", model_labels,
            registry=target, multiprocess_mode="livesum",
        )  # fmt: skip
        self.drift_psi = Gauge(
            m.FEATURE_DRIFT_PSI, "Population stability index of each input feature over the "
            "recent window, against the reference statistics shipped with the model.",
            (*model_labels, m.LABEL_FEATURE), registry=target, multiprocess_mode="livemax",
        )  # fmt: skip
        self.drift_rows = Counter(
            m.DRIFT_ROWS_TOTAL, "Rows counted into the drift statistics.", model_labels,
            registry=target,
        )  # fmt: skip
        self.payload_log_events = Counter(
            m.PAYLOAD_LOG_EVENTS_TOTAL, "Payload log events by outcome: sent (the sink answered "
            "2xx), failed (refused for good: another 4xx, or an untrusted certificate) and dropped "
            "(the queue was full; events the sink could not take yet are sent again).",
            (*model_labels, m.LABEL_OUTCOME), registry=target,
        )  # fmt: skip
        shadow_labels = (*model_labels, m.LABEL_SHADOW)
        self.shadow_counters = {
            outcome: Counter(name, help, shadow_labels, registry=target)
            for outcome, name, help in (
                ("mirrored", m.SHADOW_MIRRORED_TOTAL, "Live requests copied to the shadow."),
                ("dropped", m.SHADOW_DROPPED_TOTAL,
                 "Copies for the shadow dropped because the mirror queue was full."),
                ("agreed", m.SHADOW_AGREED_TOTAL,
                 "Shadow answers that agreed with this server's, within the tolerance."),
                ("disagreed", m.SHADOW_DISAGREED_TOTAL,
                 "Shadow answers that differed from this server's beyond the tolerance."),
                ("error", m.SHADOW_ERRORS_TOTAL,
                 "Copies the shadow answered with a non-2xx status or not at all."),
            )
        }  # fmt: skip
        self.shadow_seconds = Histogram(
            m.SHADOW_DURATION_SECONDS, "Time the shadow took to answer a copy, seconds.",
            shadow_labels, buckets=m.LATENCY_BUCKETS, registry=target,
        )  # fmt: skip
        self._children: dict[tuple[str, str, int, str], tuple[Counter, Histogram]] = {}
        self.inference_child = self.inference_seconds.labels(model, version)
        self.batch_child = self.batch_size.labels(model, version)
        self.inflight_child = self.inflight.labels(model, version)
        self.ready.labels(model, version).set(0)

    def observe_request(
        self,
        model_label: str,
        endpoint: str,
        code: int,
        seconds: float,
        protocol: str = m.PROTOCOL_HTTP,
    ) -> None:
        """One answered request; ``code`` is an HTTP status (a gRPC call's REST equivalent)."""
        key = (model_label, endpoint, code, protocol)
        children = self._children.get(key)
        if children is None:
            labels = (
                model_label,
                self.version if model_label == self.model else "",
                endpoint,
                str(code),
                protocol,
            )
            children = (self.requests.labels(*labels), self.request_seconds.labels(*labels))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_batch(self, rows: int, seconds: float) -> None:
        self.batch_child.observe(rows)
        self.inference_child.observe(seconds)

    def count_payload_log(self, outcome: str, events: int) -> None:
        """Called from the payload log's sender thread and the event loop alike (thread-safe)."""
        self.payload_log_events.labels(self.model, self.version, outcome).inc(events)

    def count_shadow(self, outcome: str, revision: str) -> None:
        """Called from the event loop (drops) and the mirror's sender threads (thread-safe)."""
        self.shadow_counters[outcome].labels(self.model, self.version, revision).inc()

    def observe_shadow(self, revision: str, seconds: float) -> None:
        self.shadow_seconds.labels(self.model, self.version, revision).observe(seconds)

    def set_ready(self, ready: bool) -> None:
        self.ready.labels(self.model, self.version).set(1 if ready else 0)

    def set_load_seconds(self, seconds: float) -> None:
        self.load_seconds.labels(self.model, self.version).set(seconds)

    def set_drift(self, values: Mapping[str, float], new_rows: int) -> None:
        for feature, value in values.items():
            self.drift_psi.labels(self.model, self.version, feature).set(value)
        if new_rows:
            self.drift_rows.labels(self.model, self.version).inc(new_rows)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
