"""Running the app under uvicorn: graceful shutdown, fail-fast, and several worker processes.

Shutdown on SIGTERM, in order: readiness goes false at once (Kubernetes stops sending new
traffic); requests keep being served for ``shutdown_delay`` seconds while endpoints update; then
the listener closes, idle connections close, and in-flight requests finish (up to
``shutdown_timeout``) before the process exits 0. A second SIGINT forces the exit.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from types import FrameType

import uvicorn

from . import artifacts
from .app import App
from .config import Settings
from .errors import ModelLoadError

log = logging.getLogger("modelserver")


class GracefulServer(uvicorn.Server):
    """uvicorn's server, with a not-ready drain period before it stops accepting."""

    def __init__(self, config: uvicorn.Config, app: App, delay: float) -> None:
        super().__init__(config)
        self.modelserver_app = app
        self.delay = delay
        self.drain_deadline: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain_deadline is None and not self.should_exit:
            log.info("received %s", signal.Signals(sig).name)
            if self.modelserver_app is not None:
                self.modelserver_app.start_draining()
            # The drain ends in on_tick. Not handing the first signal to uvicorn is deliberate:
            # it would re-raise it after shutdown, and a clean drain should exit 0.
            self.drain_deadline = time.monotonic() + self.delay
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.drain_deadline is not None and time.monotonic() >= self.drain_deadline:
            self.should_exit = True
        return await super().on_tick(counter)


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
    import multiprocessing

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
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker, args=(settings, sock), name=f"worker-{i}")
        for i in range(settings.workers)
    ]
    stopping = False

    def forward(sig: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.pid is not None and p.exitcode is None:
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for p in procs:
        p.start()
    log.info("started %d workers on %s:%d", len(procs), settings.host, settings.port)
    code = 0
    while any(p.exitcode is None for p in procs):
        for p in procs:
            p.join(timeout=0.2)
            if p.exitcode is not None and not stopping:
                log.error("worker %s exited with code %s; stopping the others", p.name, p.exitcode)
                code = p.exitcode or 1
                forward(signal.SIGTERM, None)
    from prometheus_client import multiprocess

    for p in procs:
        if p.pid is not None:
            multiprocess.mark_process_dead(p.pid, metrics_dir)
        code = code or (p.exitcode or 0)
    sock.close()
    return code


def _worker(settings: Settings, sock: socket.socket) -> None:
    """One worker process: the same server as a single-process run, on an inherited socket."""
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
