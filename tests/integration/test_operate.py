"""Operating real rollouts from Argo CD and from kubectl: the health check and resource actions of
manifests/argocd (run by Argo CD's Lua VM, tests/argocd/runner) and the kubectl plugin, against
the real control plane, the operator as a process and real model servers behind the pods.

One story drives everything once (a module fixture), recording every version of the objects
through a watch: a model applied before any operator runs, a first deployment whose pods never
get Ready, a canary held on a missing smoke-input ConfigMap, walking, paused and resumed from
Argo CD and from kubectl, promoted, a failing canary rolled back on its error rate, retried,
aborted and promoted on request, and a spec the stopped operator has not seen. The tests then
check what each part produced: the verdicts on the live objects, the patches Argo CD would send
(each applied to the real API server, the operator's acknowledgement awaited), the plugin's
screens and answers, and its --watch in a real terminal (tmux).

`make argocd-fixtures` (MODELDEPLOY_WRITE_FIXTURES=1) writes the recorded objects to
manifests/argocd/testdata and their expected verdicts to manifests/argocd/health_test.yaml;
otherwise each committed fixture must still be the situation it stands for.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, OperatorProcess, Traffic
from devcluster import FAULT_LABEL, wait_until
from mdkit import apply, status

sys.path.insert(0, str(REPO / "tests" / "argocd"))
import argocdkit as kit

pytestmark = pytest.mark.cluster

WRITE = os.environ.get("MODELDEPLOY_WRITE_FIXTURES") == "1"
VENV_BIN = Path(sys.executable).parent
SMOKE = [{"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": [0.1, 0.2, 0.3, 0.4]}]}]  # fmt: skip
ANALYSIS = {"interval": "1s", "failureThreshold": 2, "minRequests": 5, "maxInconclusive": 1000}
# Steps long enough that the canary moves only when asked: every situation stays put to be seen.
ROLLOUT = {
    "steps": [25, 50, 100],
    "stepDuration": "300s",
    "progressDeadline": "60s",
    "analysis": {**ANALYSIS, "smokeTests": {"configMapRef": {"name": "smoke"}}},
}
# The failing canary: judged on its error rate alone (no gates that would catch it first).
FAILING_ROLLOUT = {**ROLLOUT, "analysis": {**ANALYSIS, "compareMetadata": False}}


def fraud(uri: str, version: str, rollout: dict, **model: str) -> dict:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "fraud"},
        "spec": {
            "model": {"uri": uri, "format": "sklearn", "version": version, **model},
            "scaling": {"replicas": 2},
            "rollout": rollout,
        },
    }


def never_ready(uri: str) -> dict:
    """A first deployment whose pod never gets Ready: Pending, then Degraded at the deadline."""
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "first"},
        "spec": {
            "model": {"uri": uri, "format": "sklearn", "version": "v1"},
            "scaling": {"replicas": 1},
            "serving": {"podLabels": {FAULT_LABEL: "never-ready"}},
            "rollout": {**ROLLOUT, "progressDeadline": "10s"},
        },
    }


class Recorder:
    """Every version of the namespace's ModelDeployments, in order, from a watch."""

    def __init__(self, cluster, namespace: str) -> None:
        from kubernetes import client

        self.api = client.CustomObjectsApi(cluster.api_client())
        self.namespace = namespace
        self.objects: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        from kubernetes import watch

        version = None
        while not self._stop.is_set():
            stream = watch.Watch().stream(
                self.api.list_namespaced_custom_object,
                "modeldeploy.io", "v1alpha1", self.namespace, "modeldeployments",
                resource_version=version, timeout_seconds=2,
            )  # fmt: skip
            self._ready.set()
            try:
                for event in stream:
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    with self._lock:
                        self.objects.append(json.loads(json.dumps(obj)))
            except Exception:
                version = None  # e.g. 410 Gone: list again

    def start(self) -> Recorder:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def mark(self) -> int:
        with self._lock:
            return len(self.objects)

    def find(
        self, name: str, check: Callable[[dict[str, Any]], bool], since: int = 0, last: bool = False
    ) -> dict[str, Any] | None:
        with self._lock:
            found = [o for o in self.objects[since:] if o["metadata"]["name"] == name and check(o)]
        if not found:
            return None
        return found[-1] if last else found[0]

    def wait_for(
        self,
        name: str,
        check: Callable[[dict[str, Any]], bool],
        what: str,
        since: int = 0,
        timeout: float = 60,
    ) -> dict[str, Any]:
        wait_until(lambda: self.find(name, check, since) is not None, timeout, what)
        found = self.find(name, check, since)
        assert found is not None
        return found


