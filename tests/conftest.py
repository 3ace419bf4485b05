"""Session-wide fixtures: a real Kubernetes API server for every test that asks for `cluster`.

With KUBECONFIG set (a kind cluster, say) the tests use that cluster. Otherwise they start the
embedded control plane (operator/devcluster) once per session, building its binaries first if the
cache is cold, and stop it when the session ends — also on Ctrl-C or SIGTERM, and the kernel ends it
if pytest itself is killed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
_session_notes: list[str] = []


@dataclass
class ClusterHandle:
    """What a test needs of a cluster: its kubeconfig, kubectl and an API client."""

    kubeconfig: Path
    kubectl_path: Path
    embedded: bool
    local: object | None = field(default=None, repr=False)  # devcluster.LocalCluster when embedded

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        from devcluster import run_kubectl

        return run_kubectl(
            self.kubectl_path, self.kubeconfig, *args, input=input, check=check, timeout=timeout
        )

    def api_client(self):  # type: ignore[no-untyped-def]
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))


def worker_index() -> int | None:
    """This process's pytest-xdist worker number (gw0 → 0), None when tests run in one process.

    `make test` runs two workers (`TEST_WORKERS`), each with a control plane of its own: the
    suite mostly waits (analysis intervals, step durations, pods starting), and two clusters
    wait side by side in about half the time.
    """
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else None


# Tests that need the real node (one per machine: it owns host network state) or build the
# images (one buildah store) run on one worker, one after another; every other file's tests run
# on one worker, so a module fixture (an installed venv, a set of objects every test reads) is
# made once. By path, because the scheduler sees only node ids.
ONE_WORKER_GROUP = "real-node-and-images"
ONE_WORKER_FILES = ("tests/images/", "tests/integration/test_real_node")


def scheduling_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: its file, or the real-node-and-images group."""
    path = nodeid.split("::", 1)[0]
    return ONE_WORKER_GROUP if path.startswith(ONE_WORKER_FILES) else path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A new file that starts the real node must join the group, or two workers would each
    start one: say so at collection rather than break the host's network state."""
    strays = sorted(
        {
            item.nodeid.split("::", 1)[0]
            for item in items
            if "real_node" in getattr(item, "fixturenames", ())
            and scheduling_unit(item.nodeid) != ONE_WORKER_GROUP
        }
    )
    if strays:
        raise pytest.UsageError(
            f"{', '.join(strays)} use the real_node fixture: add them to ONE_WORKER_FILES "
            "in tests/conftest.py"
        )


@pytest.hookimpl(optionalhook=True)  # an xdist hook: without xdist, never called
def pytest_xdist_make_scheduler(config, log):  # type: ignore[no-untyped-def]
    """xdist's load-by-scope scheduler with `scheduling_unit` as the scope (its own loadgroup
    reads marks through a node id rewrite that pytest 9.2 no longer honours)."""
    from xdist.scheduler import LoadScopeScheduling

    # Units in collection order, not biggest first: the slow ones (the real node, then the
    # integration files) start first and the many quick unit files fill the gaps at the end.
    config.option.loadscopereorder = False

    class ByFileAndNode(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scheduling_unit(nodeid)

    return ByFileAndNode(config, log)


def pytest_sessionfinish(session: pytest.Session) -> None:
    # A worker's session notes (control plane and node timings) go to the controller's summary.
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["session_notes"] = list(_session_notes)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: without xdist, never called
def pytest_testnodedown(node, error) -> None:  # type: ignore[no-untyped-def]
    worker = node.gateway.id if getattr(node, "gateway", None) else "worker"
    for note in getattr(node, "workeroutput", {}).get("session_notes", []):
        _session_notes.append(f"[{worker}] {note}")


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # SIGTERM (CI time-outs, `kill`) becomes Ctrl-C, so pytest runs the fixtures' teardown.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    for note in _session_notes:
        terminalreporter.write_line(note)


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterHandle]:
    external = os.environ.get("KUBECONFIG")
    if external:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            pytest.fail("KUBECONFIG is set but no kubectl is on PATH")
        yield ClusterHandle(Path(external), Path(kubectl), embedded=False)
        return

    from devcluster import LocalCluster, ensure_binaries

    binaries = ensure_binaries()
    directory = Path(tempfile.mkdtemp(prefix="modeldeploy-test-cluster-"))
    local = LocalCluster(directory, binaries, die_with_parent=True, pod_cidr_slot=worker_index())
    local.start()
    t = local.timings
    _session_notes.append(
        f"embedded control plane: /readyz after {t['apiserver_ready']:.1f}s, "
        f"nodes Ready after {t['nodes_ready']:.1f}s ({directory})"
    )
    try:
        yield ClusterHandle(local.kubeconfig, binaries.kubectl, embedded=True, local=local)
    finally:
        local.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def namespace(cluster: ClusterHandle) -> Iterator[str]:
    """A fresh namespace for one test, deleted (without waiting) afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def real_node(cluster: ClusterHandle) -> Iterator[object]:
    """A real node — kubelet, containerd, runc, a CNI bridge and kube-proxy — joined to the
    embedded control plane, with the project's images imported (devcluster.node).

    Pods land on it only with `devcluster.node.NODE_SELECTOR` and `TOLERATIONS`; everything else
    stays on kwok's nodes. Built and started on first use (cold: kubelet, kube-proxy, containerd
    and the images, several minutes); skips with the reason where it cannot run (not root, no
    runc, ...). At the end it stops and undoes every piece of host state it made.
    """
    if not cluster.embedded:
        pytest.skip("the real node joins the embedded control plane (KUBECONFIG is set)")
    from devcluster import images
    from devcluster.node import NodeConfig, RealNode, ensure_node_binaries, why_no_node

    reason = why_no_node()
    if reason:
        pytest.skip(reason)
    bin_dir = ensure_node_binaries()
    if images.docker_engine():
        pytest.skip("with a Docker engine the images go to Docker; the real node imports archives")
    reason = images.why_no_local_builder()
    if reason:
        pytest.skip(reason)
    images.build()
    local = cluster.local
    assert local is not None
    config = NodeConfig.for_cluster(local.directory, local.binaries.kubectl)  # type: ignore[attr-defined]
    node = RealNode(config, bin_dir, die_with_parent=True).start()
    t = node.timings
    _session_notes.append(
        f"real node: containerd {t['containerd']:.1f}s, images imported {t['images_imported']:.1f}s, "
        f"node Ready {t['node_ready']:.1f}s, all up {t['ready']:.1f}s"
    )
    try:
        yield node
    finally:
        used = ", ".join(f"{name} {cpu:.0f}s" for name, cpu in node.cpu_seconds().items())
        _session_notes.append(f"real node CPU time: {used}")
        node.stop()
