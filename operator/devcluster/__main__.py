"""`python -m devcluster up|down|status --dir DIR`: the embedded control plane from a shell."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from .binaries import ensure_binaries
from .cluster import LocalCluster, run_kubectl, stop_directory
from .processes import recorded_processes, rss_mib

DEFAULT_DIR = Path(".devcluster")


def cmd_up(directory: Path) -> int:
    binaries = ensure_binaries()
    cluster = LocalCluster(directory, binaries, die_with_parent=False)
    cluster.start()
    state = {
        "server": cluster.server,
        "kubeconfig": str(cluster.kubeconfig),
        "binDir": str(binaries.bin_dir),
        "timingsSeconds": {k: round(v, 2) for k, v in cluster.timings.items()},
        "memoryMiB": {k: round(v, 1) for k, v in cluster.memory_mib().items()},
    }
    (cluster.directory / "state.json").write_text(json.dumps(state, indent=2))
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"][
        "gitVersion"
    ]
    print(f"Local control plane {version} is up at {cluster.server}")
    t = cluster.timings
    print(f"  /readyz after {t['apiserver_ready']:.1f}s, nodes Ready after {t['nodes_ready']:.1f}s")
    print(f"  logs: {cluster.directory / 'logs'}")
    print(f"  kubectl: {binaries.kubectl}")
    print(f"\n  export KUBECONFIG={cluster.kubeconfig}")
    print(f'  export PATH="{binaries.bin_dir}:$PATH"   # the kubectl built with it')
    print("\nStop it with: make cluster-down")
    return 0


def cmd_down(directory: Path) -> int:
    stopped = stop_directory(directory)
    if directory.exists():
        shutil.rmtree(directory)
    print(f"Stopped {stopped} control-plane process(es); removed {directory}")
    return 0


def cmd_status(directory: Path) -> int:
    processes = recorded_processes(directory)
    if not processes:
        print(f"No local control plane running in {directory}")
        return 1
    for process in processes:
        print(f"  {process.name:<24} pid {process.pid:<8} {rss_mib(process.pid):7.1f} MiB")
    state = json.loads((directory / "state.json").read_text())
    kubectl = Path(state["binDir"]) / "kubectl"
    nodes = run_kubectl(kubectl, Path(state["kubeconfig"]), "get", "nodes", check=False)
    print(nodes.stdout or nodes.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devcluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help="state directory (default .devcluster)"
    )
    args = parser.parse_args(argv)
    handler = {"up": cmd_up, "down": cmd_down, "status": cmd_status}[args.command]
    return handler(args.dir.resolve())


if __name__ == "__main__":
    sys.exit(main())