def phase(obj: dict[str, Any]) -> str | None:
    return (obj.get("status") or {}).get("phase")


def reason(obj: dict[str, Any], kind: str) -> str | None:
    return kit.conditions(obj).get(kind, {}).get("reason")


@dataclass
class Story:
    """What the story saw: objects per fixture name, Argo CD's runs, the plugin's answers."""

    namespace: str = ""
    fixtures: dict[str, dict[str, Any]] = field(default_factory=dict)
    verdicts: dict[str, dict[str, str]] = field(default_factory=dict)
    discovered: dict[str, set[str]] = field(default_factory=dict)
    argocd: dict[str, dict[str, Any]] = field(default_factory=dict)  # action → run + outcome
    plugin: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    screens: dict[str, str] = field(default_factory=dict)  # tmux captures
    watch_exit: str = ""
    revisions: dict[str, str] = field(default_factory=dict)
    replacements: dict[str, str] = field(default_factory=dict)


class Terminal:
    """A private tmux server: one window running a command, read with capture-pane."""

    def __init__(self, directory: Path) -> None:
        self.socket = directory / "tmux.sock"
        self.config = directory / "tmux.conf"
        self.config.write_text("set -g remain-on-exit on\nset -g history-limit 5000\n")

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-S", str(self.socket), "-f", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout

    def start(self, command: list[str], env: dict[str, str]) -> None:
        """Run `command` under a shell that prints its exit status when it ends. (tmux's own
        #{pane_dead_status} is unreliable: tmux 3.3a sometimes leaves the exited process a
        zombie and never learns its status.) The shell's no-op INT trap keeps it alive across
        Ctrl-C while leaving the command Python's own Ctrl-C handling."""
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        script = f'trap : INT; env {exports} {shlex.join(command)}; echo "exited with status $?"'
        self.tmux(
            "new-session", "-d", "-s", "watch", "-x", "150", "-y", "50",
            f"sh -c {shlex.quote(script)}",
        )  # fmt: skip

    def screen(self, colors: bool = False) -> str:
        """The visible screen."""
        return self.tmux("capture-pane", "-p", *(["-e"] if colors else []), "-t", "watch")

    def everything(self) -> str:
        """Scrollback and screen."""
        return self.tmux("capture-pane", "-p", "-S", "-", "-E", "-", "-t", "watch")

    def exit_status(self) -> str | None:
        """The command's exit status once it has ended, else None."""
        found = re.search(r"exited with status (\d+)$", self.everything(), re.M)
        return found.group(1) if found else None

    def stop(self) -> None:
        subprocess.run(
            ["tmux", "-S", str(self.socket), "kill-server"], capture_output=True, timeout=30
        )


@pytest.fixture(scope="module")
def story(cluster, crds, model_uris, tmp_path_factory) -> Iterator[Story]:
    if not cluster.embedded:
        pytest.skip("needs kwok's loopback pod IPs for real model servers")
    from devcluster.podrunner import PodRunner

    kit.runner()  # built (or found in the cache) before anything starts
    tmp = tmp_path_factory.mktemp("operate")
    namespace = f"t-operate-{os.getpid()}"
    cluster.kubectl("create", "namespace", namespace)
    subprocess.run([str(REPO / "hack" / "ensure-tmux.sh")], timeout=300, check=False)
    told = Story(namespace=namespace)
    told.replacements = {
        str(Path(uri.removeprefix("file://")).parent): "/models" for uri in model_uris.values()
    }
    recorder = Recorder(cluster, namespace).start()
    runner = PodRunner(
        cluster.kubectl_path, cluster.kubeconfig, namespace, tmp / "pods",
        pythonpath=[str(Path(__file__).parent)],
    ).start()  # fmt: skip
    load = Traffic(runner, "fraud")
    operator = OperatorProcess(cluster.kubeconfig, namespace, tmp / "operator.log")
    terminal = Terminal(tmp) if shutil.which("tmux") else None
    try:
        _tell(told, cluster, namespace, model_uris, recorder, operator, load, terminal)
        yield told
    finally:
        if terminal is not None:
            terminal.stop()
        load.stop()
        operator.stop()
        runner.stop()
        recorder.stop()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        print(f"--- operator log ---\n{operator.log()[-6000:]}")


