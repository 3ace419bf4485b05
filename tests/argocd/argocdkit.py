"""Run the ModelDeployment health check and resource actions the way Argo CD runs them, and what
a person should read for each fixture.

The scripts are taken from manifests/argocd/argocd-cm.yaml as Argo CD reads that ConfigMap (the
health key is one Lua script; the actions key is YAML with `discovery.lua` and `definitions`),
and run by tests/argocd/runner — gopher-lua set up as Argo CD sets it up — built from the Go
module proxy into the cache by hack/build-argocd-lua.sh.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ARGOCD = REPO / "manifests" / "argocd"
CM_FILE = ARGOCD / "argocd-cm.yaml"
TESTDATA = ARGOCD / "testdata"
HEALTH_TESTS = ARGOCD / "health_test.yaml"
GROUP_KIND = "modeldeploy.io_ModelDeployment"
HEALTH_KEY = f"resource.customizations.health.{GROUP_KIND}"
ACTIONS_KEY = f"resource.customizations.actions.{GROUP_KIND}"
ACTIONS = ("promote", "abort", "retry", "pause", "resume")
ONE_SHOT = ("promote", "abort", "retry")
# What the actions write: os.date("!%Y-%m-%dT%H:%M:%SZ"), "#2" when that is the value already.
TOKEN = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ(#2)?")
FIXTURE_NAMESPACE = "models"


@functools.cache
def runner() -> Path:
    """The runner binary, built once (hack/build-argocd-lua.sh caches it by source digest)."""
    if shutil.which("go") is None:
        pytest.skip("Go is needed to build the Lua runner (tests/argocd/runner)")
    done = subprocess.run(
        [str(REPO / "hack" / "build-argocd-lua.sh")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"building the Lua runner failed:\n{done.stderr}")
    return Path(done.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Customization:
    """The scripts of one argocd-cm, as Argo CD parses them."""

    health: str
    discovery: str
    actions: dict[str, str]

    @classmethod
    def from_configmap(cls, configmap: dict[str, Any]) -> Customization:
        data = configmap["data"]
        actions = yaml.safe_load(data[ACTIONS_KEY])
        return cls(
            health=data[HEALTH_KEY],
            discovery=actions["discovery.lua"],
            actions={d["name"]: d["action.lua"] for d in actions["definitions"]},
        )


@functools.cache
def shipped() -> Customization:
    return Customization.from_configmap(yaml.safe_load(CM_FILE.read_text()))


def run(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each case {op, script, object} through the runner, in one process; its results."""
    done = subprocess.run(
        [str(runner())],
        input=json.dumps({"cases": cases}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout)["results"])


def health(obj: dict[str, Any], script: str | None = None) -> dict[str, str]:
    [result] = run([{"op": "health", "script": script or shipped().health, "object": obj}])
    assert "error" not in result, result
    return dict(result["health"])


def discover(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    [result] = run([{"op": "discovery", "script": shipped().discovery, "object": obj}])
    assert "error" not in result, result
    return {a["name"]: a for a in result["actions"]}


def enabled(obj: dict[str, Any]) -> set[str]:
    return {name for name, a in discover(obj).items() if not a.get("disabled")}


def act(obj: dict[str, Any], action: str) -> dict[str, Any]:
    """Argo CD's run of one action: {impacted, patch, statusPatch} (the merge patches its API
    server would send)."""
    [result] = run([{"op": "action", "script": shipped().actions[action], "object": obj}])
    assert "error" not in result, result
    return result


# --- fixtures: objects recorded from real rollouts -----------------------------------------


def sanitize(obj: dict[str, Any], namespace: str, replacements: dict[str, str]) -> dict[str, Any]:
    """A recorded object as a fixture: its namespace called `models`, host paths replaced,
    what only the API server needs (managedFields, uid, resourceVersion, kubectl's
    last-applied copy) and kopf's bookkeeping (status.kopf) left out. Nothing else changes."""
    obj = json.loads(json.dumps(obj))
    meta = obj["metadata"]
    for key in ("managedFields", "uid", "resourceVersion"):
        meta.pop(key, None)
    annotations = meta.get("annotations") or {}
    annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    if not annotations:
        meta.pop("annotations", None)
    (obj.get("status") or {}).pop("kopf", None)
    if obj.get("status") == {}:
        obj.pop("status")
    text = json.dumps(obj, ensure_ascii=False)
    for old, new in {**replacements, namespace: FIXTURE_NAMESPACE}.items():
        text = text.replace(old, new)
    return dict(json.loads(text))


def dump(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=True, allow_unicode=True, width=100)


def load_fixture(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((TESTDATA / f"{name}.yaml").read_text()))


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}


