"""The operator's own Prometheus metrics, on an injected registry (no process-global state)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "modeldeploy_operator"


@dataclass
class OperatorMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.reconciles = Counter(
            f"{PREFIX}_reconciles_total", "Reconcile passes by trigger and result.",
            ["trigger", "result"], registry=r,
        )  # fmt: skip
        self.reconcile_seconds = Histogram(
            f"{PREFIX}_reconcile_duration_seconds", "Duration of one reconcile pass.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r,
        )  # fmt: skip
        self.api_writes = Counter(
            f"{PREFIX}_api_writes_total", "Write calls made to the Kubernetes API, by verb.",
            ["verb"], registry=r,
        )  # fmt: skip
        self.api_reads = Counter(
            f"{PREFIX}_api_reads_total", "Read calls (get, list) made to the Kubernetes API.",
            registry=r,
        )  # fmt: skip
        self.by_phase = Gauge(
            f"{PREFIX}_modeldeployments", "ModelDeployments by phase, as last reconciled.",
            ["phase"], registry=r,
        )  # fmt: skip
        self.rollbacks = Counter(
            f"{PREFIX}_rollbacks_total", "Automatic rollbacks by the check that failed.",
            ["reason"], registry=r,
        )  # fmt: skip
        self.time_to_rollback = Histogram(
            f"{PREFIX}_time_to_rollback_seconds",
            "From the canary's start to its rollback, by the check that failed.",
            ["reason"], buckets=(5, 10, 20, 30, 60, 120, 300, 600, 1800), registry=r,
        )  # fmt: skip
        self.canary_weight = Gauge(
            f"{PREFIX}_canary_weight_percent", "Effective canary traffic weight.",
            ["namespace", "name"], registry=r,
        )  # fmt: skip
