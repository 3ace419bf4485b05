"""Open Inference Protocol v2 and KServe v1 request parsing and response encoding.

Pure functions from bytes to numpy arrays and back, so every malformed-request rule is testable
without a server. The fast path for a well-formed request is: one ``orjson.loads``, one
``np.asarray`` of the data list, a finiteness check, a cast to the model's dtype; the response is
one ``orjson.dumps`` that serialises numpy arrays natively.

Every rejection is a ``RequestError`` whose message names the field (``inputs[0].shape``) and what
is allowed, because "bad request" alone costs the caller an afternoon.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from .errors import RequestError, bad_request

# v2 tensor datatypes and the numpy dtype each one is read as.
DATATYPES: dict[str, np.dtype | None] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": None,
}
_NUMERIC = [name for name, dt in DATATYPES.items() if dt is not None]
_DUMPS_OPTS = orjson.OPT_SERIALIZE_NUMPY


def v2_datatype(dtype: np.dtype) -> str:
    """The v2 datatype name for a numpy dtype (strings and objects are BYTES)."""
    for name, dt in DATATYPES.items():
        if dt is not None and dt == dtype:
            return name
    return "BYTES"


@dataclass(frozen=True)
class InputContract:
    """What a model accepts: everything the parser needs to validate a request."""

    n_features: int | None
    dtype: np.dtype
    allows_missing: bool
    max_rows: int
    output_names: tuple[str, ...]
    default_outputs: frozenset[str]


@dataclass(frozen=True)
class ParsedRequest:
    x: np.ndarray
    outputs: frozenset[str]
    request_id: str | None


def loads(body: bytes) -> Any:
    if not body:
        raise bad_request("request body is empty: send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"request body is not valid JSON: {exc}") from None


def _first_bad_element(flat: list[Any], allow_none: bool) -> tuple[int, Any] | None:
    for i, v in enumerate(flat):
        if v is None and allow_none:
            continue
        if not isinstance(v, (int, float)):  # bool is an int
            return i, v
    return None


def _flatten(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()
    return out


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    names: dict[type, str] = {str: "string", dict: "object"}
    return names.get(type(v), type(v).__name__)


def may_hold_booleans(body: bytes) -> bool:
    """Whether a JSON body can contain true/false at all: a C-speed scan that spares the common
    body without them the per-element search in ``_reject_booleans``."""
    return b"true" in body or b"false" in body


def _reject_booleans(data: list[Any], datatype: str, where: str) -> None:
    """JSON true/false in numeric data is a client bug, not 1.0/0.0.

    numpy would silently turn a boolean mixed with numbers into 1 or 0, so the data is searched
    element by element; callers do it only when the body spells true or false somewhere.
    """
    for i, v in enumerate(_flatten(data)):
        if v is True or v is False:
            raise bad_request(
                f"{where}[{i}] is {'true' if v else 'false'}, a boolean: datatype {datatype} "
                "needs numbers (booleans are only valid for datatype BOOL)"
            )


def _check_parameters(doc: Mapping[str, Any], where: str) -> None:
    """The protocol's ``parameters`` are a name-to-value object; null counts as absent."""
    params = doc.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise bad_request(f"{where} must be a JSON object (name: value), got {_type_name(params)}")


