"""Helpers for the serving tests: real ``python -m modelserver`` processes and plain HTTP.

Imported by conftest.py and the test modules (tests/serving is on sys.path under pytest's default
import mode); the unusual module name keeps it from clashing with other test folders.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devcluster.ports import free_port

REPO = Path(__file__).resolve().parents[2]
N_FEATURES = 20


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Reply:
    """One HTTP request on a fresh connection. ``body`` may be bytes or a JSON-able object."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def v2_body(
    rows: list[list[float]], outputs: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "inputs": [
            {
                "name": "input-0",
                "shape": [len(rows), len(rows[0])],
                "datatype": "FP32",
                "data": rows,
            }
        ],
        **extra,
    }
    if outputs is not None:
        doc["outputs"] = [{"name": o} for o in outputs]
    return doc


class Server:
    """A ``python -m modelserver`` process on a free local port."""

    def __init__(
        self,
        args: list[str],
        env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        python: str = sys.executable,
        cwd: Path | None = None,
        preexec: Any = None,
    ) -> None:
        self.port = free_port()
        self.log_path = (log_dir or Path("/tmp")) / f"modelserver-{self.port}.log"
        full_env = {**os.environ, **(env or {})}
        full_env.setdefault("MODELSERVER_CACHE_DIR", str((log_dir or Path("/tmp")) / "cache"))
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [python, "-m", "modelserver", "--host", "127.0.0.1", "--port", str(self.port), *args],
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            preexec_fn=preexec,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, **kw: Any) -> Reply:
        return request(self.port, "GET", path, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> Reply:
        return request(self.port, "POST", path, body, **kw)

    def wait_live(self, timeout: float = 60.0) -> None:
        self.wait_for(lambda r: r.status == 200, "/v2/health/live", timeout)

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.wait_for(lambda r: r.status == 200, "/v2/health/ready", timeout)

    def wait_status(self, status: str, timeout: float = 60.0) -> Reply:
        """Wait until readiness reports a reason containing ``status`` (e.g. 'failed')."""
        return self.wait_for(
            lambda r: r.status == 503 and status in r.json().get("reason", ""),
            "/v2/health/ready",
            timeout,
        )

    def wait_for(
        self, ok: Any, path: str, timeout: float = 60.0, headers: Mapping[str, str] | None = None
    ) -> Reply:
        """Poll GET ``path`` until ``ok(reply)``; fail with the server's log if it never is."""
        deadline = time.monotonic() + timeout
        last: Reply | str = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                reply = self.get(path, timeout=5, headers=headers)
                if ok(reply):
                    return reply
                last = reply
            except OSError as exc:
                last = repr(exc)
            time.sleep(0.05)
        raise AssertionError(f"server not ready in {timeout}s (last: {last}):\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def metrics(self) -> dict[str, float]:
        """The /metrics text parsed into {'name{labels}': value}."""
        return parse_metrics(self.get("/metrics").body)


def parse_metrics(body: bytes) -> dict[str, float]:
    """Prometheus text into {'name{labels}': value}."""
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def metric(values: Mapping[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for key, value in values.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        pairs = dict(p.split("=", 1) for p in rest.rstrip("}").split(",") if "=" in p)
        if all(pairs.get(k) == f'"{v}"' for k, v in labels.items()):
            total += value
    return total
