"""Each runtime serves a small model trained in the test, and agrees with the framework."""

from __future__ import annotations

import numpy as np
import pytest
from servingkit import v2_body


def infer(server, x, outputs):  # type: ignore[no-untyped-def]
    reply = server.post("/v2/models/model/infer", v2_body(x.tolist(), outputs))
    assert reply.status == 200, reply.body
    return {o["name"]: np.reshape(o["data"], o["shape"]) for o in reply.json()["outputs"]}


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("kind", ["lr", "rf"])
def test_sklearn(start_server, models, kind: str, fast_path: bool) -> None:  # type: ignore[no-untyped-def]
    import joblib

    path = models.lr if kind == "lr" else models.rf
    flag = "--fast-path" if fast_path else "--no-fast-path"
    server = start_server("--model-uri", str(path), "--format", "sklearn", flag)
    server.wait_ready()
    model = joblib.load(path)
    x = models.x[:16]
    out = infer(server, x, ["predict", "predict_proba"])
    x = x.astype(np.float64)  # what the server scores: JSON numbers, read as float64
    assert out["predict"].tolist() == model.predict(x).tolist()
    assert np.allclose(out["predict_proba"], model.predict_proba(x))
    assert ("fast path for" in server.log()) == fast_path


def test_xgboost(start_server, models) -> None:  # type: ignore[no-untyped-def]
    import xgboost

    server = start_server("--model-uri", str(models.xgb), "--format", "xgboost")
    server.wait_ready()
    ref = xgboost.XGBClassifier()
    ref.load_model(models.xgb)
    x = models.x[:16]
    out = infer(server, x, ["predict", "predict_proba"])
    assert out["predict"].tolist() == ref.predict(x).tolist()
    assert np.allclose(out["predict_proba"], ref.predict_proba(x), atol=1e-6)
    # XGBoost handles missing values, so null is accepted
    row = x[0].tolist()
    row[3] = None
    assert server.post("/v2/models/model/infer", v2_body([row])).status == 200


def test_lightgbm(start_server, models) -> None:  # type: ignore[no-untyped-def]
    import lightgbm

    server = start_server("--model-uri", str(models.lgbm), "--format", "lightgbm")
    server.wait_ready()
    booster = lightgbm.Booster(model_file=str(models.lgbm))
    x = models.x[:16]
    out = infer(server, x, ["predict", "predict_proba"])
    p = booster.predict(x)
    assert out["predict"].tolist() == (p > 0.5).astype(int).tolist()
    assert np.allclose(out["predict_proba"][:, 1], p)


def test_onnx(start_server, models) -> None:  # type: ignore[no-untyped-def]
    import joblib

    server = start_server("--model-uri", str(models.onnx), "--format", "onnx")
    server.wait_ready()
    meta = server.get("/v2/models/model").json()
    assert meta["platform"] == "onnx" and meta["inputs"][0]["shape"] == [-1, 20]
    x = models.x[:16]
    out = infer(server, x, ["predict", "predict_proba"])
    sk = joblib.load(models.lr)
    assert out["predict"].tolist() == sk.predict(x).tolist()
    assert np.allclose(out["predict_proba"], sk.predict_proba(x), atol=1e-5)


def test_custom_class(start_server, models) -> None:  # type: ignore[no-untyped-def]
    server = start_server("--format", "custom", "--model-class", "ms_test_models:SumModel")
    server.wait_ready()
    x = models.x[:4]
    out = infer(server, x, ["predict", "predict_proba"])
    assert np.allclose(out["predict"], x.astype(np.float64).sum(axis=1))
    assert out["predict_proba"].tolist() == [[0.75, 0.25]] * 4


def test_custom_class_that_fails_to_load(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server("--format", "custom", "--model-class", "ms_test_models:BrokenModel")
    reply = server.wait_status("failed")
    assert (
        "constructor failed: RuntimeError('this model refuses to load')" in reply.json()["reason"]
    )
    assert server.get("/v2/health/live").status == 200
