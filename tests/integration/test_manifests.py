"""The install manifests (manifests/) and the operator image (operator/Dockerfile), for real.

What a cluster admin applies must be accepted by a real API server, and the operator must work
with exactly the permissions the manifests grant — and with no more:

- every overlay and the example pass a server-side dry run, without Pod Security warnings;
- the operator runs as the `modeldeploy-operator` ServiceAccount, with a token minted for it and
  the RBAC of each variant installed for real, and brings the example ModelDeployment to Ready
  with no request refused by RBAC (in its log, and in the API server's audit log);
- `kubectl auth can-i` confirms that the account cannot read Secrets, create Pods, touch RBAC or
  act outside its namespaces, and the rules are exactly the table below, without wildcards;
- the operator Deployment is admitted where the "restricted" Pod Security Standard is enforced;
- the Dockerfile's install, run in a fresh venv, starts the operator as an unprivileged user in a
  read-only directory and reconciles.

Installs that create objects use unique names (a `mdsys-<hex>` namespace instead of
modeldeploy-system, a suffixed ClusterRole), so they never collide with a real install on a
cluster given by KUBECONFIG, and are deleted in `finally`. The CRD is left to the `crds` fixture.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import OperatorProcess, free_port, kget
from devcluster import run_kubectl, wait_until
from devcluster.cluster import WRITE_VERBS

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
EXAMPLE = MANIFESTS / "examples" / "modeldeployment.yaml"
DOCKERFILE = REPO / "operator" / "Dockerfile"
OVERLAYS = ("cluster-wide", "namespaced")
OPERATOR_NAMESPACE = "modeldeploy-system"  # as shipped
WATCHED_NAMESPACE = "models"  # the namespaced overlay's watched namespace, as shipped
ACCOUNT = "modeldeploy-operator"

# Every permission the operator has, as (API group, resource, verb). Adding one is a deliberate
# act: change the manifests, this table and the reasons in manifests/README.md together.
CHILD_VERBS = ("get", "list", "watch", "create", "patch", "delete")
EXPECTED_RULES = frozenset(
    {
        *(("modeldeploy.io", "modeldeployments", v) for v in ("get", "list", "watch")),
        ("modeldeploy.io", "modeldeployments/status", "patch"),
        ("modeldeploy.io", "modeldeployments/finalizers", "update"),
        *(("apps", "deployments", v) for v in CHILD_VERBS),
        *(("", "services", v) for v in CHILD_VERBS),
        *(("autoscaling", "horizontalpodautoscalers", v) for v in CHILD_VERBS),
        *(("gateway.networking.k8s.io", "httproutes", v) for v in CHILD_VERBS),
        *(("gateway.networking.k8s.io", "grpcroutes", v) for v in CHILD_VERBS),
        *(("", "pods", v) for v in ("get", "list", "watch")),
        ("", "configmaps", "get"),
        ("", "events", "create"),
    }
)

# The one exception, in the operator's own namespace only: its credential for model pods with auth
# (operator/modeldeploy/credential.py), which it may read by name and create once.
CREDENTIAL = "modeldeploy-operator-credential"
CREDENTIAL_RULES = [
    {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [CREDENTIAL], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
]

# And leader election among the replicas: Leases in its own namespace.
LEADER_ELECTION = "modeldeploy-operator-leader-election"
LEADER_ELECTION_RULES = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
     "verbs": ["get", "create", "update"]},
]  # fmt: skip

# The RBAC authorizer's refusal, wherever it is quoted (kopf's log line, an ApiException body).
RBAC_DENIAL = re.compile(r"cannot [a-z]+ resource")


# --------------------------------------------------------------------------------------- helpers
def render(cluster, path: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize` of a kustomization, as objects."""
    out = cluster.kubectl("kustomize", str(path)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def only(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def operator_container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = only(objs, "Deployment", "modeldeploy-operator")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container


def env_of(container: dict[str, Any]) -> dict[str, str]:
    """The operator's settings (plain values; POD_NAME comes from the downward API)."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def rule_triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def wildcards(rules: list[dict[str, Any]]) -> list[str]:
    return [
        f"{key}: {value}"
        for rule in rules
        for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs")
        for value in rule.get(key, [])
        if "*" in value
    ]


def kopf_scanning_disabled() -> bool:
    """Whether the operator tells kopf not to scan namespaces and CRDs (see the test below)."""
    import kopf
    from modeldeploy.config import OperatorConfig
    from modeldeploy.handlers import configure_settings

    settings = kopf.OperatorSettings()
    configure_settings(settings, OperatorConfig())
    return bool(settings.scanning.disabled)


def authorization_failures(log: str, *, strict: bool) -> list[str]:
    """Log lines reporting a refused API request.

    strict: any 403/Forbidden counts. Otherwise (cluster-wide, where the operator also meets
    other tests' ModelDeployments in namespaces being deleted, which the API server refuses with
    403 for a reason other than RBAC) only the RBAC authorizer's refusals count.
    """
    pattern = re.compile(r"\b403\b|forbidden", re.I) if strict else RBAC_DENIAL
    return [line for line in log.splitlines() if pattern.search(line)]


@dataclass
class Install:
    """One variant's objects, installed under unique names."""

    overlay: str
    objects: list[dict[str, Any]]
    operator_namespace: str
    watched_namespace: str

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.operator_namespace}:{ACCOUNT}"

    @property
    def clusterwide(self) -> bool:
        return self.overlay == "cluster-wide"


def relocate(
    objs: list[dict[str, Any]], operator_namespace: str, watched_namespace: str, suffix: str
) -> list[dict[str, Any]]:
    """The rendered objects with the shipped namespaces swapped for test ones and cluster-scoped
    RBAC names suffixed; rules, subjects' names and everything else unchanged."""
    renames = {OPERATOR_NAMESPACE: operator_namespace, WATCHED_NAMESPACE: watched_namespace}
    out = []
    for obj in copy.deepcopy(objs):
        meta = obj["metadata"]
        if obj["kind"] == "Namespace":
            meta["name"] = renames[meta["name"]]
        if "namespace" in meta:
            meta["namespace"] = renames[meta["namespace"]]
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            meta["name"] += f"-{suffix}"
        if obj["kind"] == "ClusterRoleBinding":
            obj["roleRef"]["name"] += f"-{suffix}"
        for subject in obj.get("subjects", []):
            subject["namespace"] = renames[subject["namespace"]]
        if obj["kind"] == "Deployment":
            for var in obj["spec"]["template"]["spec"]["containers"][0]["env"]:
                if var["name"] == "MODELDEPLOY_NAMESPACES":
                    var["value"] = ",".join(renames[n] for n in var["value"].split(",") if n)
        out.append(obj)
    return out


# What the RBAC tests install: the overlay without the CRD (the `crds` fixture's) and the operator.
RBAC_KINDS = (
    "Namespace",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
)


@contextmanager
def installed(
    cluster, overlay: str, watched_namespace: str, kinds: tuple[str, ...]
) -> Iterator[Install]:
    """Install the overlay's objects of `kinds` for real (unique names), delete them afterwards."""
    suffix = uuid.uuid4().hex[:8]
    operator_namespace = f"mdsys-{suffix}"
    objs = relocate(
        render(cluster, MANIFESTS / overlay), operator_namespace, watched_namespace, suffix
    )
    objs = [o for o in objs if o["kind"] in kinds]
    # The watched namespace is the test's own (the `namespace` fixture deletes it).
    owned = [
        o
        for o in objs
        if not (o["kind"] == "Namespace" and o["metadata"]["name"] == watched_namespace)
    ]
    try:
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objs))
        yield Install(overlay, objs, operator_namespace, watched_namespace)
    finally:
        cluster.kubectl(
            "delete", "--ignore-not-found", "--wait=false", "-f", "-",
            input=yaml.safe_dump_all(owned), check=False,
        )  # fmt: skip


