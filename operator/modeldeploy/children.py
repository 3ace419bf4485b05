"""Build the children of a ModelDeployment: a Deployment per revision, the Service, the HPA.

Pure functions from (ModelDeployment, revision, settings) to plain dicts, ready for server-side
apply. Nothing here talks to the cluster or reads a clock.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .api import ModelDeployment, ShadowMirror, parse_duration
from .config import OperatorConfig
from .naming import (
    APP_VERSION,
    REVISION,
    common_labels,
    deployment_name,
    hpa_name,
    selector_labels,
    service_name,
)

CONTAINER = "server"
SERVICE_PORT = 80
MODEL_MOUNT_ROOT = "/mnt/models"
AUTH_MOUNT = "/var/run/modeldeploy/auth"
PAYLOAD_LOG_CA_MOUNT = "/var/run/modeldeploy/payload-log-ca"
# The serving pod writes nothing but its artifact cache, and that goes to an emptyDir so the
# root filesystem can stay read-only.
CACHE_DIR = "/var/cache/modelserver"
# Endpoints take a moment to drop a terminating pod; keep serving (not ready) meanwhile.
SHUTDOWN_DELAY_SECONDS = 5
TERMINATION_GRACE_SECONDS = 35


def owner_reference(md: ModelDeployment) -> dict[str, Any]:
    """Makes the child garbage-collected with its ModelDeployment (and shown as its child)."""
    return {
        "apiVersion": md.api_version,
        "kind": md.kind,
        "name": md.metadata.name,
        "uid": md.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(
    md: ModelDeployment, name: str, extra_labels: dict[str, str] | None = None
) -> dict:
    assert md.metadata.name is not None
    return {
        "name": name,
        "namespace": md.metadata.namespace,
        "labels": {**common_labels(md.metadata.name), **(extra_labels or {})},
        "ownerReferences": [owner_reference(md)],
    }


def model_location(uri: str) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None]:
    """The URI the server loads from, plus the volume and mount a `pvc://` URI needs.

    Example: pvc://models/fraud/v7.joblib → file:///mnt/models/models/fraud/v7.joblib with the
    claim `models` mounted read-only at /mnt/models/models.
    """
    parts = urlsplit(uri)
    if parts.scheme != "pvc":
        return uri, None, None
    claim = parts.netloc
    mount = f"{MODEL_MOUNT_ROOT}/{claim}"
    volume = {
        "name": "model-pvc",
        "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
    }
    return (
        f"file://{mount}{parts.path}",
        volume,
        {
            "name": "model-pvc",
            "mountPath": mount,
            "readOnly": True,
        },
    )


AUTH_VARIABLES = ("MODELSERVER_AUTH_TOKEN", "MODELSERVER_AUTH_TOKEN_FILE")


def requires_token(md: ModelDeployment) -> bool:
    """Whether the model's server will demand a bearer token (authSecretRef, or the user's own
    MODELSERVER_AUTH_TOKEN* variables)."""
    env = {e.name for e in md.spec.serving.env}
    return md.spec.serving.auth_secret_ref is not None or any(v in env for v in AUTH_VARIABLES)


def servers_mirror(md: ModelDeployment) -> bool:
    """Whether this model's servers are told where to mirror (spec.rollout.shadow with the
    Server mirror): their ``/v2/shadow`` then takes the operator's credential."""
    shadow = md.spec.rollout.shadow
    return shadow is not None and shadow.mirror == ShadowMirror.SERVER


def takes_operator_token(md: ModelDeployment) -> bool:
    """Whether the pods carry the SHA-256 of the operator's credential: where users need a token
    (the gates and scrapes must get in) and where the servers mirror (``/v2/shadow`` is never
    open). Elsewhere the pod template, and so the revision, does not depend on the credential."""
    return requires_token(md) or servers_mirror(md)


