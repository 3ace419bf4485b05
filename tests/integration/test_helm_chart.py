"""The Helm chart (charts/modeldeploy) beside the kustomize install, with a helm built from the Go
module proxy (hack/build-control-plane.sh):

- `helm lint --strict` with the default values and with every toggle on;
- what `helm template` renders is, in substance, what `kubectl kustomize` renders for the same
  variant: the same CRD, RBAC rules (cluster-wide and namespaced, and the credential Role), the same
  operator container (image, command, env, probes, ports, resources, security context), metrics
  Service and admission warning; with monitoring on, the same ServiceMonitor, PodMonitor, rules
  and dashboard as manifests/monitoring;
- the rendered objects pass a server-side dry run on the real API server.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
import yaml
from admin_tools import REPO, helm, install_monitoring_crds, run
from test_manifests import only, render, selects

CHART = REPO / "charts" / "modeldeploy"
KUBE_VERSION = "1.36.3"  # the embedded control plane's
MANIFESTS = REPO / "manifests"
MONITORING_ON = [
    "--set", "monitoring.serviceMonitor.enabled=true",
    "--set", "monitoring.podMonitor.enabled=true",
    "--set", "monitoring.prometheusRule.enabled=true",
    "--set", "monitoring.dashboard.enabled=true",
]  # fmt: skip
# The chart's values for each kustomize overlay.
VARIANTS = {
    "cluster-wide": [],
    "namespaced": ["--set", "rbac.scope=namespaced", "--set", "watchNamespaces={models}"],
}
# The Helm-only labels on every object (kustomize sets fewer); the rest must agree.
HELM_LABELS = {
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
}


def template(*args: str, namespace: str = "modeldeploy-system") -> list[dict[str, Any]]:
    # Without a cluster helm assumes Kubernetes v1.20; the chart needs 1.30 (admission policies).
    out = run(
        helm(), "template", "modeldeploy", CHART, "--namespace", namespace, "--include-crds",
        "--kube-version", KUBE_VERSION, *args,
    )  # fmt: skip
    return [doc for doc in yaml.safe_load_all(out) if doc]


def without_helm_labels(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k not in HELM_LABELS}


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    """The pod spec with env in name order (kustomize's namespaced patch moves the variable it
    sets to the front; no value refers to another, so the order means nothing)."""
    spec = copy.deepcopy(deployment["spec"]["template"]["spec"])
    for container in spec["containers"]:
        container["env"] = sorted(container["env"], key=lambda e: e["name"])
    return spec


def squash(value: Any) -> Any:
    """Whitespace runs as one space: kustomize's YAML parser keeps an extra newline before the
    more-indented lines of a folded scalar (the CEL expressions), which means nothing to CEL."""
    if isinstance(value, str):
        return re.sub(r"\s+", " ", value)
    if isinstance(value, list):
        return [squash(v) for v in value]
    if isinstance(value, dict):
        return {k: squash(v) for k, v in value.items()}
    return value


def test_helm_lint() -> None:
    run(helm(), "lint", "--strict", CHART)
    run(helm(), "lint", "--strict", CHART, *VARIANTS["namespaced"], *MONITORING_ON)


@pytest.mark.parametrize("overlay", VARIANTS)
def test_chart_renders_what_kustomize_installs(cluster, overlay: str) -> None:
    chart = template(*VARIANTS[overlay])
    kust = render(cluster, MANIFESTS / overlay)
    # Everything kustomize installs except the Namespace (Helm installs into an existing one,
    # or --create-namespace), under the same names for a release named modeldeploy.
    names = {(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")) for o in chart}
    assert names == {
        (o["kind"], o["metadata"]["name"], o["metadata"].get("namespace"))
        for o in kust
        if o["kind"] != "Namespace"
    }

    # The CRD: the generated one (kustomize adds the GitOps tools' no-prune annotations).
    crd = only(kust, "CustomResourceDefinition")
    crd["metadata"].pop("annotations")
    assert only(chart, "CustomResourceDefinition") == crd

    # RBAC: the same rules, bound to the operator's ServiceAccount.
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        for theirs in (o for o in kust if o["kind"] == kind):
            ours = only(chart, kind, theirs["metadata"]["name"])
            assert ours["metadata"].get("namespace") == theirs["metadata"].get("namespace")
            for field in ("rules", "roleRef", "subjects"):
                assert ours.get(field) == theirs.get(field), (kind, field)
            assert without_helm_labels(ours["metadata"]["labels"]) == theirs["metadata"]["labels"]
    assert (
        only(chart, "ServiceAccount")["metadata"]["name"]
        == only(kust, "ServiceAccount")["metadata"]["name"]
    )

    # The operator's Deployment: the same container (env, probes, ports, image, security), pod
    # and strategy; Helm's selector adds the release, which the NetworkPolicy does not need.
    ours, theirs = only(chart, "Deployment"), only(kust, "Deployment")
    assert pod_spec(ours) == pod_spec(theirs)
    assert {k: v for k, v in ours["spec"].items() if k not in ("selector", "template")} == {
        k: v for k, v in theirs["spec"].items() if k not in ("selector", "template")
    }
    pod_labels = ours["spec"]["template"]["metadata"]["labels"]
    assert without_helm_labels(pod_labels) == theirs["spec"]["template"]["metadata"]["labels"]
    assert selects(ours["spec"]["selector"], pod_labels)
    assert selects(theirs["spec"]["selector"], pod_labels)  # e.g. the NetworkPolicy's peer

    # The metrics Service, and the admission warning.
    service, their_service = only(chart, "Service"), only(kust, "Service")
    assert {k: v for k, v in service["spec"].items() if k != "selector"} == {
        k: v for k, v in their_service["spec"].items() if k != "selector"
    }
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels)
    for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
        assert squash(only(chart, kind)["spec"]) == squash(only(kust, kind)["spec"])


def test_chart_monitoring_is_manifests_monitoring(cluster) -> None:
    chart = template(*MONITORING_ON)
    kust = render(cluster, MANIFESTS / "monitoring")
    deployment = only(chart, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]

    ours, theirs = only(chart, "ServiceMonitor"), only(kust, "ServiceMonitor")
    assert ours["spec"]["endpoints"] == theirs["spec"]["endpoints"]
    assert selects(ours["spec"]["selector"], only(chart, "Service")["metadata"]["labels"])
    assert not selects(
        ours["spec"]["selector"], {**pod_labels, "app.kubernetes.io/instance": "other"}
    )
    assert only(chart, "PodMonitor")["spec"] == only(kust, "PodMonitor")["spec"]
    assert only(chart, "PrometheusRule")["spec"] == only(kust, "PrometheusRule")["spec"]
    dashboard, their_dashboard = only(chart, "ConfigMap"), only(kust, "ConfigMap")
    assert dashboard["data"] == their_dashboard["data"]
    assert json.loads(dashboard["data"]["modeldeploy.json"])["uid"] == "modeldeploy"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == their_dashboard["metadata"]["annotations"]

    # Off by default: the chart installs without the prometheus-operator's CRDs.
    kinds = {o["kind"] for o in template()}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}


@pytest.mark.cluster
@pytest.mark.parametrize("overlay", VARIANTS)
def test_rendered_chart_passes_server_side_dry_run(cluster, crds, namespace, overlay: str) -> None:
    install_monitoring_crds(cluster)
    values = copy.copy(VARIANTS[overlay])
    if overlay == "namespaced":  # watch the test's namespace (a dry run cannot create `models`)
        values[-1] = f"watchNamespaces={{{namespace}}}"
    objs = template(*values, *MONITORING_ON, namespace=namespace)
    done = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "-o", "json", "-f", "-",
        input=yaml.safe_dump_all(objs), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr
    assert len(json.loads(done.stdout)["items"]) == len(objs)


def test_chart_refuses_a_namespaced_install_without_namespaces() -> None:
    args = ["template", "modeldeploy", str(CHART), "--kube-version", KUBE_VERSION]
    args += ["--set", "rbac.scope=namespaced"]
    import subprocess

    done = subprocess.run([str(helm()), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "rbac.scope namespaced needs watchNamespaces" in done.stderr