def token_kubeconfig(cluster, install: Install, path: Path) -> Path:
    """A kubeconfig that authenticates with a fresh token of the operator's ServiceAccount, for the
    same server and CA as the admin kubeconfig."""
    token = cluster.kubectl(
        "create", "token", ACCOUNT, "-n", install.operator_namespace, "--duration=1h"
    ).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    server = next(c for c in admin["clusters"] if c["name"] == context["cluster"])["cluster"]
    keep = ("server", "certificate-authority-data", "certificate-authority", "tls-server-name")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "cluster", "cluster": {k: v for k, v in server.items() if k in keep}}
        ],
        "users": [{"name": ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": ACCOUNT, "context": {"cluster": "cluster", "user": ACCOUNT}}],
        "current-context": ACCOUNT,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def whoami(cluster, kubeconfig: Path) -> str:
    out = run_kubectl(cluster.kubectl_path, kubeconfig, "auth", "whoami", "-o", "json").stdout
    return str(json.loads(out)["status"]["userInfo"]["username"])


def audit_entries(cluster, user: str) -> list[dict[str, Any]]:
    """The embedded API server's audit records (every request, allowed or not) made by `user`."""
    entries = []
    for line in Path(cluster.local.audit_log).read_text().splitlines():
        entry = json.loads(line)
        if entry.get("user", {}).get("username") == user:
            entries.append(entry)
    return entries


def wait_ready(cluster, namespace: str, name: str, timeout: float) -> dict[str, Any]:
    def ready() -> bool:
        obj = kget(cluster, "md", name, "-n", namespace)
        status = obj.get("status", {})
        return bool(
            status.get("phase") == "Ready"
            and status.get("observedGeneration") == obj["metadata"]["generation"]
        )

    wait_until(ready, timeout, f"ModelDeployment {namespace}/{name} Ready")
    return kget(cluster, "md", name, "-n", namespace)


def http_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status)


def example_name() -> str:
    return str(yaml.safe_load(EXAMPLE.read_text())["metadata"]["name"])


def check_reconciled(cluster, install: Install, timeout: float) -> dict[str, Any]:
    """Apply the example into the watched namespace; it must become Ready with its children."""
    name, namespace = example_name(), install.watched_namespace
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
    obj = wait_ready(cluster, namespace, name, timeout)
    selector = f"modeldeploy.io/name={name}"
    [deployment] = kget(cluster, "deployments", "-n", namespace, "-l", selector)["items"]
    assert deployment["metadata"]["name"] == f"{name}-{obj['status']['stableRevision']}"
    replicas = yaml.safe_load(EXAMPLE.read_text())["spec"]["scaling"]["replicas"]
    assert deployment["status"].get("readyReplicas") == replicas
    assert obj["status"]["readyReplicas"] == replicas
    service = kget(cluster, "service", name, "-n", namespace)
    assert service["spec"]["selector"]["modeldeploy.io/revision"] == obj["status"]["stableRevision"]
    return obj


def check_audit(cluster, install: Install) -> None:
    """No write of the operator was refused by RBAC, and it never wrote a ModelDeployment's spec
    or metadata (which is why the RBAC grants no patch/update on modeldeployments)."""
    if not cluster.embedded:
        return  # the audit log is the embedded control plane's
    # Not the test's own `kubectl auth whoami` (a SelfSubjectReview, allowed to everyone).
    entries = [
        e
        for e in audit_entries(cluster, install.user)
        # Discovery (/api, /apis) has no objectRef: the audit log records reads too.
        if e.get("objectRef", {}).get("resource") != "selfsubjectreviews"
    ]
    assert entries, "the operator's writes should be in the audit log under its ServiceAccount"
    refused = [
        f"{e['verb']} {e['requestURI']}"
        for e in entries
        if e.get("annotations", {}).get("authorization.k8s.io/decision") == "forbid"
    ]
    assert not refused, refused
    writes = {
        (
            e["objectRef"].get("apiGroup", ""),
            e["objectRef"]["resource"],
            e["objectRef"].get("subresource"),
        )
        for e in entries
        if e["verb"] in WRITE_VERBS
    }
    assert ("modeldeploy.io", "modeldeployments", None) not in writes, writes
    own_namespace = {("", "secrets", None), ("coordination.k8s.io", "leases", None)}
    for group, resource, subresource in writes - own_namespace:
        full = f"{resource}/{subresource}" if subresource else resource
        assert any(g == group and r == full for g, r, _ in EXPECTED_RULES), (group, full)


# ------------------------------------------------------------------------- the files themselves
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_crd_in_the_kustomization_is_the_generated_one(cluster, overlay: str) -> None:
    generated = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
    # Rendered: the same object, plus what keeps GitOps tools from ever deleting it.
    crd = only(render(cluster, MANIFESTS / overlay), "CustomResourceDefinition")
    annotations = crd["metadata"].pop("annotations")
    assert crd == yaml.safe_load(generated.read_text())
    assert annotations == {
        "argocd.argoproj.io/sync-options": "Prune=false,Delete=false",
        "kustomize.toolkit.fluxcd.io/prune": "disabled",
    }


def test_kopf_scanning_is_disabled() -> None:
    """kopf would otherwise list namespaces and watch CRDs cluster-wide: reads the operator does
    not need (its namespaces are exact names, its resources known at start) and the RBAC does
    not grant."""
    assert kopf_scanning_disabled()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_is_exactly_the_table_without_wildcards(cluster, overlay: str) -> None:
    objs = render(cluster, MANIFESTS / overlay)
    kind = "ClusterRole" if overlay == "cluster-wide" else "Role"
    binding_kind = f"{kind}Binding"
    credential = only(objs, "Role", CREDENTIAL)
    assert credential["metadata"]["namespace"] == OPERATOR_NAMESPACE
    assert credential["rules"] == CREDENTIAL_RULES
    credential_binding = only(objs, "RoleBinding", CREDENTIAL)
    assert credential_binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": CREDENTIAL,
    }
    assert credential_binding["subjects"] == [
        {"kind": "ServiceAccount", "name": ACCOUNT, "namespace": OPERATOR_NAMESPACE}
    ]
    election = only(objs, "Role", LEADER_ELECTION)
    assert election["metadata"]["namespace"] == OPERATOR_NAMESPACE
    assert election["rules"] == LEADER_ELECTION_RULES
    election_binding = only(objs, "RoleBinding", LEADER_ELECTION)
    assert election_binding["roleRef"]["name"] == LEADER_ELECTION
    assert election_binding["subjects"] == credential_binding["subjects"]
    own = (credential, credential_binding, election, election_binding)
    roles = [
        o for o in objs if o["kind"] in ("Role", "ClusterRole") and all(o is not x for x in own)
    ]
    bindings = [
        o
        for o in objs
        if o["kind"] in ("RoleBinding", "ClusterRoleBinding") and all(o is not x for x in own)
    ]
    assert {o["kind"] for o in roles} == {kind} and {o["kind"] for o in bindings} == {binding_kind}

    for role in roles:
        assert not wildcards(role["rules"]), wildcards(role["rules"])
        assert not any("nonResourceURLs" in r or "resourceNames" in r for r in role["rules"])
        assert rule_triples(role["rules"]) == EXPECTED_RULES, (
            f"{role['kind']} rules differ from EXPECTED_RULES: "
            f"extra {sorted(rule_triples(role['rules']) - EXPECTED_RULES)}, "
            f"missing {sorted(EXPECTED_RULES - rule_triples(role['rules']))}"
        )
        resources = {resource for _, resource, _ in rule_triples(role["rules"])}
        assert not resources & {"secrets", "pods/exec", "serviceaccounts/token"}

    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": ACCOUNT, "namespace": OPERATOR_NAMESPACE}
        ]
        ref = binding["roleRef"]
        assert ref["kind"] == kind and any(r["metadata"]["name"] == ref["name"] for r in roles)

    watched = env_of(operator_container(objs))["MODELDEPLOY_NAMESPACES"]
    if overlay == "cluster-wide":
        assert watched == "", "cluster-wide RBAC, so the operator must watch every namespace"
    else:
        # One Role + RoleBinding per watched namespace, and the operator watches exactly those.
        names = set(watched.split(","))
        assert {r["metadata"]["namespace"] for r in roles} == names
        assert {b["metadata"]["namespace"] for b in bindings} == names
        assert names <= {o["metadata"]["name"] for o in objs if o["kind"] == "Namespace"}


