"""What `kubectl modeldeploy status` and `history` print: pure functions of a ModelDeployment, its
Deployments and Pods (as the API server returns them, dicts) and the time.

The status screen has a summary (phase, step k/n, desired → effective weight, each analysis check
with its value vs threshold and samples, a hold, the last rollback) and a tree of revisions →
Deployments → Pods in the style of `kubectl argo rollouts get rollout`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# The request annotations of operator/modeldeploy/actions.py (a unit test keeps them equal).
PREFIX = "modeldeploy.io/"
ONE_SHOT = ("promote", "abort", "retry")
PAUSED = f"{PREFIX}paused"
NAME_LABEL = "modeldeploy.io/name"
REVISION_LABEL = "modeldeploy.io/revision"

OK, BAD, BUSY, PAUSE, WARN = "✔", "✖", "◌", "॥", "⚠"
PHASE_SYMBOL = {
    "Ready": OK,
    "Progressing": BUSY,
    "Pending": BUSY,
    "Paused": PAUSE,
    "RollingBack": BAD,
    "Degraded": BAD,
}
OUTCOME_SYMBOL = {"Passed": OK, "Failed": BAD, "Inconclusive": BUSY}
COLORS = {OK: "32", BAD: "31", BUSY: "33", PAUSE: "33", WARN: "33"}


def truthy(value: str | None) -> bool:
    """The operator's reading of modeldeploy.io/paused."""
    return (value or "").strip().lower() in ("true", "yes", "1")


