"""Open Inference Protocol v2 over gRPC: protobuf messages to numpy rows and back.

The gRPC twin of ``protocol``: the same rules (one [rows, features] input tensor, the datatypes,
row limits, missing values, output names) with the same messages naming the field, so a request
is accepted or refused alike over REST and gRPC. Pure functions of messages, testable without a
server. Problems are ``RequestError``s with the HTTP status REST would answer; ``grpc_service``
maps that status to a gRPC code.

Tensor data comes either typed (``inputs[0].contents.fp32_contents`` and its siblings) or as
bytes (``raw_input_contents[0]``: row-major, little-endian). The answer uses the same form as
the request: raw outputs for a raw request, as Triton and KServe clients expect, typed otherwise.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import bad_request
from .protocol import (
    DATATYPES,
    InputContract,
    ParsedRequest,
    check_output_name,
    check_shape,
    dumps,
    to_model_dtype,
    v2_datatype,
)

# The typed ``InferTensorContents`` field each datatype's values are read from (the protocol's
# table). FP16 has none: it travels as raw bytes only.
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_ALL_FIELDS = sorted(set(CONTENTS_FIELD.values()))
_NUMERIC = [name for name, dt in DATATYPES.items() if dt is not None]


def parse_infer(request: Any, contract: InputContract) -> tuple[ParsedRequest, bool]:
    """Validate a ``ModelInferRequest``; returns the rows and whether it used raw contents."""
    inputs = request.inputs
    if len(inputs) != 1:
        raise bad_request(
            "this model takes exactly one input tensor of shape [rows, features]; "
            f"got {len(inputs)} tensors in 'inputs'"
        )
    tensor = inputs[0]
    datatype = tensor.datatype
    if datatype not in DATATYPES:
        raise bad_request(
            f"inputs[0].datatype {datatype!r:.40} is not a tensor datatype: one of "
            f"{', '.join(DATATYPES)}"
        )
    target = DATATYPES[datatype]
    if target is None:
        raise bad_request(
            f"inputs[0].datatype {datatype} is not accepted by this model: one of "
            f"{', '.join(_NUMERIC)}"
        )
    shape = check_shape(list(tensor.shape), contract, "inputs[0].shape")
    raw = request.raw_input_contents
    if raw:
        if len(raw) != 1:
            raise bad_request(
                f"raw_input_contents has {len(raw)} entries but there is 1 input: one entry "
                "per input tensor"
            )
        filled = _filled_fields(tensor)
        if filled:
            raise bad_request(
                f"inputs[0].contents.{filled[0]} is set as well as raw_input_contents: send the "
                "values one way only"
            )
        arr = _from_raw(raw[0], target, datatype, shape)
        where = "raw_input_contents[0]"
    else:
        arr = _from_contents(tensor, target, datatype, shape)
        where = f"inputs[0].contents.{CONTENTS_FIELD[datatype]}"
    x = to_model_dtype(arr, datatype, contract, where)
    outputs = contract.default_outputs
    if request.outputs:
        names = []
        for i, out in enumerate(request.outputs):
            check_output_name(out.name, contract, f"outputs[{i}].name")
            names.append(out.name)
        outputs = frozenset(names)
    return ParsedRequest(x, outputs, request.id or None), bool(raw)


def request_as_v2_json(request: Any) -> bytes:
    """A ``ModelInferRequest`` as the REST request carrying the same call, for the payload log.

    So a sink reads one shape whichever protocol carried an exchange: ``id``, ``parameters``-free
    ``inputs`` with ``data`` (decoded from the typed contents, or from the raw bytes when they
    fit the datatype and shape) and the requested ``outputs``. Raw bytes that cannot be decoded
    (the request was refused for them) are kept as ``raw_input_contents`` in base64.
    """
    doc: dict[str, Any] = {}
    if request.id:
        doc["id"] = request.id
    inputs = []
    raw = request.raw_input_contents
    for i, tensor in enumerate(request.inputs):
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if i < len(raw):
            values = _decoded_raw(raw[i], tensor.datatype)
            if values is None:
                entry["raw_input_contents"] = base64.b64encode(raw[i]).decode()
            else:
                entry["data"] = values
        else:
            entry["data"] = _typed_values(tensor)
        inputs.append(entry)
    doc["inputs"] = inputs
    if request.outputs:
        doc["outputs"] = [{"name": out.name} for out in request.outputs]
    return dumps(doc)


def _decoded_raw(raw: bytes, datatype: str) -> list[Any] | None:
    target = DATATYPES.get(datatype)
    if target is None or len(raw) % target.itemsize:
        return None
    values: list[Any] = np.frombuffer(raw, dtype=target.newbyteorder("<")).tolist()
    return values


def _typed_values(tensor: Any) -> list[Any]:
    """The values of whichever typed contents field is filled (the datatype's own first)."""
    filled = _filled_fields(tensor)
    own = CONTENTS_FIELD.get(tensor.datatype)
    field = own if own in filled else (filled[0] if filled else None)
    if field is None:
        return []
    values = getattr(tensor.contents, field)
    if field == "bytes_contents":
        return [v.decode("utf-8", "replace") for v in values]
    return list(values)


def _filled_fields(tensor: Any) -> list[str]:
    if not tensor.HasField("contents"):
        return []
    return [name for name in _ALL_FIELDS if len(getattr(tensor.contents, name))]


def _from_raw(raw: bytes, target: np.dtype, datatype: str, shape: list[int]) -> np.ndarray:
    need = math.prod(shape) * target.itemsize
    if len(raw) != need:
        raise bad_request(
            f"raw_input_contents[0] has {len(raw)} bytes but inputs[0].shape {shape} of "
            f"{datatype} needs {need} ({target.itemsize} per value, little-endian)"
        )
    # A copy: frombuffer's view is read-only and a custom model may write to its input.
    return np.frombuffer(raw, dtype=target.newbyteorder("<")).astype(target).reshape(shape)


def _from_contents(tensor: Any, target: np.dtype, datatype: str, shape: list[int]) -> np.ndarray:
    field = CONTENTS_FIELD.get(datatype)
    where = f"inputs[0].contents.{field}"
    if field is None:  # FP16
        raise bad_request(
            f"inputs[0].datatype {datatype} has no typed contents field: send its values in "
            "raw_input_contents"
        )
    others = [name for name in _filled_fields(tensor) if name != field]
    if others:
        raise bad_request(
            f"inputs[0].contents.{others[0]} is set but datatype {datatype} is read from {where}"
        )
    values = getattr(tensor.contents, field) if tensor.HasField("contents") else ()
    need = math.prod(shape)
    if len(values) != need:
        raise bad_request(
            f"{where} has {len(values)} values but inputs[0].shape {shape} needs {need}"
        )
    if target.kind in "iu" and target.itemsize < 4:  # int_contents/uint_contents are 32-bit
        wide = np.array(values, dtype=np.int64)
        info = np.iinfo(target)
        if wide.size and (wide.min() < info.min or wide.max() > info.max):
            raise bad_request(
                f"{where} has values outside {datatype}'s range [{info.min}, {info.max}]"
            )
        return wide.astype(target).reshape(shape)
    return np.array(values, dtype=target).reshape(shape)


def encode_infer(
    response: Any,
    model_name: str,
    version: str,
    request_id: str | None,
    outputs: Mapping[str, np.ndarray],
    raw: bool,
) -> Any:
    """Fill a ``ModelInferResponse`` with ``outputs``: raw bytes or typed contents (``raw``)."""
    response.model_name = model_name
    response.model_version = version
    if request_id is not None:
        response.id = request_id
    for name, arr in outputs.items():
        tensor = response.outputs.add()
        tensor.name = name
        tensor.shape.extend(arr.shape)
        datatype = v2_datatype(arr.dtype)
        if raw:
            tensor.datatype = datatype
            response.raw_output_contents.append(_raw_bytes(arr, datatype))
            continue
        if datatype == "FP16":  # no typed field: widened, as REST's JSON does
            arr, datatype = arr.astype(np.float32), "FP32"
        tensor.datatype = datatype
        field = getattr(tensor.contents, CONTENTS_FIELD[datatype])
        if datatype == "BYTES":
            field.extend(_as_bytes(v) for v in arr.reshape(-1))
        else:
            field.extend(arr.reshape(-1).tolist())
    return response


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _raw_bytes(arr: np.ndarray, datatype: str) -> bytes:
    """A tensor as the protocol's raw bytes: little-endian values; BYTES as length-prefixed
    items (a 4-byte little-endian length before each)."""
    if datatype != "BYTES":
        return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    parts = []
    for value in arr.reshape(-1):
        item = _as_bytes(value)
        parts += [len(item).to_bytes(4, "little"), item]
    return b"".join(parts)


def decode_raw_output(raw: bytes, datatype: str, shape: list[int]) -> np.ndarray:
    """The inverse of ``_raw_bytes``, for clients and tests: raw output bytes to an array."""
    if datatype == "BYTES":
        items, offset = [], 0
        while offset < len(raw):
            size = int.from_bytes(raw[offset : offset + 4], "little")
            items.append(raw[offset + 4 : offset + 4 + size])
            offset += 4 + size
        return np.array(items, dtype=object).reshape(shape)
    dtype = DATATYPES[datatype]
    assert dtype is not None
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)
