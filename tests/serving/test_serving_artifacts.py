"""Artifacts over HTTP from a local server, sha256 checks, and what a bad artifact does."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from servingkit import v2_body


@pytest.fixture
def http_files(models) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A local HTTP server (127.0.0.1) serving the models directory."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(models.dir))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_http_artifact_with_matching_sha256(start_server, models, http_files) -> None:  # type: ignore[no-untyped-def]
    server = start_server(
        "--model-uri", f"{http_files}/lr.joblib", "--model-sha256", sha256(models.lr),
        "--reference-stats-uri", f"{http_files}/reference.json",
    )  # fmt: skip
    server.wait_ready()
    reply = server.post("/v2/models/model/infer", v2_body(models.x[:2].tolist()))
    assert reply.status == 200


def test_sha256_mismatch_keeps_the_server_not_ready(start_server, models, http_files) -> None:  # type: ignore[no-untyped-def]
    wrong = "0" * 64
    server = start_server("--model-uri", f"{http_files}/lr.joblib", "--model-sha256", wrong)
    reason = server.wait_status("failed").json()["reason"]
    assert (
        f"sha256 mismatch for {http_files}/lr.joblib: expected {wrong}, got {sha256(models.lr)}"
        in reason
    )
    assert "NOT READY: sha256 mismatch" in server.log()
    assert server.get("/v2/health/live").status == 200
    infer = server.post("/v2/models/model/infer", v2_body(models.x[:1].tolist()))
    assert infer.status == 503 and "sha256 mismatch" in infer.json()["error"]


def test_local_sha256_mismatch_with_fail_fast_exits_non_zero(start_server, models) -> None:  # type: ignore[no-untyped-def]
    server = start_server("--model-uri", str(models.lr), "--model-sha256", "f" * 64, "--fail-fast")
    assert server.proc.wait(60) == 1
    assert "sha256 mismatch" in server.log() and "fail-fast" in server.log()


def test_missing_http_artifact(start_server, http_files) -> None:  # type: ignore[no-untyped-def]
    server = start_server("--model-uri", f"{http_files}/nope.joblib")
    assert "artifact not found: " in server.wait_status("failed").json()["reason"]


def test_missing_local_artifact_fail_fast(start_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = start_server("--model-uri", str(tmp_path / "gone.joblib"), "--fail-fast")
    assert server.proc.wait(60) == 1
    assert "does not exist" in server.log()


def test_corrupt_artifact(start_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "corrupt.joblib"
    bad.write_bytes(b"\x80\x04this is not a pickle at all")
    server = start_server("--model-uri", str(bad))
    reason = server.wait_status("failed").json()["reason"]
    assert "could not unpickle" in reason and str(bad) in reason


def test_missing_extra_is_named(start_server, models) -> None:  # type: ignore[no-untyped-def]
    import importlib.util

    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed in this venv, so gs:// has no missing extra to report")
    server = start_server("--model-uri", "gs://bucket/model.joblib")
    reason = server.wait_status("failed").json()["reason"]
    assert "gs:// artifacts need a package that is not installed" in reason
    assert "modelserver[gcs]" in reason
