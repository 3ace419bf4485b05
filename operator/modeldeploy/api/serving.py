"""``spec.serving``: how the pods run the shared serving image. Part of the revision."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from .rules import ApiModel, Rule, Rules
from .types import (
    ENV_VAR_NAME,
    LABEL_VALUE,
    QUALIFIED_NAME,
    LabelValue,
    ObjectName,
    Quantity,
    parse_quantity,
)

RESERVED_LABEL_PREFIX = "modeldeploy.io/"
"""Pod labels and annotations under this prefix belong to the operator (selectors, revision)."""


DEFAULT_REQUESTS = {"cpu": "100m", "memory": "256Mi"}


class ImagePullPolicy(StrEnum):
    """When the kubelet pulls the serving image."""

    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class ResourceRequests(ApiModel):
    """Resources the scheduler reserves for each serving container."""

    cpu: Quantity = Field(
        default=DEFAULT_REQUESTS["cpu"],
        description="CPU request, in cores or millicores (500m = half a core).",
    )
    memory: Quantity = Field(
        default=DEFAULT_REQUESTS["memory"],
        description="Memory request in bytes or with a unit (512Mi, 2Gi).",
    )


class ResourceLimits(ApiModel):
    """Upper bounds for each serving container. Unset fields mean no limit."""

    cpu: Quantity | None = Field(default=None, description="CPU limit (throttled above it).")
    memory: Quantity | None = Field(
        default=None, description="Memory limit (the container is OOM-killed above it)."
    )


def _not_above(request: int | str | None, limit: int | str | None) -> bool:
    return request is None or limit is None or parse_quantity(request) <= parse_quantity(limit)


def _quantity_rule(name: str) -> Rule:
    """requests.<name> ≤ limits.<name>, as Pod validation requires; checked here to fail at apply.

    The message names the defaults: a small limit alone can conflict with the default request.
    """
    req, lim = f"self.requests.{name}", f"self.limits.{name}"
    return Rule(
        cel=(
            f"!has(self.requests) || !has(self.limits) || !has({req}) || !has({lim})"
            f" || !isQuantity(string({req})) || !isQuantity(string({lim}))"
            f" || quantity(string({req})).compareTo(quantity(string({lim}))) <= 0"
        ),
        message=(
            f"requests.{name} must not exceed limits.{name} (requests default to "
            f"{DEFAULT_REQUESTS['cpu']} CPU and {DEFAULT_REQUESTS['memory']} memory)"
        ),
        check=lambda r: _not_above(getattr(r.requests, name), getattr(r.limits, name)),
        field_path=f".requests.{name}",
    )


class Resources(ApiModel):
    """CPU and memory for each serving container."""

    requests: ResourceRequests = Field(
        default_factory=ResourceRequests,
        description="Reserved resources.",
    )
    limits: ResourceLimits = Field(
        default_factory=ResourceLimits, description="Resource limits. Unset: no limits."
    )

    __rules__ = (_quantity_rule("cpu"), _quantity_rule("memory"))


class EnvVar(ApiModel):
    """An environment variable for the serving container."""

    name: Annotated[str, Field(min_length=1, max_length=256, pattern=ENV_VAR_NAME)] = Field(
        description="Variable name."
    )
    value: Annotated[str, Field(max_length=4096)] = Field(default="", description="Variable value.")


class Toleration(ApiModel):
    """Lets the pods schedule onto nodes with a matching taint (as in a Pod's tolerations)."""

    key: Annotated[str, Field(max_length=316)] | None = Field(
        default=None,
        description="Taint key to match; empty with operator Exists matches all taints.",
    )
    operator: Literal["Exists", "Equal"] = Field(
        default="Equal", description="Exists or Equal (key and value must match)."
    )
    value: Annotated[str, Field(max_length=63)] | None = Field(
        default=None, description="Taint value to match with operator Equal."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None,
        description="NoSchedule, PreferNoSchedule or NoExecute; unset matches all effects.",
    )
    toleration_seconds: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="For NoExecute: how long the pod stays bound after the taint appears.",
    )


class SecretKeyRef(ApiModel):
    """A key in a Secret in the ModelDeployment's namespace."""

    name: ObjectName = Field(description="Secret name.")
    key: Annotated[str, Field(min_length=1, max_length=253, pattern="^[-._a-zA-Z0-9]+$")] = Field(
        default="token", description="Key within the Secret."
    )


class SecretRef(ApiModel):
    """A Secret in the ModelDeployment's namespace."""

    name: ObjectName = Field(description="Secret name.")


