"""The floor: a naive uvicorn app that calls predict once per request, on the event loop.

What most people write first: parse the v2 body with orjson, build a numpy array, call the
scikit-learn model's predict inline, answer. No batching, no thread hand-off, no validation.
Run: MODEL_PATH=model.joblib uvicorn naive_app:app --app-dir bench/serving/peers
"""

from __future__ import annotations

import os

import joblib
import numpy as np
import orjson

MODEL = joblib.load(os.environ["MODEL_PATH"])
NAME = os.environ.get("MODEL_NAME", "model")
HEADERS = [(b"content-type", b"application/json")]


async def _send(send, status: int, body: bytes) -> None:  # type: ignore[no-untyped-def]
    headers = [*HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    if scope["method"] == "GET":
        await _send(send, 200, b'{"ready": true}')
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    tensor = orjson.loads(body)["inputs"][0]
    x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    pred = MODEL.predict(x)
    out = {
        "model_name": NAME,
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [len(pred)], "data": pred}],
    }
    await _send(send, 200, orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY))
