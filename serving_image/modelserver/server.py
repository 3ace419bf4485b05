"""Running the app under uvicorn: graceful shutdown, fail-fast, and several worker processes.

Shutdown on SIGTERM, in order: readiness goes false at once (Kubernetes stops sending new
traffic); requests keep being served for ``shutdown_delay`` seconds while endpoints update; then
the listener closes, idle connections close, and in-flight requests finish (up to
``shutdown_timeout``) before the process exits 0. A second SIGINT forces the exit. Before the
model is ready there is nothing to drain, and SIGTERM exits 0 at once.

Signal handlers here only set flags (and write a byte to a pipe): Python runs a handler between
any two bytecodes of the main thread, possibly inside a lock the handler would need too, and a
handler that blocks on it hangs the process for good.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import NoReturn

import uvicorn

from . import artifacts
from .app import App
from .config import Settings
from .errors import ModelLoadError

log = logging.getLogger("modelserver")

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class GracefulServer(uvicorn.Server):
    """uvicorn's server, with a not-ready drain period before it stops accepting."""

    def __init__(self, config: uvicorn.Config, app: App, delay: float) -> None:
        super().__init__(config)
        self.modelserver_app = app
        self.delay = delay
        self.drain_deadline: float | None = None
        self._unreported_signal: int | None = None  # the drain's signal, until on_tick logs it

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """The first SIGTERM/SIGINT starts the drain; a later one is uvicorn's (stop now).

        A signal handler: it sets flags only. The interrupted code may hold prometheus_client's
        lock (one lock for every metric of a multi-worker server, taken on every request), so
        updating the ready gauge here would wait forever for a lock this same thread holds.
        ``on_tick`` reports the drain from the event loop instead.
        """
        if self.drain_deadline is None and not self.should_exit:
            if self.modelserver_app is not None:
                if not self.modelserver_app.model.ready:
                    _exit_before_ready(sig)
                self.modelserver_app.start_draining()
            self._unreported_signal = sig
            # The drain ends in on_tick. Not handing the first signal to uvicorn is deliberate:
            # it would re-raise it after shutdown, and a clean drain should exit 0.
            self.drain_deadline = time.monotonic() + self.delay
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._unreported_signal is not None:
            log.info("received %s", signal.Signals(self._unreported_signal).name)
            self._unreported_signal = None
            if self.modelserver_app is not None:
                self.modelserver_app.report_draining()
        if self.drain_deadline is not None and time.monotonic() >= self.drain_deadline:
            self.should_exit = True
            if self.modelserver_app is not None:
                # gRPC stops taking calls now, with REST, and drains alongside it.
                self.modelserver_app.stop_grpc_soon()
        return await super().on_tick(counter)


def _exit_before_ready(sig: int) -> NoReturn:
    """A stop signal before the model is ready: exit 0 at once, from the signal handler.

    There is nothing to drain: Kubernetes sends no traffic to a pod that is not ready, and a
    worker of several accepts nothing before its model is loaded. Draining would mean waiting
    for the load, which nothing can interrupt (a thread inside a framework, or a download) and
    which can outlast the pod's grace period. ``os.write`` and ``os._exit`` take no locks.
    """
    name = signal.Signals(sig).name
    os.write(2, f"modelserver[{os.getpid()}]: received {name} before the model was ready: "
                "exiting now, there is nothing to drain\n".encode())  # fmt: skip
    os._exit(0)


def _uvicorn_config(settings: Settings, app: App) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http="httptools",
        loop="auto",
        lifespan="on",
        log_config=None,
        access_log=settings.access_log,
        server_header=False,
        limit_concurrency=settings.max_concurrency,
        timeout_graceful_shutdown=int(settings.shutdown_timeout),
        timeout_keep_alive=5,
    )


def serve(settings: Settings) -> int:
    """Serve until stopped; returns the process exit code."""
    if settings.workers > 1:
        return _serve_workers(settings)
    server: GracefulServer | None = None

    def fatal() -> None:
        if server is not None:
            server.should_exit = True

    app = App(settings, on_fatal=fatal)
    server = GracefulServer(_uvicorn_config(settings, app), app, settings.shutdown_delay)
    server.run()
    return app.exit_code


