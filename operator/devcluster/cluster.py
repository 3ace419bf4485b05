"""A real Kubernetes control plane as plain processes on 127.0.0.1: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok (fake nodes whose pods turn Running/Ready).

It is what envtest and `kwokctl --runtime=binary` do, in a form a pytest fixture and `make run` can
share. Everything lives in one directory: PKI, kubeconfig, etcd data, logs and PID files.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .binaries import Binaries
from .pki import SERVICE_CLUSTER_IP_RANGE, PkiPaths, write_pki
from .ports import free_port
from .processes import (
    ManagedProcess,
    recorded_processes,
    rss_mib,
    spawn,
    terminate,
    wait_until,
)

FAULT_STAGES = Path(__file__).with_name("fault-stages.yaml")
KWOK_STOCK_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)


def pod_cidr(slot: int | None = None) -> str:
    """A random /20 (4094 pod IPs) inside 127.64.0.0/10, different for each cluster.

    Pod IPs come from the loopback range: nothing ever dials a non-loopback address from this
    machine, and a test may start a real server on a pod's IP to stand in for that pod. Random,
    so two clusters on one machine (a test run beside a benchmark) do not hand out the same IPs.
    ``slot`` (0-31) picks a range of its own instead, 127.(64+2·slot).x, for clusters started
    side by side on purpose (parallel test workers): no two slots share an IP, and neither
    overlaps the random picks of the odd second octets.
    """
    if slot is not None:
        return f"127.{64 + 2 * (slot % 32)}.{random.randint(0, 15) * 16}.0/20"
    return f"127.{random.randrange(65, 128, 2)}.{random.randint(0, 15) * 16}.0/20"


# Every request (reads and writes) is recorded with its verb, URI and user agent in
# <dir>/audit.log, so a test can count the API calls a component makes — and see the label
# selector on its watches — instead of trusting the component's own numbers.
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
READ_VERBS = frozenset({"get", "list", "watch"})
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "verbs": sorted(WRITE_VERBS | READ_VERBS)},
        {"level": "None"},
    ],
}
NODE_COUNT = 2
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
# Pod label read by fault-stages.yaml: never-ready | crash-loop | oom-killed | image-pull-backoff
# | unreachable. The pod runner starts no server for a pod that carries it.
FAULT_LABEL = "devcluster.modeldeploy.io/fault"


@dataclass
class Ports:
    etcd_client: int = field(default_factory=free_port)
    etcd_peer: int = field(default_factory=free_port)
    apiserver: int = field(default_factory=free_port)
    controller_manager: int = field(default_factory=free_port)
    scheduler: int = field(default_factory=free_port)
    kwok: int = field(default_factory=free_port)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, server: str, pki: PkiPaths) -> None:
    """An admin kubeconfig with the certificates embedded, so it can be copied anywhere."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "modeldeploy-local",
                "cluster": {"server": server, "certificate-authority-data": _b64(pki.ca_cert)},
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate-data": _b64(pki.admin_cert),
                    "client-key-data": _b64(pki.admin_key),
                },
            }
        ],
        "contexts": [
            {
                "name": "modeldeploy-local",
                "context": {"cluster": "modeldeploy-local", "user": "admin"},
            }
        ],
        "current-context": "modeldeploy-local",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


