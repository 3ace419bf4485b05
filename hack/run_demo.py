"""`make run`: the operator with a demo model, on $KUBECONFIG if set, else on the embedded control
plane (started if needed; `make cluster-down` stops it).

On an embedded control plane — the one started here, or any whose kubeconfig $KUBECONFIG names
(`make cluster-up`, a test session's) — kwok's pods get real model servers (devcluster.podrunner)
on their loopback pod IPs, so the demo serves real predictions; the demo model is trained here, a
small scikit-learn classifier on the iris data set that ships with scikit-learn. `--pod-runner
on|off` (or MODELDEPLOY_DEMO_POD_RUNNER) overrides that detection.

Stopping: the first SIGINT (Ctrl-C), SIGTERM or SIGHUP stops the operator and the model servers
and waits a few seconds for them; a second one kills them at once. Every child is also killed by
the kernel if this process dies (PR_SET_PDEATHSIG), and this process stops when its own parent
(`make`) dies.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STATE = REPO / ".devcluster"
DEFAULT_NAMESPACE = "models"
POD_RUNNER_MODES = ("auto", "on", "off")
PR_SET_PDEATHSIG = 1
# How long the first signal waits for the operator and the servers before killing them.
STOP_GRACE_SECONDS = 5.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="run_demo.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--namespace",
        default=os.environ.get("MODELDEPLOY_DEMO_NAMESPACE") or DEFAULT_NAMESPACE,
        help="namespace of the demo ModelDeployment (env MODELDEPLOY_DEMO_NAMESPACE; "
        f"default {DEFAULT_NAMESPACE})",
    )
    parser.add_argument(
        "--pod-runner",
        default=os.environ.get("MODELDEPLOY_DEMO_POD_RUNNER") or "auto",
        metavar="{auto,on,off}",
        help="start a real model server behind each demo pod: auto (on an embedded control "
        "plane), on, off (env MODELDEPLOY_DEMO_POD_RUNNER; default auto)",
    )
    args = parser.parse_args(argv)
    if args.pod_runner not in POD_RUNNER_MODES:
        parser.error(f"--pod-runner must be one of {', '.join(POD_RUNNER_MODES)}")
    return args


def is_embedded(kubeconfig: Path) -> bool:
    """Whether `kubeconfig` is the admin kubeconfig of a running embedded control plane: devcluster
    writes it into the cluster's state directory, beside the PID files of the cluster's processes
    (`<dir>/kubeconfig`, `<dir>/pids/kube-apiserver.pid`): `make cluster-up`'s, `make run`'s or a
    test session's."""
    from devcluster.processes import recorded_processes

    try:
        path = kubeconfig.resolve(strict=True)
    except OSError:
        return False
    if path.name != "kubeconfig" or not (path.parent / "pids").is_dir():
        return False
    return any(process.name == "kube-apiserver" for process in recorded_processes(path.parent))


LIBC = ctypes.CDLL("libc.so.6", use_errno=True)


def die_with_parent(sig: int, parent: int) -> None:
    """Ask the kernel for `sig` when the parent of the calling process (for a child: between fork
    and exec) exits; send it at once if `parent` is already gone."""
    LIBC.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)


