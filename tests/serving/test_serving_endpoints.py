"""Every endpoint of a real server over HTTP: v2 REST, its /versions/ forms, and KServe v1."""

from __future__ import annotations

import joblib
import numpy as np
from servingkit import Server, v2_body


def rows(models, n: int = 3) -> list[list[float]]:  # type: ignore[no-untyped-def]
    return models.x[:n].tolist()


def test_server_metadata_and_health(lr_server: Server) -> None:
    meta = lr_server.get("/v2")
    assert meta.status == 200 and meta.json()["name"] == "modelserver" and "version" in meta.json()
    assert lr_server.get("/v2/health/live").json() == {"live": True}
    assert lr_server.get("/v2/health/ready").json() == {"ready": True}


def test_model_metadata(lr_server: Server) -> None:
    for path in ("/v2/models/iris", "/v2/models/iris/versions/7"):
        doc = lr_server.get(path).json()
        assert doc["name"] == "iris" and doc["versions"] == ["7"] and doc["platform"] == "sklearn"
        assert doc["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 20]}]
        assert {"name": "predict", "datatype": "INT64", "shape": [-1]} in doc["outputs"]
        assert {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]} in doc["outputs"]


def test_model_ready(lr_server: Server) -> None:
    for path in ("/v2/models/iris/ready", "/v2/models/iris/versions/7/ready", "/v1/models/iris"):
        reply = lr_server.get(path)
        assert reply.status == 200 and reply.json() == {"name": "iris", "ready": True}


def test_infer_matches_the_model(lr_server: Server, models) -> None:  # type: ignore[no-untyped-def]
    model = joblib.load(models.lr)
    x = rows(models, 5)
    want = model.predict(np.asarray(x)).tolist()
    proba = model.predict_proba(np.asarray(x))
    for path in ("/v2/models/iris/infer", "/v2/models/iris/versions/7/infer"):
        reply = lr_server.post(path, v2_body(x, ["predict", "predict_proba"], id="req-1"))
        assert reply.status == 200, reply.body
        doc = reply.json()
        assert doc["model_name"] == "iris" and doc["model_version"] == "7" and doc["id"] == "req-1"
        out = {o["name"]: o for o in doc["outputs"]}
        assert out["predict"]["data"] == want and out["predict"]["shape"] == [5]
        assert out["predict_proba"]["shape"] == [5, 2]
        assert np.allclose(np.reshape(out["predict_proba"]["data"], (5, 2)), proba)
    default = lr_server.post("/v2/models/iris/infer", v2_body(x)).json()
    assert [o["name"] for o in default["outputs"]] == ["predict"]


def test_v1_predict(lr_server: Server, models) -> None:  # type: ignore[no-untyped-def]
    x = rows(models, 4)
    reply = lr_server.post("/v1/models/iris:predict", {"instances": x})
    assert reply.status == 200
    assert reply.json() == {"predictions": joblib.load(models.lr).predict(np.asarray(x)).tolist()}


def test_not_found_and_wrong_method(lr_server: Server, models) -> None:  # type: ignore[no-untyped-def]
    body = v2_body(rows(models, 1))
    unknown = lr_server.post("/v2/models/other/infer", body)
    assert unknown.status == 404 and "'other' is not served here" in unknown.json()["error"]
    version = lr_server.post("/v2/models/iris/versions/8/infer", body)
    assert version.status == 404 and "served version is '7'" in version.json()["error"]
    assert lr_server.get("/v2/nothing").status == 404
    wrong = lr_server.get("/v2/models/iris/infer")
    assert wrong.status == 405 and wrong.headers["allow"] == "POST"
