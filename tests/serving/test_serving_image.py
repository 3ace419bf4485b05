"""The Dockerfile's install, done for real: a fresh venv, the same pip command, then serve.

Docker cannot run here, so this test keeps the Dockerfile honest another way: it copies exactly
what the Dockerfile COPYs, runs the build stage's pip command (read from the Dockerfile, with
its default EXTRAS) into a fresh venv, and starts the server from that venv as an unprivileged
user that cannot write to the install or the working directory, with the writable cache in a
temp dir, like the image's non-root user with a read-only root filesystem. The model comes
from S3 — a local S3-compatible server (moto in server mode, in its own cached venv) — with
credentials from a mounted-secret-style credentials file, so the image's s3 extra is tested too.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from servingkit import N_FEATURES, REPO, Server, free_port, v2_body

DOCKERFILE = REPO / "serving_image" / "Dockerfile"
NOBODY = 65534
MOTO_REQUIREMENT = "moto[server]>=5.0,<6"


def dockerfile_install() -> tuple[list[tuple[str, str]], list[str], str]:
    """The Dockerfile's COPY (source, target) pairs, its RUN commands after the venv's
    (continuation lines joined) and the default EXTRAS."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    extras = re.search(r"^ARG EXTRAS=(\S+)$", text, re.M)
    runs = re.findall(r"^RUN (.+)$", text, re.M)
    venv = "python -m venv /opt/modelserver"
    assert extras and venv in runs, "Dockerfile must have ARG EXTRAS=... and RUN " + venv
    runs = runs[runs.index(venv) + 1 :]
    assert any("/opt/modelserver/bin/pip install" in r for r in runs), runs
    copies = []
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        *sources, target = line.split()
        copies += [(s, target) for s in sources]
    return copies, runs, extras.group(1)


def base_python() -> str:
    """The interpreter to build the venv from: the system's Python 3.11 when there is one.

    It lives outside /root, so the unprivileged user can run it, as in the image; the test's own
    interpreter may be in a root-only pyenv.
    """
    for candidate in ("/usr/local/bin/python3.11", "/usr/bin/python3.11"):
        if os.path.exists(candidate) and not candidate.startswith("/root"):
            return candidate
    return sys.executable


def unprivileged() -> bool:
    """Whether the server can be run as nobody (we are root and the venv's Python is reachable)."""
    return os.geteuid() == 0 and not os.path.realpath(base_python()).startswith("/root/")