def test_operator_deployment_is_restricted_and_consistent(cluster) -> None:
    from modeldeploy.config import OperatorConfig

    objs = render(cluster, MANIFESTS / "cluster-wide")
    deployment = only(objs, "Deployment", "modeldeploy-operator")
    assert deployment["metadata"]["namespace"] == OPERATOR_NAMESPACE
    spec = deployment["spec"]
    # Two replicas electing a leader; an upgrade brings the new one up before the old goes.
    assert spec["replicas"] == 2 and spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    pdb = only(objs, "PodDisruptionBudget", "modeldeploy-operator")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == ACCOUNT
    only(objs, "ServiceAccount", ACCOUNT)
    container = operator_container(objs)
    assert container["command"] == ["python", "-m", "modeldeploy"]

    # The restricted Pod Security Standard.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    namespace = only(objs, "Namespace", OPERATOR_NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # The image's user is the pod's user (operator/Dockerfile: USER uid:gid).
    user = re.search(r"^USER (\d+):(\d+)$", DOCKERFILE.read_text(), re.M)
    assert user, "operator/Dockerfile must set a numeric USER uid:gid"
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        int(user.group(1)),
        int(user.group(2)),
    )
    # The only writable path.
    [mount] = container["volumeMounts"]
    assert mount["mountPath"] == "/tmp"
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume

    # The env parses as the operator would parse it, and the ports and probe agree with it.
    env = env_of(container)
    assert all(name.startswith("MODELDEPLOY_") for name in env)
    # The replica's name in the Lease, from the downward API.
    [pod_name] = [e for e in container["env"] if e["name"] == "POD_NAME"]
    assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    config = OperatorConfig.from_env(env)
    assert config.serving_image == env["MODELDEPLOY_SERVING_IMAGE"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": config.metrics_port, "health": config.health_port}
    assert (config.metrics_port, config.health_port) == (9090, 8081)
    probe = container["livenessProbe"]["httpGet"]
    assert probe == {"path": "/healthz", "port": "health"}
    # Not Ready while the API server is unreachable: `kubectl get pods` shows it.
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}

    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]


