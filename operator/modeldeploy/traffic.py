"""Traffic split arithmetic and the objects that realise it.

Replica router (default, any cluster): one Service selects pods; its selector is the switch.
Pinned to a revision it sends everything there; unpinned it spreads requests over every ready pod
of every revision, so the canary's share is its share of ready pods. Gateway API router: an
HTTPRoute with exact weights over a `-stable` and a `-canary` Service.

Who gets which split with the Gateway API router: clients through the Gateway get the route's
exact weights. In-cluster clients of the `<name>` Service (status.url) get the split too: that
Service switches like the replica router's (pod ratio, approximate); with `gateway.mesh: true` the
route also attaches to that Service (GAMMA), so a mesh that implements GAMMA (Istio, Linkerd,
Cilium) gives in-cluster clients the exact weights as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .api import ModelDeployment, Router
from .children import SERVICE_PORT, build_service, child_metadata, grpc_port
from .naming import REVISION, role_service_name


@dataclass(frozen=True)
class Split:
    """How many canary pods a weight needs and what share of traffic they will really get."""

    canary_replicas: int
    planned_weight: float  # percent the canary gets once all planned pods are ready


def replica_split(weight: int, stable_replicas: int) -> Split:
    """Canary pods beside `stable_replicas` stable pods so that canary/(canary+stable) ≈ weight.

    Worked examples: 10% beside 10 stable → 1 canary pod, 1/11 = 9.1%. 50% beside 3 → 3 pods, 50%.
    10% beside 1 stable → at least 1 canary pod, so 50%: impossible to do better with 1 replica.
    Weight 0 (gates still running) keeps 1 warm pod with no traffic; 100 mirrors stable's size.
    """
    stable = max(stable_replicas, 1)
    if weight <= 0:
        return Split(1, 0.0)
    if weight >= 100:
        return Split(stable, 100.0)
    canary = max(1, round(weight * stable / (100 - weight)))
    return Split(canary, 100.0 * canary / (canary + stable))


def gateway_split(weight: int, stable_replicas: int) -> Split:
    """With exact route weights, the canary needs only enough pods for its share of the load.

    Example: 10% of a 10-pod model → 1 canary pod, and exactly 10% of requests.
    """
    if weight <= 0:
        return Split(1, 0.0)
    return Split(max(1, math.ceil(weight * max(stable_replicas, 1) / 100)), float(weight))


def effective_weight(router: Router, weight: int, canary_ready: int, stable_ready: int) -> float:
    """The canary's share of traffic right now, from ready pods (replicas) or the route."""
    if weight <= 0 or canary_ready == 0:
        return 0.0
    if weight >= 100 or router == Router.GATEWAY_API:
        return float(weight) if stable_ready or weight >= 100 else 100.0
    return 100.0 * canary_ready / (canary_ready + stable_ready)


def weight_summary(desired: int, effective: float) -> str:
    """`10% → 9.1%` for `kubectl get md` (one decimal, none when it is .0)."""
    shown = f"{effective:.1f}".removesuffix(".0")
    return f"{desired}% → {shown}%"


def pinned(service: dict[str, Any], revision: str | None) -> dict[str, Any]:
    if revision is not None:
        service["spec"]["selector"] = {**service["spec"]["selector"], REVISION: revision}
    return service


def build_services(
    md: ModelDeployment, stable: str, canary: str | None, weight: int
) -> list[dict[str, Any]]:
    """The client-facing Service (and, for the Gateway API router, the two backend Services)."""
    assert md.metadata.name is not None
    if canary is None or weight <= 0:
        target: str | None = stable
    elif weight >= 100:
        target = canary
    else:
        target = None  # every revision's ready pods
    services = [pinned(build_service(md), target)]
    if md.spec.traffic.router == Router.GATEWAY_API:
        services.append(_role_service(md, "stable", stable))
        if canary is not None:
            services.append(_role_service(md, "canary", canary))
    return services


def _role_service(md: ModelDeployment, role: str, revision: str) -> dict[str, Any]:
    assert md.metadata.name is not None
    service = pinned(build_service(md), revision)
    service["metadata"]["name"] = role_service_name(md.metadata.name, role)
    service["metadata"]["labels"]["modeldeploy.io/role"] = role
    return service


