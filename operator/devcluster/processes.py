"""Start, track and stop the control plane's processes.

Each process gets a log file and a PID file in the cluster directory, so `devcluster down` can stop
a cluster that another command started. Test sessions also ask the kernel to end each process when
the Python process that started it dies (PR_SET_PDEATHSIG), so even a `kill -9` of pytest leaves no
API server behind. That signal is SIGKILL: a kube-apiserver whose etcd is already gone can sit in
graceful shutdown for minutes, and a test cluster's state is thrown away anyway.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1


def kill_when_parent_dies() -> None:
    """Runs in the child between fork and exec: deliver SIGKILL when the parent goes away."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass
class ManagedProcess:
    """One running component, with the files that describe it."""

    name: str
    popen: subprocess.Popen[bytes] | None
    pid: int
    log_path: Path
    pid_path: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def spawn(
    name: str, argv: list[str], directory: Path, *, die_with_parent: bool, env: dict | None = None
) -> ManagedProcess:
    """Start `argv` in its own session with output to `<directory>/logs/<name>.log`."""
    logs = directory / "logs"
    pids = directory / "pids"
    logs.mkdir(parents=True, exist_ok=True)
    pids.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=kill_when_parent_dies if die_with_parent else None,
            env=env,
        )
    pid_path = pids / f"{name}.pid"
    pid_path.write_text(f"{popen.pid} {argv[0]}\n")
    return ManagedProcess(name, popen, popen.pid, log_path, pid_path)


def terminate(process: ManagedProcess, grace_seconds: float = 10.0) -> None:
    """SIGTERM, wait up to `grace_seconds`, then SIGKILL; removes the PID file."""
    if process.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while process.alive() and time.monotonic() < deadline:
            if process.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.popen.wait(timeout=0.1)
            else:
                time.sleep(0.1)
        if process.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            if process.popen is not None:
                process.popen.wait(timeout=5)
    process.pid_path.unlink(missing_ok=True)


def recorded_processes(directory: Path) -> list[ManagedProcess]:
    """Processes that a PID file in `directory` names and that still run the recorded binary.

    The binary check keeps a recycled PID of some unrelated process from being killed.
    """
    found = []
    for pid_path in sorted((directory / "pids").glob("*.pid")):
        try:
            pid_text, binary = pid_path.read_text().split(maxsplit=1)
            pid = int(pid_text)
            exe = os.readlink(f"/proc/{pid}/exe")
        except (OSError, ValueError):
            pid_path.unlink(missing_ok=True)
            continue
        if Path(exe).name != Path(binary.strip()).name:
            pid_path.unlink(missing_ok=True)
            continue
        log_path = directory / "logs" / f"{pid_path.stem}.log"
        found.append(ManagedProcess(pid_path.stem, None, pid, log_path, pid_path))
    return found


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` in MiB, read from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, process: ManagedProcess | None = None
) -> None:
    """Poll `check` until true; fail naming `what` (with the process's log) on timeout or exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise RuntimeError(
                f"{process.name} exited while waiting for {what}:\n{process.log_tail()}"
            )
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    tail = f"\n{process.log_tail()}" if process is not None else ""
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")
