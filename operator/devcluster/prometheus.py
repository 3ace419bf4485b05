"""A real Prometheus on 127.0.0.1 that scrapes the pod runner's model servers every second.

Targets come from a file_sd file the PodRunner keeps up to date (one entry per ready serving pod),
as Prometheus' Kubernetes discovery would find them in a cluster.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from .ports import free_port
from .processes import ManagedProcess, spawn, terminate, wait_until


@dataclass
class PrometheusServer:
    binary: Path
    workdir: Path
    port: int = 0
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def targets_file(self) -> Path:
        return self.workdir / "targets.json"

    def start(self) -> PrometheusServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.targets_file.write_text("[]")
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
            "scrape_configs": [
                {
                    "job_name": "modelserver",
                    "file_sd_configs": [
                        {"files": [str(self.targets_file)], "refresh_interval": "1s"}
                    ],
                }
            ],
        }
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process = spawn(
            "prometheus",
            [
                str(self.binary),
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            self.workdir,
            die_with_parent=True,
        )

        def ready() -> bool:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)

        wait_until(ready, 60, "prometheus /-/ready", self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)

    def write_targets(self, targets: list[tuple[str, dict[str, str]]]) -> None:
        """[(host:port, labels)] → the file_sd file, replaced atomically."""
        doc = [{"targets": [address], "labels": labels} for address, labels in targets]
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.targets_file)