def fake_node(name: str) -> dict:
    """A Node that kwok manages: it heartbeats it and runs the pods scheduled onto it."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {FAKE_NODE_ANNOTATION: "fake"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        "status": {
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "500"},
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "500"},
        },
    }


class LocalCluster:
    """Start and stop the control plane in `directory`.

    `die_with_parent` ties every process to this Python process (test sessions); `make cluster-up`
    turns it off so the cluster outlives the command that started it.
    """

    def __init__(
        self,
        directory: Path,
        binaries: Binaries,
        *,
        die_with_parent: bool = True,
        pod_cidr_slot: int | None = None,
    ):
        self.directory = directory.resolve()
        self.binaries = binaries
        self.die_with_parent = die_with_parent
        self.kubeconfig = self.directory / "kubeconfig"
        self.audit_log = self.directory / "audit.log"
        self.ports = Ports()
        self.pod_cidr = pod_cidr(pod_cidr_slot)
        self.processes: list[ManagedProcess] = []
        self.timings: dict[str, float] = {}
        self._pki: PkiPaths | None = None

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    # ----------------------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 120.0) -> LocalCluster:
        """Start every component and wait until the nodes are Ready; stops everything on failure."""
        stop_directory(self.directory)
        if self.directory.exists():
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True)
        t0 = time.monotonic()
        try:
            self._pki = write_pki(self.directory / "pki")
            write_kubeconfig(self.kubeconfig, self.server, self._pki)
            self._start_etcd(timeout)
            self.timings["etcd_healthy"] = time.monotonic() - t0
            self._start_apiserver(timeout)
            self.timings["apiserver_ready"] = time.monotonic() - t0
            self._start_controllers(timeout)
            self._start_kwok(timeout)
            self._create_nodes(timeout)
            self.timings["nodes_ready"] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every process, newest first, so etcd outlives its clients."""
        for process in reversed(self.processes):
            terminate(process)
        self.processes.clear()
        stop_directory(self.directory)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------------------- helpers
    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return run_kubectl(
            self.binaries.kubectl, self.kubeconfig, *args, input=input, check=check, timeout=timeout
        )

    def audit(self, since: int = 0, verbs: frozenset[str] | None = None) -> list[dict]:
        """Audit records from byte offset `since` on (see `audit_size`), of `verbs` if given."""
        records = []
        with self.audit_log.open() as log:
            log.seek(since)
            for line in log:
                if line.strip():
                    record = json.loads(line)
                    if verbs is None or record.get("verb") in verbs:
                        records.append(record)
        return records

    def audit_size(self) -> int:
        return self.audit_log.stat().st_size if self.audit_log.exists() else 0

    def memory_mib(self) -> dict[str, float]:
        """Resident memory of each running component, in MiB."""
        return {p.name: rss_mib(p.pid) for p in self.processes if p.alive()}

    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        process = spawn(name, argv, self.directory, die_with_parent=self.die_with_parent)
        self.processes.append(process)
        return process

    def _https_get(self, url: str, *, client_cert: bool, verify: bool) -> tuple[int, bytes]:
        assert self._pki is not None
        context = (
            ssl.create_default_context(cafile=str(self._pki.ca_cert))
            if verify
            else ssl._create_unverified_context()
        )
        if client_cert:
            context.load_cert_chain(str(self._pki.admin_cert), str(self._pki.admin_key))
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            return response.status, response.read()

    # ----------------------------------------------------------------------------- components
    def _start_etcd(self, timeout: float) -> None:
        p = self.ports
        client = f"http://127.0.0.1:{p.etcd_client}"
        peer = f"http://127.0.0.1:{p.etcd_peer}"
        process = self._spawn(
            "etcd",
            [
                str(self.binaries.path("etcd")),
                "--name=default",
                f"--data-dir={self.directory / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                "--listen-metrics-urls=",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            with urllib.request.urlopen(f"{client}/health", timeout=2) as r:
                return json.loads(r.read()).get("health") == "true"

        wait_until(healthy, timeout, "etcd /health", process)

    def _start_apiserver(self, timeout: float) -> None:
        assert self._pki is not None
        pki, p = self._pki, self.ports
        audit_policy = self.directory / "audit-policy.yaml"
        audit_policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        process = self._spawn(
            "kube-apiserver",
            [
                str(self.binaries.path("kube-apiserver")),
                f"--etcd-servers=http://127.0.0.1:{p.etcd_client}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={p.apiserver}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--service-account-key-file={pki.sa_public}",
                f"--service-account-signing-key-file={pki.sa_private}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                # Loopback addresses are not valid endpoints of the `kubernetes` Service.
                "--endpoint-reconciler-type=none",
                f"--cert-dir={self.directory / 'apiserver-certs'}",
                f"--audit-policy-file={audit_policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",
                "--profiling=false",
                "--v=0",
            ],
        )

        def ready() -> bool:
            status, body = self._https_get(f"{self.server}/readyz", client_cert=True, verify=True)
            return status == 200 and body.strip() == b"ok"

        wait_until(ready, timeout, "kube-apiserver /readyz", process)

    def _start_controllers(self, timeout: float) -> None:
        assert self._pki is not None
        pki, p = self._pki, self.ports
        kubeconfig = str(self.kubeconfig)
        common = [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--v=0",
        ]
        controller_manager = self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries.path("kube-controller-manager")),
                *common,
                f"--secure-port={p.controller_manager}",
                f"--cert-dir={self.directory / 'kcm-certs'}",
                f"--service-account-private-key-file={pki.sa_private}",
                f"--root-ca-file={pki.ca_cert}",
                "--use-service-account-credentials=false",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                # Faster feedback than the 15 s default; HPAs here have no metrics API behind them.
                "--horizontal-pod-autoscaler-sync-period=5s",
                "--concurrent-gc-syncs=5",
                # The legacy Endpoints API refuses loopback pod IPs; EndpointSlices carry them.
                "--controllers=*,-endpoints-controller",
            ],
        )
        scheduler = self._spawn(
            "kube-scheduler",
            [
                str(self.binaries.path("kube-scheduler")),
                *common,
                f"--secure-port={p.scheduler}",
                f"--cert-dir={self.directory / 'scheduler-certs'}",
            ],
        )
        for process, port in ((controller_manager, p.controller_manager), (scheduler, p.scheduler)):
            self._wait_healthz(process, f"https://127.0.0.1:{port}/healthz", timeout)

    def _wait_healthz(self, process: ManagedProcess, url: str, timeout: float) -> None:
        def healthy() -> bool:
            return self._https_get(url, client_cert=False, verify=False)[0] == 200

        wait_until(healthy, timeout, f"{process.name} /healthz", process)

    def _start_kwok(self, timeout: float) -> None:
        p = self.ports
        configs = [self.binaries.kwok_stages / stage for stage in KWOK_STOCK_STAGES] + [
            FAULT_STAGES
        ]
        process = self._spawn(
            "kwok",
            [
                str(self.binaries.path("kwok")),
                f"--kubeconfig={self.kubeconfig}",
                *[f"--config={c}" for c in configs],
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
                f"--cidr={self.pod_cidr}",
                "--node-ip=127.0.0.1",
                f"--node-port={p.kwok}",
                f"--server-address=127.0.0.1:{p.kwok}",
                "--node-lease-duration-seconds=40",
            ],
        )
        url = f"http://127.0.0.1:{p.kwok}/healthz"

        def healthy() -> bool:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200

        wait_until(healthy, timeout, "kwok /healthz", process)

    def _create_nodes(self, timeout: float) -> None:
        nodes = {
            "apiVersion": "v1",
            "kind": "List",
            "items": [fake_node(f"kwok-node-{i}") for i in range(NODE_COUNT)],
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(nodes))
        self.kubectl(
            "wait",
            "--for=condition=Ready",
            "node",
            "--all",
            f"--timeout={int(timeout)}s",
            timeout=timeout + 10,
        )


def run_kubectl(
    kubectl: Path,
    kubeconfig: Path,
    *args: str,
    input: str | None = None,
    check: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run kubectl against `kubeconfig`; with `check`, a failure raises with kubectl's stderr."""
    result = subprocess.run(
        [str(kubectl), f"--kubeconfig={kubeconfig}", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result


def stop_directory(directory: Path) -> int:
    """Stop the processes that `directory`'s PID files name; returns how many were running."""
    if not (directory / "pids").is_dir():
        return 0
    order = ["kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"]
    processes = sorted(
        recorded_processes(directory), key=lambda p: order.index(p.name) if p.name in order else -1
    )
    for process in processes:
        terminate(process)
    return len(processes)
