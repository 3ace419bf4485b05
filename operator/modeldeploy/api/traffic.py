"""``spec.traffic``: how requests are split between stable and canary."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from .rules import ApiModel, Rule
from .types import DNS1123_SUBDOMAIN, ObjectName

SECTION_NAME = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
HOSTNAME = "^([*][.])?[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class Router(StrEnum):
    """The mechanism that splits traffic."""

    REPLICAS = "replicas"
    GATEWAY_API = "gateway-api"


class ParentRef(ApiModel):
    """A Gateway (or other parent) the HTTPRoute attaches to, as in Gateway API parentRefs."""

    group: Annotated[str, Field(max_length=253, pattern="^$|" + DNS1123_SUBDOMAIN)] = Field(
        default="gateway.networking.k8s.io", description="API group of the parent."
    )
    kind: Annotated[
        str, Field(min_length=1, max_length=63, pattern="^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
    ] = Field(default="Gateway", description="Kind of the parent.")
    name: ObjectName = Field(description="Name of the parent.")
    namespace: ObjectName | None = Field(
        default=None, description="Namespace of the parent. Unset: the ModelDeployment's namespace."
    )
    section_name: (
        Annotated[str, Field(min_length=1, max_length=253, pattern=SECTION_NAME)] | None
    ) = Field(default=None, description="A listener name on the parent.")
    port: int | None = Field(
        default=None, ge=1, le=65535, description="A listener port on the parent."
    )


class Gateway(ApiModel):
    """The HTTPRoute the operator writes exact stable/canary weights into."""

    http_route_name: ObjectName | None = Field(
        default=None,
        description="Name of the HTTPRoute the operator creates and owns. Unset: metadata.name.",
    )
    parent_refs: Annotated[list[ParentRef], Field(min_length=1, max_length=16)] = Field(
        description="Gateways the route attaches to."
    )
    hostnames: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=253, pattern=HOSTNAME)]],
        Field(max_length=16),
    ] = Field(default_factory=list, description="Host names the route matches. Empty: all.")
    mesh: bool = Field(
        default=False,
        description=(
            "Also attach the route to the model's own Service (GAMMA), so a service mesh that "
            "implements GAMMA gives in-cluster callers the exact weights too. Without a mesh, "
            "in-cluster callers get the split as the ready-pod ratio."
        ),
    )


class Traffic(ApiModel):
    """Traffic splitting between the stable and canary revisions."""

    router: Router = Field(
        default=Router.REPLICAS,
        description=(
            "replicas: one Service selects both revisions and the weight is the canary's share "
            "of ready pods (approximate; status shows desired and effective weight). "
            "gateway-api: an HTTPRoute with exact weights (needs Gateway API in the cluster)."
        ),
    )
    gateway: Gateway | None = Field(
        default=None, description="HTTPRoute settings; required when router is gateway-api."
    )

    __rules__ = (
        Rule(
            cel="self.router != 'gateway-api' || has(self.gateway)",
            message="gateway is required when router is gateway-api",
            check=lambda t: t.router != Router.GATEWAY_API or t.gateway is not None,
            field_path=".gateway",
            reason="FieldValueRequired",
        ),
        Rule(
            cel="self.router == 'gateway-api' || !has(self.gateway)",
            message="gateway is only allowed when router is gateway-api",
            check=lambda t: t.router == Router.GATEWAY_API or t.gateway is None,
            field_path=".gateway",
            reason="FieldValueForbidden",
        ),
    )
