"""Bearer-token auth: off by default; health and metrics stay open unless configured."""

from __future__ import annotations

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
