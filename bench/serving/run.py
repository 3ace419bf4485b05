"""Serving benchmark: modelserver vs MLServer, KServe and a naive uvicorn app, side by side.

Same models (LogisticRegression and a 50-tree RandomForest on 20 features), same one-row Open
Inference Protocol v2 request, same load generator (wrk, one thread, on 127.0.0.1), one worker
each, concurrency 1/16/64. Each peer runs from its own venv under .bench/ (created here from
bench/serving/requirements-*.txt, with the dev venv's scikit-learn version pinned so every server
unpickles the same model the same way). Rounds interleave the servers so drift on the machine
hits all of them alike; the table reports the median of the rounds.

The gRPC rows (servers named *-grpc) put the same models behind the Open Inference Protocol's
GRPCInferenceService: modelserver's and MLServer's gRPC servers, loaded by ghz (one CPU, one
connection per concurrent caller) with a ModelInfer of 1 and of 32 rows (typed FP32 contents),
written to their own table.

    make bench-serving                     # or: .venv/bin/python bench/serving/run.py --write-docs
    .venv/bin/python bench/serving/run.py --duration 3 --rounds 1 --servers ours,naive  # quick
    .venv/bin/python bench/serving/run.py --servers ours-grpc,mlserver-grpc  # gRPC rows only
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devcluster.ports import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import (
    END,
    GRPC_BEGIN,
    GRPC_END,
    Cell,
    overhead_lines,
    parse_ghz,
    parse_wrk,
    ratio_lines,
    render_table,
    replace_section,
)

REPO = Path(__file__).resolve().parents[2]
HERE = REPO / "bench" / "serving"
BENCH = REPO / ".bench"
WORK = BENCH / "serving"
# BENCH_PYTHON: another venv with the dev dependencies (e.g. a git worktree sharing one).
DEV_PYTHON = Path(os.environ.get("BENCH_PYTHON") or REPO / ".venv" / "bin" / "python")
N_FEATURES = 20

LABELS = {
    "ours": "modelserver (this repo)",
    "ours-nofast": "modelserver, --no-fast-path",
    "mlserver": "MLServer 1.7.1, default",
    "mlserver-batch": "MLServer 1.7.1, adaptive batching 32/5 ms",
    "kserve": "KServe 0.21 (v2 endpoint)",
    "naive": "naive uvicorn app (floor)",
    "ours-log": "modelserver, payload logging on (every exchange, to a local sink)",
    "ours-log-dead": "modelserver, payload logging to a dead sink (closed port)",
    "ours-grpc": "modelserver (this repo), gRPC",
    "mlserver-grpc": "MLServer 1.7.1, default, gRPC",
    "mlserver-batch-grpc": "MLServer 1.7.1, adaptive batching 32/5 ms, gRPC",
    "ours-shadow": "modelserver mirroring 10% to a shadow modelserver (answers compared)",
    "ours-shadow-dead": "modelserver mirroring every request to a dead shadow (closed port)",
}
GRPC_SERVERS = ("ours-grpc", "mlserver-grpc", "mlserver-batch-grpc")
GHZ_MODULE = "github.com/bojand/ghz/cmd/ghz@v0.120.0"
PROTO = REPO / "serving_image" / "modelserver" / "proto" / "grpc_predict_v2.proto"
ALL_SERVERS = list(LABELS)
# Payload logging's overhead is measured where it matters most, at the highest concurrency; the
# other concurrencies of these rows stay empty ("-") to keep the run's length.
LOGGING_SERVERS = ("ours-log", "ours-log-dead")
LOGGING_CONCURRENCY = 64
# Shadow traffic (modelserver.shadow): the live requests' latency and throughput with mirroring
# on, against plain modelserver, at every concurrency (c=1 shows what one request pays).
SHADOW_SERVERS = ("ours-shadow", "ours-shadow-dead")
SHADOW_FRACTION = {"ours-shadow": 0.1, "ours-shadow-dead": 1.0}
SHADOW_TOKEN = "bench-operator-token"
SHADOW_TOKEN_SHA256 = hashlib.sha256(SHADOW_TOKEN.encode()).hexdigest()


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- setup -------------------------------------------------------------------------------------
def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    log("wrk not found: installing Debian's package (apt-get install -y wrk)")
    subprocess.run(["apt-get", "update"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, stdout=subprocess.DEVNULL)
    return shutil.which("wrk") or "wrk"


def ensure_ghz() -> str:
    """ghz, the gRPC load generator, built with ``go install`` into .bench/bin (once)."""
    path = shutil.which("ghz") or str(BENCH / "bin" / "ghz")
    if os.path.exists(path):
        return path
    log(f"ghz not found: go install {GHZ_MODULE} into {BENCH / 'bin'}")
    env = {**os.environ, "GOBIN": str(BENCH / "bin")}
    subprocess.run(["go", "install", GHZ_MODULE], check=True, env=env)
    return path


def grpc_bodies(rows_list: list[int]) -> dict[int, Path]:
    """Serialized ModelInferRequests of 1 and 32 rows (the REST body's row, repeated)."""
    from modelserver.proto import pb

    row = json.loads((WORK / "models" / "body.json").read_text())["inputs"][0]["data"]
    out = {}
    for rows in rows_list:
        req = pb.ModelInferRequest(model_name="MODEL")
        tensor = req.inputs.add(name="input-0", datatype="FP32", shape=[rows, N_FEATURES])
        tensor.contents.fp32_contents.extend(row * rows)
        out[rows] = WORK / "models" / f"grpc-{rows}.bin"
        out[rows].write_bytes(req.SerializeToString())
    return out


def grpc_body(bodies: dict[int, Path], rows: int, model: str) -> Path:
    """The request for ``model``: the same message with the model's name."""
    from modelserver.proto import pb

    req = pb.ModelInferRequest.FromString(bodies[rows].read_bytes())
    req.model_name = model
    path = WORK / "models" / f"grpc-{model}-{rows}.bin"
    path.write_bytes(req.SerializeToString())
    return path


def grpc_key(model: str, rows: int) -> str:
    """The table's name for one model and request size, e.g. 'lr, 32 rows'."""
    return f"{model}, {rows} row{'s' if rows != 1 else ''}"


def run_ghz(ghz: str, port: int, conns: int, seconds: int, body: Path) -> str:
    argv = [ghz, "--insecure", "--proto", str(PROTO), "--import-paths", str(PROTO.parent),
            "--call", "inference.GRPCInferenceService.ModelInfer", "--binary",
            "--binary-file", str(body), "--cpus", "1", "-c", str(conns),
            "--connections", str(conns), "-z", f"{seconds}s", "--timeout", "10s",
            "--format", "json", f"127.0.0.1:{port}"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True)
    if not done.stdout.strip():
        raise RuntimeError(f"ghz failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def sklearn_version() -> str:
    out = subprocess.run(
        [str(DEV_PYTHON), "-c", "import sklearn; print(sklearn.__version__)"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return out.stdout.strip()


def ensure_venv(name: str) -> Path:
    """.bench/<name> with bench/serving/requirements-<name>.txt; rebuilt when the pins change."""
    venv = BENCH / name
    requirements = (HERE / f"requirements-{name}.txt").read_text()
    pins = f"{requirements}\nscikit-learn=={sklearn_version()}\n"
    stamp = venv / ".bench-requirements"
    if stamp.exists() and stamp.read_text() == pins:
        return venv
    log(f"creating {venv} (pip install -r requirements-{name}.txt)")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    req = venv / "requirements.txt"
    req.write_text(pins)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-r", str(req)], check=True)
    stamp.write_text(pins)
    return venv


def make_models() -> dict[str, Path]:
    """Train both models with the dev venv's scikit-learn; one directory per model."""
    script = f"""
import joblib, json, sys
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
x, y = make_classification(n_samples=5000, n_features={N_FEATURES}, random_state=0)
root = sys.argv[1]
joblib.dump(LogisticRegression(max_iter=1000).fit(x, y), root + "/lr/model.joblib")
rf = RandomForestClassifier(n_estimators=50, random_state=0).fit(x, y)
joblib.dump(rf, root + "/rf/model.joblib")
json.dump({{"inputs": [{{"name": "input-0", "shape": [1, {N_FEATURES}], "datatype": "FP32",
            "data": [round(float(v), 6) for v in x[0]]}}]}}, open(root + "/body.json", "w"))
"""
    for m in ("lr", "rf"):
        (WORK / "models" / m).mkdir(parents=True, exist_ok=True)
    subprocess.run([str(DEV_PYTHON), "-c", script, str(WORK / "models")], check=True)
    return {m: WORK / "models" / m / "model.joblib" for m in ("lr", "rf")}


# --- servers -----------------------------------------------------------------------------------
@dataclass
class Launch:
    argv: list[str]
    env: dict[str, str]
    port: int
    ready_path: str
    infer_path: str
    cwd: Path | None = None
    grpc_port: int | None = None


def launch_spec(server: str, model: str, path: Path, sink_url: str | None = None) -> Launch:
    port = free_port()
    infer = f"/v2/models/{model}/infer"
    ready = f"/v2/models/{model}/ready"
    if server == "ours-grpc":
        grpc_port = free_port()
        argv = [str(DEV_PYTHON), "-m", "modelserver", "--model-uri", str(path), "--model-name",
                model, "--host", "127.0.0.1", "--port", str(port),
                "--grpc-port", str(grpc_port)]  # fmt: skip
        return Launch(argv, {}, port, "/v2/health/ready", infer, grpc_port=grpc_port)
    if server in ("ours", "ours-nofast", *LOGGING_SERVERS, *SHADOW_SERVERS):
        argv = [str(DEV_PYTHON), "-m", "modelserver", "--model-uri", str(path), "--model-name",
                model, "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
        if server == "ours-nofast":
            argv.append("--no-fast-path")
        elif server == "ours-log":
            argv += ["--payload-log-url", sink_url or "http://127.0.0.1:9/"]
        elif server == "ours-log-dead":
            argv += ["--payload-log-url", f"http://127.0.0.1:{free_port()}/"]  # nobody listens
        # As the operator starts a model with spec.rollout.shadow: /v2/shadow takes its token.
        env = (
            {"MODELSERVER_OPERATOR_TOKEN_SHA256": SHADOW_TOKEN_SHA256}
            if server in SHADOW_SERVERS
            else {}
        )
        return Launch(argv, env, port, "/v2/health/ready", infer)
    if server == "naive":
        argv = [str(DEV_PYTHON), "-m", "uvicorn", "naive_app:app", "--app-dir", str(HERE / "peers"),
                "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
                "--log-level", "warning"]  # fmt: skip
        return Launch(argv, {"MODEL_PATH": str(path), "MODEL_NAME": model}, port, "/ready", infer)
    if server == "kserve":
        argv = [str(BENCH / "kserve" / "bin" / "python"), str(HERE / "peers" / "kserve_server.py")]
        env = {"MODEL_NAME": model, "MODEL_PATH": str(path), "HTTP_PORT": str(port),
               "GRPC_PORT": str(free_port())}  # fmt: skip
        return Launch(argv, env, port, ready, infer)
    if server.startswith("mlserver"):
        root = WORK / "mlserver" / f"{server}-{model}"
        shutil.rmtree(root, ignore_errors=True)
        (root / model).mkdir(parents=True)
        grpc_port = free_port()
        settings = {"host": "127.0.0.1", "http_port": port, "grpc_port": grpc_port,
                    "metrics_port": free_port()}  # fmt: skip
        (root / "settings.json").write_text(json.dumps(settings))
        model_settings: dict[str, object] = {
            "name": model,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": str(path)},
        }
        if server.startswith("mlserver-batch"):
            model_settings.update(max_batch_size=32, max_batch_time=0.005)
        (root / model / "model-settings.json").write_text(json.dumps(model_settings))
        argv = [str(BENCH / "mlserver" / "bin" / "mlserver"), "start", str(root)]
        return Launch(argv, {}, port, ready, infer, cwd=root, grpc_port=grpc_port)
    raise ValueError(f"unknown server {server!r}: one of {', '.join(ALL_SERVERS)}")


def http_status(port: int, path: str, body: bytes | None = None) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, method="POST" if body else "GET"
    )
    if body:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def process_tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, MB."""
    total_kb = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total_kb / 1024


class Running:
    def __init__(self, spec: Launch, log_path: Path) -> None:
        self.spec = spec
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.start = time.perf_counter()
        self.proc = subprocess.Popen(
            spec.argv, env={**os.environ, **spec.env}, cwd=spec.cwd, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 120) -> float:
        while time.perf_counter() - self.start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}; see {self.log.name}"
                )
            if http_status(self.spec.port, self.spec.ready_path) == 200:
                return time.perf_counter() - self.start
            time.sleep(0.02)
        raise RuntimeError(f"not ready after {timeout}s; see {self.log.name}")

    def stop(self, grace: float = 30) -> bool:
        """SIGTERM, then SIGKILL the process group after ``grace``; whether it exited in time."""
        clean = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                clean = False
        with contextlib.suppress(ProcessLookupError):  # our own session: the server's children
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.log.close()
        return clean


def start_sink() -> Running:
    """The CloudEvents sink the ``ours-log`` rows send to (peers/sink.py), ready to take events."""
    port = free_port()
    argv = [str(DEV_PYTHON), "-m", "uvicorn", "sink:app", "--app-dir", str(HERE / "peers"),
            "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
            "--log-level", "warning"]  # fmt: skip
    sink = Running(Launch(argv, {}, port, "/count", "/"), WORK / "sink.log")
    sink.wait_ready()
    return sink


def payload_log_counts(port: int) -> dict[str, float]:
    """The server's modelserver_payload_log_events_total by outcome, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("modelserver_payload_log_events_total{"):
            labels, _, value = line.rpartition(" ")
            outcome = labels.split('outcome="', 1)[1].split('"', 1)[0]
            counts[outcome] = counts.get(outcome, 0.0) + float(value)
    return counts


def start_shadow(server: str, model: str, path: Path, port: int, rnd: int) -> Running | None:
    """For the shadow rows: a second modelserver with the same model (none for the dead one,
    whose target is a closed port), and the stable server told to mirror to it."""
    shadow = None
    target = free_port()
    if server == "ours-shadow":
        shadow = Running(launch_spec("ours", model, path), WORK / f"shadow-{model}-r{rnd}.log")
        shadow.wait_ready()
        target = shadow.spec.port
    doc = {"revision": "shadow", "model": model, "targets": [f"http://127.0.0.1:{target}"],
           "fraction": SHADOW_FRACTION[server], "ttlSeconds": 3600}  # fmt: skip
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v2/shadow", data=json.dumps(doc).encode(), method="PUT",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {SHADOW_TOKEN}"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=5) as resp:
        resp.read()
    return shadow


def shadow_counts(port: int) -> dict[str, float]:
    """The stable server's modelserver_shadow_*_total counts, by what they count."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("modelserver_shadow_") and "_total{" in line:
            name = line.split("{", 1)[0].removeprefix("modelserver_shadow_").removesuffix("_total")
            counts[name] = counts.get(name, 0.0) + float(line.rpartition(" ")[2])
    return counts


def run_wrk(wrk: str, port: int, path: str, conns: int, seconds: int, body: Path) -> str:
    argv = [wrk, "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s", "--latency",
            "-s", str(HERE / "post.lua"), f"http://127.0.0.1:{port}{path}"]  # fmt: skip
    env = {**os.environ, "BODY_FILE": str(body)}
    return subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout


# --- main --------------------------------------------------------------------------------------
def busy_build() -> bool:
    return subprocess.run(["pgrep", "-f", "go build|/compile"], capture_output=True).returncode == 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--servers", default=",".join(ALL_SERVERS))
    p.add_argument("--models", default="lr,rf")
    p.add_argument("--concurrency", default="1,16,64")
    p.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    p.add_argument("--warmup", type=int, default=2, help="seconds of load before each run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--grpc-rows", default="1,32", help="rows per ModelInfer in the gRPC rows")
    p.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = p.parse_args(argv)
    servers = [s for s in args.servers.split(",") if s]
    models = [m for m in args.models.split(",") if m]
    concs = [int(c) for c in args.concurrency.split(",")]
    grpc_rows = [int(r) for r in args.grpc_rows.split(",")]
    if busy_build():
        log("WARNING: a Go build is running; numbers will be noisy")
    wrk = ensure_wrk()
    ghz = ensure_ghz() if set(servers) & set(GRPC_SERVERS) else ""
    WORK.mkdir(parents=True, exist_ok=True)
    for peer in {"mlserver" if s.startswith("mlserver") else s for s in servers} & {
        "mlserver",
        "kserve",
    }:
        ensure_venv(peer)
    paths = make_models()
    body = WORK / "models" / "body.json"
    bodies = grpc_bodies(grpc_rows)
    sink = start_sink() if "ours-log" in servers else None
    sink_url = f"http://127.0.0.1:{sink.spec.port}/events" if sink is not None else None
    logged: dict[tuple[str, str], dict[str, float]] = {}
    mirrored: dict[tuple[str, str], dict[str, float]] = {}
    cells: dict[tuple[str, str, int], Cell] = {}
    rss: dict[tuple[str, str], list[float]] = {}
    ready: dict[tuple[str, str], list[float]] = {}
    unclean: list[str] = []
    for rnd in range(args.rounds):
        for model in models:
            order = servers if rnd % 2 == 0 else list(reversed(servers))
            for server in order:
                spec = launch_spec(server, model, paths[model], sink_url)
                running = Running(spec, WORK / f"{server}-{model}-r{rnd}.log")
                shadow = None
                try:
                    ready.setdefault((server, model), []).append(running.wait_ready())
                    if server in SHADOW_SERVERS:
                        shadow = start_shadow(server, model, paths[model], spec.port, rnd)
                    status = http_status(spec.port, spec.infer_path, body.read_bytes())
                    if status != 200:
                        raise RuntimeError(f"{server} answered {status} to the benchmark request")
                    if server in GRPC_SERVERS:
                        assert spec.grpc_port is not None
                        for rows in grpc_rows:
                            request = grpc_body(bodies, rows, model)
                            key = grpc_key(model, rows)
                            for c in concs:
                                run_ghz(ghz, spec.grpc_port, c, args.warmup, request)
                                result = parse_ghz(
                                    run_ghz(ghz, spec.grpc_port, c, args.duration, request)
                                )
                                cells.setdefault((server, key, c), Cell()).runs.append(result)
                                log(
                                    f"round {rnd + 1} {key} {server:>14} c={c:<3} "
                                    f"{result.rps:>8.0f} req/s p50 {result.p50_ms:.2f} ms "
                                    f"p99 {result.p99_ms:.2f} ms errors {result.errors}"
                                )
                    for c in concs:
                        if server in GRPC_SERVERS:
                            break
                        if server in LOGGING_SERVERS and c != LOGGING_CONCURRENCY:
                            continue
                        run_wrk(wrk, spec.port, spec.infer_path, c, args.warmup, body)
                        result = parse_wrk(
                            run_wrk(wrk, spec.port, spec.infer_path, c, args.duration, body)
                        )
                        cells.setdefault((server, model, c), Cell()).runs.append(result)
                        log(
                            f"round {rnd + 1} {model} {server:>14} c={c:<3} "
                            f"{result.rps:>8.0f} req/s p50 {result.p50_ms:.2f} ms "
                            f"p99 {result.p99_ms:.2f} ms errors {result.errors}"
                        )
                    rss.setdefault((server, model), []).append(
                        process_tree_rss_mb(running.proc.pid)
                    )
                    if server in LOGGING_SERVERS:
                        counts = payload_log_counts(spec.port)
                        total = logged.setdefault((server, model), {})
                        for outcome, value in counts.items():
                            total[outcome] = total.get(outcome, 0.0) + value
                        log(f"round {rnd + 1} {model} {server}: payload log events {counts}")
                    if server in SHADOW_SERVERS:
                        counts = shadow_counts(spec.port)
                        total = mirrored.setdefault((server, model), {})
                        for outcome, value in counts.items():
                            total[outcome] = total.get(outcome, 0.0) + value
                        log(f"round {rnd + 1} {model} {server}: shadow {counts}")
                except Exception as exc:
                    log(f"round {rnd + 1} {model} {server}: FAILED: {exc}")
                finally:
                    if shadow is not None:
                        shadow.stop()
                    if not running.stop():
                        unclean.append(f"{server}/{model}/round {rnd + 1}")
    if sink is not None:
        sink.stop()
    med: Callable[[list[float]], float] = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    given = list(argv if argv is not None else sys.argv[1:])
    # The "Command:" line, markdown: what to type to get these tables again.
    command = "`python bench/serving/run.py " + " ".join(given) + "`"
    if not [a for a in given if a != "--write-docs"]:
        command = "`make bench-serving` (= `.venv/bin/python bench/serving/run.py --write-docs`)"
    rest_servers = [s for s in servers if s not in GRPC_SERVERS]
    grpc_servers = [s for s in servers if s in GRPC_SERVERS]
    generated = grpc_generated = ""
    if rest_servers:
        table = render_table(
            rest_servers, LABELS, models, concs, cells,
            {k: med(v) for k, v in rss.items()}, {k: med(v) for k, v in ready.items()},
        )  # fmt: skip
        ours_variants = ("ours", "ours-nofast", *LOGGING_SERVERS, *SHADOW_SERVERS)
        peers = [s for s in rest_servers if s not in ours_variants]
        ratios = ratio_lines("ours", peers, models, concs, cells, LABELS)
        generated = "\n".join([
            f"Run on {dt.date.today().isoformat()}, {os.cpu_count()} cores, "
            f"Python {sys.version.split()[0]}, "
            f"scikit-learn {sklearn_version()}; wrk 1 thread on 127.0.0.1, one-row v2 request (20 FP32 "
            f"features), one worker per server, median of {args.rounds} rounds of {args.duration:g} s "
            f"(after {args.warmup:g} s warm-up). Errors = socket errors + non-2xx, summed over rounds. "
            "RSS = the server's whole process tree after the load.",
            "", f"Command: {command}", "", table,
            "Throughput of modelserver as a multiple of each peer's, and whether its p99 is at most "
            "the peer's:", "",
            *ratios,
            *([
                "", f"Payload logging at c={LOGGING_CONCURRENCY} (warm-up included in the event "
                "counts; every exchange sampled, request and response), against modelserver without "
                "it:", "",
                *overhead_lines("ours", LOGGING_SERVERS, models, LOGGING_CONCURRENCY, cells, LABELS),
                *[f"- {model} {LABELS[server]}: events "
                  + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(counts.items()))
                  for (server, model), counts in sorted(logged.items())],
            ] if logged else []),
            *([
                "", "Shadow traffic (warm-up included in the counts), the live requests against "
                "modelserver without it:", "",
                *[line for c in concs for line in overhead_lines(
                    "ours", SHADOW_SERVERS, models, c, cells, LABELS)],
                *[f"- {model} {LABELS[server]}: "
                  + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(counts.items()))
                  for (server, model), counts in sorted(mirrored.items())],
            ] if mirrored else []),
            *(["", f"Did not exit within 30 s of SIGTERM: {', '.join(unclean)}"] if unclean else []),
        ])  # fmt: skip
    if grpc_servers:
        keys = [grpc_key(model, rows) for model in models for rows in grpc_rows]
        per_key = {
            (s, grpc_key(model, rows)): med(v)
            for (s, model), v in rss.items() for rows in grpc_rows
        }  # fmt: skip
        ready_key = {
            (s, grpc_key(model, rows)): med(v)
            for (s, model), v in ready.items() for rows in grpc_rows
        }  # fmt: skip
        table = render_table(grpc_servers, LABELS, keys, concs, cells, per_key, ready_key)
        peers = [s for s in grpc_servers if s != "ours-grpc"]
        grpc_generated = "\n".join([
            f"Run on {dt.date.today().isoformat()}, {os.cpu_count()} cores, "
            f"Python {sys.version.split()[0]}, scikit-learn {sklearn_version()}; ghz "
            f"(one CPU, one connection per concurrent caller) on 127.0.0.1, ModelInfer with "
            f"{' and '.join(str(r) for r in grpc_rows)} rows of 20 FP32 features as typed "
            f"contents, one worker per server, median of {args.rounds} rounds of "
            f"{args.duration:g} s (after {args.warmup:g} s warm-up). Errors = calls that did "
            "not end OK, summed over rounds. RSS = the server's whole process tree after the load.",
            "", f"Command: {command}", "", table,
            "Throughput of modelserver's gRPC as a multiple of each peer's, and whether its p99 "
            "is at most the peer's:", "",
            *ratio_lines("ours-grpc", peers, keys, concs, cells, LABELS),
            *(["", f"Did not exit within 30 s of SIGTERM: {', '.join(unclean)}"]
              if unclean and not rest_servers else []),
        ])  # fmt: skip
    print("\n" + generated + "\n\n" + grpc_generated)
    (WORK / "results.md").write_text(generated + "\n\n" + grpc_generated + "\n")
    raw = {f"{s}|{m}|{c}": [r.__dict__ for r in cell.runs] for (s, m, c), cell in cells.items()}
    (WORK / "results.json").write_text(
        json.dumps(
            {
                "cells": raw,
                "rss": {f"{k[0]}|{k[1]}": v for k, v in rss.items()},
                "ready": {f"{k[0]}|{k[1]}": v for k, v in ready.items()},
            },
            indent=1,
        )
    )
    if args.write_docs:
        doc = REPO / "docs" / "benchmarks.md"
        text = doc.read_text() if doc.exists() else ""
        if generated:
            text = replace_section(text, generated)
        if grpc_generated:
            if GRPC_BEGIN not in text and END in text:  # first gRPC run: right after REST's
                at = text.index(END) + len(END)
                text = f"{text[:at]}\n\n### gRPC\n\n{GRPC_BEGIN}\n{GRPC_END}{text[at:]}"
            text = replace_section(text, grpc_generated, begin=GRPC_BEGIN, end=GRPC_END)
        doc.write_text(text)
        log(f"wrote {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