def _plugin_env(cluster) -> dict[str, str]:
    return {
        "KUBECONFIG": str(cluster.kubeconfig),
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "NO_COLOR": "",
    }


def _tell(
    told: Story,
    cluster,
    namespace: str,
    uris: dict[str, str],
    recorder: Recorder,
    operator: OperatorProcess,
    load: Traffic,
    terminal: Terminal | None,
) -> None:
    env = {**os.environ, **_plugin_env(cluster)}

    def plugin(key: str, *args: str, alias: str = "md") -> subprocess.CompletedProcess[str]:
        """`kubectl md ...` (or `kubectl modeldeploy ...`) through kubectl's plugin lookup."""
        done = subprocess.run(
            [str(cluster.kubectl_path), alias, *args, "-n", namespace],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        told.plugin[key] = done
        return done

    def live(name: str = "fraud") -> dict[str, Any]:
        return json.loads(cluster.kubectl("get", "md", name, "-n", namespace, "-o", "json").stdout)

    def argocd(action: str, done: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """Run an action as Argo CD does, send its patch as Argo CD's API server does (a merge
        patch), wait until the operator has acted on it."""
        before = live()
        run = kit.act(before, action)
        assert run["statusPatch"] is None, run
        cluster.kubectl(
            "patch", "md", "fraud", "-n", namespace, "--type", "merge", "-p",
            json.dumps(run["patch"]),
        )  # fmt: skip
        wait_until(lambda: done(live()), 60, f"the operator acting on Argo CD's {action}")
        told.argocd[action] = {"before": before, "run": run, "after": live()}
        return told.argocd[action]

    def capture(name: str, obj: dict[str, Any]) -> None:
        told.fixtures[name] = obj
        told.verdicts[name] = kit.health(obj)
        told.discovered[name] = kit.enabled(obj)

    # Applied before any operator runs: no status yet.
    mark = recorder.mark()
    apply(cluster, namespace, fraud(uris["v1"], "v1", ROLLOUT))
    apply(cluster, namespace, never_ready(uris["v1"]))
    capture("missing", recorder.wait_for("fraud", lambda o: True, "fraud recorded", mark))
    operator.start()
    load.start()

    ready = recorder.wait_for("fraud", lambda o: phase(o) == "Ready", "v1 Ready", timeout=90)
    capture("ready", ready)
    told.revisions["v1"] = ready["status"]["stableRevision"]
    capture(
        "pending",
        recorder.wait_for("first", lambda o: phase(o) == "Pending", "first deploy Pending"),
    )

    # A canary whose smoke inputs are missing: held, waiting for a person.
    mark = recorder.mark()
    apply(cluster, namespace, fraud(uris["v2"], "v2", ROLLOUT))
    held = recorder.wait_for(
        "fraud", lambda o: reason(o, "Stalled") == "SmokeInputsInvalid", "held", mark
    )
    capture("held-smoke-inputs", held)
    told.revisions["v2"] = held["status"]["canaryRevision"]
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "smoke"},
        "data": {"inputs.json": json.dumps(SMOKE)},
    }
    apply(cluster, namespace, config_map)

    def walking(obj: dict[str, Any]) -> bool:
        s = obj.get("status") or {}
        checks = {c["name"]: c for c in (s.get("analysis") or {}).get("checks", [])}
        rate = checks.get("errorRate", {})
        return (
            phase(obj) == "Progressing"
            and s.get("desiredWeight") == 25
            and rate.get("outcome") == "Passed"
            and (rate.get("samples") or 0) >= 5
        )

    capture("progressing-canary", recorder.wait_for("fraud", walking, "canary at 25%", mark))
    plugin("status", "status", "fraud")
    plugin("status-via-full-name", "status", "fraud", alias="modeldeploy")
    if terminal is not None:
        terminal.start(
            [str(cluster.kubectl_path), "md", "status", "fraud", "-n", namespace, "--watch",
             "--interval", "0.3"],
            _plugin_env(cluster),
        )  # fmt: skip
        wait_until(lambda: "Progressing" in terminal.screen(), 30, "the watch drawn")
        told.screens["progressing"] = terminal.screen()

    # Paused from Argo CD, resumed and paused from kubectl, resumed from Argo CD.
    paused = argocd("pause", lambda o: phase(o) == "Paused", "paused")
    capture("paused", paused["after"])
    if terminal is not None:
        wait_until(lambda: "॥ Paused" in terminal.screen(), 30, "the watch shows Paused")
        told.screens["paused"] = terminal.screen()
        told.screens["paused-colors"] = terminal.screen(colors=True)
    plugin("resume", "resume", "fraud")
    if terminal is not None:
        wait_until(lambda: "◌ Progressing" in terminal.screen(), 30, "the watch shows it resumed")
    plugin("pause", "pause", "fraud")
    argocd("resume", lambda o: reason(o, "Progressing") == "CanaryProgressing", "resumed")

    # Promoted from kubectl.
    plugin("promote", "promote", "fraud")
    if terminal is not None:
        wait_until(lambda: "✔ Ready" in terminal.screen(), 30, "the watch shows Ready")
        told.screens["promoted"] = terminal.screen()
        terminal.tmux("send-keys", "-t", "watch", "C-c")
        wait_until(lambda: terminal.exit_status() is not None, 30, "the watch ended by Ctrl-C")
        told.watch_exit = terminal.exit_status() or ""
        told.screens["everything"] = terminal.everything()

    # A canary answering 500: rolled back on its error rate.
    mark = recorder.mark()
    failing = fraud(uris["v1"], "v3", FAILING_ROLLOUT)
    failing["spec"]["model"].update(format="custom", customClass="fault_models:FailingModel")
    apply(cluster, namespace, failing)
    rolled_back = recorder.wait_for(
        "fraud",
        lambda o: phase(o) == "Degraded" and (o["status"].get("lastRollback") or {}).get("check") == "errorRate",
        "the failing canary rolled back", mark,
    )  # fmt: skip
    told.revisions["v3"] = rolled_back["status"]["lastRollback"]["revision"]
    rolling_back = recorder.find("fraud", lambda o: phase(o) == "RollingBack", mark, last=True)
    assert rolling_back is not None, "the RollingBack phase was written"
    capture("rolling-back", rolling_back)
    capture("rolled-back", rolled_back)
    plugin("status-rolled-back", "status", "fraud")
    load.stop()  # from here on, canaries are ended by people only

    # Retried and aborted from Argo CD, retried from kubectl, promoted from Argo CD.
    v3 = told.revisions["v3"]
    argocd("retry", lambda o: o["status"].get("canaryRevision") == v3, "retried")
    mark = recorder.mark()
    argocd("abort", lambda o: o["status"].get("canaryRevision") is None, "aborted")
    capture(
        "aborted",
        recorder.wait_for(
            "fraud",
            lambda o: phase(o) == "Degraded" and o["status"]["lastRollback"]["check"] == "userAbort",
            "aborted and drained", mark,
        ),
    )  # fmt: skip
    plugin("retry", "retry", "fraud")
    argocd(
        "promote",
        lambda o: o["status"].get("stableRevision") == v3 and phase(o) == "Ready",
        "promoted and scaled up",
    )

    # Aborted from kubectl: nothing to abort first, then a canary.
    plugin("abort-nothing", "abort", "fraud")
    apply(cluster, namespace, fraud(uris["v2"], "v4", FAILING_ROLLOUT))
    wait_until(lambda: status(cluster, namespace).get("canaryRevision"), 60, "a canary")
    told.revisions["v4"] = status(cluster, namespace)["canaryRevision"]
    plugin("abort", "abort", "fraud")
    plugin("history", "history", "fraud", alias="modeldeploy")

    capture(
        "degraded-first-deploy",
        recorder.wait_for(
            "first", lambda o: reason(o, "Degraded") == "ProgressDeadlineExceeded",
            "the first deploy past its deadline",
        ),
    )  # fmt: skip

    # A change the stopped operator has not seen.
    operator.stop()
    mark = recorder.mark()
    changed = fraud(uris["v2"], "v4", FAILING_ROLLOUT)
    changed["spec"]["scaling"] = {"replicas": 3}
    apply(cluster, namespace, changed)
    capture(
        "old-generation",
        recorder.wait_for(
            "fraud",
            lambda o: o["metadata"]["generation"] > o["status"]["observedGeneration"],
            "a generation ahead of status", mark,
        ),
    )  # fmt: skip

    if WRITE:
        write_fixtures(told)