# ---------------------------------------------------------------------------- server-side dry run
@pytest.fixture(scope="module")
def shipped_namespaces(cluster) -> Iterator[None]:
    """The namespaces the overlays install into, created when missing (a dry run cannot create
    what later objects of the same apply live in) and deleted afterwards if we created them."""
    objs = render(cluster, MANIFESTS / "namespaced")
    created = []
    for ns in (o for o in objs if o["kind"] == "Namespace"):
        name = ns["metadata"]["name"]
        if cluster.kubectl("get", "namespace", name, check=False).returncode != 0:
            cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(ns))
            created.append(name)
    try:
        yield
    finally:
        for name in created:
            cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def unexpected_warnings(stderr: str) -> list[str]:
    """kubectl's warnings, except that an object created by server-side apply (the `crds`
    fixture's CRD) has no client-side apply annotation yet."""
    return [
        line
        for line in stderr.splitlines()
        if "Warning" in line and "last-applied-configuration annotation" not in line
    ]


@pytest.mark.parametrize("apply_mode", ["client-side", "server-side"])
@pytest.mark.parametrize("overlay", ["base", *OVERLAYS])
def test_overlay_passes_server_side_dry_run(
    cluster, crds, shipped_namespaces, overlay: str, apply_mode: str
) -> None:
    mode = ["--server-side"] if apply_mode == "server-side" else []
    done = cluster.kubectl(
        "apply", *mode, "--dry-run=server", "-k", str(MANIFESTS / overlay), check=False
    )
    assert done.returncode == 0, done.stderr
    # The Namespace carries warn=restricted, so a pod template breaking it would warn here.
    assert not unexpected_warnings(done.stderr), done.stderr
    # Every object of the overlay went through the API server (kind/name as kubectl prints it).
    printed = {line.split()[0] for line in done.stdout.splitlines() if "(server dry run)" in line}
    applied = {f"{ref.split('/')[0].split('.')[0]}/{ref.split('/')[1]}" for ref in printed}
    rendered = render(cluster, MANIFESTS / overlay)
    assert applied == {f"{o['kind'].lower()}/{o['metadata']['name']}" for o in rendered}, (
        done.stdout
    )


