"""Run a built image with `runc` directly — no kubelet, no containerd — to check what the image
itself promises: its user, that it works on a read-only root filesystem with only the directories
a pod mounts writable, and that SIGTERM to its PID 1 ends it cleanly.

`umoci unpack` turns the image (from its cached OCI layout) into a runtime bundle whose config
carries the image's user, environment, working directory and entrypoint; `restricted()` then
makes that config look like a restricted pod: read-only root, no capabilities, no new
privileges, tmpfs where the operator mounts emptyDirs. The container shares the host's network
namespace, so a test reaches it on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .images import BuiltImage
from .processes import kill_when_parent_dies

RUNC = "runc"


def unpack(image: BuiltImage, bundle: Path) -> Path:
    """`umoci unpack` of the image into `bundle` (rootfs/ and config.json)."""
    if bundle.exists():
        shutil.rmtree(bundle)
    subprocess.run(
        ["umoci", "unpack", "--image", image.oci_ref, str(bundle)],
        check=True,
        capture_output=True,
    )
    return bundle


def restricted(
    config: dict[str, Any],
    *,
    env: dict[str, str],
    tmpfs: list[str],
    binds: list[tuple[Path, str]] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    """The image's runtime config as a restricted pod would run it."""
    config = json.loads(json.dumps(config))
    config["root"]["readonly"] = True
    process = config["process"]
    process["terminal"] = False
    process["noNewPrivileges"] = True
    process["capabilities"] = {k: [] for k in ("bounding", "effective", "permitted", "ambient")}
    process.pop("oomScoreAdj", None)  # this VM refuses to lower it (see NODE.md)
    names = {e.split("=", 1)[0]: e for e in process.get("env", [])}
    names.update({k: f"{k}={v}" for k, v in env.items()})
    process["env"] = list(names.values())
    linux = config.setdefault("linux", {})
    # The host's network namespace: the test talks to the server on 127.0.0.1.
    linux["namespaces"] = [n for n in linux.get("namespaces", []) if n["type"] != "network"]
    linux["cgroupsPath"] = f"/modeldeploy-image-test/{uuid.uuid4().hex[:12]}"
    mounts = config.setdefault("mounts", [])
    for path in tmpfs:  # emptyDirs: writable, owned by root, sticky, world-writable
        mounts.append(
            {"destination": path, "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777", "size=256m"]}
        )  # fmt: skip
    for source, destination in binds:
        mounts.append(
            {"destination": destination, "type": "bind", "source": str(source),
             "options": ["rbind", "ro"]}
        )  # fmt: skip
    return config


@dataclass
class Container:
    """`runc run` of a bundle in the foreground, as a child process of the test."""

    bundle: Path
    state_root: Path
    log_path: Path
    name: str = field(default_factory=lambda: f"md-{uuid.uuid4().hex[:10]}")
    process: subprocess.Popen[bytes] | None = None

    def start(self, config: dict[str, Any]) -> Container:
        (self.bundle / "config.json").write_text(json.dumps(config))
        self.state_root.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [RUNC, f"--root={self.state_root}", "run", f"--bundle={self.bundle}", self.name],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=kill_when_parent_dies,
            )
        return self

    def runc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RUNC, f"--root={self.state_root}", *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def state(self) -> dict[str, Any]:
        return json.loads(self.runc("state", self.name).stdout)

    def init_pid(self) -> int:
        """The container's PID 1, as the host sees it."""
        return int(self.state()["pid"])

    def exec(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run a command in the container (as the image's user, with the same restrictions)."""
        return self.runc("exec", self.name, *argv, check=False)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.runc("kill", self.name, str(int(sig)))

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def remove(self) -> None:
        """Kill and delete the container whatever its state, then its cgroup."""
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.runc("delete", "--force", self.name, check=False)
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def runc_missing() -> str | None:
    """Why runc-based checks cannot run here, or None."""
    import os

    if os.geteuid() != 0:
        return "running images with runc needs root"
    for tool in (RUNC, "umoci"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make node-packages installs it)"
    return None
