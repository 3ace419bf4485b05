"""A verified numpy fast path for common scikit-learn estimators.

Why: a scikit-learn ``predict`` on a handful of rows is almost all input validation and dispatch
(~0.3 ms for a LogisticRegression whose arithmetic takes ~5 µs; ~6 ms for a 50-tree forest, most
of it joblib and per-tree checks). The server has already validated the rows (shape, dtype,
finiteness), so it can call the same arithmetic directly.

How it stays correct:
- only exact classes are handled (a subclass may override predict), single-output only;
- the arithmetic is scikit-learn's own, in its own order: the same matrix product and the same
  scipy/sklearn expit and softmax for linear models; the same per-tree ``Tree.apply`` and leaf
  values, accumulated tree by tree as the forest does, for trees;
- at load time the fast functions must reproduce the estimator's own ``predict`` (exactly) and
  ``predict_proba`` (to 1e-9) on probe rows — random rows at several scales and, for trees, rows
  built from the split thresholds so both sides of many splits are taken — scored as one batch and
  row by row. Anything that does not match is not used, and the estimator serves as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger("modelserver.runtime")

Fn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class FastModel:
    kind: str
    input_dtype: np.dtype
    predict: Fn
    predict_proba: Fn | None


def _linear(model: Any) -> FastModel | None:
    coef = np.asarray(model.coef_, dtype=np.float64)
    intercept = np.asarray(model.intercept_, dtype=np.float64)
    coef_t = np.ascontiguousarray(coef.T) if coef.ndim == 2 else coef

    def decision(x: np.ndarray) -> np.ndarray:
        scores = x @ coef_t + intercept
        if scores.ndim > 1 and scores.shape[1] == 1:
            return scores.reshape(-1)
        return scores

    if not hasattr(model, "classes_"):
        return FastModel("linear-regressor", np.dtype(np.float64), decision, None)

    classes = model.classes_

    def predict(x: np.ndarray) -> np.ndarray:
        scores = decision(x)
        if scores.ndim == 1:
            return classes.take((scores > 0).astype(np.intp), axis=0)
        return classes.take(scores.argmax(axis=1), axis=0)

    proba = None
    if type(model).__name__ == "LogisticRegression":
        proba = _pick_logistic_proba(model, decision)
    return FastModel("linear-classifier", np.dtype(np.float64), predict, proba)


def _pick_logistic_proba(model: Any, decision: Fn) -> Fn | None:
    """LogisticRegression's proba formula depends on version and settings: try each one."""
    from scipy.special import expit
    from sklearn.utils.extmath import softmax

    def ovr(x: np.ndarray) -> np.ndarray:
        p = expit(decision(x))
        if p.ndim == 1:
            return np.vstack([1 - p, p]).T
        return p / p.sum(axis=1).reshape((p.shape[0], -1))

    def multinomial(x: np.ndarray) -> np.ndarray:
        d = decision(x)
        return softmax(np.c_[-d, d] if d.ndim == 1 else d, copy=False)

    def half_multinomial(x: np.ndarray) -> np.ndarray:  # binary softmax on (-d/2, d/2)
        d = decision(x) / 2
        return softmax(np.c_[-d, d], copy=False)

    candidates: list[Fn] = [ovr, multinomial, half_multinomial]
    probes = _probes(model, model.n_features_in_, None)
    want = model.predict_proba(probes)
    for fn in candidates:
        try:
            if _close(fn(probes), want):
                return fn
        except (ValueError, FloatingPointError):
            continue
    return None


