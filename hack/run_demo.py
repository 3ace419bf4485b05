"""`make run`: the operator with a demo model, on $KUBECONFIG if set, else on the embedded control
plane (started if needed; `make cluster-down` stops it).

On the embedded control plane, kwok's pods get real model servers (devcluster.podrunner) on their
loopback pod IPs, so the demo serves real predictions; the demo model is trained here, a small
scikit-learn classifier on the iris data set that ships with scikit-learn.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STATE = REPO / ".devcluster"
NAMESPACE = "models"


def main() -> int:
    from devcluster import ensure_binaries, run_kubectl
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

    def kubectl(*args: str, input: str | None = None) -> str:
        return run_kubectl(binaries.kubectl, kubeconfig, *args, input=input).stdout

    crd = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    kubectl(
        "wait",
        "--for=condition=Established",
        "crd/modeldeployments.modeldeploy.io",
        "--timeout=60s",
    )
    kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        ),
    )

    model_uri = "s3://models/iris/v1/model.joblib"
    runner = None
    if not external:
        import joblib
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression

        models = STATE / "models"
        models.mkdir(parents=True, exist_ok=True)
        x, y = load_iris(return_X_y=True)
        joblib.dump(LogisticRegression(max_iter=500).fit(x, y), models / "iris-v1.joblib")
        model_uri = f"file://{models / 'iris-v1.joblib'}"
        runner = PodRunner(binaries.kubectl, kubeconfig, NAMESPACE, STATE / "pods").start()

    demo = {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": NAMESPACE},
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
    operator = subprocess.Popen([sys.executable, "-m", "modeldeploy"], env=env)
    print(
        f"""
The operator runs in the foreground (Ctrl-C stops it). In another shell:
  export KUBECONFIG={kubeconfig} PATH="{binaries.bin_dir}:$PATH"
  kubectl get md -n {NAMESPACE} -w          # phase, ready pods, version, revision, canary weight
  kubectl describe md -n {NAMESPACE} iris   # conditions and Events
  curl -s localhost:9090/metrics | grep modeldeploy_operator
Roll out a new version as a canary: change spec.model (e.g. version: v2) with kubectl edit.
"""
    )
    try:
        if runner is not None:
            print_demo_request(runner)
        return operator.wait()
    except KeyboardInterrupt:
        operator.terminate()
        operator.wait(timeout=20)
        return 0
    finally:
        if runner is not None:
            runner.stop()


DEMO_BODY = (
    '{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP64","data":[5.1,3.5,1.4,0.2]}]}'
)


def print_demo_request(runner) -> None:  # type: ignore[no-untyped-def]
    from devcluster import wait_until

    wait_until(lambda: bool(runner.ready_ips()), 120, "a demo pod serving")
    ip = runner.ready_ips()[0]
    print(f"A demo pod serves at {ip}:8080 (a loopback pod IP):")
    print(f"  curl -s {ip}:8080/v2/models/iris/infer \\")
    print(f"    -H 'Content-Type: application/json' -d '{DEMO_BODY}'\n")


if __name__ == "__main__":
    sys.exit(main())