def server_env(
    md: ModelDeployment, revision: str, model_uri: str, operator_token_sha256: str | None = None
) -> list[dict[str, Any]]:
    """The MODELSERVER_* settings (see modelserver.config) for this revision's pods.

    A model that requires a token, or whose servers mirror, also gets the SHA-256 of the
    operator's credential, so the operator's gates, scrapes and shadow configuration are let in
    without the operator reading the user's Secret (``takes_operator_token``).
    """
    spec = md.spec
    model = spec.model
    outputs = "predict_proba" if model.predict_proba else "predict"
    env = {
        "MODELSERVER_MODEL_URI": model_uri,
        "MODELSERVER_FORMAT": model.format.value,
        "MODELSERVER_MODEL_NAME": model.name or md.metadata.name,
        # The revision, not the human version: metrics are judged per revision, and two revisions
        # may share a version label (only serving settings changed).
        "MODELSERVER_MODEL_VERSION": revision,
        "MODELSERVER_DEFAULT_OUTPUTS": outputs,
        "MODELSERVER_HOST": "0.0.0.0",
        "MODELSERVER_PORT": str(spec.serving.port),
        "MODELSERVER_WORKERS": str(spec.serving.workers),
        "MODELSERVER_MAX_BATCH_SIZE": str(spec.serving.max_batch_size),
        "MODELSERVER_MAX_BATCH_WAIT_MS": str(spec.serving.max_batch_wait_ms),
        "MODELSERVER_CACHE_DIR": CACHE_DIR,
        "MODELSERVER_SHUTDOWN_DELAY": str(SHUTDOWN_DELAY_SECONDS),
    }
    if model.sha256:
        env["MODELSERVER_MODEL_SHA256"] = model.sha256
    if model.custom_class:
        env["MODELSERVER_MODEL_CLASS"] = model.custom_class
    if spec.serving.auth_secret_ref:
        env["MODELSERVER_AUTH_TOKEN_FILE"] = f"{AUTH_MOUNT}/token"
    if operator_token_sha256 and takes_operator_token(md):
        env["MODELSERVER_OPERATOR_TOKEN_SHA256"] = operator_token_sha256
    port = grpc_port(md)
    if port is not None:
        env["MODELSERVER_GRPC_PORT"] = str(port)
    env.update(payload_log_env(md))
    user_env = [{"name": e.name, "value": e.value} for e in spec.serving.env]
    ours = [{"name": k, "value": v} for k, v in env.items()]
    overridden = {e["name"] for e in user_env}
    # A user's explicit variable wins over our default for the same name.
    return [e for e in ours if e["name"] not in overridden] + user_env


def grpc_port(md: ModelDeployment) -> int | None:
    """The gRPC port when spec.serving.grpc is enabled, else None. Nothing about gRPC is
    rendered when it is off, so adding the field left every existing revision as it was."""
    grpc = md.spec.serving.grpc
    return grpc.port if grpc is not None and grpc.enabled else None


def payload_log_env(md: ModelDeployment) -> dict[str, str]:
    """The payload logging settings (spec.serving.logging) as MODELSERVER_* variables; none
    when logging is off. Part of the pod template, so turning it on or off is a new revision."""
    logging = md.spec.serving.logging
    if logging is None:
        return {}
    env: dict[str, str] = {
        "MODELSERVER_PAYLOAD_LOG_URL": logging.url,
        "MODELSERVER_PAYLOAD_LOG_MODE": logging.mode.value,
        "MODELSERVER_PAYLOAD_LOG_SAMPLE_RATE": repr(float(logging.sample_rate)),
        "MODELSERVER_DEPLOYMENT_NAME": md.metadata.name or "",
        "MODELSERVER_NAMESPACE": md.metadata.namespace or "",
        "MODELSERVER_MODEL_VERSION_LABEL": md.spec.model.version or "",
    }
    if logging.redact_headers:
        env["MODELSERVER_PAYLOAD_LOG_REDACT_HEADERS"] = ",".join(logging.redact_headers)
    if logging.ca_config_map_ref is not None:
        env["MODELSERVER_PAYLOAD_LOG_CA_FILE"] = f"{PAYLOAD_LOG_CA_MOUNT}/ca.crt"
    return env


