"""Custom runtime: a Python class named by import path, ``package.module:ClassName``.

The class is constructed with the local path of the artifact (or None when there is none) and
must have ``predict(x)`` taking a 2-D numpy array; ``predict_proba(x)``, ``n_features_in_``,
``feature_names_in_``, ``input_dtype`` and ``allows_missing`` are optional. It is served exactly
like a scikit-learn model, batching included. Its predict runs on the inference thread, never on
the event loop, so a slow model cannot stall other requests' I/O.
"""

from __future__ import annotations

import importlib

from ..errors import ModelLoadError
from . import LoadOptions, Runtime
from .sklearn import SklearnLikeRuntime


def load(path: str | None, options: LoadOptions) -> Runtime:
    spec = options.model_class or ""
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(
            f"--model-class {spec!r}: cannot import {module_name!r}: {exc}"
        ) from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ModelLoadError(f"--model-class {spec!r}: {module_name} has no {class_name!r}")
    try:
        model = cls(path)
    except Exception as exc:  # the user's constructor can raise anything
        raise ModelLoadError(f"--model-class {spec!r}: constructor failed: {exc!r}") from exc
    no_fast = LoadOptions(fast_path=False, model_class=spec, threads=options.threads)
    return SklearnLikeRuntime(model, no_fast, platform="custom")
