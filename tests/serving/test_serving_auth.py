"""Bearer-token auth: off by default; health and metrics stay open unless configured."""

from __future__ import annotations

import hashlib

from servingkit import v2_body

TOKEN = "s3cr3t-token-value"


def test_no_auth_by_default(lr_server, models) -> None:  # type: ignore[no-untyped-def]
    assert lr_server.post("/v2/models/iris/infer", v2_body(models.x[:1].tolist())).status == 200


def test_token_from_env(start_server, models) -> None:  # type: ignore[no-untyped-def]
    server = start_server("--model-uri", str(models.lr), env={"MODELSERVER_AUTH_TOKEN": TOKEN})
    server.wait_ready()
    body = v2_body(models.x[:1].tolist())
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}):  # fmt: skip
        reply = server.post("/v2/models/model/infer", body, headers=headers)
        assert reply.status == 401, headers
        assert reply.headers["www-authenticate"].startswith("Bearer")
        assert "bearer token" in reply.json()["error"]
    ok = {"Authorization": f"Bearer {TOKEN}"}
    assert server.post("/v2/models/model/infer", body, headers=ok).status == 200
    assert (
        server.post(
            "/v1/models/model:predict", {"instances": models.x[:1].tolist()}, headers=ok
        ).status
        == 200
    )
    assert server.get("/v2/models/model").status == 401
    assert server.get("/v2/models/model", headers=ok).status == 200
    assert server.get("/v2").status == 401
    # unknown paths do not reveal themselves to callers without the token
    assert server.get("/admin").status == 401
    assert server.get("/admin", headers=ok).status == 404
    # health and metrics stay open by default
    assert server.get("/v2/health/live").status == 200
    assert server.get("/v2/health/ready").status == 200
    assert server.get("/metrics").status == 200
    assert 'code="401"' in server.get("/metrics").body.decode()


def test_token_file_and_protected_health_and_metrics(start_server, models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    server = start_server("--model-uri", str(models.lr), "--auth-token-file", str(token_file),
                          "--auth-protect-health", "--auth-protect-metrics")  # fmt: skip
    ok = {"Authorization": f"Bearer {TOKEN}"}
    server.wait_for(lambda r: r.status == 200, "/v2/health/ready", headers=ok)
    assert server.get("/v2/health/live").status == 401
    assert server.get("/metrics").status == 401
    assert server.get("/metrics", headers=ok).status == 200
    body = v2_body(models.x[:1].tolist())
    assert server.post("/v2/models/model/infer", body, headers=ok).status == 200


def test_unreadable_token_file_is_a_configuration_error(start_server, models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = start_server(
        "--model-uri", str(models.lr), "--auth-token-file", str(tmp_path / "missing")
    )
    assert server.proc.wait(60) == 2
    assert "--auth-token-file" in server.log() and "cannot be read" in server.log()


# --- the operator's credential ------------------------------------------------------------------
OPERATOR_TOKEN = "operator-token-value"
OPERATOR_SHA256 = hashlib.sha256(OPERATOR_TOKEN.encode()).hexdigest()
USER = {"Authorization": f"Bearer {TOKEN}"}
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}

# the paths the operator's gates and scrapes call: its token is accepted on each
OPERATOR_GETS = [
    "/v2/health/live", "/v2/health/ready", "/metrics", "/v2",
    "/v2/models/model", "/v2/models/model/versions/1",
    "/v2/models/model/ready", "/v2/models/model/versions/1/ready",
]  # fmt: skip
OPERATOR_INFERS = ["/v2/models/model/infer", "/v2/models/model/versions/1/infer"]


def _protected_server(start_server, models, env):  # type: ignore[no-untyped-def]
    """Auth on everywhere (health and metrics too), so every 200 below is the token's doing."""
    server = start_server("--model-uri", str(models.lr), "--auth-protect-health",
                          "--auth-protect-metrics", env={"MODELSERVER_AUTH_TOKEN": TOKEN, **env})  # fmt: skip
    server.wait_for(lambda r: r.status == 200, "/v2/health/ready", headers=USER)
    return server


def test_operator_token_is_accepted_on_gate_endpoints_only(start_server, models) -> None:  # type: ignore[no-untyped-def]
    server = _protected_server(
        start_server, models, {"MODELSERVER_OPERATOR_TOKEN_SHA256": OPERATOR_SHA256}
    )
    body = v2_body(models.x[:1].tolist())
    for path in OPERATOR_GETS:
        assert server.get(path).status == 401, path
        assert server.get(path, headers=OPERATOR).status == 200, path
        assert server.get(path, headers=USER).status == 200, path
    for path in OPERATOR_INFERS:
        reply = server.post(path, body, headers=OPERATOR)
        assert reply.status == 200, (path, reply.body)
        assert reply.json()["outputs"][0]["name"] == "predict"
        assert server.post(path, body, headers=USER).status == 200, path
        for headers in ({}, {"Authorization": "Bearer wrong"},
                        {"Authorization": f"Bearer {OPERATOR_SHA256}"},  # the digest is not the token
                        {"Authorization": OPERATOR_TOKEN}, {"Authorization": "Bearer "}):  # fmt: skip
            reply = server.post(path, body, headers=headers)
            assert reply.status == 401, (path, headers)
            assert "bearer token" in reply.json()["error"]
    # KServe v1 is the user's API, not a gate: the operator's token does not open it
    v1 = {"instances": models.x[:1].tolist()}
    assert server.post("/v1/models/model:predict", v1, headers=OPERATOR).status == 401
    assert server.post("/v1/models/model:predict", v1, headers=USER).status == 200
    assert server.get("/v1/models/model", headers=OPERATOR).status == 401
    # nor does it reveal which other paths exist
    assert server.get("/admin", headers=OPERATOR).status == 401


def test_without_the_setting_the_operator_token_is_a_wrong_token(start_server, models) -> None:  # type: ignore[no-untyped-def]
    server = _protected_server(start_server, models, {})
    body = v2_body(models.x[:1].tolist())
    for path in OPERATOR_GETS:
        assert server.get(path, headers=OPERATOR).status == 401, path
    for path in OPERATOR_INFERS:
        assert server.post(path, body, headers=OPERATOR).status == 401, path
        assert server.post(path, body, headers=USER).status == 200, path


def test_operator_digest_that_is_not_64_hex_characters_is_a_configuration_error(
    start_server, models
) -> None:  # type: ignore[no-untyped-def]
    server = start_server("--model-uri", str(models.lr),
                          env={"MODELSERVER_AUTH_TOKEN": TOKEN,
                               "MODELSERVER_OPERATOR_TOKEN_SHA256": OPERATOR_TOKEN})  # fmt: skip
    assert server.proc.wait(60) == 2
    assert "MODELSERVER_OPERATOR_TOKEN_SHA256" in server.log()
    assert "64 hexadecimal characters" in server.log()
