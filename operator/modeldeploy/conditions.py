"""Standard status conditions, kept the way kstatus, Argo CD and Flux read them.

A condition's `lastTransitionTime` changes only when its status flips, never when only its reason or
message is refreshed: otherwise every pass would rewrite status and no two passes would agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
# kstatus reads Stalled as "will not make progress without help"; Argo CD and Flux map it to failed.
STALLED = "Stalled"


@dataclass(frozen=True)
class Condition:
    """A desired condition; `now` is stamped in only when its status changes."""

    type: str
    status: bool
    reason: str
    message: str = ""


def _as_str(status: bool) -> str:
    return "True" if status else "False"


def merge_conditions(
    current: list[dict[str, Any]] | None,
    desired: list[Condition],
    *,
    now: str,
    generation: int | None,
) -> list[dict[str, Any]]:
    """Return the condition list for `desired`, reusing transition times from `current`.

    Example: current Ready=False since 10:00, desired Ready=False with a new message at 10:05 →
    lastTransitionTime stays 10:00; desired Ready=True at 10:05 → lastTransitionTime becomes 10:05.
    Conditions not in `desired` are dropped, so the list never accumulates stale entries.
    """
    previous = {c.get("type"): c for c in current or []}
    merged = []
    for condition in desired:
        status = _as_str(condition.status)
        before = previous.get(condition.type)
        changed = before is None or before.get("status") != status
        entry: dict[str, Any] = {
            "type": condition.type,
            "status": status,
            "reason": condition.reason,
            "message": condition.message,
            "lastTransitionTime": now if changed else before.get("lastTransitionTime", now),  # type: ignore[union-attr]
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        merged.append(entry)
    return merged


def condition_status(conditions: list[dict[str, Any]] | None, type_: str) -> str | None:
    """The status string ("True"/"False"/"Unknown") of condition `type_`, or None if absent."""
    for condition in conditions or []:
        if condition.get("type") == type_:
            return str(condition.get("status"))
    return None