def to_array(
    data: Any,
    datatype: str,
    shape: list[int],
    contract: InputContract,
    where: str,
    may_hold_bools: bool = True,
) -> np.ndarray:
    """Validate tensor ``data`` against its declared datatype and shape; return it as 2-D rows.

    Data may be flat (row-major) or nested, as the protocol allows. Nulls are missing values,
    accepted only for float datatypes and models that handle them (they become NaN). Booleans
    are accepted only for datatype BOOL; ``may_hold_bools=False`` (the body has no true/false)
    skips searching for them.
    """
    target = DATATYPES[datatype]
    assert target is not None
    if not isinstance(data, list):
        raise bad_request(f"{where} must be a list of numbers, got {_type_name(data)}")
    if may_hold_bools and target.kind != "b":
        _reject_booleans(data, datatype, where)
    try:
        arr = np.asarray(data)
    except ValueError:
        raise bad_request(
            f"{where} is ragged: nested lists must all have the same length"
        ) from None
    if arr.dtype.kind not in "biuf":
        allow_none = contract.allows_missing and target.kind == "f"
        flat = _flatten(data)
        bad = _first_bad_element(flat, allow_none)
        if bad is not None:
            i, v = bad
            if v is None:
                why = (
                    "null (a missing value) is only accepted for FP datatypes"
                    if contract.allows_missing
                    else "this model does not accept missing values (null)"
                )
            else:
                why = f"{_type_name(v)} {v!r:.40} is not a number"
            raise bad_request(f"{where}[{i}]: {why}; datatype {datatype} needs numbers")
        if any(isinstance(v, list) for v in flat):
            raise bad_request(f"{where} is ragged: nested lists must all have the same length")
        arr = np.asarray(flat, dtype=np.float64)  # None -> NaN
    expected = math.prod(shape)
    if arr.size != expected:
        raise bad_request(
            f"{where} has {arr.size} values but {where.rsplit('.', 1)[0]}.shape {shape} "
            f"needs {expected}"
        )
    arr = arr.reshape(shape)
    if target.kind == "b":
        if arr.dtype.kind != "b":
            raise bad_request(f"{where} must hold true/false values for datatype BOOL")
    elif target.kind in "iu":
        if arr.dtype.kind == "f":
            raise bad_request(f"{where} holds non-integer values but datatype is {datatype}")
        if arr.dtype.kind != "b" and arr.size:
            info = np.iinfo(target)
            lo, hi = arr.min(), arr.max()
            if lo < info.min or hi > info.max:
                raise bad_request(
                    f"{where} has values outside {datatype}'s range [{info.min}, {info.max}]"
                )
    elif arr.dtype != target:
        with np.errstate(over="ignore"):
            arr = arr.astype(target)
    return to_model_dtype(arr, datatype, contract, where)


def to_model_dtype(
    arr: np.ndarray, datatype: str, contract: InputContract, where: str
) -> np.ndarray:
    """Cast validated rows to the model's dtype and refuse non-finite values it cannot take.

    The last step of every decoder (JSON here, protobuf in ``grpc_protocol``), so both
    protocols accept exactly the same values.
    """
    x = arr.astype(contract.dtype, copy=False)
    if x.dtype.kind == "f":
        _check_finite(x, where, contract.allows_missing, datatype)
    return x


def _check_finite(x: np.ndarray, where: str, allows_missing: bool, datatype: str) -> None:
    if np.isfinite(x).all():
        return
    inf = np.isinf(x)
    if inf.any():
        row, col = (int(i) for i in np.argwhere(inf)[0])
        raise bad_request(
            f"{where} has an infinite value at row {row}, column {col} (too large for "
            f"{datatype}?); values must be finite"
        )
    if not allows_missing:
        row, col = (int(i) for i in np.argwhere(np.isnan(x))[0])
        raise bad_request(
            f"{where} has NaN at row {row}, column {col}; this model does not accept missing values"
        )