def write_fixtures(told: Story) -> None:
    """manifests/argocd/testdata/<name>.yaml and health_test.yaml, from this run."""
    kit.TESTDATA.mkdir(parents=True, exist_ok=True)
    tests = []
    for name in kit.FIXTURES:
        obj = kit.sanitize(told.fixtures[name], told.namespace, told.replacements)
        (kit.TESTDATA / f"{name}.yaml").write_text(kit.dump(obj))
        tests.append(
            {"healthStatus": kit.expected_health(name, obj), "inputPath": f"testdata/{name}.yaml"}
        )
    header = (
        "# Argo CD's test format (resource_customizations/*/*/health_test.yaml): each fixture, a\n"
        "# ModelDeployment recorded from a real rollout (tests/integration/test_operate.py, `make\n"
        "# argocd-fixtures`), and the verdict health.lua must give it.\n"
    )
    kit.HEALTH_TESTS.write_text(header + kit.dump({"tests": tests}))
    screen = told.plugin["status"].stdout.replace(told.namespace, kit.FIXTURE_NAMESPACE)
    (kit.TESTDATA / "status-screen.txt").write_text(screen)


# --- Argo CD --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", kit.FIXTURES)
def test_each_situation_gets_its_health_verdict_and_message(story, name):
    obj = story.fixtures[name]
    assert story.verdicts[name] == kit.expected_health(name, obj), story.verdicts[name]
    assert story.discovered[name] == kit.ENABLED_ACTIONS[name]
    if WRITE:
        return
    committed = kit.load_fixture(name)
    assert kit.shape(committed) == kit.shape(obj), (
        f"testdata/{name}.yaml no longer shows what the operator writes in this situation: "
        "run make argocd-fixtures"
    )