def world_readable_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def image_venv() -> Iterator[Path]:
    root = world_readable_dir("modelserver-image-")
    try:
        copies, commands, extras = dockerfile_install()
        src = root / "src"
        for source, target in copies:
            dest = root / target.lstrip("/")
            origin = REPO / "serving_image" / source
            if origin.is_dir():
                shutil.copytree(origin, dest / origin.name if target.endswith("/") else dest,
                                ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
            else:
                dest.mkdir(parents=True, exist_ok=True) if target.endswith("/") else None
                shutil.copy(origin, dest / origin.name if target.endswith("/") else dest)
        venv = root / "opt" / "modelserver"
        subprocess.run([base_python(), "-m", "venv", str(venv)], check=True)
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "EXTRAS": extras}
        env.pop("PIP_NO_CACHE_DIR", None)  # the image build has no cache to reuse; a test does
        for command in commands:  # as the image's /bin/sh runs them (ARG EXTRAS in the env)
            command = command.replace("/opt/modelserver", str(venv)).replace("/src", str(src))
            done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True)
            assert done.returncode == 0, command + done.stdout[-3000:] + done.stderr[-3000:]
        for path in (root, *root.rglob("*")):
            path.chmod(path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0))
        yield venv
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A local S3-compatible server on 127.0.0.1 and the environment that points at it."""
    cache = Path(os.environ.get("MODELDEPLOY_CACHE", Path.home() / ".cache" / "modeldeploy"))
    venv = cache / "moto-venv"
    stamp = venv / ".requirement"
    if not stamp.exists() or stamp.read_text() != MOTO_REQUIREMENT:
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", MOTO_REQUIREMENT], check=True)
        stamp.write_text(MOTO_REQUIREMENT)
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([str(venv / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    creds = world_readable_dir("modelserver-secret-") / "credentials"
    creds.write_text("[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    creds.chmod(0o644)
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_SHARED_CREDENTIALS_FILE": str(creds),
        "AWS_DEFAULT_REGION": "us-east-1",
        "MOTO_PYTHON": str(venv / "bin" / "python"),
    }
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                import urllib.request

                urllib.request.urlopen(env["AWS_ENDPOINT_URL"], timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "moto did not start"
                time.sleep(0.1)
        yield env
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        shutil.rmtree(creds.parent, ignore_errors=True)


def s3_put(moto: dict[str, str], bucket: str, key: str, path: Path) -> None:
    script = (
        "import boto3, sys; s3 = boto3.client('s3'); "
        "s3.create_bucket(Bucket=sys.argv[1]) if sys.argv[1] not in "
        "[b['Name'] for b in s3.list_buckets()['Buckets']] else None; "
        "s3.upload_file(sys.argv[3], sys.argv[1], sys.argv[2])"
    )
    env = {**os.environ, **moto, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    subprocess.run([moto["MOTO_PYTHON"], "-c", script, bucket, key, str(path)], env=env, check=True)


def as_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def test_image_install_serves_from_s3_as_non_root(image_venv, moto, models) -> None:  # type: ignore[no-untyped-def]
    import hashlib

    s3_put(moto, "models", "fraud/lr.joblib", models.lr)
    digest = hashlib.sha256(models.lr.read_bytes()).hexdigest()
    workdir = world_readable_dir("modelserver-ro-")  # root-owned: nobody cannot write here
    writable = world_readable_dir("modelserver-tmp-")
    writable.chmod(0o777)
    env = {
        **{k: v for k, v in moto.items() if k != "MOTO_PYTHON"},
        "PATH": f"{image_venv / 'bin'}:{os.environ['PATH']}",
        "HOME": "/nonexistent",
        "TMPDIR": str(writable),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": "",
        "MODELSERVER_CACHE_DIR": str(writable / "modelserver"),
        "MODELSERVER_HOST": "0.0.0.0",  # as the image sets it; the test's --host flag wins
    }
    server = None
    grpc_port = free_port()
    try:
        server = Server(["--model-uri", "s3://models/fraud/lr.joblib", "--model-sha256", digest,
                         "--fail-fast", "--grpc-port", str(grpc_port)], env, log_dir=writable,
                        python=str(image_venv / "bin" / "python"), cwd=workdir,
                        preexec=as_nobody if unprivileged() else None)  # fmt: skip
        server.wait_ready(120)
        reply = server.post("/v2/models/model/infer", v2_body(models.x[:3].tolist()))
        assert reply.status == 200, reply.body
        import joblib

        assert (
            reply.json()["outputs"][0]["data"]
            == joblib.load(models.lr).predict(models.x[:3]).tolist()
        )
        meta = server.get("/v2/models/model").json()
        assert meta["platform"] == "sklearn"
        # gRPC from the modules the build generated (the image has no grpcio-tools to make them)
        import grpc
        from modelserver.proto import pb, pb_grpc

        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            request = pb.ModelInferRequest(model_name="model")
            tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[3, N_FEATURES])
            tensor.contents.fp64_contents.extend(models.x[:3].astype(float).reshape(-1).tolist())
            answer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
        assert list(answer.outputs[0].contents.int64_contents) == reply.json()["outputs"][0]["data"]
        assert server.stop() == 0
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(writable, ignore_errors=True)
    assert "modelserver" in {p.name for p in (image_venv / "bin").iterdir()}
    # the image has only the serving package: no operator, no Kubernetes client
    site = next((image_venv / "lib").glob("python3*/site-packages"))
    assert not (site / "kopf").exists() and not (site / "kubernetes").exists()
    assert not (site / "modeldeploy").exists()
    assert (site / "modelserver" / "proto" / "grpc_predict_v2_pb2_grpc.py").exists()
    assert not (site / "grpc_tools").exists()  # a build requirement only


def test_s3_sha256_mismatch_is_reported(image_venv, moto, models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    s3_put(moto, "models", "fraud/rf.joblib", models.rf)
    env = {k: v for k, v in moto.items() if k != "MOTO_PYTHON"}
    env["PYTHONPATH"] = ""
    server = Server(["--model-uri", "s3://models/fraud/rf.joblib", "--model-sha256", "a" * 64],
                    env, log_dir=tmp_path, python=str(image_venv / "bin" / "python"))  # fmt: skip
    try:
        reason = server.wait_status("failed", 120).json()["reason"]
        assert "sha256 mismatch for s3://models/fraud/rf.joblib" in reason
    finally:
        server.stop()
    missing = Server(["--model-uri", "s3://models/absent.joblib"], env, log_dir=tmp_path,
                     python=str(image_venv / "bin" / "python"))  # fmt: skip
    try:
        assert "artifact not found" in missing.wait_status("failed", 120).json()["reason"]
    finally:
        missing.stop()
