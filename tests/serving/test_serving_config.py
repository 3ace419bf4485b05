"""Settings: flags, MODELSERVER_* variables, defaults, and errors that name the setting."""

from __future__ import annotations

import pytest
from modelserver.config import ConfigError, Settings, build_parser, load_settings


def test_defaults_and_required_uri() -> None:
    s = load_settings(["--model-uri", "/m.joblib"], {})
    assert s.model_uri == "/m.joblib"
    assert s.format == "sklearn"
    assert s.host == "127.0.0.1"
    assert s.batching is True
    with pytest.raises(ConfigError, match=r"--model-uri \(MODELSERVER_MODEL_URI\) is required"):
        load_settings([], {})


def test_env_sets_every_field_and_flags_win() -> None:
    env = {
        "MODELSERVER_MODEL_URI": "s3://b/m.joblib",
        "MODELSERVER_PORT": "9000",
        "MODELSERVER_BATCHING": "off",
        "MODELSERVER_MAX_BATCH_WAIT_MS": "0.5",
        "MODELSERVER_AUTH_TOKEN": "secret",
    }
    s = load_settings([], env)
    assert (s.model_uri, s.port, s.batching, s.max_batch_wait_ms) == (
        "s3://b/m.joblib",
        9000,
        False,
        0.5,
    )
    assert s.auth_token == "secret"
    s = load_settings(["--port", "9001", "--batching"], env)
    assert (s.port, s.batching) == (9001, True)


def test_every_field_has_a_flag_except_the_secret() -> None:
    flags = {a.dest for a in build_parser()._actions}
    import dataclasses

    for f in dataclasses.fields(Settings):
        assert (f.name in flags) == (f.name != "auth_token"), f.name


def test_operator_digest_from_env_or_flag() -> None:
    digest = "AB" * 32
    s = load_settings(
        [], {"MODELSERVER_MODEL_URI": "/m", "MODELSERVER_OPERATOR_TOKEN_SHA256": digest}
    )
    assert s.operator_token_sha256 == digest
    s = load_settings(["--model-uri", "/m", "--operator-token-sha256", "0" * 64], {})
    assert s.operator_token_sha256 == "0" * 64


def test_env_round_trip() -> None:
    s = load_settings(["--model-uri", "/m", "--workers", "2", "--no-fast-path"], {})
    assert load_settings([], s.env()) == s


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (
            [],
            {"MODELSERVER_MODEL_URI": "/m", "MODELSERVER_PORT": "http"},
            "MODELSERVER_PORT='http' is not valid: expected a int",
        ),
        (
            ["--model-uri", "/m", "--format", "torch"],
            {},
            "--format (MODELSERVER_FORMAT)='torch' is not allowed: one of sklearn",
        ),
        (
            [],
            {"MODELSERVER_MODEL_URI": "/m", "MODELSERVER_BATCHING": "maybe"},
            "expected true/false",
        ),
        (
            ["--format", "custom"],
            {},
            "--model-class (MODELSERVER_MODEL_CLASS) must be 'package.module:ClassName'",
        ),
        (["--model-uri", "/m", "--model-sha256", "abc"], {}, "must be 64 hexadecimal characters"),
        (
            [],
            {"MODELSERVER_MODEL_URI": "/m", "MODELSERVER_OPERATOR_TOKEN_SHA256": "the-token"},
            "--operator-token-sha256 (MODELSERVER_OPERATOR_TOKEN_SHA256) must be 64 hexadecimal",
        ),
        (
            ["--model-uri", "/m", "--operator-token-sha256", "g" * 64],
            {},
            "(MODELSERVER_OPERATOR_TOKEN_SHA256) must be 64 hexadecimal characters",
        ),
        (
            ["--model-uri", "/m", "--max-batch-size", "0"],
            {},
            "--max-batch-size (MODELSERVER_MAX_BATCH_SIZE) must be at least 1",
        ),
        (["--model-uri", "/m", "--port", "70000"], {}, "at most 65535"),
        (["--model-uri", "/m", "--default-outputs", " , "], {}, "must name at least one output"),
    ],
)
def test_errors_name_the_setting(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(argv, env)
    assert message in str(err.value)