def test_the_situations_say_what_a_person_needs(story):
    """The messages, spelled out for a few situations (the revisions are this run's)."""
    v = story.verdicts
    rev = story.revisions
    ns = story.namespace
    assert v["missing"]["message"].endswith(f"watching namespace {ns}?)")
    assert v["held-smoke-inputs"]["message"] == (
        f"waiting: ConfigMap {ns}/smoke (smokeTests.configMapRef) does not exist; the canary waits"
    )
    assert re.fullmatch(
        rf"canary {rev['v2']} at 25% → \d+(\.\d)?%, step 1/3",
        v["progressing-canary"]["message"],
    ), v["progressing-canary"]
    assert v["paused"]["message"].startswith(
        f"paused by annotation modeldeploy.io/paused: canary {rev['v2']} at 25%"
    )
    assert (
        v["rolled-back"]["message"] == f"rolled back: errorRate 100% vs 5% (revision {rev['v3']})"
    )
    assert (
        v["rolling-back"]["message"] == f"rolling back: errorRate 100% vs 5% (revision {rev['v3']})"
    )
    token = story.argocd["abort"]["run"]["patch"]["metadata"]["annotations"]["modeldeploy.io/abort"]
    assert v["aborted"]["message"] == (
        f"rolled back: aborted on request (annotation modeldeploy.io/abort={token}) "
        f"(revision {rev['v3']})"
    )
    assert "ProgressDeadlineExceeded" not in v["degraded-first-deploy"]["message"]
    assert v["degraded-first-deploy"]["message"].startswith("revision ")
    assert v["old-generation"]["status"] == "Progressing"