def _serve_workers(settings: Settings) -> int:
    """Several processes accepting on one socket; a crash of any worker stops the pod.

    The artifact is fetched and verified once here, so workers load a checked local copy and a
    fail-fast problem is found before any worker starts. Metric values live in files under the
    cache directory and every worker's /metrics merges them. A worker that dies unexpectedly
    takes the others down with it and the exit code is non-zero: Kubernetes restarts the pod,
    which is simpler to reason about than a supervisor that restarts workers forever.
    """
    if settings.model_uri:
        try:
            artifacts.fetch(settings.model_uri, settings.cache_dir, settings.model_sha256)
        except ModelLoadError as exc:
            log.error("model %r is NOT READY: %s", settings.model_name, exc)
            if settings.fail_fast:
                return 1
    metrics_dir = os.path.join(settings.cache_dir, f"metrics-{os.getpid()}")
    os.makedirs(metrics_dir, exist_ok=True)
    for name in os.listdir(metrics_dir):
        os.unlink(os.path.join(metrics_dir, name))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    sock = uvicorn.Config(
        "modelserver:unused", host=settings.host, port=settings.port
    ).bind_socket()
    workers = Workers(settings, sock)
    signal.signal(signal.SIGTERM, workers.on_signal)
    signal.signal(signal.SIGINT, workers.on_signal)
    try:
        workers.start()
        log.info("started %d workers on %s:%d", len(workers.pids()), settings.host, settings.port)
        code = workers.wait()
    finally:
        workers.stop_and_wait()  # after wait() a no-op; on an error here, no worker is left
        sock.close()
    from prometheus_client import multiprocess

    for pid in workers.pids():
        multiprocess.mark_process_dead(pid, metrics_dir)
    return code


class Workers:
    """The worker processes of one server, and SIGTERM passed on to them.

    The parent's signal handler only records the signal and wakes the wait loop through a
    pipe; the loop does the rest. So a signal that arrives while workers are still being
    started stops them all (none is started after it, each started one gets SIGTERM), and a
    parent that exits for any reason first stops and waits for its workers. A parent killed
    outright cannot: each worker has the kernel kill it when its parent dies (``_worker``).
    """

    def __init__(self, settings: Settings, sock: socket.socket) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._procs: list[BaseProcess] = [
            ctx.Process(target=_worker, args=(settings, sock, os.getpid()), name=f"worker-{i}")
            for i in range(settings.workers)
        ]
        self._signals_received = 0
        self._signals_forwarded = 0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def on_signal(self, sig: int, frame: FrameType | None) -> None:
        """SIGTERM/SIGINT to the parent: counted here, passed on by ``wait``."""
        self._signals_received += 1
        with contextlib.suppress(BlockingIOError):  # full: the loop has wake-ups pending
            os.write(self._wake_w, b"\0")

    @property
    def stopping(self) -> bool:
        return self._signals_received > 0

    def start(self) -> None:
        for proc in self._procs:
            if self.stopping:
                return
            proc.start()

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def _started(self) -> list[BaseProcess]:
        return [p for p in self._procs if p.pid is not None]

    def _terminate(self) -> None:
        """SIGTERM to every started worker that has not exited."""
        for proc in self._started():
            if proc.pid is not None and proc.exitcode is None:
                os.kill(proc.pid, signal.SIGTERM)

    def wait(self) -> int:
        """Until every started worker exits. Returns the exit code for the server.

        Each signal the parent receives is passed on once, as SIGTERM. The first worker that
        exits when no stop was asked for stops the others and sets the code.
        """
        code = 0
        while True:
            if self._signals_forwarded < self._signals_received:
                self._signals_forwarded = self._signals_received
                self._terminate()
            running = [p for p in self._started() if p.exitcode is None]
            if not running:
                return code or self._exit_code()
            multiprocessing.connection.wait([p.sentinel for p in running] + [self._wake_r])
            with contextlib.suppress(BlockingIOError):  # empty: a worker exited, no signal
                os.read(self._wake_r, 512)
            for proc in running:
                if proc.exitcode is not None and not self.stopping:
                    log.error("worker %s exited with code %s; stopping the others",
                              proc.name, proc.exitcode)  # fmt: skip
                    code = proc.exitcode or 1
                    self.on_signal(signal.SIGTERM, None)

    def _exit_code(self) -> int:
        """The first worker's non-zero code; a worker that SIGTERM ended before it could drain
        (still starting up) stopped as asked, which is not an error."""
        for proc in self._started():
            code = proc.exitcode
            if code is not None and code not in (0, -signal.SIGTERM):
                return code
        return 0

    def stop_and_wait(self) -> None:
        """For a parent on its way out with workers still running: SIGTERM, then wait."""
        if any(p.exitcode is None for p in self._started()):
            self._terminate()
            for proc in self._started():
                proc.join()


def _die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this worker as soon as its parent dies, however it dies.

    A parent killed with SIGKILL (or by the OOM killer) passes nothing on; its workers would
    keep running unsupervised, still bound to the port. SIGKILL rather than SIGTERM: a parent
    that is gone was stopped hard, and a worker that drains (or hangs) would hold the port on.
    Linux only (prctl); elsewhere a worker can outlive a killed parent.
    """
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def _worker(settings: Settings, sock: socket.socket, parent_pid: int) -> None:
    """One worker process: the same server as a single-process run, on an inherited socket."""
    _die_with_parent(parent_pid)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s %(name)s[{os.getpid()}]: %(message)s",
    )
    server: GracefulServer | None = None

    def fatal() -> None:
        if server is not None:
            server.should_exit = True

    app = App(settings, on_fatal=fatal, load_in_background=False)
    server = GracefulServer(_uvicorn_config(settings, app), app, settings.shutdown_delay)
    server.run(sockets=[sock])
    raise SystemExit(app.exit_code)