def _resources(md: ModelDeployment) -> dict[str, Any]:
    resources = md.spec.serving.resources
    requests = {"cpu": str(resources.requests.cpu), "memory": str(resources.requests.memory)}
    limits = {
        k: str(v)
        for k, v in (("cpu", resources.limits.cpu), ("memory", resources.limits.memory))
        if v is not None
    }
    return {"requests": requests, **({"limits": limits} if limits else {})}


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def build_pod_template(
    md: ModelDeployment, revision: str, image: str, operator_token_sha256: str | None = None
) -> dict[str, Any]:
    """Pod template meeting the `restricted` Pod Security Standard, probing the OIP health APIs."""
    assert md.metadata.name is not None
    serving = md.spec.serving
    model_uri, model_volume, model_mount = model_location(md.spec.model.uri)
    volumes: list[dict[str, Any]] = [
        {"name": "cache", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "cache", "mountPath": CACHE_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if model_volume and model_mount:
        volumes.append(model_volume)
        mounts.append(model_mount)
    if serving.auth_secret_ref:
        ref = serving.auth_secret_ref
        volumes.append(
            {
                "name": "auth",
                "secret": {"secretName": ref.name, "items": [{"key": ref.key, "path": "token"}]},
            }
        )
        mounts.append({"name": "auth", "mountPath": AUTH_MOUNT, "readOnly": True})
    ca = serving.logging.ca_config_map_ref if serving.logging else None
    if ca is not None:
        items = [{"key": ca.key, "path": "ca.crt"}]
        volumes.append({"name": "payload-log-ca", "configMap": {"name": ca.name, "items": items}})
        mounts.append(
            {"name": "payload-log-ca", "mountPath": PAYLOAD_LOG_CA_MOUNT, "readOnly": True}
        )
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": serving.image_pull_policy.value,
        "ports": [{"name": "http", "containerPort": serving.port, "protocol": "TCP"}],
        "env": server_env(md, revision, model_uri, operator_token_sha256),
        "resources": _resources(md),
        "readinessProbe": _probe("/v2/health/ready", period=5, failures=2),
        "livenessProbe": _probe("/v2/health/live", period=10, failures=3),
        # Loading a large artifact may take minutes; liveness must not kill the pod meanwhile.
        "startupProbe": _probe("/v2/health/live", period=2, failures=150),
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    port = grpc_port(md)
    if port is not None:
        container["ports"].append({"name": "grpc", "containerPort": port, "protocol": "TCP"})
    if serving.storage_secret_ref:
        container["envFrom"] = [{"secretRef": {"name": serving.storage_secret_ref.name}}]
    labels = {**common_labels(md.metadata.name), **serving.pod_labels, REVISION: revision}
    if md.spec.model.version:
        labels[APP_VERSION] = md.spec.model.version
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        # The server never calls the Kubernetes API: give it no credentials to leak.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if serving.node_selector:
        pod_spec["nodeSelector"] = dict(serving.node_selector)
    if serving.tolerations:
        pod_spec["tolerations"] = [
            t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in serving.tolerations
        ]
    return {
        "metadata": {"labels": labels, "annotations": dict(serving.pod_annotations)},
        "spec": pod_spec,
    }


def build_deployment(
    md: ModelDeployment,
    revision: str,
    image: str,
    replicas: int | None,
    operator_token_sha256: str | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The Deployment of one revision. `replicas=None` leaves the count to the HPA."""
    assert md.metadata.name is not None
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {**selector_labels(md.metadata.name), REVISION: revision}},
        "template": build_pod_template(md, revision, image, operator_token_sha256),
        "revisionHistoryLimit": 2,
        "progressDeadlineSeconds": int(parse_duration(md.spec.rollout.progress_deadline)),
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    metadata = child_metadata(md, deployment_name(md.metadata.name, revision), {REVISION: revision})
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": spec}


def build_service(md: ModelDeployment) -> dict[str, Any]:
    """The Service clients call. It selects every revision's pods: with the replica router the
    traffic split is the ratio of ready pods."""
    assert md.metadata.name is not None
    ports: list[dict[str, Any]] = [
        {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
    ]
    port = grpc_port(md)
    if port is not None:
        # h2c: gRPC without TLS, so meshes and gateways speak HTTP/2 to it rather than guess.
        ports.append(
            {
                "name": "grpc",
                "port": port,
                "targetPort": "grpc",
                "protocol": "TCP",
                "appProtocol": "kubernetes.io/h2c",
            }
        )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(md, service_name(md.metadata.name)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(md.metadata.name),
            "ports": ports,
        },
    }


def build_hpa(md: ModelDeployment, target_deployment: str) -> dict[str, Any] | None:
    """An autoscaling/v2 HPA on the stable Deployment, or None for a fixed replica count.

    Requests per second is a Pods metric served by a custom-metrics adapter (for example
    prometheus-adapter) from the server's request counter.
    """
    assert md.metadata.name is not None
    plan = md.spec.scaling.autoscaling_plan()
    if plan is None:
        return None
    metrics: list[dict[str, Any]] = []
    if plan.target_cpu_utilization_percentage is not None:
        metrics.append(
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {
                        "type": "Utilization",
                        "averageUtilization": plan.target_cpu_utilization_percentage,
                    },
                },
            }
        )
    if plan.target_requests_per_second is not None:
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "modelserver_requests_per_second"},
                    "target": {
                        "type": "AverageValue",
                        "averageValue": str(plan.target_requests_per_second),
                    },
                },
            }
        )
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": child_metadata(md, hpa_name(md.metadata.name)),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": target_deployment,
            },
            "minReplicas": plan.min_replicas,
            "maxReplicas": plan.max_replicas,
            "metrics": metrics,
        },
    }


def resolve_image(md: ModelDeployment, config: OperatorConfig) -> str:
    return md.spec.serving.image or config.serving_image


def model_url(md: ModelDeployment, config: OperatorConfig) -> str:
    """The in-cluster URL of the model's OIP v2 endpoint, for status.url."""
    assert md.metadata.name is not None
    host = f"{service_name(md.metadata.name)}.{md.metadata.namespace}.svc.{config.cluster_domain}"
    name = md.spec.model.name or md.metadata.name
    return f"http://{host}/v2/models/{name}"
