"""Helpers the rollout tests share: a ModelDeployment body, apply, status and waits."""

from __future__ import annotations

import json
from typing import Any

from conftest import kget
from devcluster import wait_until

FAST_ROLLOUT: dict[str, Any] = {
    "steps": [25, 50, 100],
    "stepDuration": "2s",
    "progressDeadline": "60s",
    "analysis": {"interval": "1s", "failureThreshold": 2, "minRequests": 5, "maxInconclusive": 30},
}


def body(uri: str, rollout: dict | None = None, serving: dict | None = None, **model: str) -> dict:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "fraud"},
        "spec": {
            "model": {"uri": uri, "format": "sklearn", **model},
            "scaling": {"replicas": 2},
            "rollout": rollout or FAST_ROLLOUT,
            **({"serving": serving} if serving else {}),
        },
    }


def apply(cluster, namespace: str, obj: dict) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj))


def status(cluster, namespace: str, name: str = "fraud") -> dict:
    return kget(cluster, "md", name, "-n", namespace).get("status", {})


def conditions(cluster, namespace: str) -> dict[str, dict]:
    return {c["type"]: c for c in status(cluster, namespace).get("conditions", [])}


def wait_stable(cluster, namespace: str, timeout: float = 60) -> str:
    def ready() -> bool:
        s = status(cluster, namespace)
        return s.get("phase") == "Ready" and not s.get("canaryRevision")

    wait_showing_status(cluster, namespace, ready, timeout, "stable revision Ready")
    return str(status(cluster, namespace)["stableRevision"])


def wait_promoted(cluster, namespace: str, old: str, timeout: float = 90) -> dict:
    def promoted() -> bool:
        s = status(cluster, namespace)
        return s.get("stableRevision") not in (None, old) and s.get("phase") == "Ready"

    wait_showing_status(cluster, namespace, promoted, timeout, f"a revision promoted over {old}")
    return status(cluster, namespace)


def wait_showing_status(cluster, namespace: str, check, timeout: float, what: str) -> None:
    """wait_until, and on timeout the status the operator last wrote: where the rollout stands
    (phase, conditions, the analysis' checks) is the first thing a failure needs to be read."""
    try:
        wait_until(check, timeout, what)
    except TimeoutError as error:
        try:
            last = json.dumps(status(cluster, namespace), indent=1)
        except Exception as unreadable:  # the API server itself may be what went wrong
            last = f"(status unreadable: {unreadable})"
        raise TimeoutError(f"{error}\nlast status:\n{last}") from None


def deployments(cluster, namespace: str) -> dict[str, dict]:
    items = kget(cluster, "deployments", "-n", namespace, "-l", "modeldeploy.io/name=fraud")[
        "items"
    ]
    return {d["metadata"]["labels"]["modeldeploy.io/revision"]: d for d in items}


def service_selector(cluster, namespace: str) -> dict:
    return kget(cluster, "service", "fraud", "-n", namespace)["spec"]["selector"]


def rolled_back(cluster, namespace: str) -> bool:
    return bool(status(cluster, namespace).get("lastRollback"))


def wait_drained_after_rollback(cluster, namespace: str, timeout: float = 30) -> dict:
    """Status once a recorded rollback has scaled the canary away. `lastRollback` is written in
    the pass that decides it, with phase RollingBack while the canary still has replicas; the
    next pass says Degraded. Reading the phase right after `rolled_back` races that pass (it lost
    on a loaded machine)."""
    wait_until(
        lambda: status(cluster, namespace).get("phase") != "RollingBack",
        timeout,
        "the rolled-back canary scaled away (phase no longer RollingBack)",
    )
    return status(cluster, namespace)


def events(cluster, namespace: str) -> list[dict]:
    return kget(cluster, "events", "-n", namespace)["items"]


def event_reasons(cluster, namespace: str) -> set[str]:
    return {e["reason"] for e in events(cluster, namespace)}


def stable_then_custom_canary(
    cluster, namespace: str, uri: str, rollout: dict, model_class: str
) -> str:
    """Deploy `uri` as stable, then a canary serving it through a fault_models class; returns the
    stable revision."""
    apply(cluster, namespace, body(uri, rollout))
    stable = wait_stable(cluster, namespace)
    canary = body(uri, rollout)
    canary["spec"]["model"].update(format="custom", customClass=f"fault_models:{model_class}")
    apply(cluster, namespace, canary)
    return stable
