"""Monitoring (manifests/monitoring) for real: the alert rules under promtool, the prometheus-operator
objects on the API server, and every dashboard query against a real Prometheus.

- `promtool check rules` and `promtool test rules` (tests/monitoring/rules_test.yaml: a worked
  example per alert, firing and silent) on the rules file, and the PrometheusRule and the chart's
  copies current;
- the ServiceMonitor, PodMonitor, PrometheusRule and dashboard ConfigMap pass a server-side dry run
  against the prometheus-operator's own CRDs, and select the operator's metrics port and every
  serving pod the operator builds;
- a real Prometheus (Debian's package), configured with the shipped scrape configs and rules,
  scrapes the operator and real model servers through a canary that is rolled back: every panel's
  and variable's query of the Grafana dashboard returns data, every rule evaluates, and the
  rollback alert fires.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import urllib.parse
import urllib.request
from typing import Any

import pytest
import yaml
from admin_tools import REPO, install_monitoring_crds, promtool, run
from conftest import Traffic
from devcluster import wait_until
from mdkit import FAST_ROLLOUT, apply, body, rolled_back, status, wait_stable
from test_manifests import only, render, selects, serving_pod_templates

MANIFESTS = REPO / "manifests"
MONITORING = MANIFESTS / "monitoring"
RULES = MONITORING / "rules.yaml"
RULES_TEST = REPO / "tests" / "monitoring" / "rules_test.yaml"
DASHBOARD = MONITORING / "dashboard.json"


def alerts(rules: dict[str, Any]) -> set[str]:
    return {r["alert"] for group in rules["groups"] for r in group["rules"] if "alert" in r}


# ------------------------------------------------------------------------------------ the files
def test_generated_files_are_current() -> None:
    """prometheusrule.yaml and the chart's copies (CRD, rules, dashboard) match their sources."""
    run(sys.executable, REPO / "hack" / "generate.py", "--check")


