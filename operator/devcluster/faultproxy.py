"""A TCP proxy in front of the API server that a test can take down, as an outage would.

The operator under test gets a kubeconfig pointing at the proxy (TLS passes through untouched:
the API server's certificate is for 127.0.0.1), while the test and every other component keep
talking to the API server directly. Two kinds of outage:

- `refuse()`: every open connection is cut and new ones are refused — the API server process is
  down;
- `blackhole()`: connections are accepted but no byte moves either way — a partition or a hung
  server, the case where a client without timeouts waits forever.

`restore()` ends either; clients reconnect on their own.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from pathlib import Path

import yaml

from .ports import free_port


class FaultProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._mode = "up"
        self._lock = threading.Lock()
        self._connections: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- control ---------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._listen()
        self._thread = threading.Thread(target=self._accept_loop, name="faultproxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._close_listener()
        self._cut_all()

    def refuse(self) -> None:
        with self._lock:
            self._mode = "refuse"
        self._close_listener()
        self._cut_all()

    def blackhole(self) -> None:
        with self._lock:
            self._mode = "blackhole"

    def restore(self) -> None:
        with self._lock:
            was, self._mode = self._mode, "up"
        if was == "blackhole":
            self._cut_all()  # held connections carry half-sent requests: start clean
        if self._listener is None:
            self._listen()

    def kubeconfig(self, source: Path, target: Path) -> Path:
        """A copy of `source` whose server is this proxy."""
        config = yaml.safe_load(source.read_text())
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = f"https://127.0.0.1:{self.port}"
        target.write_text(yaml.safe_dump(config))
        return target

    # --- plumbing --------------------------------------------------------------------------
    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.2)
        self._listener = listener

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def _cut_all(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            listener = self._listener
            if listener is None:
                self._stop.wait(0.1)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            self._connections += [client, server]
        pair = {client: server, server: client}
        try:
            while not self._stop.is_set():
                with self._lock:
                    mode = self._mode
                if mode == "blackhole":
                    self._stop.wait(0.1)
                    continue
                readable, _, _ = select.select(list(pair), [], [], 0.2)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    pair[source].sendall(data)
        except (OSError, ValueError):  # ValueError: _cut_all closed a socket (fd -1) under select
            return
        finally:
            for conn in (client, server):
                with contextlib.suppress(OSError):
                    conn.close()
