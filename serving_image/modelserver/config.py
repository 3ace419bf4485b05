"""Server settings: one dataclass, every field settable by a CLI flag or a MODELSERVER_* variable.

The operator configures pods through environment variables only, and people run the server by
hand with flags, so each setting has both: ``model_uri`` is ``--model-uri`` and
``MODELSERVER_MODEL_URI``. A flag wins over the environment, which wins over the default. Parsing
is a pure function of (argv, environ) so it is tested without starting anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import ssl
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ENV_PREFIX = "MODELSERVER_"
FORMATS = ("sklearn", "xgboost", "lightgbm", "onnx", "custom")
MISSING_VALUE_POLICIES = ("auto", "allow", "reject")
LOG_LEVELS = ("debug", "info", "warning", "error")
PAYLOAD_LOG_MODES = ("requests", "responses", "both")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """A setting has a value that is not allowed; the message names the flag and the variable."""


def _opt(help: str, *, cli: bool = True, choices: Sequence[str] | None = None) -> Any:
    return {"help": help, "cli": cli, "choices": choices}


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to know. Field names map to --flag-name and MODELSERVER_NAME."""

    model_uri: str | None = field(
        default=None,
        metadata=_opt("Artifact to serve: a path, file://, http(s)://, s3:// or gs:// URI."),
    )
    format: str = field(
        default="sklearn", metadata=_opt("Runtime that loads the artifact.", choices=FORMATS)
    )
    model_name: str = field(default="model", metadata=_opt("Name the model is served under."))
    model_version: str = field(
        default="1", metadata=_opt("Version reported in responses and in the metrics' labels.")
    )
    model_class: str | None = field(
        default=None, metadata=_opt("For --format custom: 'package.module:ClassName'.")
    )
    model_sha256: str | None = field(
        default=None, metadata=_opt("Expected sha256 of the artifact, checked before loading.")
    )
    reference_stats_uri: str | None = field(
        default=None, metadata=_opt("JSON reference statistics for drift (modelserver.drift).")
    )
    input_name: str = field(default="input-0", metadata=_opt("Name of the input tensor."))
    default_outputs: str = field(
        default="predict",
        metadata=_opt("Comma-separated outputs returned when a request names none."),
    )
    missing_values: str = field(
        default="auto",
        metadata=_opt(
            "Whether null inputs (missing values) are accepted; auto lets the runtime decide.",
            choices=MISSING_VALUE_POLICIES,
        ),
    )
    fast_path: bool = field(
        default=True,
        metadata=_opt("Use the verified numpy fast path for linear and tree sklearn models."),
    )
    inline_budget_us: float = field(
        default=300.0,
        metadata=_opt(
            "Predict calls of verified-cheap models that take under this many µs of CPU run on "
            "the event loop, skipping the thread hand-off; 0 keeps every call on the thread."
        ),
    )
    host: str = field(default="127.0.0.1", metadata=_opt("Address to listen on."))
    port: int = field(default=8080, metadata=_opt("Port to listen on."))
    grpc_port: int | None = field(
        default=None,
        metadata=_opt(
            "Port for the Open Inference Protocol over gRPC (GRPCInferenceService), served next "
            "to REST by the same batcher, auth and metrics; unset: no gRPC."
        ),
    )
    workers: int = field(default=1, metadata=_opt("Server processes (each loads the model)."))
    inference_threads: int = field(
        default=1, metadata=_opt("Threads running predict calls, per process.")
    )
    batching: bool = field(default=True, metadata=_opt("Merge concurrent requests into batches."))
    max_batch_size: int = field(default=64, metadata=_opt("Most rows in one predict call."))
    max_batch_wait_ms: float = field(
        default=2.0, metadata=_opt("Longest a request waits for a batch to fill, milliseconds.")
    )
    max_request_bytes: int = field(
        default=4 * 1024 * 1024, metadata=_opt("Largest request body accepted (413 above).")
    )
    max_request_rows: int = field(
        default=10_000, metadata=_opt("Most rows in one request (413 above).")
    )
    max_concurrency: int | None = field(
        default=None,
        metadata=_opt(
            "Open connections/requests before answering 503 (and concurrent gRPC calls "
            "before RESOURCE_EXHAUSTED)."
        ),
    )
    auth_token_file: str | None = field(
        default=None, metadata=_opt("File holding the bearer token; enables auth.")
    )
    auth_token: str | None = field(
        default=None,
        metadata=_opt("Bearer token (environment only, never a flag); enables auth.", cli=False),
    )
    auth_protect_health: bool = field(
        default=False, metadata=_opt("Require the token on /v2/health/* too.")
    )
    auth_protect_metrics: bool = field(
        default=False, metadata=_opt("Require the token on /metrics too.")
    )
    operator_token_sha256: str | None = field(
        default=None,
        metadata=_opt(
            "Hex SHA-256 of the operator's token. With auth on, that token is also accepted on "
            "health, metrics, server and model metadata, model readiness and v2 infer."
        ),
    )
    fail_fast: bool = field(
        default=False, metadata=_opt("Exit non-zero when the model cannot be loaded.")
    )
    shutdown_delay: float = field(
        default=0.0,
        metadata=_opt("Seconds to keep serving, not ready, after SIGTERM before draining."),
    )
    shutdown_timeout: float = field(
        default=25.0, metadata=_opt("Longest wait for in-flight requests after SIGTERM.")
    )
    cache_dir: str = field(
        default=os.path.join(tempfile.gettempdir(), "modelserver"),
        metadata=_opt("Where downloaded artifacts and multi-worker metrics live."),
    )
    drift_window: int = field(
        default=10_000, metadata=_opt("Rows in the rolling window drift is computed over.")
    )
    switch_interval_ms: float = field(
        default=1.0,
        metadata=_opt("Python GIL switch interval, ms: lower keeps the loop responsive."),
    )
    payload_log_url: str | None = field(
        default=None,
        metadata=_opt(
            "http(s) URL of a CloudEvents sink: inference requests and responses are sent there "
            "for audit (see modelserver.payload_log). Unset: no payload logging."
        ),
    )
    payload_log_mode: str = field(
        default="both",
        metadata=_opt("What is logged.", choices=PAYLOAD_LOG_MODES),
    )
    payload_log_sample_rate: float = field(
        default=1.0, metadata=_opt("Share of exchanges logged, 0 to 1.")
    )
    payload_log_redact_headers: str = field(
        default="",
        metadata=_opt(
            "Comma-separated request header names whose values the sink sees as REDACTED "
            "(authorization and cookie always are)."
        ),
    )
    payload_log_queue_size: int = field(
        default=10_000,
        metadata=_opt("Events held for the sink at most; more are dropped and counted."),
    )
    payload_log_batch_size: int = field(
        default=64, metadata=_opt("Most events sent in one go on one connection.")
    )
    payload_log_timeout: float = field(
        default=2.0, metadata=_opt("Seconds to wait for the sink to connect or answer.")
    )
    payload_log_ca_file: str | None = field(
        default=None,
        metadata=_opt(
            "PEM file of the CA(s) an https sink's certificate is verified against, instead of "
            "the system's (a sink with a certificate from a private CA)."
        ),
    )
    deployment_name: str = field(
        default="",
        metadata=_opt("The ModelDeployment's name, for the payload log's events."),
    )
    namespace: str = field(
        default="", metadata=_opt("The ModelDeployment's namespace, for the payload log's events.")
    )
    model_version_label: str = field(
        default="",
        metadata=_opt(
            "The model's human version label (--model-version is the revision on Kubernetes), "
            "for the payload log's events."
        ),
    )
    log_level: str = field(default="info", metadata=_opt("Log level.", choices=LOG_LEVELS))
    access_log: bool = field(default=False, metadata=_opt("Log every request."))

    @property
    def redacted_headers(self) -> tuple[str, ...]:
        return tuple(
            h.strip().lower() for h in self.payload_log_redact_headers.split(",") if h.strip()
        )

    @property
    def output_list(self) -> tuple[str, ...]:
        return tuple(o.strip() for o in self.default_outputs.split(",") if o.strip())

    def env(self) -> dict[str, str]:
        """These settings as MODELSERVER_* variables (for worker processes and pod specs)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[env_name(f.name)] = (
                    str(value).lower() if isinstance(value, bool) else str(value)
                )
        return out


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _base_type(f: dataclasses.Field[Any]) -> type:
    kind = str(f.type)
    for name, typ in (("bool", bool), ("int", int), ("float", float)):
        if kind.startswith(name):
            return typ
    return str


def _convert(f: dataclasses.Field[Any], raw: str, source: str) -> Any:
    typ = _base_type(f)
    try:
        if typ is bool:
            low = raw.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError
        return typ(raw)
    except ValueError:
        allowed = "true/false (or 1/0, yes/no, on/off)" if typ is bool else f"a {typ.__name__}"
        raise ConfigError(f"{source}={raw!r} is not valid: expected {allowed}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m modelserver",
        description="Serve one ML model over the Open Inference Protocol v2 and KServe v1. "
        f"Every flag can also be set as an environment variable: {ENV_PREFIX}<FLAG_NAME>.",
    )
    for f in dataclasses.fields(Settings):
        if not f.metadata["cli"]:
            continue
        help_text = f"{f.metadata['help']} [env {env_name(f.name)}; default {f.default}]"
        if _base_type(f) is bool:
            parser.add_argument(
                flag_name(f.name), dest=f.name, default=None,
                action=argparse.BooleanOptionalAction, help=help_text,
            )  # fmt: skip
        else:
            parser.add_argument(flag_name(f.name), dest=f.name, default=None, help=help_text)
    return parser


def load_settings(argv: Sequence[str], environ: Mapping[str, str]) -> Settings:
    """Settings from flags, then MODELSERVER_* variables, then defaults; validated."""
    args = vars(build_parser().parse_args(list(argv)))
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        cli_value = args.get(f.name)
        if cli_value is not None:
            values[f.name] = (
                cli_value
                if isinstance(cli_value, bool)
                else _convert(f, cli_value, flag_name(f.name))
            )
        elif env_name(f.name) in environ and environ[env_name(f.name)] != "":
            values[f.name] = _convert(f, environ[env_name(f.name)], env_name(f.name))
    settings = Settings(**values)
    validate(settings)
    return settings


def is_sha256_hex(value: str) -> bool:
    """Whether ``value`` (surrounding space ignored, any case) is a hex SHA-256 digest."""
    digest = value.strip().lower()
    return len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)


def _where(name: str) -> str:
    return f"{flag_name(name)} ({env_name(name)})"


def validate(s: Settings) -> None:
    """Reject settings that cannot work, naming the setting and what is allowed."""
    for name in ("format", "missing_values", "log_level", "payload_log_mode"):
        choices = next(f for f in dataclasses.fields(Settings) if f.name == name).metadata[
            "choices"
        ]
        if getattr(s, name) not in choices:
            raise ConfigError(
                f"{_where(name)}={getattr(s, name)!r} is not allowed: one of {', '.join(choices)}"
            )
    if s.format == "custom":
        if not s.model_class or ":" not in s.model_class:
            raise ConfigError(f"{_where('model_class')} must be 'package.module:ClassName'")
    elif not s.model_uri:
        raise ConfigError(f"{_where('model_uri')} is required for --format {s.format}")
    for name in ("model_sha256", "operator_token_sha256"):
        digest = getattr(s, name)
        if digest is not None and not is_sha256_hex(digest):
            raise ConfigError(
                f"{_where(name)} must be 64 hexadecimal characters (a SHA-256 digest), "
                f"got {len(digest.strip())} characters"
            )
    positive = ("port", "workers", "inference_threads", "max_batch_size", "max_request_bytes",
                "payload_log_queue_size", "payload_log_batch_size")  # fmt: skip
    for name in (*positive, "max_request_rows", "drift_window"):
        if getattr(s, name) < 1:
            raise ConfigError(f"{_where(name)} must be at least 1, got {getattr(s, name)}")
    if s.port > 65535:
        raise ConfigError(f"{_where('port')} must be at most 65535, got {s.port}")
    for name in ("max_batch_wait_ms", "shutdown_delay", "shutdown_timeout", "inline_budget_us"):
        if getattr(s, name) < 0:
            raise ConfigError(f"{_where(name)} must not be negative, got {getattr(s, name)}")
    if s.grpc_port is not None:
        if not 1 <= s.grpc_port <= 65535:
            raise ConfigError(f"{_where('grpc_port')} must be 1 to 65535, got {s.grpc_port}")
        if s.grpc_port == s.port:
            raise ConfigError(
                f"{_where('grpc_port')} must differ from {_where('port')}: both are {s.port}"
            )
    if s.switch_interval_ms <= 0:
        raise ConfigError(f"{_where('switch_interval_ms')} must be positive")
    if s.max_concurrency is not None and s.max_concurrency < 1:
        raise ConfigError(f"{_where('max_concurrency')} must be at least 1")
    if s.payload_log_url is not None and not re.fullmatch(
        r"https?://[^/?#\s:@]+(:\d{1,5})?([/?][!-~]*)?", s.payload_log_url
    ):
        raise ConfigError(
            f"{_where('payload_log_url')}={s.payload_log_url!r} is not allowed: an http:// or "
            "https:// URL with a host"
        )
    if not 0.0 <= s.payload_log_sample_rate <= 1.0:
        raise ConfigError(
            f"{_where('payload_log_sample_rate')} must be between 0 and 1, "
            f"got {s.payload_log_sample_rate}"
        )
    if s.payload_log_timeout <= 0:
        raise ConfigError(f"{_where('payload_log_timeout')} must be positive")
    if s.payload_log_ca_file is not None:
        if not (s.payload_log_url or "").startswith("https://"):
            raise ConfigError(
                f"{_where('payload_log_ca_file')} needs an https:// "
                f"{_where('payload_log_url')}: the CA verifies the sink's certificate"
            )
        try:
            ssl.create_default_context(cafile=s.payload_log_ca_file)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(
                f"{_where('payload_log_ca_file')} {s.payload_log_ca_file}: no CA certificate "
                f"could be read from it ({error})"
            ) from error
    if not s.output_list:
        raise ConfigError(f"{_where('default_outputs')} must name at least one output")