def _unique_env_names(env: list[EnvVar]) -> list[EnvVar]:
    """The API server refuses duplicates through the list's map key; this mirrors it."""
    seen: set[str] = set()
    for var in env:
        if var.name in seen:
            raise ValueError(f"duplicate env name {var.name!r}: env names must be unique")
        seen.add(var.name)
    return env


def _label_key_rules(what: str) -> Rules:
    """Keys must be valid qualified names and outside the operator's reserved prefix."""
    return Rules(
        Rule(
            cel=f"self.all(k, k.matches('{QUALIFIED_NAME}'))",
            message=(
                f"{what} keys must be qualified names such as team or example.com/team "
                "(at most 63 characters after an optional DNS prefix)"
            ),
            check=lambda d: all(re.fullmatch(QUALIFIED_NAME, k) for k in d),
        ),
        Rule(
            cel=f"self.all(k, !k.startsWith('{RESERVED_LABEL_PREFIX}'))",
            message=f"{what} keys under {RESERVED_LABEL_PREFIX} are reserved for the operator",
            check=lambda d: not any(k.startswith(RESERVED_LABEL_PREFIX) for k in d),
        ),
    )


class PayloadLogMode(StrEnum):
    """Which side of each sampled inference exchange is logged."""

    REQUESTS = "requests"
    RESPONSES = "responses"
    BOTH = "both"


SINK_URL = r"^https?://[^/?#\s:@]+(:[0-9]{1,5})?([/?][!-~]*)?$"
HTTP_HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"


class CaConfigMapRef(ApiModel):
    """A key in a ConfigMap in the ModelDeployment's namespace holding PEM CA certificates."""

    name: ObjectName = Field(description="ConfigMap name.")
    key: Annotated[str, Field(min_length=1, max_length=253, pattern="^[-._a-zA-Z0-9]+$")] = Field(
        default="ca.crt", description="Key within the ConfigMap (a PEM bundle)."
    )


class PayloadLogging(ApiModel):
    """Audit logging: the model server sends sampled inference requests and responses to a sink.

    Each exchange becomes CloudEvents in HTTP binary mode with KServe's logger's event types
    (org.kubeflow.serving.inference.request / .response) and a ce-id shared by the request and
    its response. Sending is asynchronous from a bounded queue: a slow or dead sink drops events
    (counted in modelserver_payload_log_events_total), never delays or fails inference.
    """

    url: Annotated[str, Field(max_length=2048, pattern=SINK_URL)] = Field(
        description=(
            "http:// or https:// URL the events are POSTed to, for example "
            "http://audit-sink.monitoring.svc:8080/events."
        ),
    )
    mode: PayloadLogMode = Field(
        default=PayloadLogMode.BOTH,
        description="What is logged: requests, responses or both (paired by ce-id).",
    )
    sample_rate: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description=(
            "Share of inference exchanges logged, from 0 to 1 (0.1 logs about one in ten); a "
            "sampled exchange is logged whole, request and response."
        ),
    )
    redact_headers: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=256, pattern=HTTP_HEADER_NAME)]],
        Field(max_length=32),
    ] = Field(
        default_factory=list,
        description=(
            "Request header names (any case) whose values the sink sees as REDACTED in the "
            "request event's ce-metadata. Authorization, Cookie and Proxy-Authorization always "
            "are. Only with mode requests or both: response events carry no request headers."
        ),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )

    ca_config_map_ref: CaConfigMapRef | None = Field(
        default=None,
        description=(
            "A ConfigMap key holding the PEM CA bundle an https sink's certificate is verified "
            "against, instead of the image's system CAs: for sinks with certificates from a "
            "private CA (cert-manager, trust-manager bundles). Mounted read-only into the pods; "
            "https URLs only."
        ),
    )

    __rules__ = (
        Rule(
            cel="!has(self.caConfigMapRef) || self.url.startsWith('https://')",
            message="caConfigMapRef needs an https:// url: the CA verifies the sink's certificate",
            check=lambda p: p.ca_config_map_ref is None or p.url.startswith("https://"),
            field_path=".caConfigMapRef",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel=(
                "self.mode != 'responses' || !has(self.redactHeaders)"
                " || self.redactHeaders.size() == 0"
            ),
            message=(
                "redactHeaders needs mode requests or both: with mode responses no request "
                "headers are logged"
            ),
            check=lambda p: p.mode != PayloadLogMode.RESPONSES or not p.redact_headers,
            field_path=".redactHeaders",
            reason="FieldValueForbidden",
        ),
    )


DEFAULT_PORT = 8080
DEFAULT_GRPC_PORT = 9000


