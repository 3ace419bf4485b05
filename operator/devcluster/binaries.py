"""Find the control-plane binaries in the build cache, building them first when they are missing.

The build (hack/build-control-plane.sh) compiles Kubernetes, etcd and kwok from the Go module proxy
into `$MODELDEPLOY_CACHE/<version key>/bin`. It takes tens of minutes cold, so it runs once per
version and machine; every later run finds the binaries and starts in seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-control-plane.sh"
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
)


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of every binary the local control plane runs, plus kwok's stock stages."""

    bin_dir: Path
    kwok_stages: Path

    @property
    def prometheus(self) -> Path:
        """Prometheus from Debian's package (may be absent where apt cannot reach Debian)."""
        return self.bin_dir.parent / "prometheus" / "prometheus"

    @property
    def gateway_api_crds(self) -> Path:
        """The Gateway API's standard CRDs (GatewayClass, Gateway, HTTPRoute, GRPCRoute,
        ReferenceGrant)."""
        return self.bin_dir.parent / "gateway-api-crds"

    def path(self, component: str) -> Path:
        return self.bin_dir / component

    @property
    def kubectl(self) -> Path:
        return self.path("kubectl")


def ensure_binaries(build_output: TextIO = sys.stderr) -> Binaries:
    """Return the cached binaries, running the build script (progress on `build_output`) if needed.

    The script is idempotent: with a warm cache it only prints "cached" lines and the bin path.
    """
    override = os.environ.get("MODELDEPLOY_BIN_DIR")
    if override:
        bin_dir = Path(override)
    else:
        result = subprocess.run(
            [str(BUILD_SCRIPT)],
            stdout=subprocess.PIPE,
            stderr=build_output,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"building the control plane failed (exit {result.returncode}); "
                f"run {BUILD_SCRIPT} by hand to see the full output"
            )
        bin_dir = Path(result.stdout.strip().splitlines()[-1])
    missing = [c for c in COMPONENTS if not (bin_dir / c).is_file()]
    if missing:
        raise RuntimeError(f"control-plane binaries missing from {bin_dir}: {', '.join(missing)}")
    return Binaries(bin_dir=bin_dir, kwok_stages=bin_dir.parent / "kwok-stages")