def test_rules_pass_promtool_check_and_unit_tests() -> None:
    rules = yaml.safe_load(RULES.read_text())
    count = sum(len(group["rules"]) for group in rules["groups"])
    assert f"SUCCESS: {count} rules found" in run(promtool(), "check", "rules", RULES)
    assert "SUCCESS" in run(promtool(), "test", "rules", RULES_TEST.name, cwd=RULES_TEST.parent)
    # Every alert has a worked example in which it fires.
    cases = yaml.safe_load(RULES_TEST.read_text())["tests"]
    fired = {t["alertname"] for case in cases for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert fired == alerts(rules)


# ------------------------------------------------------------------- prometheus-operator objects
@pytest.mark.cluster
def test_monitoring_objects_pass_server_side_dry_run(cluster, namespace) -> None:
    install_monitoring_crds(cluster)
    objs = render(cluster, MONITORING)
    assert sorted((o["kind"], o["metadata"]["name"]) for o in objs) == [
        ("ConfigMap", "modeldeploy-dashboard"),
        ("PodMonitor", "modeldeploy-models"),
        ("PrometheusRule", "modeldeploy"),
        ("ServiceMonitor", "modeldeploy-operator"),
    ]
    dashboard = only(objs, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"] == {"modeldeploy.json": DASHBOARD.read_text()}
    assert only(objs, "PrometheusRule")["spec"] == yaml.safe_load(RULES.read_text())

    for obj in objs:
        obj["metadata"]["namespace"] = namespace
    done = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "-o", "json", "-f", "-",
        input=yaml.safe_dump_all(objs), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr  # no unknown or deprecated fields
    stored = json.loads(done.stdout)
    assert len(stored["items"]) == len(objs)


def test_monitors_select_the_operator_and_every_serving_pod(cluster) -> None:
    install = render(cluster, MANIFESTS / "cluster-wide")
    objs = render(cluster, MONITORING)
    service, servicemonitor = only(install, "Service"), only(objs, "ServiceMonitor")
    [container] = only(install, "Deployment")["spec"]["template"]["spec"]["containers"]
    pod_labels = only(install, "Deployment")["spec"]["template"]["metadata"]["labels"]

    # ServiceMonitor → the metrics Service → the operator container's metrics port.
    assert selects(servicemonitor["spec"]["selector"], service["metadata"]["labels"])
    [endpoint] = servicemonitor["spec"]["endpoints"]
    [port] = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels)
    assert port["targetPort"] in {p["name"] for p in container["ports"]}
    assert endpoint["honorLabels"] is True  # keeps the per-model `namespace` label

    # PodMonitor → every serving pod the operator builds, on its serving port; not the operator.
    podmonitor = only(objs, "PodMonitor")
    [pod_endpoint] = podmonitor["spec"]["podMetricsEndpoints"]
    for template in serving_pod_templates():
        assert selects(podmonitor["spec"]["selector"], template["metadata"]["labels"])
        ports = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
        assert pod_endpoint["port"] in ports
    assert not selects(podmonitor["spec"]["selector"], pod_labels)

    # The plain scrape configs give the same labels (the dashboard and rules rely on them).
    jobs = {j["job_name"]: j for j in scrape_configs()}
    assert jobs["modeldeploy-operator"]["honor_labels"] is True
    relabel = {
        r["target_label"]: r.get("source_labels")
        for r in jobs["modeldeploy-models"]["relabel_configs"]
        if "target_label" in r
    }
    for r in pod_endpoint["relabelings"]:
        if r["targetLabel"] == "job":
            assert r["replacement"] == "modeldeploy-models"
        else:
            assert relabel[r["targetLabel"]] == r["sourceLabels"], r
    for r in endpoint["relabelings"]:
        assert (r["targetLabel"], r["replacement"]) == ("job", "modeldeploy-operator")


def scrape_configs() -> list[dict[str, Any]]:
    return list(yaml.safe_load((MONITORING / "scrape-configs.yaml").read_text())["scrape_configs"])


# ---------------------------------------------------------------- a real Prometheus, real data
class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
            answer = json.loads(response.read())
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/query", query=expr)["result"])


def kubernetes_sd_labels(pod: dict[str, Any], address: str) -> dict[str, str]:
    """The labels Prometheus' Kubernetes discovery (role pod) gives the container port at
    `address` of `pod`, before relabelling."""
    meta, ip = pod["metadata"], pod["status"]["podIP"]
    labels = {
        "__meta_kubernetes_namespace": meta["namespace"],
        "__meta_kubernetes_pod_name": meta["name"],
        "__meta_kubernetes_pod_ip": ip,
        "__meta_kubernetes_pod_phase": pod["status"].get("phase", ""),
        "__meta_kubernetes_pod_ready": next(
            (
                c["status"].lower()
                for c in pod["status"].get("conditions", [])
                if c["type"] == "Ready"
            ),
            "unknown",
        ),
    }
    for key, value in (meta.get("labels") or {}).items():
        name = re.sub(r"[^a-zA-Z0-9_]", "_", key)
        labels[f"__meta_kubernetes_pod_label_{name}"] = value
        labels[f"__meta_kubernetes_pod_labelpresent_{name}"] = "true"
    for container in pod["spec"]["containers"]:
        for port in container.get("ports", []):
            if f"{ip}:{port['containerPort']}" == address:
                labels["__meta_kubernetes_pod_container_name"] = container["name"]
                labels["__meta_kubernetes_pod_container_port_name"] = port.get("name", "")
                labels["__meta_kubernetes_pod_container_port_number"] = str(port["containerPort"])
    return labels


@pytest.fixture
def prometheus(cluster, namespace, operator, tmp_path):
    """A real Prometheus (Debian's package) scraping every second, with the shipped scrape configs
    and rules. Debian builds it without Kubernetes discovery, so a thread plays it: every pod of
    the namespace, with the labels that discovery gives it (from the real pod object), goes into
    a file that the shipped relabelling then works on. The operator — a process here, not a pod —
    is a static target labelled with the namespace it would run in."""
    from devcluster.ports import free_port
    from devcluster.processes import spawn, terminate

    binary = cluster.local.binaries.prometheus
    if not binary.exists():
        pytest.skip(
            "Prometheus is not in the cache (hack/build-control-plane.sh could not fetch it)"
        )
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    targets_file = workdir / "pods.json"
    targets_file.write_text("[]")
    jobs = {j["job_name"]: j for j in scrape_configs()}
    models = jobs["modeldeploy-models"]
    models.pop("kubernetes_sd_configs")
    models["file_sd_configs"] = [{"files": [str(targets_file)], "refresh_interval": "1s"}]
    operator_job = {
        "job_name": "modeldeploy-operator",
        "honor_labels": jobs["modeldeploy-operator"]["honor_labels"],
        "static_configs": [
            {
                "targets": [f"127.0.0.1:{operator.metrics_port}"],
                "labels": {"namespace": "modeldeploy-system", "pod": "modeldeploy-operator-0"},
            }
        ],
    }
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [operator_job, models],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))

    def discover() -> None:
        """Kubernetes discovery's view of the namespace: every pod with an IP, ready or not."""
        listed = cluster.kubectl("get", "pods", "-n", namespace, "-o", "json", check=False)
        if listed.returncode != 0:
            return
        groups = []
        for pod in json.loads(listed.stdout)["items"]:
            ip = pod.get("status", {}).get("podIP")
            for container in pod["spec"]["containers"] if ip else []:
                for port in container.get("ports", []):
                    address = f"{ip}:{port['containerPort']}"
                    groups.append(
                        {"targets": [address], "labels": kubernetes_sd_labels(pod, address)}
                    )
        tmp = targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(targets_file)

    stop = threading.Event()

    def discover_until_stopped() -> None:
        while not stop.wait(0.5):
            discover()

    discovery = threading.Thread(target=discover_until_stopped, name="discovery", daemon=True)
    port = free_port()
    process = spawn(
        "prometheus",
        [
            str(binary), f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        workdir, die_with_parent=True,
    )  # fmt: skip
    server = Prometheus(f"http://127.0.0.1:{port}")
    try:
        wait_until(
            lambda: server.get("/api/v1/status/runtimeinfo") is not None, 60, "prometheus", process
        )
        discovery.start()
        yield server
    finally:
        stop.set()
        discovery.join(timeout=30)
        terminate(process)


def substitute(expr: str, namespace: str) -> str:
    """Grafana's variables, as the dashboard would fill them in for the test's model."""
    values = {
        "$namespace": namespace,
        "$model": "fraud",
        "$__rate_interval": "1m",
        "${datasource}": "",
    }
    for name, value in values.items():
        expr = expr.replace(name, value)
    assert "$" not in expr.replace("$1", ""), expr
    return expr


SHADOW_ROW = "Shadow $namespace/$model"


def dashboard_queries(namespace: str, shadow: bool = False) -> dict[str, str]:
    """Every panel target's PromQL, by "panel title/refId", variables filled in: the shadow row's
    panels with `shadow`, every other panel without (only a shadow phase gives them data)."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries, row = {}, None
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
        if (row == SHADOW_ROW) is not shadow:
            continue
        for target in panel.get("targets", []):
            queries[f"{panel['title']}/{target['refId']}"] = substitute(target["expr"], namespace)
    return queries


def variable_values(prometheus: Prometheus, namespace: str) -> dict[str, list[str]]:
    """The dashboard's query variables, label_values(selector, label), as Grafana runs them."""
    found = {}
    for variable in json.loads(DASHBOARD.read_text())["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
        assert match, variable
        selector, label = substitute(match[1], namespace), match[2]
        found[variable["name"]] = prometheus.get(
            f"/api/v1/label/{label}/values", **{"match[]": selector}
        )
    return found


@pytest.mark.cluster
def test_every_dashboard_query_returns_data_from_a_real_canary(
    cluster, namespace, operator, pod_runner, prometheus, model_uris, tmp_path
) -> None:
    import numpy as np
    from modelserver.drift import reference_stats

    # The model's training data's statistics, so its servers report drift per feature.
    reference = tmp_path / "reference.json"
    reference.write_text(
        json.dumps(reference_stats(np.random.default_rng(7).normal(size=(400, 4))))
    )
    serving = {"env": [{"name": "MODELSERVER_REFERENCE_STATS_URI", "value": f"file://{reference}"}]}
    rollout = {**FAST_ROLLOUT, "analysis": {**FAST_ROLLOUT["analysis"], "compareMetadata": False}}
    stable_body = body(model_uris["v1"], rollout, serving)
    # The failing canary is held (onFailure Pause) until Prometheus has scraped it: a rate needs
    # two scrapes of each series, and a canary rolled back within its first seconds (the default
    # on a fast machine) can be gone after one scrape on a loaded one.
    held = {**rollout, "onFailure": "Pause"}
    canary_body = body(
        model_uris["v1"], held, serving, format="custom", customClass="fault_models:FailingModel"
    )
    for md in (stable_body, canary_body):  # one server per revision: the least work that shows both
        md["spec"]["scaling"] = {"replicas": 1}
    queries = dashboard_queries(namespace)
    seen: dict[str, Any] = {}

    def both_revisions_on_the_panels() -> bool:
        """Requests by revision shows both; the error ratio shows the canary's 5xx."""
        seen["revisions"] = {
            r["metric"]["version"] for r in prometheus.query(queries["Requests by revision/A"])
        }
        seen["errors"] = {
            r["metric"]["version"]: float(r["value"][1])
            for r in prometheus.query(queries["Error ratio (5xx) by revision/A"])
        }
        return len(seen["revisions"]) == 2 and max(seen["errors"].values(), default=0) > 0.05

    traffic = Traffic(pod_runner, "fraud").start()
    try:
        apply(cluster, namespace, stable_body)
        stable = wait_stable(cluster, namespace)
        apply(cluster, namespace, canary_body)
        try:
            wait_until(both_revisions_on_the_panels, 90, "both revisions on the panels")
        except TimeoutError as error:
            raise AssertionError(seen) from error
        # The panels show what happened: both revisions, the canary's errors, stable's none.
        assert stable in seen["revisions"], seen
        assert seen["errors"][stable] == 0, seen
        paused = lambda: status(cluster, namespace).get("phase") == "Paused"  # noqa: E731
        wait_until(paused, 60, "the failed canary held by onFailure Pause")

        # Now the default policy: the failing canary is rolled back on its error rate.
        canary_body["spec"]["rollout"] = rollout
        apply(cluster, namespace, canary_body)
        wait_until(lambda: rolled_back(cluster, namespace), 90, "the failing canary rolled back")
        assert status(cluster, namespace)["stableRevision"] == stable

        wait_answering(prometheus, queries, "every dashboard query returning data")
    finally:
        traffic.stop()

    [rollbacks] = prometheus.query(queries["Rollbacks by failed check/A"])
    assert rollbacks["metric"]["reason"] == "errorRate"
    drift = prometheus.query(queries["Feature drift (PSI)/A"])
    assert {r["metric"]["feature"] for r in drift} == {"f0", "f1", "f2", "f3"}
    # The dashboard's variables offer this model (the target labels of the shipped scrape config).
    variables = variable_values(prometheus, namespace)
    assert namespace in variables["namespace"] and variables["model"] == ["fraud"], variables

    # Every rule evaluates on real series, and the rollback alert fires (rules are evaluated every
    # second, on their own schedule).
    names = alerts(yaml.safe_load(RULES.read_text()))
    health: dict[str, tuple[str, str | None]] = {}

    def evaluated() -> bool:
        groups = prometheus.get("/api/v1/rules")["groups"]
        health.update(
            {r["name"]: (r["health"], r.get("lastError")) for g in groups for r in g["rules"]}
        )
        return set(health) == names and all(h == "ok" for h, _ in health.values())

    def rollback_alert_firing() -> bool:
        return any(
            a["labels"]["alertname"] == "ModelDeploymentRolledBack" and a["state"] == "firing"
            for a in prometheus.get("/api/v1/alerts")["alerts"]
        )

    try:
        wait_until(evaluated, 30, "every rule evaluated without error")
    except TimeoutError as error:
        raise AssertionError(health) from error
    wait_until(rollback_alert_firing, 30, "the rollback alert firing")

    # The operator's own alerts stay silent while it works: each expression, evaluated on what
    # the real operator exports, returns nothing. (One written against a series the operator
    # never exports, e.g. a label value it does not use, would fire for ever.)
    for alert in ("ModelDeployOperatorDown", "ModelDeployOperatorNotReconciling"):
        assert prometheus.query(rule_expr(alert)) == [], f"{alert} fires on a working operator"


def test_the_shadow_row_shows_a_real_shadow_phase(
    cluster, namespace, operator, pod_runner, prometheus, model_uris
) -> None:
    """A canary shadowing stable (stable's servers copy every request and compare the answers):
    every query of the shadow row returns data, the agreement is 100 % for a canary that answers
    like stable, and the copies come at the rate of the live requests."""
    shadow = {"duration": "20s", "fraction": 1.0, "minAgreement": 0.99}
    rollout = {**FAST_ROLLOUT, "analysis": {**FAST_ROLLOUT["analysis"], "compareMetadata": False},
               "shadow": shadow}  # fmt: skip
    queries = dashboard_queries(namespace, shadow=True)
    assert {q.split("/")[0] for q in queries} == {
        "Shadow agreement", "Shadow copies", "Shadow p99 latency"}  # fmt: skip
    traffic = Traffic(pod_runner, "fraud").start()
    try:
        apply(cluster, namespace, body(model_uris["v1"], rollout, version="v1"))
        wait_stable(cluster, namespace)
        # The same model under a new version label: a new revision that answers like stable.
        apply(cluster, namespace, body(model_uris["v1"], rollout, version="v1-rebuilt"))
        started: list[str] = []

        def canary_started() -> bool:
            started[:] = [r for r in [status(cluster, namespace).get("canaryRevision")] if r]
            return bool(started)

        wait_until(canary_started, 60, "the canary started")
        answers = wait_answering(prometheus, queries, "every shadow query returning data")
    finally:
        traffic.stop()
    [agreement] = answers["Shadow agreement/A"]
    assert agreement["metric"]["shadow"] == started[0] and float(agreement["value"][1]) == 1.0
    [mirrored] = answers["Shadow copies/A"]
    assert float(mirrored["value"][1]) > 0, mirrored
    # Errors and drops show as a series of their own even before the first one (0, not absent).
    for outcome in ("B", "C"):
        [series] = answers[f"Shadow copies/{outcome}"]
        assert 0 <= float(series["value"][1]) < float(mirrored["value"][1]), series


def wait_answering(
    prometheus: Prometheus, queries: dict[str, str], what: str, timeout: float = 60
) -> dict[str, list]:
    """Poll until every query returns data; their answers, or an AssertionError naming the
    queries still without data."""
    answers: dict[str, list] = {}

    def all_answer() -> bool:
        answers.update({name: prometheus.query(expr) for name, expr in queries.items()})
        return all(answers.values())

    try:
        wait_until(all_answer, timeout, what)
    except TimeoutError as error:
        raise AssertionError(f"no data for {[n for n, a in answers.items() if not a]}") from error
    return answers


def rule_expr(alert: str) -> str:
    rules = yaml.safe_load(RULES.read_text())
    [expr] = [r["expr"] for g in rules["groups"] for r in g["rules"] if r.get("alert") == alert]
    return str(expr)