def test_example_passes_server_side_dry_run(cluster, crds, namespace) -> None:
    body = yaml.safe_load(EXAMPLE.read_text())
    assert "namespace" not in body["metadata"], "the example is applied with -n"
    done = cluster.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", str(EXAMPLE), "-o", "json", check=False
    )
    assert done.returncode == 0, done.stderr
    assert not unexpected_warnings(done.stderr), done.stderr
    # What the API server stored: the example's values plus the CRD defaults.
    stored = json.loads(done.stdout)
    assert stored["spec"]["model"]["uri"] == body["spec"]["model"]["uri"]
    assert stored["spec"]["rollout"]["steps"] == [10, 25, 50, 100]


# ---------------------------------------------------------------------- the optional NetworkPolicy
NETWORKPOLICY = MANIFESTS / "networkpolicy"
INGRESS_NAMESPACE_LABEL = "modeldeploy.io/model-ingress"  # documented in manifests/README.md


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a LabelSelector matches `labels`, as the API server evaluates it."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if not {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]:
            return False
    return True


def serving_pod_templates() -> list[dict[str, Any]]:
    """Pod templates exactly as the operator builds them: for the example, and for one with its own
    port, pod labels and gRPC."""
    from modeldeploy.api import parse_model_deployment
    from modeldeploy.children import build_pod_template

    example = yaml.safe_load(EXAMPLE.read_text())
    example["metadata"] = {**example["metadata"], "namespace": "models"}
    custom = copy.deepcopy(example)
    custom["metadata"]["name"] = "other"
    custom["spec"].setdefault("serving", {}).update(
        port=9000, podLabels={"team": "risk"}, grpc={"enabled": True, "port": 9001}
    )
    return [
        build_pod_template(parse_model_deployment(body), "0123456789", "registry.example/ms:1")
        for body in (example, custom)
    ]


@pytest.mark.parametrize("apply_mode", ["client-side", "server-side"])
def test_networkpolicy_passes_server_side_dry_run(cluster, namespace, apply_mode: str) -> None:
    mode = ["--server-side"] if apply_mode == "server-side" else []
    done = cluster.kubectl(
        "apply", *mode, "--dry-run=server", "-n", namespace, "-k", str(NETWORKPOLICY),
        "-o", "json", check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not unexpected_warnings(done.stderr), done.stderr
    stored = json.loads(done.stdout)
    [policy] = stored.get("items", [stored])
    assert policy["kind"] == "NetworkPolicy"
    # No namespace in the files: `-n` puts it into the models namespace it protects.
    assert policy["metadata"]["namespace"] == namespace
    assert policy["spec"] == only(render(cluster, NETWORKPOLICY), "NetworkPolicy")["spec"]


def test_networkpolicy_admits_the_operator_to_the_pods_it_builds(cluster) -> None:
    policy = only(render(cluster, NETWORKPOLICY), "NetworkPolicy")
    assert "namespace" not in policy["metadata"]
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]  # egress stays open

    # It selects the serving pods the operator builds, on the port they serve on.
    [rule] = spec["ingress"]
    for template in serving_pod_templates():
        assert selects(spec["podSelector"], template["metadata"]["labels"]), template["metadata"]
        [container] = template["spec"]["containers"]
        serving = {(p["name"], p["protocol"]) for p in container["ports"]}
        admitted = {(p["port"], p["protocol"]) for p in rule["ports"]}
        assert serving <= admitted, serving  # every port it serves on: http, and grpc if on
        assert container["readinessProbe"]["httpGet"]["port"] in {p["port"] for p in rule["ports"]}

    # ... and nothing else: not the operator's own pod.
    objs = render(cluster, MANIFESTS / "cluster-wide")
    operator = only(objs, "Deployment", "modeldeploy-operator")
    operator_labels = operator["spec"]["template"]["metadata"]["labels"]
    assert not selects(spec["podSelector"], operator_labels)

    # From: (1) the operator's pods in the operator's namespace, (2) this namespace's pods,
    # (3) namespaces carrying the documented label.
    operator_peer, same_namespace, ingress = rule["from"]
    operator_namespace = operator["metadata"]["namespace"]
    assert operator_peer["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": operator_namespace}
    }
    assert selects(operator_peer["podSelector"], operator_labels)
    assert not selects(
        operator_peer["podSelector"], serving_pod_templates()[0]["metadata"]["labels"]
    )
    assert same_namespace == {"podSelector": {}}
    assert ingress == {"namespaceSelector": {"matchLabels": {INGRESS_NAMESPACE_LABEL: "true"}}}
    readme = (MANIFESTS / "README.md").read_text()
    assert f"{INGRESS_NAMESPACE_LABEL}=true" in readme
    assert "kubectl apply -n models -k manifests/networkpolicy" in readme


