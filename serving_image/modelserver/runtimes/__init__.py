"""Runtimes: one small interface in front of every ML framework.

A runtime turns a local artifact into something that maps a 2-D numpy array of rows to named
output arrays. Everything else — HTTP, batching, validation, metrics — is shared, so adding a
framework means writing one ``load(path, options)`` function that returns a ``Runtime``.

Frameworks are imported lazily, by format, so the image only needs the ones it serves.
"""

from __future__ import annotations

import importlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import ModelLoadError
from ..protocol import v2_datatype

log = logging.getLogger("modelserver.runtime")

# format name -> module under modelserver.runtimes that defines load(path, options) -> Runtime
_MODULES = {
    "sklearn": "sklearn",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "onnx": "onnx",
    "custom": "custom",
}
# pip extra of the serving image that brings each framework (for error messages)
EXTRAS = {
    "sklearn": "serving",
    "xgboost": "serving-xgboost",
    "lightgbm": "serving-lightgbm",
    "onnx": "serving-onnx",
    "custom": "serving",
}


@dataclass(frozen=True)
class OutputSpec:
    """One output tensor: its v2 datatype and its shape after the row dimension."""

    name: str
    datatype: str
    row_shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class LoadOptions:
    fast_path: bool = True
    model_class: str | None = None
    threads: int = 1


class Runtime(ABC):
    """A loaded model. Subclasses set the attributes in __init__ and implement ``predict``."""

    platform: str = "unknown"
    n_features: int | None = None
    feature_names: list[str] | None = None
    input_dtype: np.dtype = np.dtype(np.float64)
    allows_missing: bool = False
    # Batches of at most this many rows may be scored on the event loop: only for runtimes whose
    # cost is known to be microseconds (and the batcher still measures it). 0: always a thread.
    inline_rows: int = 0
    outputs: dict[str, OutputSpec]

    @abstractmethod
    def predict(self, x: np.ndarray, outputs: frozenset[str]) -> dict[str, np.ndarray]:
        """Score rows ``x`` (2-D, ``input_dtype``); return each asked-for output, row-aligned."""

    def warm_up(self, rows: int) -> None:
        """Run predict once so lazy initialisation happens before the first request.

        The observed output dtypes and shapes then become the metadata, which is more reliable
        than asking each framework to describe itself.
        """
        if self.n_features is None:
            return
        names = frozenset(self.outputs)
        for n in sorted({1, max(1, rows)}):
            result = self.predict(np.zeros((n, self.n_features), dtype=self.input_dtype), names)
        for name, arr in result.items():
            arr = np.asarray(arr)
            if arr.ndim >= 1 and arr.shape[0] == max(1, rows):
                self.outputs[name] = OutputSpec(name, v2_datatype(arr.dtype), arr.shape[1:])


def load_runtime(fmt: str, path: str | None, options: LoadOptions) -> Runtime:
    """Load ``path`` with the runtime for ``fmt``; ModelLoadError names what went wrong."""
    if fmt not in _MODULES:
        raise ModelLoadError(f"unknown format {fmt!r}: one of {', '.join(_MODULES)}")
    try:
        module = importlib.import_module(f"{__name__}.{_MODULES[fmt]}")
    except ImportError as exc:
        raise ModelLoadError(
            f"format {fmt!r} needs a package that is not installed ({exc.name or exc}); "
            f"install the extra 'modelserver[{EXTRAS[fmt]}]'"
        ) from exc
    return module.load(path, options)


def outputs_from_names(names: Mapping[str, str]) -> dict[str, OutputSpec]:
    """Initial output specs from name -> datatype (refined by ``warm_up``)."""
    return {name: OutputSpec(name, dt, ()) for name, dt in names.items()}
