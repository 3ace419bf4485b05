"""Per-feature drift: population stability index of live inputs against reference statistics.

Reference statistics are made at training time with ``reference_stats(X_train)`` and shipped
next to the model as JSON; the server counts live rows into the same bins and reports, per
feature, PSI = sum((live - ref) * ln(live / ref)) over bins. Counting is vectorised over a whole
batch (one comparison and one bincount), so it costs microseconds per predict call, and it runs on
the inference thread, not the event loop.

Live counts cover a rolling window: the current block of ``window`` rows plus the previous one,
so the statistic follows the recent traffic instead of everything since start.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

FORMAT = "modelserver.drift/v1"
_EPS = 1e-4
MIN_ROWS = 50  # fewer live rows than this give a PSI that is mostly noise


def reference_stats(
    x: np.ndarray, feature_names: Sequence[str] | None = None, bins: int = 10
) -> dict[str, Any]:
    """Reference statistics for ``x`` (training rows): quantile bins and their proportions."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError("reference_stats needs a non-empty 2-D array of rows")
    names = (
        list(feature_names) if feature_names is not None else [f"f{j}" for j in range(x.shape[1])]
    )
    if len(names) != x.shape[1]:
        raise ValueError(f"{len(names)} feature names for {x.shape[1]} columns")
    features = []
    for j, name in enumerate(names):
        col = x[:, j][~np.isnan(x[:, j])]
        qs = np.quantile(col, np.linspace(0, 1, bins + 1)[1:-1]) if col.size else np.array([])
        edges = np.unique(qs)
        counts = np.bincount(np.searchsorted(edges, col, side="right"), minlength=len(edges) + 1)
        features.append(
            {
                "name": name,
                "edges": edges.tolist(),
                "proportions": (counts / max(1, col.size)).tolist(),
            }
        )
    return {"format": FORMAT, "features": features}


def parse_reference(doc: Any, n_features: int | None) -> dict[str, Any]:
    """Validate a reference-statistics document; ValueError names what is wrong."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"reference statistics must be a JSON object with format {FORMAT!r}")
    features = doc.get("features")
    if not isinstance(features, list) or not features:
        raise ValueError("reference statistics need a non-empty 'features' list")
    if n_features is not None and len(features) != n_features:
        raise ValueError(
            f"reference statistics describe {len(features)} features; model has {n_features}"
        )
    for i, f in enumerate(features):
        edges, props = f.get("edges"), f.get("proportions")
        if (
            not isinstance(edges, list)
            or not isinstance(props, list)
            or len(props) != len(edges) + 1
        ):
            raise ValueError(
                f"features[{i}] needs 'edges' (k values) and 'proportions' (k+1 values)"
            )
        if any(b < a for a, b in itertools.pairwise(edges)):
            raise ValueError(f"features[{i}].edges must be sorted")
    return doc


def psi(live: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """PSI per row of two [features, bins] proportion matrices (bins padded with zeros)."""
    a = np.clip(live, _EPS, None)
    e = np.clip(ref, _EPS, None)
    return np.where((live > 0) | (ref > 0), (a - e) * np.log(a / e), 0.0).sum(axis=1)


class DriftTracker:
    """Counts live rows into the reference bins; thread-safe."""

    def __init__(self, reference: dict[str, Any], window: int) -> None:
        features = reference["features"]
        self.names = [str(f["name"]) for f in features]
        width = max(len(f["edges"]) for f in features)
        self.bins = width + 1
        self.edges = np.full((len(features), max(1, width)), np.inf)
        self.ref = np.zeros((len(features), self.bins))
        for j, f in enumerate(features):
            self.edges[j, : len(f["edges"])] = f["edges"]
            self.ref[j, : len(f["proportions"])] = f["proportions"]
        self.offsets = np.arange(len(features)) * self.bins
        self.window = window
        self._lock = threading.Lock()
        self._current = np.zeros_like(self.ref)
        self._previous = np.zeros_like(self.ref)
        self._rows_current = 0
        self.rows_total = 0

    def update(self, x: np.ndarray) -> None:
        """Count the rows of one batch."""
        if x.shape[1] != len(self.names):
            return
        bins = (x[:, :, None] >= self.edges[None, :, :]).sum(axis=2) + self.offsets
        valid = ~np.isnan(x)
        counts = np.bincount(bins.ravel(), weights=valid.ravel(), minlength=self.ref.size).reshape(
            self.ref.shape
        )
        with self._lock:
            self._current += counts
            self._rows_current += len(x)
            self.rows_total += len(x)
            if self._rows_current >= self.window:
                self._previous, self._current = self._current, np.zeros_like(self.ref)
                self._rows_current = 0

    def snapshot(self) -> dict[str, float] | None:
        """PSI per feature name, or None before MIN_ROWS rows were seen."""
        with self._lock:
            counts = self._current + self._previous
        totals = counts.sum(axis=1, keepdims=True)
        if totals.max(initial=0) < MIN_ROWS:
            return None
        values = psi(counts / np.maximum(totals, 1), self.ref)
        return dict(zip(self.names, (float(v) for v in values), strict=True))


def load_reference(path: str, n_features: int | None) -> dict[str, Any]:
    with open(path, "rb") as fh:
        return parse_reference(json.loads(fh.read()), n_features)
