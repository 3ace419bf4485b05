"""The embedded local Kubernetes control plane used by the tests and by `make run`."""

from .binaries import Binaries, ensure_binaries
from .cluster import FAULT_LABEL, LocalCluster, run_kubectl, stop_directory
from .processes import wait_until

__all__ = [
    "FAULT_LABEL",
    "Binaries",
    "LocalCluster",
    "ensure_binaries",
    "run_kubectl",
    "stop_directory",
    "wait_until",
]