def shape(obj: dict[str, Any]) -> dict[str, Any]:
    """What makes a fixture the situation it stands for: phase, generations in step, and the
    kstatus conditions' status and reason."""
    status = obj.get("status") or {}
    kinds = ("Ready", "Progressing", "Degraded", "Reconciling", "Stalled")
    found = conditions(obj)
    return {
        "phase": status.get("phase"),
        "observed": status.get("observedGeneration") == obj["metadata"].get("generation"),
        "conditions": {k: (found[k]["status"], found[k]["reason"]) for k in kinds if k in found},
    }


def _canary(status: dict[str, Any], steps: int) -> str:
    desired, effective = status["desiredWeight"], status.get("effectiveWeight")
    weight = status["weightSummary"] if effective != desired else f"{desired}%"
    return (
        f"canary {status['canaryRevision']} at {weight}, step {status['currentStep'] + 1}/{steps}"
    )


def _rollback(status: dict[str, Any]) -> str:
    record = status["lastRollback"]
    text = record["message"]
    value, threshold = record.get("observedValue"), record.get("threshold")
    if (
        value is not None
        and threshold is not None
        and text == f"{record['check']} {value} broke {threshold}"
    ):
        text = f"{record['check']} {value} vs {threshold}"
    return f"{text} (revision {record['revision']})"


def expected_health(name: str, obj: dict[str, Any]) -> dict[str, str]:
    """The verdict and message a person should get for fixture `name`, from the object's own
    fields — written out per situation, independently of the Lua."""
    status = obj.get("status") or {}
    found = conditions(obj)
    steps = len(obj["spec"]["rollout"]["steps"])
    if name == "missing":
        message = (
            "no status yet: no modeldeploy operator has reconciled this ModelDeployment (is "
            f"one running and watching namespace {obj['metadata']['namespace']}?)"
        )
        return {"status": "Missing", "message": message}
    if name == "old-generation":
        message = (
            f"waiting for the operator to observe generation {obj['metadata']['generation']} "
            f"(status is of generation {status['observedGeneration']})"
        )
        return {"status": "Progressing", "message": message}
    if name == "pending":
        return {"status": "Progressing", "message": found["Progressing"]["message"]}
    if name == "ready":
        message = (
            f"revision {status['stableRevision']} ({status['stableVersion']}) serves: "
            f"{found['Ready']['message']}"
        )
        return {"status": "Healthy", "message": message}
    if name == "held-smoke-inputs":
        return {"status": "Suspended", "message": f"waiting: {found['Stalled']['message']}"}
    if name == "progressing-canary":
        return {"status": "Progressing", "message": _canary(status, steps)}
    if name == "paused":
        message = f"paused by annotation modeldeploy.io/paused: {_canary(status, steps)}"
        return {"status": "Suspended", "message": message}
    if name == "rolling-back":
        return {"status": "Degraded", "message": f"rolling back: {_rollback(status)}"}
    if name in ("rolled-back", "aborted"):
        return {"status": "Degraded", "message": f"rolled back: {_rollback(status)}"}
    if name == "degraded-first-deploy":
        return {"status": "Degraded", "message": found["Degraded"]["message"]}
    raise KeyError(name)


# Which actions the UI offers for each fixture.
ENABLED_ACTIONS = {
    "missing": {"pause"},
    "pending": {"pause"},
    "ready": {"pause"},
    "held-smoke-inputs": {"promote", "abort", "pause"},
    "progressing-canary": {"promote", "abort", "pause"},
    "paused": {"promote", "abort", "resume"},
    "rolling-back": {"retry", "pause"},
    "rolled-back": {"retry", "pause"},
    "aborted": {"retry", "pause"},
    "degraded-first-deploy": {"pause"},
    "old-generation": {"retry", "pause"},
}
FIXTURES = tuple(ENABLED_ACTIONS)
