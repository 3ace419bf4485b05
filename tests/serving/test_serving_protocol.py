"""Request parsing and response encoding, without a server."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from modelserver.errors import RequestError
from modelserver.protocol import InputContract, encode_v1, encode_v2, parse_v1, parse_v2

C = InputContract(
    n_features=3,
    dtype=np.dtype(np.float64),
    allows_missing=False,
    max_rows=10,
    output_names=("predict", "predict_proba"),
    default_outputs=frozenset({"predict"}),
)


def body(data: object, shape: object = (2, 3), datatype: str = "FP32", **extra: object) -> bytes:
    tensor = {
        "name": "x",
        "shape": list(shape) if isinstance(shape, tuple) else shape,
        "datatype": datatype,
        "data": data,
    }
    return orjson.dumps({"inputs": [tensor], **extra})


def test_flat_and_nested_data_give_the_same_rows() -> None:
    flat = parse_v2(body([1, 2, 3, 4, 5, 6]), C)
    nested = parse_v2(body([[1, 2, 3], [4, 5, 6]]), C)
    assert flat.x.dtype == np.float64
    assert np.array_equal(flat.x, nested.x)
    assert flat.x.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert flat.outputs == {"predict"}


def test_outputs_and_id() -> None:
    req = parse_v2(body([1, 2, 3], (1, 3), id="abc", outputs=[{"name": "predict_proba"}]), C)
    assert req.request_id == "abc"
    assert req.outputs == {"predict_proba"}


def test_integer_and_bool_datatypes() -> None:
    assert parse_v2(body([1, 2, 3], (1, 3), "INT64"), C).x.tolist() == [[1, 2, 3]]
    assert parse_v2(body([True, False, True], (1, 3), "BOOL"), C).x.tolist() == [[1, 0, 1]]


def test_missing_values_only_when_allowed() -> None:
    with pytest.raises(RequestError, match="does not accept missing values"):
        parse_v2(body([1, None, 3], (1, 3)), C)
    allowing = InputContract(
        3, np.dtype(np.float32), True, 10, ("predict",), frozenset({"predict"})
    )
    x = parse_v2(body([1, None, 3], (1, 3)), allowing).x
    assert np.isnan(x[0, 1]) and x.dtype == np.float32


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (b"{", 400, "not valid JSON"),
        (b"", 400, "body is empty"),
        (b"[1]", 400, "must be a JSON object"),
        (b'{"inputs": []}', 400, "'inputs' must be a non-empty list"),
        (body([1, 2, 3], (1, 3), "FP99"), 400, "'FP99' is not a tensor datatype"),
        (body(["a", "b", "c"], (1, 3), "BYTES"), 400, "BYTES is not accepted"),
        (body([1, 2, "x"], (1, 3)), 400, "string 'x' is not a number"),
        (body([1, 2], (1, 3)), 400, "has 2 values but inputs[0].shape [1, 3] needs 3"),
        (body([[1, 2, 3], [4, 5]]), 400, "ragged"),
        (body([1.5, 2, 3], (1, 3), "INT32"), 400, "non-integer values"),
        (body([300, 2, 3], (1, 3), "UINT8"), 400, "outside UINT8's range"),
        (body([1e39, 2, 3], (1, 3), "FP32"), 400, "infinite value at row 0, column 0"),
        (body([1, 2, 3, 4], (1, 4)), 400, "[1] is 4 but the model takes 3 features"),
        (body([1, 2, 3], (3,)), 400, "must be [rows, 3]"),
        (body([], (0, 3)), 400, "0 rows"),
        (body([0] * 33, (11, 3)), 413, "has 11 rows; at most 10"),
        (
            body([1, 2, 3], (1, 3), outputs=[{"name": "nope"}]),
            400,
            "'nope' is not an output of this model",
        ),
        (body({"a": 1}, (1, 3)), 400, "must be a list of numbers, got object"),
    ],
)
def test_malformed(raw: bytes, status: int, message: str) -> None:
    with pytest.raises(RequestError) as err:
        parse_v2(raw, C)
    assert err.value.status == status
    assert message in err.value.message


def test_v1_instances() -> None:
    req = parse_v1(b'{"instances": [[1, 2, 3], [4, 5, 6]]}', C)
    assert req.x.shape == (2, 3)
    with pytest.raises(RequestError, match="ragged"):
        parse_v1(b'{"instances": [[1, 2, 3], [4, 5]]}', C)
    with pytest.raises(RequestError, match="non-empty list of rows"):
        parse_v1(b'{"instances": 3}', C)


def test_encoding() -> None:
    out = {"predict": np.array([1, 0]), "predict_proba": np.array([[0.1, 0.9], [0.8, 0.2]])}
    doc = orjson.loads(encode_v2("m", "3", "id-1", out))
    assert doc["model_name"] == "m" and doc["model_version"] == "3" and doc["id"] == "id-1"
    assert doc["outputs"][0] == {
        "name": "predict",
        "datatype": "INT64",
        "shape": [2],
        "data": [1, 0],
    }
    assert doc["outputs"][1]["shape"] == [2, 2] and doc["outputs"][1]["data"] == [
        0.1,
        0.9,
        0.8,
        0.2,
    ]
    labels = {"predict": np.array(["cat", "dog"], dtype=object)}
    assert orjson.loads(encode_v2("m", "1", None, labels))["outputs"][0]["datatype"] == "BYTES"
    assert orjson.loads(encode_v1(out, "predict")) == {"predictions": [1, 0]}