def check_shape(shape: Any, contract: InputContract, where: str) -> list[int]:
    if (
        not isinstance(shape, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        or len(shape) != 2
    ):
        want = f"[rows, {contract.n_features or 'features'}]"
        raise bad_request(f"{where} must be {want} (two non-negative integers), got {shape!r:.80}")
    rows, cols = shape
    if rows == 0:
        raise bad_request(f"{where} has 0 rows: send at least one")
    if rows > contract.max_rows:
        raise RequestError(
            413,
            f"{where} has {rows} rows; at most {contract.max_rows} are accepted per request "
            "(MODELSERVER_MAX_REQUEST_ROWS)",
        )
    if contract.n_features is not None and cols != contract.n_features:
        raise bad_request(
            f"{where}[1] is {cols} but the model takes {contract.n_features} features"
        )
    return shape


def check_output_name(name: str, contract: InputContract, where: str) -> None:
    if name not in contract.output_names:
        raise bad_request(
            f"{where} {name!r:.60} is not an output of this model: one of "
            f"{', '.join(contract.output_names)}"
        )


def _requested_outputs(doc: Mapping[str, Any], contract: InputContract) -> frozenset[str]:
    outputs = doc.get("outputs")
    if outputs is None:
        return contract.default_outputs
    if not isinstance(outputs, list) or not outputs:
        raise bad_request("'outputs' must be a non-empty list of {\"name\": ...} objects")
    names = []
    for i, o in enumerate(outputs):
        name = o.get("name") if isinstance(o, dict) else None
        if not isinstance(name, str):
            raise bad_request(f"outputs[{i}] must be an object with a string 'name'")
        check_output_name(name, contract, f"outputs[{i}].name")
        _check_parameters(o, f"outputs[{i}].parameters")
        names.append(name)
    return frozenset(names)


def parse_v2(body: bytes, contract: InputContract) -> ParsedRequest:
    """Parse and validate a v2 inference request body."""
    doc = loads(body)
    if not isinstance(doc, dict):
        raise bad_request(f"request body must be a JSON object, got {_type_name(doc)}")
    _check_parameters(doc, "'parameters'")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise bad_request("'inputs' must be a non-empty list of tensors")
    if len(inputs) != 1:
        raise bad_request(
            f"this model takes exactly one input tensor of shape [rows, features]; "
            f"got {len(inputs)} tensors in 'inputs'"
        )
    tensor = inputs[0]
    if not isinstance(tensor, dict):
        raise bad_request("inputs[0] must be an object with name, shape, datatype and data")
    if not isinstance(tensor.get("name"), str):
        raise bad_request("inputs[0].name must be a string")
    _check_parameters(tensor, "inputs[0].parameters")
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise bad_request(
            f"inputs[0].datatype {datatype!r:.40} is not a tensor datatype: one of "
            f"{', '.join(DATATYPES)}"
        )
    if DATATYPES[datatype] is None:
        raise bad_request(
            f"inputs[0].datatype {datatype} is not accepted by this model: one of "
            f"{', '.join(_NUMERIC)}"
        )
    if "data" not in tensor:
        raise bad_request("inputs[0].data is missing")
    shape = check_shape(tensor.get("shape"), contract, "inputs[0].shape")
    bools = may_hold_booleans(body)
    x = to_array(tensor["data"], datatype, shape, contract, "inputs[0].data", bools)
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise bad_request("'id' must be a string")
    return ParsedRequest(x, _requested_outputs(doc, contract), request_id)


def parse_v1(body: bytes, contract: InputContract) -> ParsedRequest:
    """Parse a KServe v1 ``{"instances": [[...], ...]}`` body (``inputs`` is an alias)."""
    doc = loads(body)
    if not isinstance(doc, dict):
        raise bad_request(f"request body must be a JSON object, got {_type_name(doc)}")
    key = "instances" if "instances" in doc else "inputs"
    rows = doc.get(key)
    if not isinstance(rows, list) or not rows:
        raise bad_request("'instances' must be a non-empty list of rows (lists of numbers)")
    if not all(isinstance(r, list) for r in rows):
        raise bad_request(f"every item of '{key}' must be a row: a list of numbers")
    width = len(rows[0])
    shape = check_shape([len(rows), width], contract, f"{key} (as a [rows, features] shape)")
    if any(len(r) != width for r in rows):
        raise bad_request(f"'{key}' is ragged: every row must have {width} values")
    x = to_array(rows, "FP64", shape, contract, key, may_hold_booleans(body))
    return ParsedRequest(x, contract.default_outputs, None)


def _wire(arr: np.ndarray) -> Any:
    """Flatten an output for JSON: numeric arrays go to orjson as-is, strings as lists."""
    if arr.dtype.kind in "biuf" and arr.dtype != np.float16:
        return np.ascontiguousarray(arr).reshape(-1)
    if arr.dtype == np.float16:
        return arr.astype(np.float32).reshape(-1)
    return [v if isinstance(v, (str, int, float, bool)) else str(v) for v in arr.reshape(-1)]


def encode_v2(
    model_name: str, version: str, request_id: str | None, outputs: Mapping[str, np.ndarray]
) -> bytes:
    doc: dict[str, Any] = {"model_name": model_name, "model_version": version}
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = [
        {
            "name": name,
            "datatype": v2_datatype(arr.dtype),
            "shape": list(arr.shape),
            "data": _wire(arr),
        }
        for name, arr in outputs.items()
    ]
    return orjson.dumps(doc, option=_DUMPS_OPTS)


def encode_v1(outputs: Mapping[str, np.ndarray], name: str) -> bytes:
    arr = outputs[name]
    data: Any = arr if arr.dtype.kind in "biuf" and arr.dtype != np.float16 else arr.tolist()
    return orjson.dumps({"predictions": data}, option=_DUMPS_OPTS)


def dumps(doc: Any) -> bytes:
    return orjson.dumps(doc, option=_DUMPS_OPTS)