class Children:
    """The operator and the pod runner, and how to stop them: the first stop signal raises
    KeyboardInterrupt in the main thread, which stops them gracefully (`stop`); a second one, or
    any once stopping has begun, kills them and exits."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.operator: subprocess.Popen[bytes] | None = None
        self.runner: Any = None  # devcluster.podrunner.PodRunner
        self.stopping = False

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self.pid:  # a child between fork and exec (preexec_fn) just ends
            os._exit(128 + signum)
        if not self.stopping:
            self.stopping = True
            raise KeyboardInterrupt(signal.Signals(signum).name)
        self.kill()
        os._exit(128 + signum)

    def servers(self) -> list[subprocess.Popen[bytes]]:
        return list(self.runner.processes.values()) if self.runner is not None else []

    def stop(self) -> None:
        """SIGTERM to the operator and the servers; SIGKILL to whatever still runs after
        STOP_GRACE_SECONDS."""
        self.stopping = True
        operator = self.operator
        if operator is not None and operator.poll() is None:
            operator.send_signal(signal.SIGTERM)
        if self.runner is not None:
            # A model server keeps serving, not ready, for a few seconds after its first signal
            # (the pods' MODELSERVER_SHUTDOWN_DELAY) so that a Service can stop routing to it; a
            # second signal ends it at once. Nothing routes to the demo's servers: the runner's
            # SIGTERM comes second.
            for server in self.servers():
                with contextlib.suppress(ProcessLookupError):
                    server.send_signal(signal.SIGINT)
            self.runner.stop()
        if operator is not None:
            try:
                operator.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                operator.kill()
                operator.wait()

    def kill(self) -> None:
        for process in [self.operator, *self.servers()]:
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    namespace: str = args.namespace
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    children = Children()
    children.install_signal_handlers()
    # `make` (or whatever started this) killed, even by SIGKILL: stop as on Ctrl-C.
    die_with_parent(signal.SIGTERM, os.getppid())
    try:
        return run(namespace, args.pod_runner, children)
    except KeyboardInterrupt:
        print("\nStopping the operator and the model servers (Ctrl-C again kills them at once)")
        return 0
    finally:
        children.stop()


def run(namespace: str, pod_runner: str, children: Children) -> int:
    from devcluster import ensure_binaries, run_kubectl, wait_until
    from devcluster.podrunner import PodRunner

    binaries = ensure_binaries()
    external = os.environ.get("KUBECONFIG")
    if external:
        kubeconfig = Path(external)
        print(f"Using the cluster in KUBECONFIG={kubeconfig}")
    else:
        kubeconfig = STATE / "kubeconfig"
        status = subprocess.run([sys.executable, "-m", "devcluster", "status", "--dir", str(STATE)],
                                capture_output=True, check=False)  # fmt: skip
        if status.returncode != 0:
            subprocess.run(
                [sys.executable, "-m", "devcluster", "up", "--dir", str(STATE)], check=True
            )
        print(f"Using the embedded control plane (KUBECONFIG={kubeconfig})")
    local = pod_runner == "on" or (pod_runner == "auto" and is_embedded(kubeconfig))
    if local:
        print("Real model servers will run behind the demo's pods (on their loopback pod IPs)")

    def kubectl(*args: str, input: str | None = None) -> str:
        return run_kubectl(binaries.kubectl, kubeconfig, *args, input=input).stdout

    crd = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    # Not `kubectl wait`: it fails instead of waiting while a new CRD has no conditions yet.
    established = "jsonpath={.status.conditions[?(@.type=='Established')].status}"
    wait_until(
        lambda: kubectl("get", "crd/modeldeployments.modeldeploy.io", "-o", established) == "True",
        60,
        "the ModelDeployment CRD Established",
    )
    kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        ),
    )

    model_uri = "s3://models/iris/v1/model.joblib"
    if local:
        import joblib
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression

        # Not beside a test session's kubeconfig in /tmp: the pod runner maps paths under a pod's
        # mounts (its /tmp emptyDir among them) into the pod's volumes, as a container sees them.
        workdir = STATE / "demo" / namespace
        workdir.mkdir(parents=True, exist_ok=True)
        x, y = load_iris(return_X_y=True)
        joblib.dump(LogisticRegression(max_iter=500).fit(x, y), workdir / "iris-v1.joblib")
        model_uri = f"file://{workdir / 'iris-v1.joblib'}"
        children.runner = PodRunner(binaries.kubectl, kubeconfig, namespace, workdir / "pods")
        children.runner.start()

    demo = {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": namespace},
        "spec": {
            "model": {"uri": model_uri, "format": "sklearn", "version": "v1", "predictProba": True},
            "scaling": {"replicas": 2},
            # A demo gets no traffic: minRequests 0 lets the canary be judged on what it has.
            "rollout": {
                "steps": [25, 50, 100],
                "stepDuration": "20s",
                "analysis": {"interval": "10s", "minRequests": 0},
            },
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(demo))

    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "MODELDEPLOY_LOG_FORMAT": os.environ.get("MODELDEPLOY_LOG_FORMAT", "text"),
    }
    demo_pid = os.getpid()
    children.operator = subprocess.Popen(
        [sys.executable, "-m", "modeldeploy"],
        env=env,
        # Forked by the main thread, which lives as long as this process.
        preexec_fn=lambda: die_with_parent(signal.SIGKILL, demo_pid),
    )
    print(
        f"""
The operator runs in the foreground (Ctrl-C stops it). In another shell:
  export KUBECONFIG={kubeconfig} PATH="{binaries.bin_dir}:$PATH"
  kubectl get md -n {namespace} -w          # phase, ready pods, version, revision, canary weight
  kubectl describe md -n {namespace} iris   # conditions and Events
  curl -s localhost:9090/metrics | grep modeldeploy_operator
Roll out a new version as a canary: change spec.model (e.g. version: v2) with kubectl edit.
"""
    )
    if children.runner is not None:
        print_demo_request(children.runner)
    return children.operator.wait()


DEMO_BODY = (
    '{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP64","data":[5.1,3.5,1.4,0.2]}]}'
)


def print_demo_request(runner: Any) -> None:
    from devcluster import wait_until

    wait_until(lambda: bool(runner.ready_ips()), 120, "a demo pod serving")
    ip = runner.ready_ips()[0]
    print(f"A demo pod serves at {ip}:8080 (a loopback pod IP):")
    print(f"  curl -s {ip}:8080/v2/models/iris/infer \\")
    print(f"    -H 'Content-Type: application/json' -d '{DEMO_BODY}'\n")


if __name__ == "__main__":
    sys.exit(main())
