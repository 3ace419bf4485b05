"""The operator's only door to the Kubernetes API (besides kopf's own watch): read, apply, delete.

Writes go through server-side apply under one field manager, so the operator owns exactly the
fields it sets and leaves the rest (an HPA's `spec.replicas`, labels another tool adds) alone.
Every write is counted in the operator's metrics so an idle pass that writes shows up at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from .metrics import OperatorMetrics

FIELD_MANAGER = "modeldeploy"
USER_AGENT = "modeldeploy-operator"
# (connect, read) seconds. Short enough that an unreachable API server costs a pass seconds, not
# minutes; long enough for a list of a few thousand objects on a busy server.
REQUEST_TIMEOUT = (5.0, 20.0)

# (apiVersion, kind) -> plural, for every kind the operator reads or writes.
PLURALS = {
    ("apps/v1", "Deployment"): "deployments",
    ("v1", "Service"): "services",
    ("v1", "Pod"): "pods",
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Secret"): "secrets",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "httproutes",
    ("gateway.networking.k8s.io/v1", "GRPCRoute"): "grpcroutes",
    ("modeldeploy.io/v1alpha1", "ModelDeployment"): "modeldeployments",
    ("coordination.k8s.io/v1", "Lease"): "leases",
}


def collection_path(api_version: str, kind: str, namespace: str) -> str:
    """REST path of a namespaced collection: `/api/v1/...` for the core group, `/apis/...` else."""
    prefix = "/api" if "/" not in api_version else "/apis"
    return f"{prefix}/{api_version}/namespaces/{namespace}/{PLURALS[(api_version, kind)]}"


@dataclass
class Reachability:
    """Whether the last call reached the API server, and since when it has not (for /readyz)."""

    down_since: float | None = None  # monotonic
    last_error: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self) -> None:
        with self._lock:
            self.down_since, self.last_error = None, ""

    def failed(self, error: str) -> None:
        with self._lock:
            if self.down_since is None:
                self.down_since = time.monotonic()
            self.last_error = error


@dataclass
class Kube:
    """A small typed-agnostic client: dicts in, dicts out."""

    api: k8s.ApiClient
    metrics: OperatorMetrics
    reachability: Reachability = field(default_factory=Reachability)

    @classmethod
    def from_environment(cls, metrics: OperatorMetrics, identity: str = "") -> Kube:
        """In-cluster config when running in a pod, else KUBECONFIG / ~/.kube/config.

        `identity` (the leader-election identity) goes into the User-Agent, so the API server's
        audit log tells which replica made a request.
        """
        configuration = k8s.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(client_configuration=configuration)
        # One attempt per call: the caller decides when to retry (with backoff), so an
        # unreachable server cannot multiply every timeout by urllib3's default retries.
        configuration.retries = False
        api = k8s.ApiClient(configuration)
        api.user_agent = f"{USER_AGENT} ({identity})" if identity else USER_AGENT
        return cls(api, metrics)

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, Any]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        if method == "GET":
            self.metrics.api_reads.inc()
        else:
            self.metrics.api_writes.labels(verb=method.lower()).inc()
        method_, url, headers, payload, post = self.api.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.call_api(
                method_, url, headers, payload, post, _request_timeout=REQUEST_TIMEOUT
            )
            data = response.read()
        except (urllib3.exceptions.HTTPError, OSError) as error:
            self.reachability.failed(f"{type(error).__name__}: {error}"[:300])
            raise
        self.reachability.ok()
        if not 200 <= response.status < 300:
            raise ApiException(status=response.status, reason=response.reason, body=data)
        return json.loads(data) if data else {}

    def get_path(self, path: str, query: list[tuple[str, Any]]) -> dict[str, Any]:
        """GET an API path (a list page, say) as a dict."""
        return self._call("GET", path, query=query)

    def watch_path(
        self, path: str, query: list[tuple[str, Any]], read_timeout: float
    ) -> Iterator[dict[str, Any]]:
        """The events of a watch request, as they arrive."""
        from .informer import parse_lines

        self.metrics.api_reads.inc()
        method, url, headers, payload, post = self.api.param_serialize(
            "GET", path, query_params=query,
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"],
        )  # fmt: skip
        try:
            response = self.api.call_api(
                method, url, headers, payload, post,
                _request_timeout=(REQUEST_TIMEOUT[0], read_timeout),
            )  # fmt: skip
        except (urllib3.exceptions.HTTPError, OSError) as error:
            self.reachability.failed(f"{type(error).__name__}: {error}"[:300])
            raise
        raw = response.response
        try:
            if response.status != 200:
                raise ApiException(status=response.status, reason=response.reason, body=raw.data)
            self.reachability.ok()
            yield from parse_lines(raw.stream(65536))
        finally:
            raw.release_conn()

    def list_objects(
        self, api_version: str, kind: str, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        path = collection_path(api_version, kind, namespace)
        items = self._call("GET", path, query=[("labelSelector", label_selector)]).get("items", [])
        for item in items:  # list items carry no apiVersion/kind of their own
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    def list_model_deployments(self, namespaces: tuple[str, ...]) -> list[dict[str, Any]]:
        """Every ModelDeployment in `namespaces`, or in the whole cluster when it is empty."""
        if not namespaces:
            found = self._call("GET", "/apis/modeldeploy.io/v1alpha1/modeldeployments")
            return list(found.get("items", []))
        return [
            item
            for namespace in namespaces
            for item in self._call(
                "GET", collection_path("modeldeploy.io/v1alpha1", "ModelDeployment", namespace)
            ).get("items", [])
        ]

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", f"{collection_path(api_version, kind, namespace)}/{name}")
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply `obj` under the operator's field manager, forcing conflicts."""
        meta = obj["metadata"]
        path = (
            f"{collection_path(obj['apiVersion'], obj['kind'], meta['namespace'])}/{meta['name']}"
        )
        return self._call(
            "PATCH",
            path,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            body=obj,
            content_type="application/apply-patch+yaml",
        )

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        path = collection_path(obj["apiVersion"], obj["kind"], meta["namespace"])
        return self._call("POST", path, body=obj)

    def replace(self, obj: dict[str, Any]) -> dict[str, Any]:
        """PUT `obj`; with metadata.resourceVersion set, a concurrent change makes it fail (409)."""
        meta = obj["metadata"]
        path = collection_path(obj["apiVersion"], obj["kind"], meta["namespace"])
        return self._call("PUT", f"{path}/{meta['name']}", body=obj)

    def merge_patch(self, obj: dict[str, Any]) -> dict[str, Any]:
        """JSON merge patch with `obj`: lists are replaced whole, unlike server-side apply."""
        meta = obj["metadata"]
        path = (
            f"{collection_path(obj['apiVersion'], obj['kind'], meta['namespace'])}/{meta['name']}"
        )
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
        return self._call("PATCH", path, body=body, content_type="application/merge-patch+json")

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        try:
            self._call(
                "DELETE",
                f"{collection_path(api_version, kind, namespace)}/{name}",
                body={"propagationPolicy": "Background"},
            )
        except ApiException as error:
            if error.status != 404:
                raise

    def post_event(
        self, owner: dict[str, Any], type_: str, reason: str, message: str, now: str
    ) -> None:
        """A core/v1 Event on `owner`, as `kubectl describe` shows them."""
        meta = owner["metadata"]
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": owner.get("apiVersion", "modeldeploy.io/v1alpha1"),
                "kind": owner.get("kind", "ModelDeployment"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": USER_AGENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._call("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body=event)

    def patch_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """Merge-patch the ModelDeployment's status subresource (never its spec); returns the
        object as stored.

        With `resource_version`, the write applies only to that version of the object: a writer
        that planned from a stale copy (a replica that lost the lease, a cache behind the
        server) gets 409 Conflict instead of overwriting newer status.
        """
        path = collection_path("modeldeploy.io/v1alpha1", "ModelDeployment", namespace)
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return self._call(
            "PATCH",
            f"{path}/{name}/status",
            body=body,
            content_type="application/merge-patch+json",
        )
