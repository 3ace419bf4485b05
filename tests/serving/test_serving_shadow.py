"""Shadow traffic: a real stable server mirrors live requests to a real shadow server, compares
the answers and counts them; the configuration arrives over HTTP, without a restart.

The pure parts (the answer comparison, the configuration's validation and expiry) are tested
without a server.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from devcluster import wait_until
from modelserver import metric_names as m
from modelserver.shadow import ShadowConfig, ShadowConfigError, ShadowStore, answers_agree
from servingkit import Server, metric, request, v2_body

OPERATOR_TOKEN = "operator-secret"
OPERATOR_DIGEST = hashlib.sha256(OPERATOR_TOKEN.encode()).hexdigest()
USER_TOKEN = "user-secret"
# What the operator sets on every model with spec.rollout.shadow: its token's digest.
AS_THE_OPERATOR_STARTS_IT = {"MODELSERVER_OPERATOR_TOKEN_SHA256": OPERATOR_DIGEST}


def shadow_request(
    server: Server,
    method: str,
    doc: dict[str, Any] | None = None,
    token: str | None = OPERATOR_TOKEN,
) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return request(server.port, method, "/v2/shadow", doc, headers=headers)


def put(server: Server, doc: dict[str, Any], token: str | None = OPERATOR_TOKEN) -> Any:
    return shadow_request(server, "PUT", doc, token)


def shadow_doc(target: int, revision: str = "r2", **extra: Any) -> dict[str, Any]:
    return {
        "revision": revision,
        "model": "fraud",
        "targets": [f"http://127.0.0.1:{target}"],
        "fraction": 1.0,
        **extra,
    }


def counts(server: Server, revision: str = "r2") -> dict[str, float]:
    values = server.metrics()
    names = {
        "mirrored": m.SHADOW_MIRRORED_TOTAL,
        "dropped": m.SHADOW_DROPPED_TOTAL,
        "agreed": m.SHADOW_AGREED_TOTAL,
        "disagreed": m.SHADOW_DISAGREED_TOTAL,
        "errors": m.SHADOW_ERRORS_TOTAL,
        "answered": f"{m.SHADOW_DURATION_SECONDS}_count",
    }
    return {k: metric(values, name, shadow=revision) for k, name in names.items()}


def fraud_server(
    start_server, path, *extra: str, env: dict[str, str] = AS_THE_OPERATOR_STARTS_IT
) -> Server:
    server = start_server(
        "--model-uri", str(path), "--model-name", "fraud", "--default-outputs", "predict",
        *extra, env=env,
    )  # fmt: skip
    server.wait_ready()
    return server


def send(server: Server, rows, n: int, headers: dict[str, str] | None = None) -> None:
    for i in range(n):
        reply = server.post(
            "/v2/models/fraud/infer", v2_body([rows[i % len(rows)].tolist()]), headers=headers
        )
        assert reply.status == 200, reply.body


def test_an_identical_shadow_agrees_on_every_mirrored_request(start_server, models):
    shadow = fraud_server(start_server, models.lr, "--model-version", "r2")
    stable = fraud_server(start_server, models.lr, "--model-version", "r1")
    assert put(stable, shadow_doc(shadow.port)).status == 200
    send(stable, models.x, 30)
    wait_until(lambda: counts(stable)["agreed"] == 30, 20, "30 agreed answers")
    seen = counts(stable)
    assert seen["mirrored"] == 30 and seen["disagreed"] == 0 and seen["errors"] == 0
    assert seen["answered"] == 30  # the shadow's answer time, one sample per answer
    # The shadow served the copies itself, under its own revision.
    served = metric(shadow.metrics(), m.REQUESTS_TOTAL, endpoint="infer", version="r2")
    assert served >= 30


def test_a_different_model_disagrees_and_stops_with_delete(start_server, models):
    shadow = fraud_server(start_server, models.rf, "--model-version", "r2")
    stable = fraud_server(start_server, models.lr, "--model-version", "r1")
    # Rows where the two models predict differently, and rows where they agree.
    rows = models.x[:200]
    lr = [stable.post("/v2/models/fraud/infer", v2_body([r.tolist()])).json() for r in rows]
    rf = [shadow.post("/v2/models/fraud/infer", v2_body([r.tolist()])).json() for r in rows]
    differ = [r for r, a, b in zip(rows, lr, rf, strict=True) if not answers_agree(a, b, 0)]
    same = [r for r, a, b in zip(rows, lr, rf, strict=True) if answers_agree(a, b, 0)]
    assert differ and same

    assert put(stable, shadow_doc(shadow.port)).status == 200
    send(stable, differ, 10)
    send(stable, same, 15)
    wait_until(lambda: counts(stable)["mirrored"] == 25, 20, "25 copies mirrored")
    wait_until(
        lambda: counts(stable)["agreed"] + counts(stable)["disagreed"] == 25, 20, "25 compared"
    )
    seen = counts(stable)
    assert seen["disagreed"] == 10 and seen["agreed"] == 15

    stopped = shadow_request(stable, "DELETE")
    assert stopped.status == 200 and stopped.json() == {"active": False}
    send(stable, same, 5)
    time.sleep(0.5)  # what would have been mirrored has had time to be
    assert counts(stable)["mirrored"] == 25


class StuckShadow:
    """An HTTP server that holds every request until released: a shadow far slower than live."""

    def __init__(self) -> None:
        self.release = threading.Event()
        release = self.release

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                release.wait(30)
                self.send_response(503)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.http.server_address[1]
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def stuck() -> Iterator[StuckShadow]:
    server = StuckShadow()
    yield server
    server.close()


def test_a_stuck_shadow_fills_the_queue_and_copies_are_dropped_not_waited_for(
    start_server, models, stuck
):
    stable = fraud_server(start_server, models.lr, "--model-version", "r1")
    assert put(stable, shadow_doc(stuck.port, maxQueue=2)).status == 200
    # At most four copies are held at the stuck shadow (one per sender) and two wait in the
    # queue: the rest of the 30 are dropped. Every live request was answered meanwhile (send
    # asserts 200), none waited for the shadow.
    send(stable, models.x, 30)
    assert counts(stable)["dropped"] >= 30 - 4 - 2, counts(stable)
    stuck.release.set()
    wait_until(
        lambda: counts(stable)["mirrored"] + counts(stable)["dropped"] == 30, 20, "all accounted"
    )
    wait_until(lambda: counts(stable)["errors"] == counts(stable)["mirrored"], 20, "503s counted")
    assert counts(stable)["agreed"] == 0


def test_a_dead_shadow_is_backed_off_from_and_copies_are_dropped(start_server, models):
    from devcluster.ports import free_port

    stable = fraud_server(start_server, models.lr, "--model-version", "r1")
    assert put(stable, shadow_doc(free_port(), maxQueue=5)).status == 200  # nobody listens
    send(stable, models.x, 50)
    # Refused copies make the senders wait (0.1 s, doubling) instead of retrying at once, so
    # the queue fills and further copies are dropped rather than burning CPU on connects.
    wait_until(
        lambda: counts(stable)["mirrored"] + counts(stable)["dropped"] == 50, 30, "all accounted"
    )
    seen = counts(stable)
    assert seen["dropped"] > 0 and seen["errors"] == seen["mirrored"], seen


def test_the_configuration_needs_a_credential_when_auth_is_on_and_the_token_is_passed_on(
    start_server, models
):
    env = {
        "MODELSERVER_AUTH_TOKEN": USER_TOKEN,
        "MODELSERVER_OPERATOR_TOKEN_SHA256": OPERATOR_DIGEST,
    }
    shadow = fraud_server(start_server, models.lr, "--model-version", "r2", env=env)
    stable = fraud_server(start_server, models.lr, "--model-version", "r1", env=env)
    assert put(stable, shadow_doc(shadow.port), token=None).status == 401
    assert put(stable, shadow_doc(shadow.port), token="wrong").status == 401
    assert put(stable, shadow_doc(shadow.port), token=USER_TOKEN).status == 200
    assert put(stable, shadow_doc(shadow.port), token=OPERATOR_TOKEN).status == 200
    # The caller's token goes along with the copy: the shadow (same ModelDeployment, same
    # Secret) accepts it, so its answers are compared, not refused.
    send(stable, models.x, 5, headers={"Authorization": f"Bearer {USER_TOKEN}"})
    wait_until(lambda: counts(stable)["agreed"] == 5, 20, "five agreed answers")
    assert counts(stable)["errors"] == 0


def test_every_worker_mirrors_after_one_configuration_request(start_server, models):
    shadow = fraud_server(start_server, models.lr, "--model-version", "r2")
    stable = fraud_server(start_server, models.lr, "--model-version", "r1", "--workers", "2")
    assert put(stable, shadow_doc(shadow.port)).status == 200
    time.sleep(1.5)  # each worker re-reads the shared file at most once a second
    # New connections are spread over both workers by the kernel; all of them mirror.
    send(stable, models.x, 40)
    wait_until(lambda: counts(stable)["agreed"] == 40, 20, "40 agreed answers")


def test_a_configuration_expires_by_itself(start_server, models):
    shadow = fraud_server(start_server, models.lr, "--model-version", "r2")
    stable = fraud_server(start_server, models.lr, "--model-version", "r1")
    reply = put(stable, shadow_doc(shadow.port, ttlSeconds=1))
    assert reply.status == 200 and reply.json()["active"] is True
    wait_until(lambda: shadow_request(stable, "GET").json() == {"active": False}, 10, "expired")
    send(stable, models.x, 5)
    time.sleep(0.5)
    assert counts(stable)["mirrored"] == 0


def test_invalid_configurations_are_refused_with_the_reason(start_server, models):
    stable = fraud_server(start_server, models.lr, "--model-version", "r1")
    bad = [
        ({"revision": "r2", "model": "fraud", "targets": []}, "targets"),
        (shadow_doc(1, fraction=1.5), "fraction"),
        ({**shadow_doc(1), "targets": ["http://127.0.0.1:1/path"]}, "targets"),
        (shadow_doc(1, revision="-bad-"), "revision"),
    ]
    for doc, field in bad:
        reply = put(stable, doc)
        assert reply.status == 400 and field in reply.json()["error"], reply.body
    assert shadow_request(stable, "POST", {}).status == 405
    assert shadow_request(stable, "GET").json() == {"active": False}


def test_without_user_auth_the_configuration_still_needs_the_operators_token(start_server, models):
    """Whoever configures mirroring decides where copies of every caller's requests go, so
    /v2/shadow is never open: inference needs no token here, the configuration does."""
    shadow = fraud_server(start_server, models.lr, "--model-version", "r2")
    stable = fraud_server(start_server, models.lr, "--model-version", "r1")
    for method in ("GET", "PUT", "DELETE"):
        for token in (None, "wrong"):
            reply = shadow_request(stable, method, shadow_doc(shadow.port), token=token)
            assert reply.status == 401, (method, token, reply.body)
    assert stable.get("/v2/health/ready").status == 200
    send(stable, models.x, 3)  # users still need no token
    assert put(stable, shadow_doc(shadow.port)).status == 200


def test_a_server_with_no_credential_at_all_refuses_to_be_configured(start_server, models):
    stable = fraud_server(start_server, models.lr, "--model-version", "r1", env={})
    reply = put(stable, shadow_doc(1))
    assert reply.status == 403, reply.body
    assert "MODELSERVER_OPERATOR_TOKEN_SHA256" in reply.json()["error"]
    send(stable, models.x, 3)


# --- pure parts ----------------------------------------------------------------------------------


def out(*values: Any, datatype: str = "FP64", name: str = "predict") -> dict[str, Any]:
    return {"outputs": [{"name": name, "datatype": datatype, "shape": [len(values)],
                         "data": list(values)}]}  # fmt: skip


def test_answers_agree_with_the_smoke_tests_semantics():
    assert answers_agree(out(1, 0), out(1, 0), 0)
    assert not answers_agree(out(1, 0), out(1, 1), 0)
    assert answers_agree(out(0.50), out(0.52), 0.05) and not answers_agree(out(0.5), out(0.6), 0.05)
    assert not answers_agree(out(1), out(1, name="label"), 1)  # other output names
    assert not answers_agree(out(1), out(1, datatype="INT64"), 1)  # other datatype
    assert not answers_agree(out(1), out(1, 1), 1)  # other shape
    assert answers_agree(out("a"), out("a"), 0) and not answers_agree(out("a"), out("b"), 5)
    assert answers_agree({"predictions": [1, 2]}, {"predictions": [1, 2.01]}, 0.1)
    assert not answers_agree({"predictions": [1]}, {"error": "x"}, 1)


def test_configuration_validation_and_expiry():
    config = ShadowConfig.parse(shadow_doc(8080, ttlSeconds=30), now=1000.0)
    assert config.expires_at == 1030.0 and config.tolerance == 0.0 and config.max_queue == 1000
    with pytest.raises(ShadowConfigError, match="fraction"):
        ShadowConfig.parse(shadow_doc(8080, fraction=True), now=0)
    with pytest.raises(ShadowConfigError, match="ttlSeconds"):
        ShadowConfig.parse(shadow_doc(8080, ttlSeconds=0), now=0)
    clock = [1000.0]
    store = ShadowStore(clock=lambda: clock[0])
    store.set(config)
    assert store.current() == config
    clock[0] = 1030.0
    assert store.current() is None