@pytest.mark.parametrize("action", kit.ACTIONS)
def test_argocd_actions_patch_one_annotation_and_the_operator_acts_on_it(story, action):
    record = story.argocd[action]
    patch = record["run"]["patch"]
    key = "modeldeploy.io/paused" if action in ("pause", "resume") else f"modeldeploy.io/{action}"
    # Only the annotation: no spec (Git's), no status (the operator's).
    assert list(patch) == ["metadata"] and list(patch["metadata"]) == ["annotations"], patch
    assert list(patch["metadata"]["annotations"]) == [key], patch
    value = patch["metadata"]["annotations"][key]
    after = record["after"]
    if action in kit.ONE_SHOT:
        assert kit.TOKEN.fullmatch(value), value
        # Acknowledged: the operator acted on this very request.
        assert after["status"]["actions"][action] == value
    elif action == "pause":
        assert value == "true" and phase(after) == "Paused"
    else:
        assert value is None  # removed
        assert "modeldeploy.io/paused" not in (after["metadata"].get("annotations") or {})
    outcome = {
        "promote": lambda: after["status"]["history"][0]["outcome"] == "Promoted",
        "abort": lambda: after["status"]["lastRollback"]["check"] == "userAbort",
        "retry": lambda: after["status"]["canaryRevision"] == story.revisions["v3"],
        "pause": lambda: reason(after, "Progressing") == "Paused",
        "resume": lambda: reason(after, "Progressing") == "CanaryProgressing",
    }[action]
    assert outcome(), after["status"]


def test_the_argocd_cm_is_accepted_by_the_api_server(cluster):
    """Merged into a real argocd-cm as the docs say (kubectl patch --type merge)."""
    cluster.kubectl("create", "namespace", "argocd", check=False)
    cluster.kubectl("create", "configmap", "argocd-cm", "-n", "argocd", check=False)
    try:
        cluster.kubectl(
            "patch", "configmap", "argocd-cm", "-n", "argocd", "--type", "merge",
            "--patch-file", str(kit.CM_FILE),
        )  # fmt: skip
        got = json.loads(
            cluster.kubectl("get", "configmap", "argocd-cm", "-n", "argocd", "-o", "json").stdout
        )
        assert kit.Customization.from_configmap(got) == kit.shipped()
    finally:
        cluster.kubectl("delete", "namespace", "argocd", "--wait=false", check=False)


# --- the kubectl plugin ---------------------------------------------------------------------


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args}: {done.stderr}"
    return done.stdout


def test_status_shows_revisions_pods_steps_weights_and_checks(story):
    screen = _ok(story.plugin["status"])
    v1, v2 = story.revisions["v1"], story.revisions["v2"]
    obj = story.fixtures["progressing-canary"]
    lines = screen.splitlines()
    assert lines[0] == "Name:          fraud"
    assert f"Namespace:     {story.namespace}" in lines
    assert "Status:        ◌ Progressing" in lines
    assert re.search(
        r"^  Step:\s+1/3  \(25% → 50% → 100%, 300s each; \d+s at this step\)$", screen, re.M
    )
    assert re.search(r"^  Weight:\s+25% desired → \d+(\.\d)?% effective$", screen, re.M)
    assert f"Revisions:     stable {v1} (v1); canary {v2} (v2), cause Spec" in lines
    assert re.search(r"^  ✔ modelMetadata\s*$", screen, re.M)
    assert re.search(r"^  ✔ smokeTests\s+1 sample$", screen, re.M), screen  # one smoke request
    assert re.search(r"^  ✔ errorRate\s+0% vs 5%, \d+ samples$", screen, re.M), screen
    assert "Hold:          none" in lines and "Last rollback: none" in lines
    # The tree: each revision, its Deployment and its ready pods.
    assert re.search(rf"^├──# revision:{v2} \(v2\)\s+canary 25% → \d+(\.\d)?%$", screen, re.M)
    assert re.search(
        rf"^│  └──⧉ fraud-{v2}\s+Deployment\s+✔ Available\s+\S+\s+1/1 ready$", screen, re.M
    )
    assert re.search(rf"^└──# revision:{v1} \(v1\)\s+stable$", screen, re.M)
    assert (
        len(re.findall(rf"□ fraud-{v1}-\S+\s+Pod\s+✔ Running\s+\S+\s+ready:1/1$", screen, re.M))
        == 2
    )
    assert obj["status"]["readyReplicas"] == 3
    # The same screen under the plugin's full name.
    assert _ok(story.plugin["status-via-full-name"]).splitlines()[:3] == lines[:3]


