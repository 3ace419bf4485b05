"""A real Kubernetes node beside kwok's fake ones: kubelet, containerd v2 + runc, a CNI bridge and
kube-proxy, joined to the embedded control plane.

Pods land on it only when they ask to: the node carries the label and the NoSchedule taint
`modeldeploy.io/node=real`, so a test picks the real node with a nodeSelector and a toleration and
every other pod stays on kwok's nodes. The recipe, and every quirk of these VMs it works around,
is in NODE.md terms:

- kubelet: `failCgroupV1: false` (cgroup v1 hybrid host), `cgroupDriver: cgroupfs` (PID 1 is not
  systemd), everything bound to 127.0.0.1, webhook authn/authz against the cluster's CA, a root
  dir and pod-log dir of its own, a client certificate as `system:node:<name>`.
- containerd: config v3 with its own root, state, socket and `opt` dir; runc from Debian with
  `SystemdCgroup = false`; `restrict_oom_score_adj = true` (the VM drops CAP_SYS_RESOURCE, so even
  root cannot lower oom_score_adj); NRI off; a locally built static pause image pinned as the
  sandbox image (no registry is reachable).
- CNI: a bridge with the gateway address, host-local IPAM with its data in the node directory, no
  IP masquerade and **no default route** in pods: they reach each other, the host and the service
  range, nothing else.
- kube-proxy: iptables mode, bound to 127.0.0.1, NodePorts only on the bridge address and
  `localhostNodePorts: false`, so it never turns on `route_localnet` — kwok's pods serve on
  loopback addresses, which must stay loopback-only. Conntrack sysctls are left alone.
- Host → ClusterIP: a route for the service range through the bridge with the bridge's source
  address (otherwise the kernel picks the external interface and DNATed packets leave that way).
- Pods → API server: the API server listens on 127.0.0.1 only, so a relay (devcluster.relay) on
  the bridge address forwards to it, and an EndpointSlice makes it the `kubernetes` Service's
  endpoint: in-cluster clients use 10.96.0.1:443 as anywhere.
- Traffic guards: a mangle chain drops anything of the pod or service range that would leave
  through another interface than the bridge, forwarded or locally sent.

Host-global state (kubelet and containerd are not namespaced) is recorded at start and undone by
`stop()`/`cleanup_host()`, which also runs before each start to clear what a killed run left:
processes (kubelet, kube-proxy, containerd, shims, relay), containers and their network
namespaces, mounts, `/run/containerd/{s,runc/k8s.io}`, `/var/log/containers`, the `kubepods`
cgroups in every hierarchy, iptables (`kube-proxy --cleanup`, kubelet's KUBE-* chains in IPv4 and
IPv6, the guards), the bridge and route, and the sysctls `ip_forward` / `route_localnet`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from .pki import SERVICE_CLUSTER_IP_RANGE, PkiPaths
from .ports import free_port
from .processes import ManagedProcess, pid_alive, recorded_processes, spawn, terminate, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-node.sh"
PACKAGES_SCRIPT = REPO_ROOT / "hack" / "node-packages.sh"
CACHE = Path(os.environ.get("MODELDEPLOY_CACHE", Path.home() / ".cache" / "modeldeploy"))
K8S_VERSION = os.environ.get("K8S_VERSION", "v1.36.3")
CONTAINERD_VERSION = os.environ.get("CONTAINERD_VERSION", "v2.2.9")

NODE_NAME = "modeldeploy-real-node"
NODE_LABEL = "modeldeploy.io/node"
NODE_LABEL_VALUE = "real"
# What a pod needs to land on the real node.
NODE_SELECTOR = {NODE_LABEL: NODE_LABEL_VALUE}
TOLERATIONS = [
    {"key": NODE_LABEL, "operator": "Equal", "value": NODE_LABEL_VALUE, "effect": "NoSchedule"}
]
BRIDGE = "mdbr0"
POD_SUBNET = "10.244.0.0/24"
GATEWAY = "10.244.0.1"
PAUSE_IMAGE = "localhost/modeldeploy/pause:1"
GUARD_CHAIN = "MODELDEPLOY-NODE-GUARD"
RUNC = "/usr/sbin/runc"
CNI_BIN = Path("/usr/lib/cni")
CONTAINERD_NAMESPACE = "k8s.io"
# Host paths kubelet or containerd use whatever they are told (see NODE.md).
HOST_PATHS = (
    Path("/run/containerd/s"),
    Path("/run/containerd/runc/k8s.io"),
    Path("/var/log/containers"),
)
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/ipv4/conf/all/forwarding",
)
KUBELET_CHAINS = ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT")
ENDPOINT_SLICE = "kubernetes-real-node"
PROCESS_ORDER = ("kube-proxy", "kubelet", "apiserver-relay", "containerd")


def node_bin_dir() -> Path:
    return CACHE / f"node-k8s-{K8S_VERSION}-containerd-{CONTAINERD_VERSION}" / "bin"


def ensure_node_binaries() -> Path:
    """kubelet, kube-proxy, containerd, its shim, ctr and pause, built once into the cache."""
    subprocess.run([str(PACKAGES_SCRIPT)], check=True)
    result = subprocess.run(
        [str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False
    )  # progress goes to stderr
    if result.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed (exit {result.returncode})")
    return Path(result.stdout.strip().splitlines()[-1])


def why_no_node() -> str | None:
    """Why a real node cannot run here (None when it can): checked before anything is built."""
    if sys.platform != "linux":
        return "a real node needs Linux"
    if os.geteuid() != 0:
        return "a real node needs root (kubelet, containerd, iptables, network namespaces)"
    if shutil.which("apt-get") is None:
        for tool, path in (("runc", RUNC), ("CNI bridge plugin", str(CNI_BIN / "bridge"))):
            if not Path(path).exists():
                return f"{tool} is missing ({path}) and apt-get is not there to install it"
    if not Path("/proc/filesystems").read_text().count("overlay"):
        with contextlib.suppress(OSError):
            subprocess.run(["modprobe", "overlay"], capture_output=True, check=False)
        if "overlay" not in Path("/proc/filesystems").read_text():
            return "the kernel has no overlay filesystem (containerd's snapshotter)"
    return None


def sh(
    *argv: str, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, input=input, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result


def read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return None


def write_sysctl(name: str, value: str) -> None:
    with contextlib.suppress(OSError):
        Path("/proc/sys", name).write_text(value)


# ----------------------------------------------------------------------------------- PKI
def _issue(
    pki: PkiPaths, directory: Path, name: str, cn: str, org: str | None, server: bool
) -> tuple[Path, Path]:
    """A certificate signed by the cluster's CA: client (kubelet → API) or serving (kubelet)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        subject.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
    )
    if server:
        sans = [
            x509.DNSName("localhost"),
            x509.DNSName(NODE_NAME),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        usage = ExtendedKeyUsageOID.SERVER_AUTH
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def pause_archive(pause_binary: Path, archive: Path) -> None:
    """A one-file scratch image (the static pause binary) as a docker-archive."""
    from .images import write_docker_archive

    with tempfile.TemporaryDirectory() as tmp:
        layer = Path(tmp) / "layer.tar"
        with tarfile.open(layer, "w") as out:
            info = out.gettarinfo(str(pause_binary), "pause")
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755
            with pause_binary.open("rb") as f:
                out.addfile(info, f)
        write_docker_archive(
            layer, archive, PAUSE_IMAGE, created_by="hack/node/pause.go",
            config={"Entrypoint": ["/pause"], "User": "65535:65535"},
        )  # fmt: skip


# ------------------------------------------------------------------------------- the node
@dataclass
class NodeConfig:
    directory: Path
    kubeconfig: Path  # the cluster's admin kubeconfig
    pki: PkiPaths
    kubectl: Path
    server: str

    @classmethod
    def for_cluster(
        cls, cluster_dir: Path, kubectl: Path, node_dir: Path | None = None
    ) -> NodeConfig:
        kubeconfig = cluster_dir / "kubeconfig"
        server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        return cls(
            directory=(node_dir or cluster_dir / "node").resolve(),
            kubeconfig=kubeconfig,
            pki=PkiPaths.under(cluster_dir / "pki"),
            kubectl=kubectl,
            server=server,
        )


class RealNode:
    """Start and stop the node in `config.directory`; `die_with_parent` as for LocalCluster."""

    def __init__(self, config: NodeConfig, bin_dir: Path, *, die_with_parent: bool = True):
        self.config = config
        self.directory = config.directory
        self.bin = bin_dir
        self.die_with_parent = die_with_parent
        self.processes: list[ManagedProcess] = []
        self.socket = self.directory / "containerd.sock"
        self.timings: dict[str, float] = {}
        self.kubelet_port = free_port()
        self.kubelet_healthz = free_port()
        self.proxy_healthz = free_port()
        self.proxy_metrics = free_port()

    @property
    def ctr(self) -> list[str]:
        return [
            str(self.bin / "ctr"),
            f"--address={self.socket}",
            f"--namespace={CONTAINERD_NAMESPACE}",
        ]

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        from .cluster import run_kubectl

        return run_kubectl(
            self.config.kubectl, self.config.kubeconfig, *args, input=input, check=check
        )

    # ------------------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 120.0) -> RealNode:
        reason = why_no_node()
        if reason:
            raise RuntimeError(reason)
        cleanup_host(self.directory, self.bin, self.config)
        self.directory.mkdir(parents=True)
        t0 = time.monotonic()
        try:
            self._record_host_state()
            self._network()
            # kube-proxy first: it waits 30 s for the node to have addresses, which it never gets
            # (the kubelet refuses a loopback node IP), so that wait overlaps the rest of the start
            proxy = self._start_kube_proxy()
            self._start_containerd(timeout)
            self.timings["containerd"] = time.monotonic() - t0
            self._import_images()
            self.timings["images_imported"] = time.monotonic() - t0
            self._start_kubelet(timeout)
            self.timings["node_ready"] = time.monotonic() - t0
            self._wait_kube_proxy(proxy, timeout)
            self._apiserver_for_pods(timeout)
            self.timings["ready"] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        cleanup_host(self.directory, self.bin, self.config)
        self.processes.clear()

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> ManagedProcess:
        process = spawn(name, argv, self.directory, die_with_parent=self.die_with_parent, env=env)
        self.processes.append(process)
        return process

    def _record_host_state(self) -> None:
        state = {
            "sysctls": {name: read_sysctl(name) for name in SYSCTLS},
            "existed": {str(p): p.exists() for p in HOST_PATHS},
            "netns": sorted(os.listdir("/run/netns")) if Path("/run/netns").is_dir() else None,
        }
        (self.directory / "host-state.json").write_text(json.dumps(state, indent=2))

    # ------------------------------------------------------------------------- network
    def _network(self) -> None:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", f"{GATEWAY}/{POD_SUBNET.split('/')[1]}", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        sh("ip", "route", "add", SERVICE_CLUSTER_IP_RANGE, "dev", BRIDGE, "src", GATEWAY)
        # Guards: nothing of the pod or service range leaves through another interface.
        sh("iptables", "-t", "mangle", "-N", GUARD_CHAIN)
        # The host talking to the bridge's own address goes through `lo`: it stays on the host.
        sh("iptables", "-t", "mangle", "-A", GUARD_CHAIN, "-o", "lo", "-j", "RETURN")
        for ranges in (POD_SUBNET, SERVICE_CLUSTER_IP_RANGE):
            sh("iptables", "-t", "mangle", "-A", GUARD_CHAIN, "-d", ranges, "!", "-o", BRIDGE,
               "-j", "DROP")  # fmt: skip
            sh("iptables", "-t", "mangle", "-A", GUARD_CHAIN, "-s", ranges, "!", "-o", BRIDGE,
               "-j", "DROP")  # fmt: skip
        sh("iptables", "-t", "mangle", "-I", "FORWARD", "-j", GUARD_CHAIN)
        sh("iptables", "-t", "mangle", "-I", "POSTROUTING", "-j", GUARD_CHAIN)
        sh("iptables", "-I", "FORWARD", "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP")
        cni = self.directory / "cni"
        (cni / "net.d").mkdir(parents=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": "modeldeploy",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "isDefaultGateway": False,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET, "gateway": GATEWAY}]],
                        "routes": [{"dst": SERVICE_CLUSTER_IP_RANGE, "gw": GATEWAY}],
                        "dataDir": str(cni / "ipam"),
                    },
                }
            ],
        }
        (cni / "net.d" / "10-modeldeploy.conflist").write_text(json.dumps(conflist, indent=2))

    # ------------------------------------------------------------------------- containerd
    def _start_containerd(self, timeout: float) -> None:
        d = self.directory / "containerd"
        config = f"""version = 3
root = '{d / "root"}'
state = '{d / "state"}'
[grpc]
  address = '{self.socket}'
[plugins.'io.containerd.internal.v1.opt']
  path = '{d / "opt"}'
[plugins.'io.containerd.nri.v1.nri']
  disable = true
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '{PAUSE_IMAGE}'
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  enable_cdi = false
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '{RUNC}'
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['{CNI_BIN}']
    conf_dir = '{self.directory / "cni" / "net.d"}'
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'
"""
        d.mkdir(parents=True)
        (d / "config.toml").write_text(config)
        env = {**os.environ, "PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        process = self._spawn(
            "containerd",
            [str(self.bin / "containerd"), f"--config={d / 'config.toml'}", "--log-level=warn"],
            env=env,
        )

        def up() -> bool:
            return sh(*self.ctr, "version", check=False).returncode == 0

        wait_until(up, timeout, "containerd", process)

    def _import_images(self) -> None:
        from .images import built_images

        archive = self.directory / "pause.docker.tar"
        pause_archive(self.bin / "pause", archive)
        archives = [archive] + [image.docker_archive for image in built_images().values()]
        for path in archives:
            sh(*self.ctr, "images", "import", str(path))
        sh(*self.ctr, "images", "label", PAUSE_IMAGE, "io.cri-containerd.pinned=pinned")

    def import_image(self, archive: Path) -> None:
        sh(*self.ctr, "images", "import", str(archive))

    # ------------------------------------------------------------------------- kubelet
    def _start_kubelet(self, timeout: float) -> None:
        d = self.directory / "kubelet"
        (d / "root").mkdir(parents=True)
        client_cert, client_key = _issue(
            self.config.pki, d, "client", f"system:node:{NODE_NAME}", "system:nodes", server=False
        )
        serving_cert, serving_key = _issue(
            self.config.pki, d, "serving", NODE_NAME, None, server=True
        )
        # The API server's bootstrap policy no longer binds system:node to the nodes group (the
        # Node authorizer does that job where it is on; here only RBAC is).
        self.kubectl(
            "apply", "-f", "-",
            input=json.dumps({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "modeldeploy-real-node"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "system:node"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                              "name": f"system:node:{NODE_NAME}"}],
            }),
        )  # fmt: skip
        kubeconfig = d / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "local", "cluster": {
                        "server": self.config.server,
                        "certificate-authority": str(self.config.pki.ca_cert)}}],
                    "users": [{"name": "kubelet", "user": {
                        "client-certificate": str(client_cert), "client-key": str(client_key)}}],
                    "contexts": [{"name": "local",
                                  "context": {"cluster": "local", "user": "kubelet"}}],
                    "current-context": "local",
                }
            )
        )  # fmt: skip
        kubelet_config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "address": "127.0.0.1",
            "port": self.kubelet_port,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.kubelet_healthz,
            "readOnlyPort": 0,
            "tlsCertFile": str(serving_cert),
            "tlsPrivateKeyFile": str(serving_key),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.config.pki.ca_cert)},
            },
            "authorization": {"mode": "Webhook"},
            "failSwapOn": False,
            "podLogsDir": str(self.directory / "pod-logs"),
            "registerWithTaints": [
                {"key": NODE_LABEL, "value": NODE_LABEL_VALUE, "effect": "NoSchedule"}
            ],
            "serializeImagePulls": False,
            "nodeStatusUpdateFrequency": "4s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "20s",
            "imageMinimumGCAge": "24h",
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%"},
            "shutdownGracePeriod": "0s",
            "staticPodPath": "",
            "resolvConf": "/etc/resolv.conf",
        }  # fmt: skip
        (d / "config.yaml").write_text(yaml.safe_dump(kubelet_config))
        process = self._spawn(
            "kubelet",
            [
                str(self.bin / "kubelet"),
                f"--config={d / 'config.yaml'}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={d / 'root'}",
                f"--hostname-override={NODE_NAME}",
                "--node-ip=127.0.0.1",
                f"--node-labels={NODE_LABEL}={NODE_LABEL_VALUE}",
                "--v=1",
            ],
            env={**os.environ, "PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"},
        )

        def ready() -> bool:
            node = json.loads(self.kubectl("get", "node", NODE_NAME, "-o", "json").stdout)
            conditions = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
            return conditions.get("Ready") == "True"

        wait_until(ready, timeout, f"node {NODE_NAME} Ready", process)

    # ------------------------------------------------------------------------- kube-proxy
    def _start_kube_proxy(self) -> ManagedProcess:
        """Start kube-proxy; `_wait_kube_proxy` waits for it.

        Before its first sync kube-proxy waits up to 30 s for this node to exist and have
        addresses (pkg/proxy/node.go), then goes on without them. Ours never has any: the kubelet
        runs with --node-ip=127.0.0.1 (everything stays on loopback) and refuses to publish a
        loopback address ("nodeIP can't be loopback address"). Started before containerd, the
        wait runs while the images are imported and the kubelet registers.
        """
        d = self.directory / "kube-proxy"
        d.mkdir()
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "bindAddress": "127.0.0.1",
            "healthzBindAddress": f"127.0.0.1:{self.proxy_healthz}",
            "metricsBindAddress": f"127.0.0.1:{self.proxy_metrics}",
            "clientConnection": {"kubeconfig": str(self.config.kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "clusterCIDR": POD_SUBNET,
            "nodePortAddresses": [f"{GATEWAY}/32"],
            # minSyncPeriod 1s, kube-proxy's default: at most one iptables-restore a second
            # however fast kwok's tests churn Services, and endpoint removal no quicker than on
            # a real cluster (the serving pods' shutdown delay must cover it).
            "iptables": {"localhostNodePorts": False, "masqueradeAll": False,
                         "syncPeriod": "30s", "minSyncPeriod": "1s"},
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                          "tcpCloseWaitTimeout": "0s"},
        }  # fmt: skip
        (d / "config.yaml").write_text(yaml.safe_dump(config))
        return self._spawn(
            "kube-proxy", [str(self.bin / "kube-proxy"), f"--config={d / 'config.yaml'}", "--v=1"]
        )

    def _wait_kube_proxy(self, process: ManagedProcess, timeout: float) -> None:
        url = f"http://127.0.0.1:{self.proxy_healthz}/healthz"

        def healthy() -> bool:
            import urllib.request

            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200

        wait_until(healthy, timeout, "kube-proxy /healthz", process)

    # ------------------------------------------------------------------------- API for pods
    def _apiserver_for_pods(self, timeout: float) -> None:
        port = int(self.config.server.rsplit(":", 1)[1])
        relay = self._spawn(
            "apiserver-relay",
            [os.path.realpath(sys.executable), "-m", "devcluster.relay",
             f"{GATEWAY}:{port}", f"127.0.0.1:{port}"],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )  # fmt: skip

        def listening() -> bool:
            with socket.create_connection((GATEWAY, port), timeout=2):
                return True

        wait_until(listening, timeout, "API server relay", relay)
        self.kubectl(
            "apply", "-f", "-",
            input=json.dumps({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {"name": ENDPOINT_SLICE, "namespace": "default", "labels": {
                    "kubernetes.io/service-name": "kubernetes",
                    "endpointslice.kubernetes.io/managed-by": "modeldeploy.io-real-node"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": [GATEWAY], "conditions": {"ready": True}}],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            }),
        )  # fmt: skip

    # ------------------------------------------------------------------------- helpers
    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) each of the node's processes used so far: what the node
        costs the machine's other work (kwok's tests share its two cores)."""
        ticks = os.sysconf("SC_CLK_TCK")
        used = {}
        for process in self.processes:
            try:
                fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            used[process.name] = (int(fields[11]) + int(fields[12])) / ticks
        return used

    def pod_log(self, namespace: str, pod: str, container: str) -> str:
        """A container's log as the kubelet wrote it (the API server has no kubelet client
        certificate here, so `kubectl logs` cannot reach the kubelet)."""
        found = sorted((self.directory / "pod-logs").glob(f"{namespace}_{pod}_*/{container}/*.log"))
        return "\n".join(p.read_text(errors="replace") for p in found)


# ----------------------------------------------------------------------------- cleanup
def _mounts() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        points.append(line.split()[4].replace("\\040", " "))
    return points


def _unmount_under(prefixes: list[Path]) -> None:
    for _ in range(3):
        targets = [
            m for m in _mounts() if any(m == str(p) or m.startswith(f"{p}/") for p in prefixes)
        ]
        if not targets:
            return
        for target in sorted(set(targets), key=len, reverse=True):
            if subprocess.run(["umount", target], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", target], capture_output=True)


def _ours(pid: int, binaries: list[Path]) -> bool:
    try:
        exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    except OSError:
        return False
    return any(exe == str(b) for b in binaries)


def _kill_by_exe(binaries: list[Path]) -> None:
    """SIGKILL the processes running one of our binaries (a killed run's leftovers: containerd's
    shims outlive it by design)."""
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    for pid in pids:
        if pid != os.getpid() and _ours(pid, binaries):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_ours(p, binaries) and pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)


def _iptables_cleanup(bin_dir: Path) -> None:
    kube_proxy = bin_dir / "kube-proxy"
    if kube_proxy.exists():
        subprocess.run([str(kube_proxy), "--cleanup"], capture_output=True, timeout=60)
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table in ("filter", "nat", "mangle"):
            saved = subprocess.run([f"{tool}-save", "-t", table], capture_output=True, text=True)
            ours = set(KUBELET_CHAINS) | ({GUARD_CHAIN} if table == "mangle" else set())
            for line in saved.stdout.splitlines():
                if line.startswith("-A ") and any(f"-j {c}" in line for c in ours):
                    rule = line.split()[1:]
                    subprocess.run([tool, "-t", table, "-D", *rule], capture_output=True)
            for chain in ours:
                subprocess.run([tool, "-t", table, "-F", chain], capture_output=True)
                subprocess.run([tool, "-t", table, "-X", chain], capture_output=True)
    while (
        subprocess.run(
            ["iptables", "-D", "FORWARD", "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP"],
            capture_output=True,
        ).returncode
        == 0
    ):
        pass


def _cgroups_cleanup() -> None:
    roots = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] in ("cgroup", "cgroup2"):
            roots.append(Path(fields[1]))
    for root in roots:
        for name in ("kubepods", "kubepods.slice"):
            top = root / name
            if not top.is_dir():
                continue
            for path in sorted(
                (p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
            ):
                with contextlib.suppress(OSError):
                    path.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()


def cleanup_host(directory: Path, bin_dir: Path, config: NodeConfig | None = None) -> None:
    """Undo everything a node in `directory` did to the host; safe to run any time."""
    state_file = directory / "host-state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    socket_path = directory / "containerd.sock"
    kubelet_alive = False
    if directory.is_dir():
        kubelet_alive = any(p.name == "kubelet" for p in recorded_processes(directory))
    # 1. With the kubelet still running, let it stop the node's pods itself (CNI DEL included).
    if config is not None and kubelet_alive:
        from .cluster import run_kubectl

        def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
            return run_kubectl(config.kubectl, config.kubeconfig, *args, check=False, timeout=30)

        kubectl("delete", "pods", "-A", f"--field-selector=spec.nodeName={NODE_NAME}",
                "--grace-period=0", "--force", "--wait=false")  # fmt: skip

        def no_running_tasks() -> bool:
            out = sh(str(bin_dir / "ctr"), f"--address={socket_path}", "-n", CONTAINERD_NAMESPACE,
                     "tasks", "ls", check=False).stdout  # fmt: skip
            return "RUNNING" not in out

        with contextlib.suppress(TimeoutError):
            wait_until(no_running_tasks, 45, "the node's containers stopped")
    if config is not None:
        from .cluster import run_kubectl

        for args in (
            ("delete", "node", NODE_NAME, "--ignore-not-found", "--wait=false"),
            ("delete", "endpointslice", ENDPOINT_SLICE, "-n", "default", "--ignore-not-found"),
            ("delete", "clusterrolebinding", "modeldeploy-real-node", "--ignore-not-found"),
        ):
            with contextlib.suppress(Exception):
                run_kubectl(config.kubectl, config.kubeconfig, *args, check=False, timeout=30)
    # 2. Processes, newest first; then whatever runs our binaries still (shims, containers' init
    #    stays with its shim's kill below).
    if directory.is_dir():
        processes = recorded_processes(directory)
        processes.sort(key=lambda p: PROCESS_ORDER.index(p.name) if p.name in PROCESS_ORDER else 0)
        for process in processes:
            terminate(process, grace_seconds=10)
    if socket_path.exists() or directory.is_dir():
        pass
    _kill_containers(directory)
    _kill_by_exe(
        [bin_dir / n for n in ("kubelet", "kube-proxy", "containerd", "containerd-shim-runc-v2")]
    )
    # 3. Network namespaces the node made, then mounts and files.
    before = set(state.get("netns") or [])
    if Path("/run/netns").is_dir():
        for name in os.listdir("/run/netns"):
            if name.startswith("cni-") and name not in before:
                subprocess.run(["ip", "netns", "delete", name], capture_output=True)
    _unmount_under([directory, Path("/run/containerd/s"), Path("/run/containerd/runc/k8s.io"),
                    Path("/run/containerd/io.containerd.runtime.v2.task/k8s.io")])  # fmt: skip
    existed = state.get("existed", {})
    for path in HOST_PATHS:
        if path.exists() and not existed.get(str(path), False):
            shutil.rmtree(path, ignore_errors=True)
    for leftover in (Path("/run/containerd/runc"), Path("/run/containerd")):
        with contextlib.suppress(OSError):
            leftover.rmdir()  # only when empty: another containerd may use it
    _cgroups_cleanup()
    # 4. iptables, the bridge and its route, sysctls.
    _iptables_cleanup(bin_dir)
    subprocess.run(
        ["ip", "route", "del", SERVICE_CLUSTER_IP_RANGE, "dev", BRIDGE], capture_output=True
    )
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
    for name, value in (state.get("sysctls") or {}).items():
        if value is not None and read_sysctl(name) != value:
            write_sysctl(name, value)
    if directory.exists():
        _unmount_under([directory])
        shutil.rmtree(directory, ignore_errors=True)


def _kill_containers(directory: Path) -> None:
    """SIGKILL every process of a container this node's runc state lists (their init processes
    are not ours by binary, so they are found by runc's own record)."""
    for runc_root in (Path("/run/containerd/runc/k8s.io"),):
        if not runc_root.is_dir():
            continue
        listed = subprocess.run(
            [RUNC, f"--root={runc_root}", "list", "--format=json"], capture_output=True, text=True
        )
        for container in json.loads(listed.stdout or "null") or []:
            subprocess.run([RUNC, f"--root={runc_root}", "kill", "--all", container["id"], "KILL"],
                           capture_output=True)  # fmt: skip
            subprocess.run([RUNC, f"--root={runc_root}", "delete", "--force", container["id"]],
                           capture_output=True)  # fmt: skip


def host_leftovers() -> list[str]:
    """What of the node's host state is still there (empty after a clean stop)."""
    found = []
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode == 0:
        found.append(f"link {BRIDGE}")
    for path in HOST_PATHS:
        if path.exists():
            found.append(str(path))
    for tool in ("iptables", "ip6tables"):
        if shutil.which(f"{tool}-save"):
            saved = subprocess.run([f"{tool}-save"], capture_output=True, text=True).stdout
            for chain in (*KUBELET_CHAINS, GUARD_CHAIN, "KUBE-SERVICES", "KUBE-PROXY-CANARY"):
                if f":{chain} " in saved:
                    found.append(f"{tool} chain {chain}")
    for line in Path("/proc/self/mounts").read_text().splitlines():
        mount_point = line.split()[1]
        if "/kubepods" in mount_point or mount_point.startswith("/run/containerd/"):
            found.append(f"mount {mount_point}")
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] in ("cgroup", "cgroup2") and (Path(fields[1]) / "kubepods").exists():
            found.append(f"cgroup {fields[1]}/kubepods")
    if Path("/run/netns").is_dir():
        found += [f"netns {n}" for n in os.listdir("/run/netns") if n.startswith("cni-")]
    return found


