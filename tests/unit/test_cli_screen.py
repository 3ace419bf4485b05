"""The kubectl plugin's screens, drawn from ModelDeployments recorded from real rollouts
(manifests/argocd/testdata) — the same objects the Argo CD health check is tested on."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import yaml
from modeldeploy.cli import _cut
from modeldeploy.cli.screen import Style, check_line, history_screen, parse_time, status_screen

TESTDATA = Path(__file__).resolve().parents[2] / "manifests" / "argocd" / "testdata"


def fixture(name: str) -> dict:
    return dict(yaml.safe_load((TESTDATA / f"{name}.yaml").read_text()))


def seconds_after(obj: dict, field: str, seconds: int) -> dt.datetime:
    at = parse_time(obj["status"][field])
    assert at is not None
    return at + dt.timedelta(seconds=seconds)


def test_a_canary_shows_its_step_weights_and_checks():
    md = fixture("progressing-canary")
    lines = status_screen(md, [], [], seconds_after(md, "stepStartedAt", 7))
    status = md["status"]
    assert "Status:        ◌ Progressing" in lines
    assert "  Step:        1/3  (25% → 50% → 100%, 300s each; 7s at this step)" in lines
    assert f"  Weight:      25% desired → {status['effectiveWeight']:g}% effective" in lines
    assert any(line.startswith("  ✔ smokeTests     1 sample") for line in lines), lines
    assert "Last rollback: none" in lines


def test_a_rollback_names_the_check_its_value_and_threshold():
    md = fixture("rolled-back")
    record = md["status"]["lastRollback"]
    lines = status_screen(md, [], [], dt.datetime.now(dt.UTC))
    text = "\n".join(lines)
    assert "Status:        ✖ Degraded" in lines
    assert f"errorRate {record['observedValue']} vs {record['threshold']}" in text, text


def test_history_lists_the_newest_first():
    md = fixture("aborted")
    lines = history_screen(md, dt.datetime.now(dt.UTC))
    header = lines.index("") + 1
    assert lines[header].split()[:3] == ["REVISION", "VERSION", "OUTCOME"]
    rows = [line.split()[:3] for line in lines[header + 1 :]]
    finished = sorted(md["status"]["history"], key=lambda e: e["finishedAt"], reverse=True)
    assert [[r, o] for r, _, o in rows] == [[e["revision"], e["outcome"]] for e in finished]
    assert "aborted on request" in lines[header + 1]


def test_check_lines_say_one_sample_not_one_samples():
    assert check_line({"name": "smokeTests", "outcome": "Passed", "samples": 1})[2] == "1 sample"
    assert check_line({"name": "errorRate", "outcome": "Passed", "value": "0%",
                       "threshold": "5%", "samples": 20})[2] == "0% vs 5%, 20 samples"  # fmt: skip


def test_colour_only_when_asked_and_cut_keeps_the_escapes():
    assert Style().mark("✔", "Ready") == "✔ Ready"
    coloured = Style(color=True).mark("✔", "Ready")
    assert coloured.startswith("\x1b[") and coloured.endswith("\x1b[0m")
    assert _cut(coloured, 3) == coloured.replace("Ready", "R")