def _weighted_backends(md: ModelDeployment, canary: str | None, weight: int, port: int) -> list:
    assert md.metadata.name is not None
    stable_svc = role_service_name(md.metadata.name, "stable")
    backends = [{"name": stable_svc, "port": port, "weight": 100 - (weight if canary else 0)}]
    if canary is not None:
        canary_svc = role_service_name(md.metadata.name, "canary")
        backends.append({"name": canary_svc, "port": port, "weight": weight})
    return backends


def _route(md: ModelDeployment, kind: str, rule: dict[str, Any]) -> dict[str, Any]:
    """An HTTPRoute or GRPCRoute of one rule, attached where spec.traffic.gateway says."""
    gateway = md.spec.traffic.gateway
    assert gateway is not None and md.metadata.name is not None
    parents = [
        p.model_dump(mode="json", by_alias=True, exclude_none=True) for p in gateway.parent_refs
    ]
    if gateway.mesh:  # GAMMA: the mesh applies the route to calls of the Service itself
        parents.append({"group": "", "kind": "Service", "name": md.metadata.name})
    spec: dict[str, Any] = {"parentRefs": parents, "rules": [rule]}
    if gateway.hostnames:
        spec["hostnames"] = list(gateway.hostnames)
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": kind,
        "metadata": child_metadata(md, gateway.http_route_name or md.metadata.name),
        "spec": spec,
    }


def _mirror_filters(md: ModelDeployment, canary: str | None, port: int) -> list[dict[str, Any]]:
    """The rule's filters while the gateway mirrors (rollout.shadow.mirror Gateway): a
    RequestMirror copying shadow.fraction of the requests to the canary's Service on `port`; the
    gateway discards the copies' answers. One builder for both routes, so REST and gRPC callers
    are copied alike. Empty without a canary or a shadow."""
    shadow = md.spec.rollout.shadow
    if canary is None or shadow is None:
        return []
    assert md.metadata.name is not None
    return [
        {
            "type": "RequestMirror",
            "requestMirror": {
                "backendRef": {"name": role_service_name(md.metadata.name, "canary"), "port": port},
                # Gateway API v1.2+; per ten thousand, so 0.1% is still exact.
                "fraction": {
                    "numerator": max(1, round(shadow.fraction * 10000)),
                    "denominator": 10000,
                },
            },
        }
    ]


def _rule(
    md: ModelDeployment, canary: str | None, weight: int, port: int, mirror: bool
) -> dict[str, Any]:
    """One route rule: the weighted backends on `port`, and the mirror while shadowing."""
    rule: dict[str, Any] = {"backendRefs": _weighted_backends(md, canary, weight, port)}
    filters = _mirror_filters(md, canary, port) if mirror else []
    if filters:
        rule["filters"] = filters
    return rule


def build_http_route(
    md: ModelDeployment, canary: str | None, weight: int, mirror: bool = False
) -> dict[str, Any] | None:
    """HTTPRoute with exact weights, for the gateway-api router (None for the replica router).

    `mirror`: the canary shadows stable through the gateway (rollout.shadow.mirror Gateway), so
    the rule copies shadow.fraction of the requests to the canary's Service (`_mirror_filters`).
    """
    if md.spec.traffic.router != Router.GATEWAY_API or md.spec.traffic.gateway is None:
        return None
    return _route(md, "HTTPRoute", _rule(md, canary, weight, SERVICE_PORT, mirror))


def build_grpc_route(
    md: ModelDeployment, canary: str | None, weight: int, mirror: bool = False
) -> dict[str, Any] | None:
    """GRPCRoute with the same weights as the HTTPRoute, to the Services' `grpc` port: with the
    gateway-api router and gRPC on, gRPC calls through the gateway follow the canary's steps
    (per call, not per connection as with the replica router). Same name, parents and hostnames
    as the HTTPRoute; None otherwise. `mirror` as for the HTTPRoute: a gateway shadow phase
    copies the same fraction of gRPC calls to the canary's `grpc` port, so the canary is judged
    on both protocols before it serves either."""
    port = grpc_port(md)
    if port is None or md.spec.traffic.router != Router.GATEWAY_API:
        return None
    if md.spec.traffic.gateway is None:
        return None
    return _route(md, "GRPCRoute", _rule(md, canary, weight, port, mirror))