# ------------------------------------------------------------- the operator as its ServiceAccount
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_operator_runs_as_its_service_account(
    cluster, crds, namespace, tmp_path, overlay: str
) -> None:
    with installed(cluster, overlay, namespace, RBAC_KINDS) as install:
        kubeconfig = token_kubeconfig(cluster, install, tmp_path / "operator.kubeconfig")
        assert whoami(cluster, kubeconfig) == install.user
        if install.clusterwide and not cluster.embedded:
            others = kget(cluster, "md", "--all-namespaces")["items"]
            if any(o["metadata"]["namespace"] != namespace for o in others):
                pytest.skip("a cluster-wide operator would reconcile this cluster's other models")

        env = {"MODELDEPLOY_NAMESPACES": ""} if install.clusterwide else {}
        env["MODELDEPLOY_OPERATOR_NAMESPACE"] = install.operator_namespace
        process = OperatorProcess(kubeconfig, namespace, tmp_path / "operator.log", **env)
        try:
            process.start()
            check_reconciled(cluster, install, timeout=90)
            # The shipped liveness probe's path answers on the health port.
            probe = operator_container(render(cluster, MANIFESTS / overlay))["livenessProbe"]
            port = process.env["MODELDEPLOY_HEALTH_PORT"]
            assert http_status(f"http://127.0.0.1:{port}{probe['httpGet']['path']}") == 200
            assert process.alive()
        finally:
            process.stop()
            print(f"--- operator log ({process.log_path}) ---\n{process.log()[-6000:]}")
        failures = authorization_failures(process.log(), strict=not install.clusterwide)
        assert not failures, "\n".join(failures[:10])
        check_audit(cluster, install)


# ----------------------------------------------------------------------- and no more than needed
def can_i(cluster, user: str, verb: str, resource: str, namespace: str | None) -> bool:
    """`kubectl auth can-i VERB RESOURCE --as=USER` (resource may be `plural.group/subresource`).

    For a resource the server does not serve (the Gateway API is not installed here) kubectl
    cannot split the group off and asks about the wrong resource; then the same question goes as
    a SubjectAccessReview with the ServiceAccount's groups, as the API server derives them.
    """
    resource, _, subresource = resource.partition("/")
    args = ["auth", "can-i", verb, resource, f"--as={user}"]
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    args += [f"--subresource={subresource}"] if subresource else []
    done = cluster.kubectl(*args, check=False)
    if "doesn't have a resource type" not in done.stderr:
        answer = done.stdout.strip()
        assert answer in ("yes", "no"), f"kubectl {shlex.join(args)}: {answer!r} {done.stderr}"
        return answer == "yes"
    plural, _, group = resource.partition(".")
    account_namespace = user.split(":")[2]
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{account_namespace}",
                "system:authenticated",
            ],
            "resourceAttributes": {
                "verb": verb,
                "group": group,
                "resource": plural,
                "subresource": subresource,
                "namespace": namespace or "",
            },
        },
    }
    out = cluster.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(review)).stdout
    return bool(json.loads(out)["status"].get("allowed"))


def secret_allowed(cluster, user: str, verb: str, namespace: str, name: str | None) -> bool:
    """A SubjectAccessReview for one Secret by name (kubectl auth can-i cannot name one)."""
    account_namespace = user.split(":")[2]
    attributes = {"verb": verb, "resource": "secrets", "namespace": namespace}
    if name:
        attributes["name"] = name
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{account_namespace}",
                       "system:authenticated"],
            "resourceAttributes": attributes,
        },
    }  # fmt: skip
    out = cluster.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(review)).stdout
    return bool(json.loads(out)["status"].get("allowed"))


