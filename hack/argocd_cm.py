"""Render manifests/argocd/argocd-cm.yaml — the argocd-cm entries for ModelDeployments — from the
Lua files beside it (health.lua, actions/discovery.lua, actions/<name>/action.lua).

    make generated          write it (hack/generate.py, with the other generated files)
    make check-generated    fail with a diff when the committed file differs

The file is what a person merges into Argo CD's argocd-cm ConfigMap (manifests/README.md shows
it); Argo CD reads the health key as one Lua script and the actions key as YAML with
`discovery.lua` and `definitions` (name, `action.lua`).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "manifests" / "argocd"
OUT = ROOT / "argocd-cm.yaml"
KEY = "modeldeploy.io_ModelDeployment"
ACTIONS = ("promote", "abort", "retry", "pause", "resume")  # the order the UI lists them in


def indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "".join(pad + line if line.strip() else "\n" for line in text.splitlines(True))


def render() -> str:
    actions = "discovery.lua: |\n" + indent((ROOT / "actions" / "discovery.lua").read_text(), 2)
    actions += "definitions:\n"
    for name in ACTIONS:
        script = (ROOT / "actions" / name / "action.lua").read_text()
        actions += f"  - name: {name}\n    action.lua: |\n" + indent(script, 6)
    return (
        "# Argo CD's health check and resource actions for ModelDeployments, generated from the\n"
        "# Lua files beside this one by `make generated`. Merge into the argocd-cm ConfigMap:\n"
        "#   kubectl -n argocd patch configmap argocd-cm --type merge \\\n"
        "#     --patch-file manifests/argocd/argocd-cm.yaml\n"
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        "  name: argocd-cm\n"
        "  namespace: argocd\n"
        "data:\n"
        f"  resource.customizations.health.{KEY}: |\n"
        + indent((ROOT / "health.lua").read_text(), 4)
        + f"  resource.customizations.actions.{KEY}: |\n"
        + indent(actions, 4)
    )
