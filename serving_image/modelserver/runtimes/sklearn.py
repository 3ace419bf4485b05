"""scikit-learn runtime: any estimator (or Pipeline) saved with joblib or pickle.

``predict`` is always offered; ``predict_proba`` when the estimator has it. For the most common
estimators (linear models, decision trees and forests) a verified numpy fast path from
``fastpath`` replaces scikit-learn's per-call input validation, which costs far more than the
arithmetic for the one-to-64-row batches a server sees. The fast path is only used after it
reproduced scikit-learn's own answers on probe rows at load time.

The same wrapper serves custom Python classes (``custom``): anything with a sklearn-like
``predict`` works.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

from ..errors import ModelLoadError
from . import LoadOptions, OutputSpec, Runtime

log = logging.getLogger("modelserver.runtime")

# Fitted on a DataFrame, scored with an array: scikit-learn warns on every call. Names are checked
# by count here instead, so the warning is noise that would cost time per batch.
warnings.filterwarnings("ignore", message="X does not have valid feature names")


class SklearnLikeRuntime(Runtime):
    """Wraps an object with ``predict`` (and maybe ``predict_proba``)."""

    def __init__(self, model: Any, options: LoadOptions, platform: str = "sklearn") -> None:
        if not callable(getattr(model, "predict", None)):
            raise ModelLoadError(
                f"the loaded object ({type(model).__name__}) has no predict method"
            )
        self.model = model
        self.platform = platform
        n = getattr(model, "n_features_in_", None)
        self.n_features = int(n) if n is not None else None
        names = getattr(model, "feature_names_in_", None)
        self.feature_names = [str(v) for v in names] if names is not None else None
        dtype = getattr(model, "input_dtype", None)
        self.input_dtype = np.dtype(dtype) if dtype is not None else np.dtype(np.float64)
        self.allows_missing = bool(getattr(model, "allows_missing", False))
        self._predict = model.predict
        self._proba = getattr(model, "predict_proba", None) if _has_proba(model) else None
        self.outputs = {"predict": OutputSpec("predict", "FP64")}
        if self._proba is not None:
            self.outputs["predict_proba"] = OutputSpec("predict_proba", "FP64")
        self.fast = None
        if options.fast_path and self.n_features is not None:
            from .fastpath import compile_fast_path

            self.fast = compile_fast_path(model, self.n_features)
            if self.fast is not None:
                self._predict = self.fast.predict
                if self.fast.predict_proba is not None:
                    self._proba = self.fast.predict_proba
                self.input_dtype = self.fast.input_dtype
                if self.fast.kind.startswith("linear"):
                    self.inline_rows = 256  # one small matrix product

    def predict(self, x: np.ndarray, outputs: frozenset[str]) -> dict[str, np.ndarray]:
        result: dict[str, np.ndarray] = {}
        if "predict" in outputs:
            result["predict"] = np.asarray(self._predict(x))
        if "predict_proba" in outputs and self._proba is not None:
            result["predict_proba"] = np.asarray(self._proba(x))
        return result


def _has_proba(model: Any) -> bool:
    try:
        return callable(getattr(model, "predict_proba", None))
    except AttributeError:  # available_if raises, e.g. SVC(probability=False)
        return False


def load(path: str | None, options: LoadOptions) -> Runtime:
    if path is None:
        raise ModelLoadError("format 'sklearn' needs --model-uri")
    import joblib

    try:
        model = joblib.load(path)
    except Exception as exc:  # unpickling can raise anything the pickle's classes raise
        raise ModelLoadError(
            f"could not unpickle {path} with joblib ({type(exc).__name__}: {exc}); is it a "
            "joblib or pickle file of a scikit-learn estimator?"
        ) from exc
    return SklearnLikeRuntime(model, options)
