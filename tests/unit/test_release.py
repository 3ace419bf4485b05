"""Release hygiene: one version (pyproject.toml's) everywhere it is written, the license, the
changelog and the operator's console script."""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
# sha256 of the Apache License 2.0 as published at https://www.apache.org/licenses/LICENSE-2.0.txt
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
IMAGE = re.compile(r"ghcr\.io/modeldeploy/(operator|modelserver):(\d[\w.+-]*)")
# Every file that names one of our images with a tag.
FILES_WITH_IMAGES = (
    "Makefile",
    "README.md",
    "operator/Dockerfile",
    "operator/modeldeploy/config.py",
    "manifests/**/*.yaml",
    "manifests/README.md",
    "charts/**/*.yaml",
)


def test_version_is_a_release_version() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION), VERSION


def test_the_installed_distribution_has_the_version() -> None:
    assert importlib.metadata.version("modeldeploy") == VERSION, "stale venv: run make venv"


def test_serving_image_distribution_has_the_version() -> None:
    import modelserver

    serving = tomllib.loads((REPO / "serving_image" / "pyproject.toml").read_text())
    assert serving["project"]["version"] == VERSION
    assert modelserver.__version__ == VERSION


def test_image_tags_are_the_version() -> None:
    found: dict[str, set[str]] = {}
    for pattern in FILES_WITH_IMAGES:
        for path in REPO.glob(pattern):
            for image, tag in IMAGE.findall(path.read_text()):
                found.setdefault(f"{image}:{tag}", set()).add(str(path.relative_to(REPO)))
    assert {image.split(":")[1] for image in found} == {VERSION}, found
    # The operator's default serving image, and what the shipped Deployment runs.
    from modeldeploy.config import DEFAULT_SERVING_IMAGE

    serving_image = f"ghcr.io/modeldeploy/modelserver:{VERSION}"
    assert serving_image == DEFAULT_SERVING_IMAGE
    deployment = yaml.safe_load((REPO / "manifests" / "base" / "deployment.yaml").read_text())
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"ghcr.io/modeldeploy/operator:{VERSION}"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELDEPLOY_SERVING_IMAGE"] == DEFAULT_SERVING_IMAGE


def test_chart_version_and_app_version_are_the_version() -> None:
    chart = yaml.safe_load((REPO / "charts" / "modeldeploy" / "Chart.yaml").read_text())
    assert chart["version"] == VERSION
    assert chart["appVersion"] == VERSION
    values = yaml.safe_load((REPO / "charts" / "modeldeploy" / "values.yaml").read_text())
    assert values["image"]["tag"] == values["servingImage"]["tag"] == ""  # i.e. appVersion


def test_changelog_starts_with_the_version() -> None:
    changelog = (REPO / "CHANGELOG.md").read_text()
    versions = re.findall(r"^## \[([^\]]+)\]", changelog, re.M)
    assert versions and versions[0] == VERSION, versions


def test_license_is_the_apache_2_text_pyproject_names() -> None:
    assert PYPROJECT["project"]["license"] == {"text": "Apache-2.0"}
    serving = tomllib.loads((REPO / "serving_image" / "pyproject.toml").read_text())
    assert serving["project"]["license"] == {"text": "Apache-2.0"}
    text = (REPO / "LICENSE").read_bytes()
    assert hashlib.sha256(text).hexdigest() == APACHE_2_SHA256
    assert b"TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text


def test_console_script_runs_the_operator() -> None:
    """`modeldeploy-operator` is `python -m modeldeploy`: same entry point, and it runs it (a
    setting it refuses makes it exit 2 naming the variable, before any API call)."""
    from modeldeploy.__main__ import main

    assert PYPROJECT["project"]["scripts"]["modeldeploy-operator"] == "modeldeploy.__main__:main"
    [entry] = [
        e
        for e in importlib.metadata.entry_points(group="console_scripts")
        if e.name == "modeldeploy-operator"
    ]
    assert entry.load() is main
    script = Path(sys.executable).parent / "modeldeploy-operator"
    done = subprocess.run(
        [str(script)],
        env={"MODELDEPLOY_RESYNC_SECONDS": "soon", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert "MODELDEPLOY_RESYNC_SECONDS" in done.stderr
