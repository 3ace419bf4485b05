"""Small value types the planner modules share."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChildRef:
    api_version: str
    kind: str
    name: str


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str
