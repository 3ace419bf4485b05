"""What the operator saw of a ModelDeployment's children, and the facts it derives from them.

`Observed` is plain data read in one go at the start of a pass; the helpers below interpret
Deployment status the way `kubectl rollout status` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .naming import REVISION


@dataclass(frozen=True)
class Observed:
    """The owned children as the API server returned them (plain dicts)."""

    deployments: list[dict[str, Any]] = field(default_factory=list)
    services: list[dict[str, Any]] = field(default_factory=list)
    hpas: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)
    routes: list[dict[str, Any]] = field(default_factory=list)
    grpc_routes: list[dict[str, Any]] = field(default_factory=list)

    def deployment_for(self, revision: str) -> dict[str, Any] | None:
        for deployment in self.deployments:
            if deployment["metadata"].get("labels", {}).get(REVISION) == revision:
                return deployment
        return None

    def revisions(self) -> list[str]:
        """Revisions that have a Deployment, oldest first (by creation time, then name)."""
        ordered = sorted(
            self.deployments,
            key=lambda d: (d["metadata"].get("creationTimestamp", ""), d["metadata"]["name"]),
        )
        return [
            d["metadata"]["labels"][REVISION]
            for d in ordered
            if REVISION in d["metadata"].get("labels", {})
        ]

    def named(self, kind: str, name: str) -> dict[str, Any] | None:
        pool = {
            "Deployment": self.deployments,
            "Service": self.services,
            "HorizontalPodAutoscaler": self.hpas,
            "HTTPRoute": self.routes,
            "GRPCRoute": self.grpc_routes,
        }[kind]
        return next((o for o in pool if o["metadata"]["name"] == name), None)

    def pods_of(self, revision: str) -> list[dict[str, Any]]:
        return [p for p in self.pods if p["metadata"].get("labels", {}).get(REVISION) == revision]


def pod_ready(pod: dict[str, Any]) -> bool:
    """The pod's Ready condition, as the kubelet's readiness probe set it."""
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod.get("status", {}).get("conditions", []) or []
    )


def ready_since(pod: dict[str, Any]) -> str | None:
    """When the pod's Ready condition last turned True (RFC 3339), if it is True."""
    for condition in pod.get("status", {}).get("conditions", []) or []:
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            return condition.get("lastTransitionTime")
    return None


def ready_replicas(deployment: dict[str, Any] | None) -> int:
    return int((deployment or {}).get("status", {}).get("readyReplicas") or 0)


def total_replicas(deployment: dict[str, Any] | None) -> int:
    return int((deployment or {}).get("status", {}).get("replicas") or 0)


def wanted_replicas(deployment: dict[str, Any] | None) -> int:
    spec = (deployment or {}).get("spec", {})
    return int(spec.get("replicas", 1))


def rolled_out(deployment: dict[str, Any] | None) -> bool:
    """True when the Deployment's controller has caught up and every wanted pod is ready."""
    if deployment is None:
        return False
    status = deployment.get("status", {})
    meta = deployment["metadata"]
    if status.get("observedGeneration", 0) < meta.get("generation", 0):
        return False
    wanted = wanted_replicas(deployment)
    return (
        int(status.get("updatedReplicas") or 0) >= wanted
        and int(status.get("readyReplicas") or 0) >= wanted
        and int(status.get("replicas") or 0) <= wanted
    )


def progress_deadline_exceeded(deployment: dict[str, Any] | None) -> str | None:
    """The Deployment controller's message when it gave up waiting, else None."""
    for condition in (deployment or {}).get("status", {}).get("conditions", []):
        if (
            condition.get("type") == "Progressing"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return str(condition.get("message") or "progress deadline exceeded")
    return None
