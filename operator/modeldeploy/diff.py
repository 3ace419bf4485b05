"""Decide whether a child in the cluster already matches what the operator would apply.

An idle pass must make no write calls, yet a child edited by hand must be restored. Comparing the
desired object with the observed one as a *subset* does both: the API server adds defaults
(`protocol`, `schemeHTTP`, `successThreshold`, …) that the desired object does not mention, and
those never count as drift; any field the operator sets that differs does.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from .api import parse_quantity

# Keys (inside resources.requests/limits) whose values are quantities, which the API server
# rewrites to canonical form ("0.5" → "500m"): compare them by value.
QUANTITY_KEYS = frozenset({"cpu", "memory", "ephemeral-storage"})
IGNORED_TOP_LEVEL = frozenset({"apiVersion", "kind", "status"})
# Maps the operator owns whole: a key left over in the cluster is drift. A Service selector
# pinned to a revision must lose the pin when traffic should spread over every revision.
EXACT_KEYS = frozenset({"selector"})


def _quantity(value: Any) -> Decimal | None:
    try:
        return parse_quantity(value)
    except (InvalidOperation, ValueError, TypeError):
        return None


def _present(key: str, value: Any, observed: dict[str, Any]) -> bool:
    """The API server drops empty maps and lists, so an empty desired value matches absence."""
    if key in observed:
        return _matches(value, observed[key], key)
    return value in ({}, [])


def _matches(desired: Any, observed: Any, parent: str) -> bool:
    if parent in EXACT_KEYS:
        return bool(desired == observed)
    if isinstance(desired, dict):
        if not isinstance(observed, dict):
            return False
        return all(_present(key, value, observed) for key, value in desired.items())
    if isinstance(desired, list):
        if not isinstance(observed, list) or len(desired) != len(observed):
            return False
        return all(_matches(d, o, parent) for d, o in zip(desired, observed, strict=True))
    if parent in QUANTITY_KEYS:
        d, o = _quantity(desired), _quantity(observed)
        if d is not None and o is not None:
            return d == o
    return bool(desired == observed)


def matches(desired: dict[str, Any], observed: dict[str, Any] | None) -> bool:
    """True when every field of `desired` has the same value in `observed`.

    Example: desired {"spec": {"replicas": 2}} matches observed {"spec": {"replicas": 2,
    "paused": False}}, but not observed {"spec": {"replicas": 3}}.
    """
    if observed is None:
        return False
    return all(
        _present(key, value, observed)
        for key, value in desired.items()
        if key not in IGNORED_TOP_LEVEL
    )
