"""Operator settings, read once from the environment (MODELDEPLOY_*), documented in the README."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_SERVING_IMAGE = "ghcr.io/modeldeploy/modelserver:0.1.0"


@dataclass(frozen=True)
class OperatorConfig:
    """What the operator needs to know that is not in any ModelDeployment."""

    serving_image: str = DEFAULT_SERVING_IMAGE
    # Empty: every namespace (needs the cluster-wide RBAC variant).
    namespaces: tuple[str, ...] = ()
    metrics_port: int = 9090
    health_port: int = 8081
    resync_seconds: float = 30.0
    cluster_domain: str = "cluster.local"
    log_format: str = "json"
    # Where the operator keeps its credential Secret. Empty: the pod's own namespace.
    operator_namespace: str = ""
    # Threads running passes; a pass waits mostly on the network, so a few go a long way.
    workers: int = 4
    # Several replicas elect a leader on a Lease in the operator's namespace.
    leader_election: bool = True
    lease_seconds: float = 15.0
    # A label selector on ModelDeployments, applied by the API server: operators with disjoint
    # selectors split one cluster's fleet.
    selector: str = ""
    # Rollouts the operator causes itself (new default image, template, credential) at a time.
    max_concurrent_rollouts: int = 10
    # /healthz fails when the resync loop shows no sign of life for this long.
    stuck_seconds: float = 120.0
    # Not from the environment: the SHA-256 of the operator's credential, read at start
    # (see credential.py). Pods of models with auth accept the credential through it.
    operator_token_sha256: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        """Parse MODELDEPLOY_* variables; a bad value raises ValueError naming the variable."""
        env = os.environ if env is None else env
        defaults = cls()

        def number(name: str, default: float, cast: type) -> float:
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = cast(raw)
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not a {cast.__name__}") from None
            if value <= 0:
                raise ValueError(f"{name}={raw!r} must be positive")
            return value

        def flag(name: str, default: bool) -> bool:
            raw = env.get(name, "").strip().lower()
            if raw == "":
                return default
            if raw in ("true", "1", "yes", "on"):
                return True
            if raw in ("false", "0", "no", "off"):
                return False
            raise ValueError(f"{name}={raw!r}: use true or false")

        namespaces = tuple(
            n.strip() for n in env.get("MODELDEPLOY_NAMESPACES", "").split(",") if n.strip()
        )
        log_format = env.get("MODELDEPLOY_LOG_FORMAT", defaults.log_format)
        if log_format not in ("json", "text"):
            raise ValueError(f"MODELDEPLOY_LOG_FORMAT={log_format!r}: use json or text")
        return cls(
            serving_image=env.get("MODELDEPLOY_SERVING_IMAGE") or defaults.serving_image,
            namespaces=namespaces,
            metrics_port=int(number("MODELDEPLOY_METRICS_PORT", defaults.metrics_port, int)),
            health_port=int(number("MODELDEPLOY_HEALTH_PORT", defaults.health_port, int)),
            resync_seconds=number("MODELDEPLOY_RESYNC_SECONDS", defaults.resync_seconds, float),
            cluster_domain=env.get("MODELDEPLOY_CLUSTER_DOMAIN") or defaults.cluster_domain,
            log_format=log_format,
            operator_namespace=env.get("MODELDEPLOY_OPERATOR_NAMESPACE", "").strip(),
            workers=int(number("MODELDEPLOY_WORKERS", defaults.workers, int)),
            leader_election=flag("MODELDEPLOY_LEADER_ELECTION", defaults.leader_election),
            lease_seconds=number("MODELDEPLOY_LEASE_SECONDS", defaults.lease_seconds, float),
            selector=env.get("MODELDEPLOY_SELECTOR", "").strip(),
            max_concurrent_rollouts=int(
                number("MODELDEPLOY_MAX_CONCURRENT_ROLLOUTS", defaults.max_concurrent_rollouts, int)
            ),
            stuck_seconds=number("MODELDEPLOY_STUCK_SECONDS", defaults.stuck_seconds, float),
        )