def _trees(model: Any) -> FastModel | None:
    estimators = getattr(model, "estimators_", None)
    trees = [model] if estimators is None else list(estimators)
    if not trees or any(getattr(t, "n_outputs_", 1) != 1 for t in trees):
        return None
    structs = [t.tree_ for t in trees]
    classifier = hasattr(model, "classes_")
    n = len(structs)
    single = estimators is None
    if classifier:
        n_classes = int(model.n_classes_)
        tables = [np.ascontiguousarray(s.value[:, 0, :n_classes]) for s in structs]
    else:
        tables = [np.ascontiguousarray(s.value[:, 0, 0]) for s in structs]
    pairs = list(zip(structs, tables, strict=True))

    def accumulate(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.zeros((x.shape[0], *tables[0].shape[1:]), dtype=np.float64)
        for struct, table in pairs:  # the forest's own order: sum tree by tree, then divide
            out += table.take(struct.apply(x), axis=0)
        if not single:
            out /= n
        return out

    if not classifier:
        return FastModel("tree-regressor", np.dtype(np.float32), accumulate, None)
    classes = model.classes_
    if single:  # a lone tree predicts from its raw leaf values, which can differ in ties
        raw = np.ascontiguousarray(structs[0].value[:, 0, :n_classes])
        root = structs[0]

        def predict(x: np.ndarray) -> np.ndarray:
            leaves = root.apply(np.ascontiguousarray(x, dtype=np.float32))
            return classes.take(raw.take(leaves, axis=0).argmax(axis=1), axis=0)

    else:

        def predict(x: np.ndarray) -> np.ndarray:
            return classes.take(accumulate(x).argmax(axis=1), axis=0)

    return FastModel("tree-classifier", np.dtype(np.float32), predict, accumulate)


_LINEAR = {
    "LogisticRegression",
    "LinearSVC",
    "RidgeClassifier",
    "LinearRegression",
    "Ridge",
    "Lasso",
    "ElasticNet",
}
_TREES = {
    "DecisionTreeClassifier",
    "DecisionTreeRegressor",
    "ExtraTreeClassifier",
    "ExtraTreeRegressor",
    "RandomForestClassifier",
    "RandomForestRegressor",
    "ExtraTreesClassifier",
    "ExtraTreesRegressor",
}


def _supported(model: Any) -> str | None:
    cls = type(model)
    if not cls.__module__.startswith("sklearn."):
        return None
    if cls.__name__ in _LINEAR:
        classes = getattr(model, "classes_", None)
        if classes is not None and np.asarray(classes).ndim != 1:
            return None
        return "linear"
    if cls.__name__ in _TREES:
        return "trees"
    return None


def _probes(model: Any, n_features: int, thresholds: list[np.ndarray] | None) -> np.ndarray:
    """Rows that exercise the model: random at several scales, zeros, and near split points."""
    rng = np.random.default_rng(0)
    parts = [np.zeros((1, n_features))]
    for scale in (0.1, 1.0, 10.0, 1000.0):
        parts.append(rng.normal(0.0, scale, size=(48, n_features)))
    if thresholds is not None:
        rows = np.zeros((128, n_features))
        for j, ts in enumerate(thresholds):
            if ts.size:
                picks = rng.choice(ts, size=128) + rng.choice([-1e-3, 1e-3], size=128)
                rows[:, j] = picks
        parts.append(rows)
    return np.vstack(parts)


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-9, atol=1e-12))


def _verify(model: Any, fast: FastModel, probes: np.ndarray) -> bool:
    x = probes.astype(fast.input_dtype)
    if not np.array_equal(fast.predict(x), model.predict(probes)):
        return False
    for i in range(0, len(probes), 37):  # a few single rows: the batch-of-one code path
        if not np.array_equal(fast.predict(x[i : i + 1]), model.predict(probes[i : i + 1])):
            return False
    return fast.predict_proba is None or _close(fast.predict_proba(x), model.predict_proba(probes))


def compile_fast_path(model: Any, n_features: int) -> FastModel | None:
    """A verified fast path for ``model``, or None when it has none or it did not verify."""
    kind = _supported(model)
    if kind is None:
        return None
    try:
        fast = _linear(model) if kind == "linear" else _trees(model)
        if fast is None:
            return None
        thresholds = None
        if kind == "trees":
            structs = [t.tree_ for t in getattr(model, "estimators_", [model])]
            thresholds = [
                np.concatenate([s.threshold[s.feature == j] for s in structs])
                for j in range(n_features)
            ]
        ok = _verify(model, fast, _probes(model, n_features, thresholds))
    except Exception as exc:  # any surprise means: serve with the estimator itself
        log.warning("fast path for %s not used: %s", type(model).__name__, exc)
        return None
    if not ok:
        log.warning(
            "fast path for %s did not match its predictions; not used", type(model).__name__
        )
        return None
    log.info("fast path for %s verified (%s)", type(model).__name__, fast.kind)
    return fast