def test_status_names_the_last_rollback(story):
    screen = _ok(story.plugin["status-rolled-back"])
    v3 = story.revisions["v3"]
    assert "Status:        ✖ Degraded" in screen
    assert re.search(
        rf"^Last rollback: ✖ {v3} \(v3\), \d+s ago: errorRate 100% vs 5%$", screen, re.M
    ), screen
    assert re.search(r"^\s+\d+ samples over 1s; detected \d+s after first traffic", screen, re.M)
    assert re.search(rf"^Hold:\s+⚠ RevisionRejected: revision {v3} was rolled back", screen, re.M)
    assert re.search(rf"^└──# revision:{v3} \(v3\)\s+rejected$", screen, re.M)


def test_requests_wait_for_the_operators_acknowledgement(story):
    rev = story.revisions
    assert _ok(story.plugin["resume"]).startswith(f"resumed: canary {rev['v2']} at 25% (step 1/3)")
    assert _ok(story.plugin["pause"]).startswith(f"paused: canary {rev['v2']} at 25% (step 1/3)")
    promoted = _ok(story.plugin["promote"])
    assert re.fullmatch(
        rf"modeldeploy.io/promote=\S+ acknowledged: revision {rev['v2']} is stable \(promoted "
        rf"over {rev['v1']} on request, skipping 2 of 3 steps\)\n",
        promoted,
    ), promoted
    retried = _ok(story.plugin["retry"])
    assert re.fullmatch(
        r"modeldeploy.io/retry=\S+ acknowledged: rejected revisions may be tried again; "
        rf"{rev['v3']} starts as a canary\n",
        retried,
    ), retried
    aborted = _ok(story.plugin["abort"])
    assert re.fullmatch(
        rf"modeldeploy.io/abort=\S+ acknowledged: revision {rev['v4']} rolled back, traffic on "
        rf"stable {rev['v3']} \(v3\)\n",
        aborted,
    ), aborted


def test_a_request_with_nothing_to_act_on_is_refused_without_writing(story):
    done = story.plugin["abort-nothing"]
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (
        f"error: {story.namespace}/fraud has no canary to abort (phase Ready, stable "
        f"{story.revisions['v3']} (v3))\n"
    )


def test_history_lists_finished_rollouts_newest_first(story):
    rev = story.revisions
    lines = _ok(story.plugin["history"]).splitlines()
    assert lines[0] == f"stable: {rev['v3']} (v3)"
    rows = [line.split()[:3] for line in lines[lines.index("") + 2 :]]
    assert rows[:4] == [
        [rev["v4"], "v4", "RolledBack"],
        [rev["v3"], "v3", "Promoted"],
        [rev["v3"], "v3", "RolledBack"],
        [rev["v3"], "v3", "RolledBack"],
    ], lines
    assert [rev["v2"], "v2", "Promoted"] in rows


def test_watch_redraws_in_place_in_a_real_terminal(story):
    if not story.screens:
        pytest.skip("tmux is not installed (hack/ensure-tmux.sh could not install it)")
    # Each state was drawn on the same screen, and the scrollback holds a single frame.
    assert "Status:        ◌ Progressing" in story.screens["progressing"]
    assert "Status:        ॥ Paused" in story.screens["paused"]
    assert "⚠ Paused" not in story.screens["paused"]
    assert re.search(
        r"^Hold:\s+॥ paused by annotation modeldeploy.io/paused$", story.screens["paused"], re.M
    )
    assert "Status:        ✔ Ready" in story.screens["promoted"]
    everything = story.screens["everything"]
    assert everything.count("Name:          fraud") == 1, everything
    assert "Traceback" not in everything
    # In colour on a terminal (capture-pane -e keeps the escapes): yellow for paused.
    assert "\x1b[33m॥ Paused" in story.screens["paused-colors"]
    # Ctrl-C ends it cleanly, the last frame left on the screen.
    assert story.watch_exit == "0", everything[-2000:]


def test_kubectl_lists_the_plugin_under_both_names(cluster):
    env = {**os.environ, **_plugin_env(cluster)}
    done = subprocess.run(
        [str(cluster.kubectl_path), "plugin", "list", "--name-only"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    names = set(done.stdout.split())
    assert {"kubectl-modeldeploy", "kubectl-md"} <= names, done