# ----------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devcluster.node",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--cluster-dir", type=Path, default=Path(".devcluster"))
    args = parser.parse_args(argv)
    cluster_dir = args.cluster_dir.resolve()
    node_dir = cluster_dir / "node"
    state = cluster_dir / "state.json"
    if args.command == "down":
        kubectl = (
            Path(json.loads(state.read_text())["binDir"]) / "kubectl" if state.exists() else None
        )
        config = NodeConfig.for_cluster(cluster_dir, kubectl) if kubectl else None
        cleanup_host(node_dir, node_bin_dir(), config)
        left = host_leftovers()
        print("Real node stopped; host state undone" + (f" except: {left}" if left else ""))
        return 0 if not left else 1
    reason = why_no_node()
    if reason:
        print(f"node-up: cannot run a real node here: {reason}")
        return 0
    if not state.exists():
        print("node-up: no control plane in {cluster_dir}: run `make cluster-up` first")
        return 1
    kubectl = Path(json.loads(state.read_text())["binDir"]) / "kubectl"
    bin_dir = ensure_node_binaries()
    node = RealNode(NodeConfig.for_cluster(cluster_dir, kubectl), bin_dir, die_with_parent=False)
    node.start()
    t = node.timings
    print(f"Real node {NODE_NAME} is Ready after {t['node_ready']:.1f}s (all up {t['ready']:.1f}s)")
    print(
        f"  pods land on it with nodeSelector {NODE_SELECTOR} and the toleration {TOLERATIONS[0]}"
    )
    print(f"  pod network {POD_SUBNET} on {BRIDGE}; logs: {node.directory / 'logs'}")
    print("\nStop it with: make node-down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