def parse_time(value: Any) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def age(since: Any, now: dt.datetime) -> str:
    """kubectl's short ages: 45s, 3m12s, 14m, 5h, 3d."""
    start = parse_time(since)
    if start is None:
        return ""
    seconds = max(0, int((now - start).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    return f"{hours}h" if hours < 48 else f"{hours // 24}d"


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type", ""): c for c in status.get("conditions") or []}


@dataclass
class Style:
    """Colour for a terminal (never when writing to a pipe or with NO_COLOR)."""

    color: bool = False

    def mark(self, symbol: str, text: str = "") -> str:
        shown = f"{symbol} {text}".rstrip()
        if not self.color or symbol not in COLORS:
            return shown
        return f"\x1b[{COLORS[symbol]}m{shown}\x1b[0m"


def revision_label(revision: str, version: str | None) -> str:
    return f"{revision} ({version})" if version else revision


def weight_text(status: dict[str, Any], short: bool = False) -> str:
    """`25% desired → 33.3% effective` (short: `25% → 33.3%`), or `25%` when they agree."""
    desired, effective = status.get("desiredWeight"), status.get("effectiveWeight")
    if desired is None:
        return ""
    if effective is None or float(effective) == float(desired):
        return f"{desired}%"
    if short:
        return f"{desired}% → {effective:g}%"
    return f"{desired}% desired → {effective:g}% effective"


def samples(count: int) -> str:
    return "1 sample" if count == 1 else f"{count} samples"


def check_line(check: dict[str, Any]) -> tuple[str, str, str]:
    """(symbol, name, detail) of one analysis check, e.g. (✔, errorRate, 0% vs 5%, 15 samples)."""
    parts = []
    value, threshold = check.get("value"), check.get("threshold")
    if value is not None and threshold is not None:
        parts.append(f"{value} vs {threshold}")
    elif value is not None:
        parts.append(str(value))
    if check.get("samples") is not None:
        parts.append(samples(check["samples"]))
    detail = ", ".join(parts)
    message = check.get("message")
    if message and check.get("outcome") != "Passed":
        detail = f"{detail}: {message}" if detail else message
    return OUTCOME_SYMBOL.get(check.get("outcome", ""), BUSY), check.get("name", "?"), detail


def rollback_lines(record: dict[str, Any], now: dt.datetime) -> list[str]:
    what = record.get("message") or record.get("check", "")
    value, threshold = record.get("observedValue"), record.get("threshold")
    check = record.get("check", "")
    if value is not None and threshold is not None and what == f"{check} {value} broke {threshold}":
        what = f"{check} {value} vs {threshold}"
    facts = []
    if record.get("samples") is not None:
        window = f" over {record['window']}" if record.get("window") else ""
        facts.append(f"{samples(record['samples'])}{window}")
    if record.get("timeToDetect"):
        facts.append(f"detected {record['timeToDetect']} after first traffic")
    if record.get("timeSinceStart"):
        facts.append(f"{record['timeSinceStart']} after the canary started")
    head = revision_label(record.get("revision", "?"), record.get("version"))
    lines = [f"{head}, {age(record.get('time'), now)} ago: {what}"]
    if facts:
        lines.append("; ".join(facts))
    return lines


def _pod_state(pod: dict[str, Any]) -> tuple[str, str, str]:
    """(symbol, status word, ready:x/y) like kubectl get pods."""
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    total = len((pod.get("spec") or {}).get("containers") or []) or len(statuses)
    info = f"ready:{ready}/{total}"
    restarts = sum(int(s.get("restartCount") or 0) for s in statuses)
    if restarts:
        info += f",restarts:{restarts}"
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return BUSY, "Terminating", info
    for s in statuses:
        waiting = (s.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") not in (None, "ContainerCreating"):
            return BAD, str(waiting["reason"]), info
    phase = status.get("phase", "Pending")
    if phase == "Running" and total and ready == total:
        return OK, "Running", info
    if phase in ("Failed",):
        return BAD, phase, info
    return BUSY, phase, info


def _deployment_state(deployment: dict[str, Any]) -> tuple[str, str, str]:
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    wanted = int(spec.get("replicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    info = f"{ready}/{wanted} ready"
    if wanted == 0:
        return BUSY if status.get("replicas") else OK, "ScaledDown", info
    if ready >= wanted:
        return OK, "Available", info
    return BUSY, "Progressing", info


@dataclass
class Row:
    tree: str
    kind: str = ""
    status: str = ""
    age: str = ""
    info: str = ""


def revision_roles(status: dict[str, Any]) -> dict[str, str]:
    roles = {}
    for entry in status.get("rejectedRevisions") or []:
        roles[entry["revision"]] = "rejected"
    if status.get("stableRevision"):
        roles[status["stableRevision"]] = "stable"
    if status.get("canaryRevision"):
        roles[status["canaryRevision"]] = "canary"
    return roles


def _versions(status: dict[str, Any]) -> dict[str, str]:
    versions: dict[str, str] = {}
    for entry in status.get("history") or []:
        if entry.get("version"):
            versions.setdefault(entry["revision"], entry["version"])
    if status.get("stableRevision") and status.get("stableVersion"):
        versions[status["stableRevision"]] = status["stableVersion"]
    if status.get("canaryRevision") and status.get("canaryVersion"):
        versions[status["canaryRevision"]] = status["canaryVersion"]
    return versions


def tree_rows(
    md: dict[str, Any],
    deployments: Iterable[dict[str, Any]],
    pods: Iterable[dict[str, Any]],
    now: dt.datetime,
    style: Style,
) -> list[Row]:
    status = md.get("status") or {}
    phase = status.get("phase") or "Unknown"
    rows = [
        Row(
            f"⟳ {md['metadata']['name']}",
            "ModelDeployment",
            style.mark(PHASE_SYMBOL.get(phase, BUSY), phase),
            age(md["metadata"].get("creationTimestamp"), now),
        )
    ]
    roles, versions = revision_roles(status), _versions(status)
    by_revision: dict[str, list[dict[str, Any]]] = {}
    for deployment in deployments:
        revision = (deployment["metadata"].get("labels") or {}).get(REVISION_LABEL, "?")
        by_revision.setdefault(revision, []).append(deployment)
    order = {"canary": 0, "stable": 1, "previous": 2, "rejected": 3}
    revisions = sorted(by_revision, key=lambda r: (order.get(roles.get(r, "previous"), 9), r))
    pods_by_revision: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        revision = (pod["metadata"].get("labels") or {}).get(REVISION_LABEL, "?")
        pods_by_revision.setdefault(revision, []).append(pod)
    for i, revision in enumerate(revisions):
        last_revision = i == len(revisions) - 1
        branch, stem = ("└──", "   ") if last_revision else ("├──", "│  ")
        role = roles.get(revision, "previous")
        info = role
        if role == "canary" and weight_text(status):
            info += f" {weight_text(status, short=True)}"
        version = versions.get(revision)
        head = f"# revision:{revision}" + (f" ({version})" if version else "")
        rows.append(Row(f"{branch}{head}", info=info))
        group = sorted(by_revision[revision], key=lambda d: d["metadata"]["name"])
        for j, deployment in enumerate(group):
            last_deployment = j == len(group) - 1
            d_branch, d_stem = ("└──", "   ") if last_deployment else ("├──", "│  ")
            symbol, word, d_info = _deployment_state(deployment)
            rows.append(
                Row(
                    f"{stem}{d_branch}⧉ {deployment['metadata']['name']}",
                    "Deployment",
                    style.mark(symbol, word),
                    age(deployment["metadata"].get("creationTimestamp"), now),
                    d_info,
                )
            )
            members = sorted(
                pods_by_revision.get(revision, []), key=lambda p: p["metadata"]["name"]
            )
            for k, pod in enumerate(members):
                p_branch = "└──" if k == len(members) - 1 else "├──"
                symbol, word, p_info = _pod_state(pod)
                rows.append(
                    Row(
                        f"{stem}{d_stem}{p_branch}□ {pod['metadata']['name']}",
                        "Pod",
                        style.mark(symbol, word),
                        age(pod["metadata"].get("creationTimestamp"), now),
                        p_info,
                    )
                )
    return rows


def _visible_len(text: str) -> int:
    """Length without colour escapes."""
    out, skipping = 0, False
    for char in text:
        if char == "\x1b":
            skipping = True
        elif skipping:
            skipping = char != "m"
        else:
            out += 1
    return out


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [
        max(_visible_len(cell) for cell in column) for column in zip(header, *rows, strict=True)
    ]
    lines = []
    for cells in [header, *rows]:
        padded = [c + " " * (w - _visible_len(c)) for c, w in zip(cells, widths, strict=True)]
        lines.append("  ".join(padded).rstrip())
    return lines


def status_screen(
    md: dict[str, Any],
    deployments: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    now: dt.datetime,
    style: Style | None = None,
) -> list[str]:
    """The lines of `kubectl modeldeploy status NAME`."""
    style = style or Style()
    meta = md["metadata"]
    spec = md.get("spec") or {}
    status = md.get("status") or {}
    conds = conditions(status)
    phase = status.get("phase")
    rollout = spec.get("rollout") or {}
    steps = rollout.get("steps") or []
    field = "{:<15}".format
    lines = [field("Name:") + meta["name"], field("Namespace:") + meta.get("namespace", "")]

    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if not status:
        lines.append(field("Status:") + style.mark(BUSY, "no status yet"))
        lines.append(
            field("Message:") + "no modeldeploy operator has reconciled this ModelDeployment"
        )
    else:
        lines.append(
            field("Status:") + style.mark(PHASE_SYMBOL.get(phase or "", BUSY), phase or "Unknown")
        )
        progressing = conds.get("Progressing", {})
        message = progressing.get("message") or conds.get("Ready", {}).get("message", "")
        if message:
            lines.append(field("Message:") + message)
        if generation is not None and (observed is None or observed < generation):
            lines.append(
                field("")
                + style.mark(
                    WARN,
                    f"status is of generation {observed}; the operator has not seen "
                    f"generation {generation} yet",
                )
            )

    router = (spec.get("traffic") or {}).get("router", "replicas")
    lines.append(field("Strategy:") + f"Canary, router {router}")
    plan = " → ".join(f"{s}%" for s in steps)
    if status.get("canaryRevision") is not None and status.get("currentStep") is not None:
        step = int(status["currentStep"])
        at = age(status.get("stepStartedAt"), now)
        pace = f", {rollout.get('stepDuration', '?')} each"
        lines.append(
            field("  Step:")
            + f"{step + 1}/{len(steps)}  ({plan}{pace}"
            + (f"; {at} at this step)" if at else ")")
        )
        lines.append(field("  Weight:") + weight_text(status))
    else:
        lines.append(field("  Steps:") + plan)

    revisions = []
    if status.get("stableRevision"):
        revisions.append(
            "stable " + revision_label(status["stableRevision"], status.get("stableVersion"))
        )
    if status.get("canaryRevision"):
        cause = status.get("canaryCause")
        label = revision_label(status["canaryRevision"], status.get("canaryVersion"))
        revisions.append(f"canary {label}" + (f", cause {cause}" if cause else ""))
    lines.append(field("Revisions:") + ("; ".join(revisions) or "none yet"))
    if status:
        lines.append(
            field("Replicas:")
            + f"{status.get('replicas', 0)} ({status.get('readyReplicas', 0)} ready)"
        )

    analysis = status.get("analysis")
    if analysis:
        outcome = analysis.get("outcome")
        head = (
            style.mark(OUTCOME_SYMBOL.get(outcome, BUSY), outcome)
            if outcome
            else style.mark(BUSY, "not run yet")
        )
        if analysis.get("lastRunAt"):
            head += f" {age(analysis['lastRunAt'], now)} ago"
        head += (
            f"; {analysis.get('consecutiveFailures', 0)} failed, "
            f"{analysis.get('consecutiveInconclusive', 0)} inconclusive in a row"
        )
        if analysis.get("withoutStable"):
            head += "; judged on its own (stable has no ready pod)"
        lines.append(field("Analysis:") + head)
        checks = [check_line(c) for c in analysis.get("checks") or []]
        width = max((len(name) for _, name, _ in checks), default=0)
        for symbol, name, detail in checks:
            lines.append(f"  {style.mark(symbol)} {name:<{width}}  {detail}".rstrip())

    hold = []
    stalled = conds.get("Stalled", {})
    if stalled.get("status") == "True":
        hold.append(style.mark(WARN, f"{stalled.get('reason')}: {stalled.get('message', '')}"))
    reconciling = conds.get("Reconciling", {})
    if reconciling.get("status") == "True" and reconciling.get("reason") == "RolloutQueued":
        hold.append(style.mark(WARN, f"RolloutQueued: {reconciling.get('message', '')}"))
    annotations = meta.get("annotations") or {}
    paused_by = []
    if truthy(annotations.get(PAUSED)):
        paused_by.append(f"annotation {PAUSED}")
    if rollout.get("paused"):
        paused_by.append("spec.rollout.paused")
    if paused_by:
        hold.append(style.mark(PAUSE, "paused by " + " and ".join(paused_by)))
    lines.append(field("Hold:") + (hold[0] if hold else "none"))
    lines += [field("") + h for h in hold[1:]]

    acknowledged = status.get("actions") or {}
    requests = []
    for action in ONE_SHOT:
        token = annotations.get(f"{PREFIX}{action}")
        if token:
            done = acknowledged.get(action) == token
            requests.append(f"{action} {token} ({'acknowledged' if done else 'pending'})")
    if requests:
        lines.append(field("Requests:") + "; ".join(requests))

    record = status.get("lastRollback")
    if record:
        first, *rest = rollback_lines(record, now)
        lines.append(field("Last rollback:") + style.mark(BAD, first))
        lines += [field("") + r for r in rest]
    else:
        lines.append(field("Last rollback:") + "none")

    rows = tree_rows(md, deployments, pods, now, style)
    lines.append("")
    lines += _table(
        ["NAME", "KIND", "STATUS", "AGE", "INFO"],
        [[r.tree, r.kind, r.status, r.age, r.info] for r in rows],
    )
    return lines


def history_screen(md: dict[str, Any], now: dt.datetime) -> list[str]:
    """The lines of `kubectl modeldeploy history NAME`: what serves now, then finished rollouts,
    newest first."""
    status = md.get("status") or {}
    lines = []
    if status.get("stableRevision"):
        lines.append(
            "stable: " + revision_label(status["stableRevision"], status.get("stableVersion"))
        )
    if status.get("canaryRevision"):
        label = revision_label(status["canaryRevision"], status.get("canaryVersion"))
        lines.append(f"canary: {label} at {weight_text(status, short=True) or '0%'}")
    for entry in status.get("rejectedRevisions") or []:
        lines.append(
            f"rejected: {entry['revision']} ({entry.get('reason', '?')}, "
            f"{age(entry.get('rejectedAt'), now)} ago)"
        )
    history = status.get("history") or []
    if not history:
        lines.append("no finished rollout yet")
        return lines
    rows = []
    for entry in history:
        started, finished = parse_time(entry.get("startedAt")), parse_time(entry.get("finishedAt"))
        took = age(entry.get("startedAt"), finished) if started and finished else ""
        rows.append(
            [
                entry.get("revision", ""),
                entry.get("version", "") or "",
                entry.get("outcome", ""),
                f"{age(entry.get('finishedAt'), now)} ago",
                took,
                entry.get("message", "") or "",
            ]
        )
    lines.append("")
    lines += _table(["REVISION", "VERSION", "OUTCOME", "FINISHED", "TOOK", "MESSAGE"], rows)
    return lines