MD = "modeldeployments.modeldeploy.io"
WORK = [  # what the operator does in a namespace it manages
    ("get", MD), ("list", MD), ("watch", MD), ("patch", f"{MD}/status"),
    ("update", f"{MD}/finalizers"),
    ("create", "deployments.apps"), ("patch", "deployments.apps"), ("delete", "deployments.apps"),
    ("list", "services"), ("create", "services"), ("patch", "services"), ("delete", "services"),
    ("create", "horizontalpodautoscalers.autoscaling"),
    ("delete", "horizontalpodautoscalers.autoscaling"),
    ("list", "httproutes.gateway.networking.k8s.io"),
    ("patch", "httproutes.gateway.networking.k8s.io"),
    ("list", "grpcroutes.gateway.networking.k8s.io"),
    ("patch", "grpcroutes.gateway.networking.k8s.io"),
    ("list", "pods"), ("watch", "pods"), ("get", "configmaps"), ("create", "events"),
]  # fmt: skip
NEVER_IN_A_NAMESPACE = [  # what it must not do even where it works
    ("get", "secrets"), ("list", "secrets"), ("watch", "secrets"), ("create", "secrets"),
    ("create", "pods"), ("delete", "pods"), ("patch", "pods"), ("create", "pods/exec"),
    ("get", "pods/log"), ("create", "pods/eviction"),
    ("list", "configmaps"), ("create", "configmaps"), ("update", "configmaps"),
    ("create", MD), ("update", MD), ("patch", MD), ("delete", MD), ("update", f"{MD}/status"),
    ("update", "deployments.apps"), ("patch", "deployments.apps/scale"),
    ("create", "serviceaccounts"), ("create", "serviceaccounts/token"),
    ("create", "roles.rbac.authorization.k8s.io"), ("update", "roles.rbac.authorization.k8s.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("delete", "rolebindings.rbac.authorization.k8s.io"),
    ("create", "persistentvolumeclaims"), ("create", "jobs.batch"),
    ("create", "daemonsets.apps"), ("create", "statefulsets.apps"), ("create", "replicasets.apps"),
    ("patch", "events"), ("delete", "events"), ("list", "endpoints"),
    ("create", "networkpolicies.networking.k8s.io"), ("create", "ingresses.networking.k8s.io"),
]  # fmt: skip
SECRETS_AND_PODS = [
    ("get", "secrets"), ("list", "secrets"), ("watch", "secrets"), ("create", "pods"),
    ("create", "pods/exec"),
]  # fmt: skip
NEVER_CLUSTER_SCOPED = [
    ("list", "namespaces"), ("create", "namespaces"), ("delete", "namespaces"),
    ("list", "nodes"), ("patch", "nodes"), ("list", "persistentvolumes"),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ("bind", "clusterroles.rbac.authorization.k8s.io"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "mutatingwebhookconfigurations.admissionregistration.k8s.io"),
    ("create", "validatingwebhookconfigurations.admissionregistration.k8s.io"),
    ("impersonate", "users"), ("impersonate", "serviceaccounts"), ("impersonate", "groups"),
    ("create", "certificatesigningrequests.certificates.k8s.io"),
    ("create", "tokenreviews.authentication.k8s.io"),
    ("list", "secrets"), ("create", "pods"),
]  # fmt: skip


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_account_is_no_broader_than_needed(cluster, namespace, overlay: str) -> None:
    with installed(cluster, overlay, namespace, RBAC_KINDS) as install:
        user, ns = install.user, namespace
        # (expected answer, verb, resource, namespace or None for cluster-wide)
        questions: list[tuple[bool, str, str, str | None]] = []
        questions += [(True, v, r, ns) for v, r in WORK]
        questions += [(False, v, r, ns) for v, r in NEVER_IN_A_NAMESPACE]
        questions += [(False, v, r, None) for v, r in NEVER_CLUSTER_SCOPED]
        # Its own namespace and kube-system: no Secrets, no Pods, whatever the variant.
        for other in (install.operator_namespace, "kube-system"):
            questions += [(False, v, r, other) for v, r in SECRETS_AND_PODS]
        if install.clusterwide:
            # The same work everywhere, as the cluster-wide watch needs.
            questions += [(True, v, r, None) for v, r in WORK if v in ("list", "watch")]
            questions += [(True, v, r, "default") for v, r in WORK]
        else:
            # Nothing outside the watched namespace: not in its own, not in default, not across.
            for other in (install.operator_namespace, "default"):
                questions += [(False, v, r, other) for v, r in WORK]
            questions += [(False, v, r, None) for v, r in WORK]

        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(lambda q: can_i(cluster, user, q[1], q[2], q[3]), questions))
        wrong = [
            f"can-i {verb} {resource} -n {where or '(all)'}: {'yes' if got else 'no'}"
            for (want, verb, resource, where), got in zip(questions, answers, strict=True)
            if got != want
        ]
        assert not wrong, "\n".join(wrong)
        # Its credential, by name, in its own namespace; no other Secret, nowhere else.
        home = install.operator_namespace
        assert secret_allowed(cluster, user, "get", home, CREDENTIAL)
        assert not secret_allowed(cluster, user, "get", home, "another-secret")
        assert not secret_allowed(cluster, user, "get", ns, CREDENTIAL)
        assert secret_allowed(cluster, user, "create", home, None)

        # The rules as the API server stored them: exactly the table, no wildcards.
        kind = "clusterrole" if install.clusterwide else "role"
        role = next(
            o
            for o in install.objects
            if o["kind"] == ("ClusterRole" if install.clusterwide else "Role")
            and o["metadata"]["name"] not in (CREDENTIAL, LEADER_ELECTION)
        )
        args = [kind, role["metadata"]["name"]]
        args += [] if install.clusterwide else ["-n", namespace]
        live = kget(cluster, *args)["rules"]
        assert not wildcards(live) and rule_triples(live) == EXPECTED_RULES
    # Cleaned up: nothing cluster-scoped outlives the test.
    for obj in install.objects:
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            gone = cluster.kubectl("get", obj["kind"].lower(), obj["metadata"]["name"], check=False)
            assert "NotFound" in gone.stderr, gone.stdout


