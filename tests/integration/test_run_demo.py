"""`make run` (hack/run_demo.py) against the session's embedded control plane, named by KUBECONFIG
as after `make cluster-up`: its pods get real model servers, and however it is stopped — Ctrl-C,
Ctrl-C twice, `kill -9` of make or of the demo itself — no process of it is left.

The runs share one namespace, so only the first waits for pods to be created.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port, kget
from devcluster import wait_until

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
SERVING = re.compile(r"A demo pod serves at ([0-9.]+):8080")
STOPPING = "Ctrl-C again kills them at once"
IRIS_SETOSA = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture(scope="module")
def demo_namespace(cluster, crds) -> Iterator[str]:
    if not cluster.embedded:
        pytest.skip("needs kwok's loopback pod IPs")
    name = f"demo-{uuid.uuid4().hex[:8]}"
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
    # The demo's model and pod logs (hack/run_demo.py keeps them in the repository's state dir).
    workdir = REPO / ".devcluster" / "demo" / name
    shutil.rmtree(workdir, ignore_errors=True)
    with contextlib.suppress(OSError):  # only if empty: a `make run` may use it
        workdir.parent.rmdir()


def proc_table() -> dict[int, tuple[int, str, str]]:
    """{pid: (parent pid, start time, state)} of every process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            table[int(entry.name)] = (int(fields[1]), fields[19], fields[0])
    return table


class Demo:
    """The demo as a subprocess in its own session (the terminal's foreground process group)."""

    def __init__(self, cluster, namespace: str, log: Path, *, via_make: bool) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
        env.update(
            KUBECONFIG=str(cluster.kubeconfig),
            MODELDEPLOY_DEMO_NAMESPACE=namespace,
            # The operator keeps to the demo's namespace, and its ports are free ones.
            MODELDEPLOY_NAMESPACES=namespace,
            MODELDEPLOY_METRICS_PORT=str(free_port()),
            MODELDEPLOY_HEALTH_PORT=str(free_port()),
        )
        if via_make:
            if shutil.which("make") is None:
                pytest.skip("no make")
            argv = ["make", "--no-print-directory", "-o", "venv", "run", f"PY={sys.executable}"]
        else:
            argv = [sys.executable, str(REPO / "hack" / "run_demo.py")]
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.children: dict[int, str] = {}

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def descendants(self) -> dict[int, str]:
        table = proc_table()
        found, frontier = {}, [self.process.pid]
        while frontier:
            parent = frontier.pop()
            for pid, (ppid, start, _) in table.items():
                if ppid == parent and pid not in found:
                    found[pid] = start
                    frontier.append(pid)
        return found

    def started(self, *, serving: bool = False) -> None:
        """Wait for the operator and a model server per pod (with `serving`: and for the pod IP
        the demo prints once one is ready), and note every process of the demo."""

        def up() -> bool:
            assert self.process.poll() is None, self.output()[-3000:]
            self.children = self.descendants()
            cmdlines = [cmdline(pid) for pid in self.children]
            return (
                sum("-m modelserver" in c for c in cmdlines) == 2
                and any("-m modeldeploy" in c for c in cmdlines)
                and (not serving or bool(SERVING.search(self.output())))
            )

        wait_until(up, 120, "the demo's operator and model servers")

    def served_ip(self) -> str:
        match = SERVING.search(self.output())
        assert match, self.output()[-3000:]
        return match.group(1)

    def left_behind(self) -> list[str]:
        """Processes of the demo that still run (the same PID and start time, not a zombie)."""
        table = proc_table()
        return [
            f"{pid} {cmdline(pid)}"
            for pid, start in self.children.items()
            if pid in table and table[pid][1] == start and table[pid][2] != "Z"
        ]

    def demo_pid(self) -> int:
        """The demo's own process: make's child (exec'd by the recipe's shell), or ours."""
        [pid] = [p for p in self.children if "hack/run_demo.py" in cmdline(p)] or [self.process.pid]
        return pid

    def signal_group(self, sig: int) -> None:
        """What a terminal does on Ctrl-C: the signal to every process of the foreground group."""
        os.killpg(self.process.pid, sig)

    def exits_within(self, seconds: float) -> int:
        try:
            return self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {seconds:.0f}s later:\n{self.output()[-3000:]}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in self.left_behind():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid.split()[0]), signal.SIGKILL)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.fixture
def demo(cluster, demo_namespace, tmp_path) -> Iterator:
    started: list[Demo] = []

    def start(*, via_make: bool = False) -> Demo:
        started.append(Demo(cluster, demo_namespace, tmp_path / "demo.log", via_make=via_make))
        return started[-1]

    yield start
    for one in started:
        one.kill()
        print(f"--- demo output ---\n{one.output()[-6000:]}")


def test_make_run_serves_real_predictions_and_stops_on_ctrl_c(
    cluster, demo_namespace, demo
) -> None:
    run = demo(via_make=True)
    run.started(serving=True)
    ip = run.served_ip()
    pods = kget(cluster, "pods", "-n", demo_namespace)["items"]
    assert ip in {pod["status"].get("podIP") for pod in pods}
    body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": IRIS_SETOSA}]}  # fmt: skip
    request = urllib.request.Request(
        f"http://{ip}:8080/v2/models/iris/infer", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    [output] = answer["outputs"]
    assert output["name"] == "predict_proba" and output["shape"] == [1, 3]
    assert max(range(3), key=lambda i: output["data"][i]) == 0  # setosa

    # Ctrl-C reaches the demo alone (a terminal would also signal every child): it stops its
    # children itself, without waiting for the servers' drain (5 s, for a Service to catch up).
    os.kill(run.demo_pid(), signal.SIGINT)
    assert run.exits_within(5) == 0
    assert not run.left_behind()


def test_second_ctrl_c_kills_at_once(demo) -> None:
    run = demo()
    run.started()
    wait_until(lambda: "Initial authentication has finished" in run.output(), 60, "operator up")
    # An operator that does not stop (it handles SIGTERM by now): the first Ctrl-C waits for it.
    [operator] = [pid for pid in run.children if "-m modeldeploy" in cmdline(pid)]
    os.kill(operator, signal.SIGSTOP)
    run.signal_group(signal.SIGINT)
    wait_until(lambda: STOPPING in run.output(), 10, "the demo to start stopping")
    run.signal_group(signal.SIGINT)
    assert run.exits_within(5) == 128 + signal.SIGINT  # not 0: killed, not stopped gracefully
    wait_until(lambda: not run.left_behind(), 5, "no process of the demo left")


@pytest.mark.parametrize("killed", ["make", "demo"])
def test_kill_9_leaves_no_process_behind(demo, killed: str) -> None:
    run = demo(via_make=killed == "make")
    run.started()
    run.process.kill()
    run.process.wait()
    wait_until(lambda: not run.left_behind(), 15, f"no process left after kill -9 of the {killed}")
