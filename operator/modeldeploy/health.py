"""The operator's health endpoints, for the kubelet's probes and for people.

- `/healthz` (liveness) fails when a worker has been stuck in one pass for
  `MODELDEPLOY_STUCK_SECONDS`: a restart can cure a stuck thread. It stays healthy while the API
  server is unreachable — restarting the operator cannot fix the API server, and a restart loop
  would only add load when it comes back.
- `/readyz` (readiness) fails while the API server is unreachable, and says since when.

Both answer JSON with the details either way.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .runtime import Runtime

log = logging.getLogger("modeldeploy.health")


@dataclass(frozen=True)
class Verdict:
    ok: bool
    detail: dict[str, Any]


def liveness(now: float, busiest: tuple[float, str], stuck_after: float) -> Verdict:
    """Alive unless a worker has been in the same pass for more than `stuck_after` seconds.

    Example: a worker in "pass of ml/fraud" for 130 s, stuck_after 120 → not alive, naming that
    pass.
    """
    since, activity = busiest
    age = now - since
    if age > stuck_after:
        return Verdict(False, {"workers": f"stuck for {age:.0f}s in {activity}"})
    return Verdict(True, {"workers": f"{activity} for {age:.1f}s"})


def readiness(now: float, down_since: float | None, last_error: str) -> Verdict:
    if down_since is None:
        return Verdict(True, {"apiServer": "reachable"})
    return Verdict(
        False, {"apiServer": f"unreachable for {now - down_since:.0f}s", "lastError": last_error}
    )


def serve_health(runtime: Runtime, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Start the health server in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            now = time.monotonic()
            if self.path == "/healthz":
                verdict = liveness(now, runtime.busiest(), runtime.config.stuck_seconds)
            elif self.path == "/readyz":
                reach = runtime.kube.reachability if runtime.kube else None
                verdict = readiness(
                    now, reach.down_since if reach else None, reach.last_error if reach else ""
                )
            else:
                self.send_error(404)
                return
            body = json.dumps({"ok": verdict.ok, **verdict.detail}).encode()
            self.send_response(200 if verdict.ok else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds would drown the log

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    log.info("health on :%d/healthz and /readyz", port)
    return server
