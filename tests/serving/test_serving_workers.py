"""Several worker processes: requests are served, /metrics adds up every worker's counts, SIGTERM
drains every worker and exits 0, and workers never outlive their parent."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from modelserver import metric_names as m
from servingkit import metric, v2_body


def test_two_workers(start_server, models) -> None:  # type: ignore[no-untyped-def]
    server = start_server("--model-uri", str(models.lr), "--workers", "2")
    server.wait_ready()
    body = v2_body(models.x[:1].tolist())
    for _ in range(30):  # fresh connections land on either worker
        assert server.post("/v2/models/model/infer", body).status == 200
    for _ in range(4):
        total = metric(server.metrics(), m.REQUESTS_TOTAL, endpoint="infer", code="200")
        assert total == 30
    assert server.stop() == 0


def test_sigterm_drains_every_worker(start_server, models) -> None:  # type: ignore[no-untyped-def]
    """During the drain each worker still serves, says it is not ready, and then exits 0.

    The 10 s delay only leaves the checks ample time to watch the drain under load.
    """
    server = start_server("--model-uri", str(models.lr), "--workers", "2",
                          "--shutdown-delay", "10")  # fmt: skip
    server.wait_ready()
    deadline = time.monotonic() + 60
    while server.log().count("READY in") < 2:  # both workers serve (one still loading would
        assert time.monotonic() < deadline, server.log()  # just exit: it has nothing to drain)
        time.sleep(0.05)
    server.proc.send_signal(signal.SIGTERM)
    server.wait_for(lambda r: r.status == 503, "/v2/health/ready", 30)
    server.wait_for(
        lambda r: (
            "modelserver_model_ready{" in r.body.decode()
            and metric(_parse(r.body), m.MODEL_READY) == 0
        ),
        "/metrics",
        30,
    )
    assert server.proc.wait(30) == 0
    assert server.log().count("draining: readiness is now false") == 2


def _parse(exposition: bytes) -> dict[str, float]:
    out = {}
    for line in exposition.decode().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


# A SIGTERM is handled between two bytecodes of whatever the main thread runs. With several
# workers, prometheus_client guards every metric value with one non-reentrant lock, taken on
# every request; the script makes the signal land while that lock is held, which a busy server
# (or a loaded machine that preempts it there) does by chance.
SIGNAL_INSIDE_METRICS_LOCK = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from prometheus_client import values

    armed = False

    def pid_inside_the_lock():  # prometheus_client calls this while it holds its lock
        global armed
        if armed:
            armed = False
            os.kill(os.getpid(), signal.SIGTERM)
        return os.getpid()

    values.ValueClass = values.MultiProcessValue(process_identifier=pid_inside_the_lock)

    from modelserver.app import App
    from modelserver.config import load_settings
    from modelserver.server import GracefulServer, _uvicorn_config

    settings = load_settings(["--model-uri", sys.argv[1]], {})
    app = App(settings)
    assert asyncio.run(app.model.load()), app.model.status  # a ready server drains
    server = GracefulServer(_uvicorn_config(settings, app), app, 0.0)
    signal.signal(signal.SIGTERM, server.handle_exit)
    armed = True
    app.metrics.observe_request("model", "infer", 200, 0.001)  # one request's metric update
    assert not armed, "the signal was not sent"
    print("ready:", app.ready, "draining:", app.draining, flush=True)
    """
)


def test_sigterm_while_a_metric_is_being_updated_does_not_hang_the_worker(tmp_path, models) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    env.update(models.env())
    try:
        done = subprocess.run(
            [sys.executable, "-c", SIGNAL_INSIDE_METRICS_LOCK, str(models.lr)],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("the SIGTERM handler deadlocked on the metrics lock") from exc
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ready: False draining: True"


def _children(pid: int) -> dict[int, str]:
    """Processes whose parent is ``pid``, with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found[int(entry.name)] = cmdline
    return found


def _running(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
    return True


def test_workers_die_with_a_killed_parent(start_server, models) -> None:  # type: ignore[no-untyped-def]
    """A parent killed with SIGKILL cannot pass anything on: the kernel must stop its workers."""
    server = start_server("--model-uri", str(models.lr), "--workers", "2")
    server.wait_ready()
    children = _children(server.proc.pid)
    workers = [pid for pid, cmd in children.items() if "spawn_main" in cmd]
    assert len(workers) == 2, children
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    deadline = time.monotonic() + 30
    while [pid for pid in children if _running(pid)] or not _port_free(server.port):
        running = {pid: children[pid] for pid in children if _running(pid)}
        assert time.monotonic() < deadline, f"still running after the parent died: {running}"
        time.sleep(0.05)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_while_the_model_loads_exits_at_once(start_server, tmp_path, workers) -> None:  # type: ignore[no-untyped-def]
    """A server that is not ready has no traffic to drain, and a load can take minutes (a big
    download, a loaded node): SIGTERM must not wait for it."""
    gate = tmp_path / "gate"
    gate.mkdir()
    server = start_server("--format", "custom", "--model-class", "ms_test_models:LoadGateModel",
                          "--workers", str(workers), env={"GATE_DIR": str(gate)})  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(list(gate.glob("loading-*"))) < workers:  # every process is inside the load
            assert server.proc.poll() is None and time.monotonic() < deadline, server.log()
            time.sleep(0.02)
        server.proc.send_signal(signal.SIGTERM)
        try:
            code = server.proc.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running 30 s after SIGTERM:\n{server.log()}") from None
        assert code == 0, server.log()
        assert "received SIGTERM" in server.log()
    finally:
        (gate / "release").touch()
