"""ONNX runtime (onnxruntime, CPU): any model with one 2-D numeric input.

Outputs keep their graph names and get the usual aliases: the first output is also ``predict``
and, for classifiers converted by skl2onnx (a label and a probability output), the probabilities
are also ``predict_proba``. skl2onnx's default ZipMap output (a list of {class: probability}) is
turned back into a plain [rows, classes] array.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ModelLoadError
from . import LoadOptions, OutputSpec, Runtime

_TYPES = {
    "tensor(float)": (np.float32, "FP32"),
    "tensor(double)": (np.float64, "FP64"),
    "tensor(int64)": (np.int64, "INT64"),
    "tensor(int32)": (np.int32, "INT32"),
    "tensor(string)": (np.object_, "BYTES"),
    "tensor(bool)": (np.bool_, "BOOL"),
}


class OnnxRuntime(Runtime):
    platform = "onnx"

    def __init__(self, session: Any) -> None:
        self.session = session
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ModelLoadError(
                f"ONNX model has {len(inputs)} inputs; this server serves models with exactly "
                "one 2-D input [rows, features]"
            )
        inp = inputs[0]
        if inp.type not in ("tensor(float)", "tensor(double)"):
            raise ModelLoadError(f"ONNX input {inp.name!r} has type {inp.type}; need float/double")
        if len(inp.shape) != 2:
            raise ModelLoadError(f"ONNX input {inp.name!r} has shape {inp.shape}; need 2-D")
        self.input_name = inp.name
        self.input_dtype = np.dtype(_TYPES[inp.type][0])
        width = inp.shape[1]
        self.n_features = width if isinstance(width, int) else None
        self.aliases: dict[str, str] = {}
        self.outputs = {}
        graph_outputs = session.get_outputs()
        for out in graph_outputs:
            datatype = _TYPES.get(out.type, (None, "FP32"))[1]
            self.outputs[out.name] = OutputSpec(out.name, datatype)
        names = [o.name for o in graph_outputs]
        self.aliases["predict"] = names[0]
        probs = [o.name for o in graph_outputs[1:] if "prob" in o.name.lower()]
        if probs:
            self.aliases["predict_proba"] = probs[0]
        for alias, target in self.aliases.items():
            if alias not in self.outputs:
                self.outputs[alias] = OutputSpec(alias, self.outputs[target].datatype)

    def predict(self, x: np.ndarray, outputs: frozenset[str]) -> dict[str, np.ndarray]:
        wanted = {self.aliases.get(name, name) for name in outputs}
        names = [o for o in self.outputs if o in wanted and o not in self.aliases]
        values = self.session.run(names, {self.input_name: x})
        by_name = dict(zip(names, (_dense(v) for v in values), strict=True))
        return {name: by_name[self.aliases.get(name, name)] for name in outputs}


def _dense(value: Any) -> np.ndarray:
    if isinstance(value, list) and value and isinstance(value[0], dict):  # ZipMap
        keys = sorted(value[0])
        return np.array([[row[k] for k in keys] for row in value], dtype=np.float32)
    return np.asarray(value)


def load(path: str | None, options: LoadOptions) -> Runtime:
    if path is None:
        raise ModelLoadError("format 'onnx' needs --model-uri")
    import onnxruntime

    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = options.threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        session = onnxruntime.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelLoadError(f"onnxruntime could not load {path}: {exc}") from exc
    return OnnxRuntime(session)