class GrpcServing(ApiModel):
    """The Open Inference Protocol over gRPC (its GRPCInferenceService), served next to REST.

    Same model, batcher, bearer-token auth (in the authorization metadata) and metrics as REST.
    The Service gets a port named grpc with appProtocol kubernetes.io/h2c (cleartext HTTP/2).
    """

    enabled: bool = Field(
        default=False,
        description=(
            "Serve gRPC on port, and expose it on the Service as the port named grpc. Turning "
            "it on or off changes the pods, so it rolls out as a new revision."
        ),
    )
    port: int = Field(
        default=DEFAULT_GRPC_PORT,
        ge=1024,
        le=65535,
        description=(
            "Container and Service port for gRPC; must differ from serving.port. At least 1024 "
            "because the pods run as a non-root user."
        ),
    )


def _grpc_on(serving: Serving) -> bool:
    return serving.grpc is not None and serving.grpc.enabled


_GRPC_ON = "has(self.grpc) && has(self.grpc.enabled) && self.grpc.enabled"


class Serving(ApiModel):
    """The serving pods: image, resources, placement, auth and batching."""

    image: Annotated[str, Field(min_length=1, max_length=512, pattern="^[!-~]+$")] | None = Field(
        default=None,
        description="Serving image reference. Unset: the image the operator is configured with.",
    )
    image_pull_policy: ImagePullPolicy = Field(
        default=ImagePullPolicy.IF_NOT_PRESENT,
        description="When to pull the image: Always, IfNotPresent or Never.",
    )
    port: int = Field(
        default=DEFAULT_PORT,
        ge=1024,
        le=65535,
        description=(
            "Container port for inference, health and /metrics. At least 1024 because the pods "
            "run as a non-root user."
        ),
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Server worker processes per pod (each loads the model).",
    )
    resources: Resources = Field(
        default_factory=Resources, description="CPU and memory requests and limits per pod."
    )
    env: Annotated[list[EnvVar], Field(max_length=64), AfterValidator(_unique_env_names)] = Field(
        default_factory=list,
        description="Extra environment variables for the serving container; names must be unique.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    node_selector: Annotated[dict[str, LabelValue], Field(max_length=32)] = Field(
        default_factory=dict, description="Node labels the pods must run on."
    )
    tolerations: Annotated[list[Toleration], Field(max_length=32)] = Field(
        default_factory=list, description="Taints the pods tolerate."
    )
    pod_labels: Annotated[
        dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]],
        Field(max_length=32),
        _label_key_rules("podLabels"),
    ] = Field(
        default_factory=dict,
        description=(
            "Extra labels on the serving pods (not used in selectors). Keys under modeldeploy.io/ "
            "are reserved."
        ),
    )
    pod_annotations: Annotated[
        dict[str, Annotated[str, Field(max_length=4096)]],
        Field(max_length=32),
        _label_key_rules("podAnnotations"),
    ] = Field(
        default_factory=dict,
        description=(
            "Extra annotations on the serving pods. Keys under modeldeploy.io/ are reserved."
        ),
    )
    auth_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description=(
            "Require a bearer token on inference endpoints: the token is the value at this Secret "
            "key (key defaults to token). Health and metrics endpoints stay open. Unset: no auth."
        ),
    )
    storage_secret_ref: SecretRef | None = Field(
        default=None,
        description=(
            "Secret whose keys become environment variables for fetching the artifact, e.g. "
            "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL for s3, or "
            "GOOGLE_APPLICATION_CREDENTIALS_JSON for gs."
        ),
    )
    max_batch_size: int = Field(
        default=32,
        ge=1,
        le=1024,
        description="Most requests merged into one model call; 1 disables batching.",
    )
    max_batch_wait_ms: int = Field(
        default=5,
        ge=0,
        le=1000,
        description=(
            "Longest a request waits for others to join its batch, in milliseconds. The server "
            "only waits while there is concurrent load, so single requests are not delayed."
        ),
    )
    logging: PayloadLogging | None = Field(
        default=None,
        description=(
            "Payload logging for audit: inference requests and responses sent as CloudEvents to "
            "an HTTP sink. Unset: nothing is logged."
        ),
    )
    grpc: GrpcServing | None = Field(
        default=None,
        description=(
            "The Open Inference Protocol over gRPC next to REST, e.g. {enabled: true}. Unset: "
            "REST only."
        ),
    )

    __rules__ = (
        Rule(
            cel=(
                f"!({_GRPC_ON}) || (has(self.grpc.port) ? self.grpc.port : {DEFAULT_GRPC_PORT})"
                f" != (has(self.port) ? self.port : {DEFAULT_PORT})"
            ),
            message="grpc.port must differ from port: REST and gRPC each need their own port",
            check=lambda s: not _grpc_on(s) or s.grpc.port != s.port,
            field_path=".grpc.port",
        ),
    )
