"""Give kwok's fake pods a real model server: one `python -m modelserver` process per pod,
bound to the pod's IP (kwok hands out loopback IPs here), configured from the pod's own env.

With it, everything the operator does over the network — model gates, metric scrapes — talks to
a real server on the address Kubernetes reports, exactly as it would in a cluster. It also plays
the kubelet's readiness prober: a pod is Ready only while its server answers /v2/health/ready, so
a Service (and the operator) sees a pod that is still loading its model as not ready. Tests use
it for canaries whose model answers 5xx or slowly; `make run` uses it for the demo.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .cluster import FAULT_LABEL, run_kubectl
from .processes import kill_when_parent_dies

SERVER_COMPONENT_SELECTOR = "app.kubernetes.io/component=model-server"


@dataclass
class PodRunner:
    """Watch pods in `namespace` (by polling) and keep one server process per running pod."""

    kubectl: Path
    kubeconfig: Path
    namespace: str
    workdir: Path
    selector: str = SERVER_COMPONENT_SELECTOR
    pythonpath: list[str] = field(default_factory=list)
    poll_seconds: float = 0.5
    # Called after each sync with [(host:port, labels)] of the ready pods (e.g. a Prometheus
    # server's file_sd writer), as service discovery would see them.
    on_targets: Callable[[list[tuple[str, dict[str, str]]]], None] | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    pod_ips: dict[str, str] = field(default_factory=dict)
    ready: dict[str, bool] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> PodRunner:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._loop, name="podrunner", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling and shut every server down gracefully (SIGTERM, then SIGKILL)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def log_path(self, pod: str) -> Path:
        return self.workdir / f"{pod}.log"

    def _loop(self) -> None:
        """Runs in the thread that spawns the servers, and stops them itself on the way out: the
        kernel kills them when this thread ends (PR_SET_PDEATHSIG), so that must come last."""
        while not self._stop.wait(self.poll_seconds):
            try:
                self.sync()
            except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired):
                continue  # the API server may be busy; the next poll tries again
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name in list(self.processes):
            self._terminate(name)

    def sync(self) -> None:
        """Start a server for each new running pod, stop those whose pod is gone."""
        result = run_kubectl(
            self.kubectl, self.kubeconfig, "get", "pods", "-n", self.namespace,
            "-l", self.selector, "-o", "json", timeout=20,
        )  # fmt: skip
        live = {}
        for pod in json.loads(result.stdout)["items"]:
            ip = pod.get("status", {}).get("podIP")
            faulty = FAULT_LABEL in pod["metadata"].get("labels", {})  # kwok plays this one
            running = pod["status"].get("phase") == "Running"
            if ip and running and not faulty and not pod["metadata"].get("deletionTimestamp"):
                live[pod["metadata"]["name"]] = pod
        for name in set(self.processes) - set(live):
            self._terminate(name)
        for name, pod in live.items():
            if name not in self.processes:
                self._spawn(name, pod)
                self._set_ready(name, False)
            elif self.ready.get(name) != self._probe(name, pod):
                self._set_ready(name, not self.ready.get(name))
        if self.on_targets is not None:
            self.on_targets(
                [
                    (f"{self.pod_ips[name]}:{_port(pod)}", {"pod": name, **_revision(pod)})
                    for name, pod in live.items()
                    if self.ready.get(name)
                ]
            )

    def ready_ips(self) -> list[str]:
        """IPs of pods whose server is ready: where a Service would send requests."""
        return [ip for name, ip in list(self.pod_ips.items()) if self.ready.get(name)]

    def _probe(self, name: str, pod: dict) -> bool:
        if self.processes[name].poll() is not None:
            return False
        url = f"http://{self.pod_ips[name]}:{_port(pod)}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def _set_ready(self, name: str, ready: bool) -> None:
        value = "True" if ready else "False"
        patch = {
            "status": {
                "conditions": [
                    {"type": "Ready", "status": value},
                    {"type": "ContainersReady", "status": value},
                ]
            }
        }
        run_kubectl(
            self.kubectl, self.kubeconfig, "patch", "pod", name, "-n", self.namespace,
            "--subresource=status", "-p", json.dumps(patch), check=False, timeout=20,
        )  # fmt: skip
        self.ready[name] = ready

    def _spawn(self, name: str, pod: dict) -> None:
        container = pod["spec"]["containers"][0]
        env = {e["name"]: e.get("value", "") for e in container.get("env", []) if "value" in e}
        env["MODELSERVER_HOST"] = pod["status"]["podIP"]
        env["MODELSERVER_CACHE_DIR"] = str(self.workdir / f"{name}-cache")
        env.pop("MODELSERVER_AUTH_TOKEN_FILE", None)  # the Secret is not mounted here
        python_path = os.pathsep.join([*self.pythonpath, os.environ.get("PYTHONPATH", "")])
        full_env = {**os.environ, **env, "PYTHONPATH": python_path}
        self.pod_ips[name] = env["MODELSERVER_HOST"]
        with self.log_path(name).open("ab") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "modelserver"],
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=kill_when_parent_dies,  # no server outlives the runner's process
            )

    def _terminate(self, name: str) -> None:
        process = self.processes.pop(name)
        self.pod_ips.pop(name, None)
        self.ready.pop(name, None)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _port(pod: dict) -> int:
    return int(pod["spec"]["containers"][0].get("ports", [{}])[0].get("containerPort", 8080))


def _revision(pod: dict) -> dict[str, str]:
    revision = pod["metadata"].get("labels", {}).get("modeldeploy.io/revision")
    return {"revision": revision} if revision else {}