# ---------------------------------------------------------------- the operator pod is admissible
def test_operator_pod_is_admitted_under_restricted_pod_security(cluster, namespace) -> None:
    if not cluster.embedded:
        pytest.skip("needs kwok's fake nodes: a real kubelet would run the operator image")
    kinds = ("Namespace", "ServiceAccount", "Deployment")
    with installed(cluster, "cluster-wide", namespace, kinds) as install:
        ns = install.operator_namespace
        labels = kget(cluster, "namespace", ns)["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"

        # A pod that broke the standard is never created: the ReplicaSet reports FailedCreate.
        def settled() -> bool:
            deployment = kget(cluster, "deployment", "modeldeploy-operator", "-n", ns)
            available = deployment["status"].get("availableReplicas")
            return available == deployment["spec"]["replicas"] or bool(failed_creates(cluster, ns))

        wait_until(settled, 60, "the operator Deployment available (or refused)")
        assert not failed_creates(cluster, ns), failed_creates(cluster, ns)
        pods = kget(cluster, "pods", "-n", ns)["items"]
        assert len(pods) == 2, "the leader and its standby"
        for pod in pods:
            assert pod["spec"]["serviceAccountName"] == ACCOUNT
            assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"


def failed_creates(cluster, namespace: str) -> list[str]:
    events = kget(cluster, "events", "-n", namespace, "--field-selector", "reason=FailedCreate")
    return [e["message"] for e in events["items"]]


# ---------------------------------------------------------------------------- the operator image
def dockerfile_install() -> tuple[list[tuple[str, str]], list[str]]:
    """(COPY sources and targets, the RUN commands after the venv's) of the Dockerfile,
    continuation lines joined."""
    build = DOCKERFILE.read_text().replace("\\\n", " ")
    runs = re.findall(r"^RUN (.+)$", build, re.M)
    venv = "python -m venv /opt/modeldeploy"
    assert venv in runs, runs
    runs = runs[runs.index(venv) + 1 :]
    assert any("/opt/modeldeploy/bin/pip install" in r for r in runs), (
        "the Dockerfile must pip install into the venv"
    )
    copies = []
    for line in re.findall(r"^COPY (?!--from)(.+)$", build, re.M):
        *sources, target = line.split()
        copies += [(source, target) for source in sources]
    return copies, runs


def base_python() -> str:
    """A Python 3.11 outside /root (the unprivileged user must be able to run it), as in the
    image; else the test's own."""
    for candidate in ("/usr/local/bin/python3.11", "/usr/bin/python3.11"):
        if os.path.exists(candidate) and not os.path.realpath(candidate).startswith("/root/"):
            return candidate
    return os.path.realpath(sys.executable)


NOBODY = 65534


def as_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


@pytest.fixture(scope="module")
def image_venv() -> Iterator[Path]:
    """The build stage, for real: exactly what it COPYs, its pip command, a fresh venv."""
    root = Path(tempfile.mkdtemp(prefix="modeldeploy-operator-image-"))
    root.chmod(0o755)
    try:
        copies, commands = dockerfile_install()
        for source, target in copies:
            origin = REPO / source
            dest = root / target.lstrip("/")
            if origin.is_dir():
                shutil.copytree(origin, dest, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copy(origin, dest / origin.name)
        venv = root / "opt" / "modeldeploy"
        subprocess.run([base_python(), "-m", "venv", str(venv)], check=True)
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        for command in commands:  # as the image's /bin/sh runs them, in the staged tree
            command = command.replace("/opt/modeldeploy", str(venv)).replace("/src", f"{root}/src")
            done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True)
            assert done.returncode == 0, command + done.stdout[-3000:] + done.stderr[-3000:]
        for path in (root, *root.rglob("*")):
            path.chmod(path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0))
        yield venv
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_operator_image_install_runs_unprivileged(
    cluster, crds, namespace, tmp_path, image_venv
) -> None:
    site = next((image_venv / "lib").glob("python3*/site-packages"))
    installed_names = {p.name.lower() for p in site.iterdir()}
    assert {"kopf", "kubernetes", "modeldeploy", "modelserver"} <= installed_names
    # Slim: none of the serving stack or the dev tools.
    assert not installed_names & {"numpy", "sklearn", "uvicorn", "xgboost", "pytest", "devcluster"}

    unprivileged = os.geteuid() == 0 and not base_python().startswith("/root/")
    workdir = Path(tempfile.mkdtemp(prefix="modeldeploy-ro-"))  # root-owned: read-only for nobody
    writable = Path(tempfile.mkdtemp(prefix="modeldeploy-tmp-"))
    workdir.chmod(0o755)
    writable.chmod(0o777)
    process: subprocess.Popen[bytes] | None = None
    log_path = tmp_path / "image-operator.log"
    try:
        with installed(cluster, "namespaced", namespace, RBAC_KINDS) as install:
            kubeconfig = token_kubeconfig(cluster, install, writable / "kubeconfig")
            kubeconfig.chmod(0o644)
            health = free_port()
            env = {
                "PATH": f"{image_venv / 'bin'}:/usr/bin:/bin",
                "HOME": "/nonexistent",
                "TMPDIR": str(writable),
                "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONUNBUFFERED": "1",
                "KUBECONFIG": str(kubeconfig),
                "MODELDEPLOY_NAMESPACES": namespace,
                "MODELDEPLOY_OPERATOR_NAMESPACE": install.operator_namespace,
                "MODELDEPLOY_RESYNC_SECONDS": "2",
                "MODELDEPLOY_METRICS_PORT": str(free_port()),
                "MODELDEPLOY_HEALTH_PORT": str(health),
                "MODELDEPLOY_SERVING_IMAGE": "registry.example/modelserver:test",
            }
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    [str(image_venv / "bin" / "python"), "-m", "modeldeploy"], env=env,
                    cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                    preexec_fn=as_nobody if unprivileged else None,
                )  # fmt: skip
            started = process
            wait_until(
                lambda: (
                    started.poll() is not None
                    or http_status(f"http://127.0.0.1:{health}/healthz") == 200
                ),
                60,
                "the image's operator to answer /healthz",
            )
            assert process.poll() is None, log_path.read_text()[-3000:]
            check_reconciled(cluster, install, timeout=90)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0, log_path.read_text()[-3000:]
        log_text = log_path.read_text(errors="replace")
        assert not authorization_failures(log_text, strict=True)
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        tail = log_path.read_text()[-4000:] if log_path.exists() else ""
        print(f"--- image operator log ---\n{tail}")
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(writable, ignore_errors=True)
