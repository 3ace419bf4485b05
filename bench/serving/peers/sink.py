"""A CloudEvents sink for the payload-logging rows: counts the events it is sent, answers 202.

A raw ASGI app under uvicorn (httptools), so the sink is as cheap as the server it listens to;
``GET /count`` answers how many events arrived and of which ``ce-type``.
Run: uvicorn sink:app --app-dir bench/serving/peers --port 9999
"""

from __future__ import annotations

import json
from collections import Counter

RECEIVED: Counter[str] = Counter()


async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    more = True
    while more:  # read the whole body, as a real sink would
        message = await receive()
        more = message.get("more_body", False)
    if scope["method"] == "GET":
        body = json.dumps(dict(RECEIVED)).encode()
        status = 200
    else:
        kind = next((v for k, v in scope["headers"] if k == b"ce-type"), b"none")
        RECEIVED[kind.decode("latin-1")] += 1
        body, status = b"", 202
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
