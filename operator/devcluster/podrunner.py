"""Stand in for the kubelet on kwok's fake nodes: one real `python -m modelserver` per pod, bound
to the pod's IP (kwok hands out loopback IPs here), configured and supervised as the kubelet would.

With it, everything the operator does over the network — model gates, metric scrapes — talks to a
real server at the address Kubernetes reports, and the pod signals the operator judges (Ready,
restarts, CrashLoopBackOff, CreateContainerConfigError) come from that server's real behaviour. A
stand-in that skipped part of a pod (its auth Secret, say) would make every test through it prove
nothing about that part, so each feature of a pod is either honoured or refused loudly: the
container then waits with reason CreateContainerError and a message naming what is not supported.

What the runner honours, as the kubelet does:

- Volumes: `secret` and `configMap` (with `items` key→path or every key, `defaultMode`/`mode`,
  `optional`), `projected` (secret, configMap, downwardAPI and serviceAccountToken sources),
  `downwardAPI`, `emptyDir` and `hostPath`. Contents are written the kubelet's way (files behind a
  `..data` symlink that is swapped atomically) and rewritten when a Secret or ConfigMap changes
  (read again every CONFIG_REFRESH_SECONDS, sooner than the kubelet's minute), so a rotated token
  reaches the running server. A missing Secret/ConfigMap that is not optional keeps the container
  waiting in ContainerCreating, as a failed mount does; the kubelet's FailedMount Event text is the
  waiting message (the runner records no Events).
- Environment: `value` with `$(VAR)` expansion, `valueFrom` secretKeyRef, configMapKeyRef and
  fieldRef, `envFrom` secretRef/configMapRef with `prefix`, `optional`; `env` overrides `envFrom`.
  A missing object or key gives CreateContainerConfigError with the kubelet's message, retried
  until it appears. The pod's phase stays Running meanwhile, where the kubelet would show Pending:
  kwok's pod-ready stage takes over any Pending pod that is not Ready and would overwrite the
  container statuses (Running pods it leaves alone: what the runner patches there stays).
- Restarts: `restartPolicy` (Always, OnFailure, Never); when a server exits the pod's
  `containerStatuses` show it as the kubelet would: `restartCount`, `lastState.terminated`
  (exitCode, reason Completed/Error), a new containerID, and the crash-loop back-off — the first
  restart at once, then 10 s doubling up to 5 min, with `state.waiting.reason: CrashLoopBackOff`
  meanwhile.
- Probes: the container's own startupProbe, readinessProbe and livenessProbe (httpGet or
  tcpSocket, named ports, initialDelaySeconds, periodSeconds, timeoutSeconds, success and failure
  thresholds). Ready follows readiness (and `readinessGates`); readiness and liveness wait for the
  startup probe; a readiness probe runs at once when the container starts (or its startup probe
  passes), as the kubelet triggers it then; a failing liveness or startup probe restarts the server.

The one honest difference from a container: the server is a host process, without its own mount
or network namespace. So:

- Each pod's volumes live in `<workdir>/<pod>/volumes/<volume>`, and each volumeMount maps its
  mountPath to that directory (or to `<volume>/<subPath>`; a subPath of a Secret/ConfigMap/
  projected volume is copied when the container starts, which is why, as in a cluster, it sees no
  later updates). Every env value and arg that is a path inside a mountPath, plain or `file://`,
  is rewritten to the host path, longest mountPath first:
      MODELSERVER_AUTH_TOKEN_FILE=/var/run/modeldeploy/auth/token
          → <workdir>/<pod>/volumes/auth/token
      MODELSERVER_CACHE_DIR=/var/cache/modelserver → <workdir>/<pod>/volumes/cache
  TMPDIR is the volume mounted at /tmp (else a private `<workdir>/<pod>/rootfs/tmp`), HOME is
  `<workdir>/<pod>/rootfs` and HOSTNAME the pod's name.
- The host's filesystem stands for the image's. Tests hand servers their model as a host file://
  path, often under /tmp, where every operator-built pod mounts an emptyDir that would hide it in
  a container; so a path the volume does not have but the host does stays a host path, and the
  pod's log says so at each start.
- The server's environment is the pod's alone, plus PATH, LANG and PYTHONPATH to run Python.
- A server told to listen on every address (MODELSERVER_HOST 0.0.0.0 or ::) listens on the pod
  IP; any other address would not be reachable at the pod IP, and is refused loudly.

Refused with CreateContainerError: pods of several containers or with init containers, a command
other than modelserver's, exec and grpc probes, resourceFieldRef; a volume of another type keeps
the container in ContainerCreating, the message saying why.

Not emulated: mount read-only-ness and file ownership (fsGroup, runAsUser), resource limits (no
OOM kill: the `oom-killed` fault stands for it), the image (always modelserver), service-link env
vars, the refresh of serviceAccountToken projections, and Events.

kwok starts model-server pods (Running, an IP, not Ready) and hands them to the runner, which
marks each pod it runs with the condition CLAIM_CONDITION; a pod no runner claims within a few
seconds kwok makes Ready itself (fault-stages.yaml). So the operator never sees a pod Ready before
its server is, and tests without a runner still get Ready pods.

Pods carrying FAULT_LABEL are kwok's to play (fault-stages.yaml): the runner leaves them alone.
"""

from __future__ import annotations

import base64
import concurrent.futures
import datetime as dt
import json
import math
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cluster import FAULT_LABEL, run_kubectl
from .processes import kill_when_parent_dies

SERVER_COMPONENT_SELECTOR = "app.kubernetes.io/component=model-server"
# A pod condition the runner sets on every pod it runs: kwok's hand-off stages (fault-stages.yaml)
# then leave the pod's readiness to it instead of making it Ready themselves.
CLAIM_CONDITION = "devcluster.modeldeploy.io/PodRunner"
# The kubelet's crash-loop back-off (initialCrashLoopBackOff, MaxContainerBackOff): the first
# restart is immediate, later ones wait 10 s doubling up to 5 min, and the back-off starts over
# after a quiet spell of twice the cap.
INITIAL_BACKOFF_SECONDS = 10.0
MAX_BACKOFF_SECONDS = 300.0
# Secrets and ConfigMaps are read again this often while a pod uses them, so updates reach mounted
# files and a container waiting for a missing one starts soon after it appears.
CONFIG_REFRESH_SECONDS = 2.0
PROBE_USER_AGENT = "kube-probe/1.36"
DEFAULT_GRACE_SECONDS = 30.0
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]"})
HOST_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE")
# Volume types whose files the runner writes (and the kubelet's atomic writer would).
PROJECTED_TYPES = ("secret", "configMap", "projected", "downwardAPI")
MODELSERVER_COMMANDS = (
    ["modelserver"],
    ["python", "-m", "modelserver"],
    ["python3", "-m", "modelserver"],
)
NOT_SUPPORTED = "devcluster pod runner: {} is not supported"


class ContainerConfigError(Exception):
    """The container cannot be created: it waits with `reason` and this message."""

    def __init__(self, message: str, reason: str = "CreateContainerConfigError") -> None:
        super().__init__(message)
        self.reason = reason


def _unsupported(what: str) -> ContainerConfigError:
    return ContainerConfigError(NOT_SUPPORTED.format(what), reason="CreateContainerError")


class MountError(Exception):
    """A volume cannot be set up: the container waits in ContainerCreating."""


@dataclass
class Objects:
    """The namespace's Secrets and ConfigMaps as read at one moment, values as bytes."""

    secrets: dict[str, dict[str, bytes]] = field(default_factory=dict)
    config_maps: dict[str, dict[str, bytes]] = field(default_factory=dict)
    # ConfigMap `data` only: what env vars may come from (binaryData is for volumes).
    config_map_text: dict[str, dict[str, str]] = field(default_factory=dict)
    serial: int = 0

    @classmethod
    def parse(cls, items: Iterable[dict[str, Any]], serial: int) -> Objects:
        objects = cls(serial=serial)
        for item in items:
            name = item["metadata"]["name"]
            if item.get("kind") == "Secret":
                data = item.get("data") or {}
                objects.secrets[name] = {k: base64.b64decode(v) for k, v in data.items()}
            elif item.get("kind") == "ConfigMap":
                text = item.get("data") or {}
                binary = item.get("binaryData") or {}
                objects.config_map_text[name] = dict(text)
                objects.config_maps[name] = {
                    **{k: v.encode() for k, v in text.items()},
                    **{k: base64.b64decode(v) for k, v in binary.items()},
                }
        return objects


@dataclass
class Probe:
    """One probe of one container run, with the kubelet worker's counters."""

    kind: str  # startup | readiness | liveness
    spec: dict[str, Any]
    next_due: float
    result: bool
    successes: int = 0
    failures: int = 0

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds") or 10)

    def record(self, ok: bool) -> bool | None:
        """Count one outcome; returns the new result when it changes."""
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            threshold = int(self.spec.get("successThreshold") or 1)
            changed = not self.result and self.successes >= threshold
        else:
            self.successes, self.failures = 0, self.failures + 1
            threshold = int(self.spec.get("failureThreshold") or 3)
            changed = self.result and self.failures >= threshold
            # Startup starts out Unknown: its threshold counts failures from the start.
            changed = changed or (self.kind == "startup" and self.failures >= threshold)
        if changed:
            self.result = ok
            return ok
        return None


@dataclass
class Container:
    """One run of a pod's server: what the kubelet calls a container (each restart is a new one)."""

    process: subprocess.Popen[bytes]
    container_id: str
    started_at: str
    probes: dict[str, Probe]
    started: bool
    ready: bool
    kill_deadline: float | None = None


@dataclass
class PodState:
    """What the runner knows of one pod: its volumes, its current container and the history the
    kubelet would report (restarts, the last exit, the back-off)."""

    name: str
    uid: str
    ip: str
    directory: Path
    pod: dict[str, Any]
    container: Container | None = None
    starts: int = 0
    last_terminated: dict[str, Any] | None = None
    finished_time: float = 0.0
    # Set when restartPolicy says the last exit was final.
    done: bool = False
    waiting: tuple[str, str] = ("ContainerCreating", "")
    backoff: float = 0.0
    backoff_updated: float = 0.0
    volumes_ready: bool = False
    volumes_key: tuple[int, str] | None = None
    payloads: dict[str, dict[str, tuple[bytes, int]]] = field(default_factory=dict)
    tokens: dict[tuple[str, str, int], str] = field(default_factory=dict)
    ready: bool = False

    @property
    def spec(self) -> dict[str, Any]:
        return self.pod["spec"]

    @property
    def container_spec(self) -> dict[str, Any]:
        return self.spec["containers"][0]

    @property
    def restart_count(self) -> int:
        return max(0, self.starts - 1)


@dataclass
class Stopping:
    """A server whose pod is gone: it had SIGTERM and gets SIGKILL at `kill_at`. Until it exits
    it holds its pod IP (`ip`), as a real pod's sandbox does until it is torn down."""

    process: subprocess.Popen[bytes]
    kill_at: float
    directory: Path | None
    ip: str = ""


@dataclass
class PodRunner:
    """Watch pods in `namespace` (by polling) and keep one server process per running pod."""

    kubectl: Path
    kubeconfig: Path
    namespace: str
    workdir: Path
    selector: str = SERVER_COMPONENT_SELECTOR
    pythonpath: list[str] = field(default_factory=list)
    poll_seconds: float = 0.5
    # Called after each sync with [(host:port, labels)] of the ready pods (e.g. a Prometheus
    # server's file_sd writer), as service discovery would see them.
    on_targets: Callable[[list[tuple[str, dict[str, str]]]], None] | None = None
    pods: dict[str, PodState] = field(default_factory=dict)  # by pod UID
    _stopping: list[Stopping] = field(default_factory=list)
    _objects: Objects = field(default_factory=Objects)
    _next_refresh: float = 0.0
    _probe_pool: concurrent.futures.ThreadPoolExecutor | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> PodRunner:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._loop, name="podrunner", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling and shut every server down gracefully (SIGTERM, then SIGKILL)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def log_path(self, pod: str) -> Path:
        return self.workdir / f"{pod}.log"

    @property
    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        """The running servers by pod name."""
        return {s.name: s.container.process for s in list(self.pods.values()) if s.container}

    def server_pid(self, pod: str) -> int | None:
        """The PID of `pod`'s running server, if it has one."""
        process = self.processes.get(pod)
        return process.pid if process is not None and process.poll() is None else None

    def ready_ips(self) -> list[str]:
        """IPs of pods whose server is ready: where a Service would send requests."""
        return [s.ip for s in list(self.pods.values()) if s.ready]

    # ----------------------------------------------------------------------------- the loop
    def _loop(self) -> None:
        """Runs in the thread that spawns the servers, and stops them itself on the way out: the
        kernel kills them when this thread ends (PR_SET_PDEATHSIG), so that must come last."""
        while not self._stop.wait(self.poll_seconds):
            try:
                self.sync()
            except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired):
                continue  # the API server may be busy; the next poll tries again
            except Exception:  # a bug here must not take every server down with the thread
                self._note(traceback.format_exc())
        self._shutdown()

    def _shutdown(self) -> None:
        processes = [s.container.process for s in self.pods.values() if s.container]
        processes += [s.process for s in self._stopping]
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.pods.clear()
        self._stopping.clear()
        if self._probe_pool is not None:
            self._probe_pool.shutdown(wait=False)

    def _note(self, text: str) -> None:
        with (self.workdir / "podrunner.log").open("a") as log:
            log.write(f"{_now()} {text.rstrip()}\n")

    def sync(self) -> None:
        """One pass of what the kubelet does for the namespace's pods."""
        self._reap(time.monotonic())
        result = self._kubectl("get", "pods", "-n", self.namespace, "-l", self.selector, "-ojson")
        live: dict[str, dict[str, Any]] = {}
        for pod in json.loads(result.stdout)["items"]:
            meta, status = pod["metadata"], pod.get("status", {})
            if FAULT_LABEL in (meta.get("labels") or {}) or meta.get("deletionTimestamp"):
                continue  # kwok plays faulty pods; deletion stops the server
            known = meta["uid"] in self.pods
            if status.get("podIP") and (status.get("phase") in ("Pending", "Running") or known):
                live[meta["uid"]] = pod
        now = time.monotonic()
        for uid in set(self.pods) - set(live):
            self._forget(self.pods.pop(uid), now)
        objects = self._read_objects(live.values(), now)
        for uid, pod in live.items():
            state = self.pods.get(uid) or self._adopt(pod)
            state.pod = pod
            self._sync_pod(state, objects, now)
        self._probe(time.monotonic())
        for state in list(self.pods.values()):
            self._report(state)
        if self.on_targets is not None:
            self.on_targets(
                [
                    (f"{s.ip}:{_port(s.pod)}", {"pod": s.name, **_revision(s.pod)})
                    for s in self.pods.values()
                    if s.ready
                ]
            )

    def _kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_kubectl(self.kubectl, self.kubeconfig, *args, check=check, timeout=20)

    def _adopt(self, pod: dict[str, Any]) -> PodState:
        meta = pod["metadata"]
        directory = self.workdir / meta["name"]
        if directory.exists():  # a former pod of the same name
            shutil.rmtree(directory, ignore_errors=True)
        (directory / "rootfs" / "tmp").mkdir(parents=True)
        state = PodState(meta["name"], meta["uid"], pod["status"]["podIP"], directory, pod)
        self.pods[state.uid] = state
        return state

    def _forget(self, state: PodState, now: float) -> None:
        """The pod is gone or being deleted: stop its server (SIGKILL after the grace period) and
        remove its volumes once it has exited."""
        state.ready = False
        container = state.container
        if container is None or container.process.poll() is not None:
            shutil.rmtree(state.directory, ignore_errors=True)
            return
        container.process.send_signal(signal.SIGTERM)
        grace = state.pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is None:
            grace = state.spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
        self._stopping.append(
            Stopping(container.process, now + float(grace), state.directory, state.ip)
        )

    def _reap(self, now: float) -> None:
        in_use = {s.directory for s in self.pods.values()}
        for stopping in list(self._stopping):
            if stopping.process.poll() is None:
                if now >= stopping.kill_at:
                    stopping.process.kill()
                continue
            self._stopping.remove(stopping)
            if stopping.directory is not None and stopping.directory not in in_use:
                shutil.rmtree(stopping.directory, ignore_errors=True)

    # ----------------------------------------------------------------------------- objects
    def _read_objects(self, pods: Iterable[dict[str, Any]], now: float) -> Objects:
        """The namespace's Secrets and ConfigMaps, read again when due or when a new pod needs
        them (it may name one created a moment before it)."""
        users = [p for p in pods if _uses_objects(p)]
        if not users:
            return self._objects
        new = any(p["metadata"]["uid"] not in self.pods for p in users)
        if new or now >= self._next_refresh:
            out = self._kubectl("get", "secrets,configmaps", "-n", self.namespace, "-o", "json")
            items = json.loads(out.stdout)["items"]
            self._objects = Objects.parse(items, self._objects.serial + 1)
            self._next_refresh = now + CONFIG_REFRESH_SECONDS
        return self._objects

    # ----------------------------------------------------------------------------- one pod
    def _sync_pod(self, state: PodState, objects: Objects, now: float) -> None:
        if state.done:
            return
        volumes_key = (objects.serial, state.pod["metadata"].get("resourceVersion", ""))
        if state.volumes_key != volumes_key:
            try:
                self._set_up_volumes(state, objects)
                state.volumes_ready = True
                state.volumes_key = volumes_key
            except MountError as exc:
                # Once mounted, a volume keeps its last contents, as the kubelet's do.
                if not state.volumes_ready:
                    state.waiting = ("ContainerCreating", str(exc))
                    return
        container = state.container
        if container is not None:
            code = container.process.poll()
            if code is None:
                if container.kill_deadline is not None and now >= container.kill_deadline:
                    container.process.kill()
                return
            self._exited(state, container, code, now)
        if state.last_terminated is not None:
            policy = state.spec.get("restartPolicy", "Always")
            succeeded = state.last_terminated["exitCode"] == 0
            if policy == "Never" or (policy == "OnFailure" and succeeded):
                state.done = True
                return
            if self._backing_off(state, now):
                return
        holder = self._ip_held(state.ip)
        if holder is not None:
            # kwok hands a deleted pod's IP to the next pod at once, while that pod's server may
            # still serve out its shutdown delay on it; a CNI would not reuse the IP before the
            # old sandbox is gone. Wait, as a real pod waits for its sandbox.
            state.waiting = ("ContainerCreating", f"pod IP {state.ip} is still held by {holder}")
            return
        self._start(state, objects, now)

    def _ip_held(self, ip: str) -> str | None:
        """The terminating server still on `ip`, if any (its pod's directory name)."""
        for stopping in self._stopping:
            if stopping.ip == ip and stopping.process.poll() is None:
                return stopping.directory.name if stopping.directory else "a terminating pod"
        return None

    def _exited(self, state: PodState, container: Container, code: int, now: float) -> None:
        exit_code = code if code >= 0 else 128 - code  # killed by signal N: 128 + N
        state.last_terminated = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": container.started_at,
            "finishedAt": _now(),
            "containerID": container.container_id,
        }
        state.finished_time = now
        state.container = None
        state.ready = False
        with self.log_path(state.name).open("a") as log:
            log.write(f"--- pod runner: container exited with code {exit_code} ---\n")

    def _backing_off(self, state: PodState, now: float) -> bool:
        """The kubelet's doBackOff: wait out the current back-off from the last exit, else take
        the next step (10 s at first or after a quiet spell, doubling, capped) and restart."""
        expired = state.finished_time - state.backoff_updated > 2 * MAX_BACKOFF_SECONDS
        if state.backoff and not expired and now - state.finished_time < state.backoff:
            pod = state.pod["metadata"]
            state.waiting = (
                "CrashLoopBackOff",
                f"back-off {_go_duration(state.backoff)} restarting failed container="
                f"{state.container_spec['name']} pod={pod['name']}_{pod['namespace']}({state.uid})",
            )
            return True
        if not state.backoff or expired:
            state.backoff = INITIAL_BACKOFF_SECONDS
        else:
            state.backoff = min(2 * state.backoff, MAX_BACKOFF_SECONDS)
        state.backoff_updated = now
        return False

    def _start(self, state: PodState, objects: Objects, now: float) -> None:
        pod, spec = state.pod, state.container_spec
        try:
            _check_supported(pod)
            env = resolve_env(pod, spec, objects)
            mounts = self._mounts(state, env)
            host = env.get("MODELSERVER_HOST", "127.0.0.1")
            if host not in WILDCARD_HOSTS and host != state.ip:
                raise _unsupported(
                    f"MODELSERVER_HOST={host} (reachable inside the pod only; "
                    "listen on 0.0.0.0 to be reachable at the pod IP)"
                )
        except ContainerConfigError as exc:
            state.waiting = (exc.reason, str(exc))
            return
        rootfs = state.directory / "rootfs"
        process_env = {k: os.environ[k] for k in HOST_ENV if k in os.environ}
        python_path = [*self.pythonpath, os.environ.get("PYTHONPATH", "")]
        process_env["PYTHONPATH"] = os.pathsep.join(p for p in python_path if p)
        process_env["HOME"] = str(rootfs)
        process_env["HOSTNAME"] = state.name
        process_env["TMPDIR"] = host_path("/tmp", mounts, default=str(rootfs / "tmp"))
        notes: list[str] = []

        def to_host(what: str, value: str) -> str:
            mapped = host_path(value, mounts)
            if mapped != value and not _exists(mapped) and _exists(value):
                notes.append(f"{what}: {value} is not in the volume; the host's file is used")
                return value
            return mapped

        process_env.update(
            {k: to_host(k, v) for k, v in env.items() if "\0" not in k + v and "=" not in k}
        )
        process_env["MODELSERVER_HOST"] = state.ip
        args = [to_host("an arg", expand(a, env)) for a in spec.get("args") or []]
        probes = {}
        for kind, initial in (("startup", False), ("readiness", False), ("liveness", True)):
            probe = spec.get(f"{kind}Probe")
            if probe:
                delay = float(probe.get("initialDelaySeconds") or 0)
                probes[kind] = Probe(kind, probe, now + delay, initial)
        with self.log_path(state.name).open("ab") as log:
            log.write(f"--- pod runner: starting container {state.starts + 1} ---\n".encode())
            log.writelines(f"--- pod runner: {note} ---\n".encode() for note in notes)
            log.flush()
            process = subprocess.Popen(
                [sys.executable, "-m", "modelserver", *args],
                env=process_env,
                cwd=rootfs,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=kill_when_parent_dies,  # no server outlives the runner's thread
            )
        started = "startup" not in probes
        state.container = Container(
            process=process,
            container_id=f"podrunner://{uuid.uuid4().hex}",
            started_at=_now(),
            probes=probes,
            started=started,
            ready=started and "readiness" not in probes,
        )
        state.starts += 1
        state.waiting = ("", "")

    # ----------------------------------------------------------------------------- volumes
    def _set_up_volumes(self, state: PodState, objects: Objects) -> None:
        """Write every volume of the pod under <pod>/volumes; unchanged ones are left alone."""
        for volume in state.spec.get("volumes") or []:
            name = volume["name"]
            target = state.directory / "volumes" / name
            if "emptyDir" in volume:
                target.mkdir(parents=True, exist_ok=True)
                continue
            if "hostPath" in volume:
                continue
            try:
                files = self._volume_files(state, volume, objects)
            except MountError as exc:
                raise MountError(f'MountVolume.SetUp failed for volume "{name}" : {exc}') from None
            if state.payloads.get(name) != files:
                _write_atomically(target, files)
                state.payloads[name] = files

    def _volume_files(
        self, state: PodState, volume: dict[str, Any], objects: Objects
    ) -> dict[str, tuple[bytes, int]]:
        kind = next((k for k in volume if k != "name"), "")
        source = volume.get(kind) or {}
        mode = int(source.get("defaultMode", 0o644))
        if kind == "secret":
            return _project_object(source, source.get("secretName", ""), objects, "secret", mode)
        if kind == "configMap":
            return _project_object(source, source.get("name", ""), objects, "configMap", mode)
        if kind == "downwardAPI":
            return self._downward_files(state, source.get("items") or [], mode)
        if kind == "projected":
            files: dict[str, tuple[bytes, int]] = {}
            for item in source.get("sources") or []:
                if "secret" in item:
                    ref = item["secret"]
                    files |= _project_object(ref, ref.get("name", ""), objects, "secret", mode)
                elif "configMap" in item:
                    ref = item["configMap"]
                    files |= _project_object(ref, ref.get("name", ""), objects, "configMap", mode)
                elif "downwardAPI" in item:
                    items = item["downwardAPI"].get("items") or []
                    files |= self._downward_files(state, items, mode)
                elif "serviceAccountToken" in item:
                    token = item["serviceAccountToken"]
                    files[token["path"]] = (self._token(state, token).encode(), mode)
                else:
                    raise MountError(NOT_SUPPORTED.format(f"projected source {sorted(item)}"))
            return files
        raise MountError(NOT_SUPPORTED.format(f"volume type {kind!r}"))

    def _downward_files(
        self, state: PodState, items: list[dict[str, Any]], mode: int
    ) -> dict[str, tuple[bytes, int]]:
        files = {}
        for item in items:
            if "fieldRef" not in item:
                raise MountError(NOT_SUPPORTED.format("downwardAPI resourceFieldRef"))
            try:
                value = field_value(state.pod, item["fieldRef"]["fieldPath"], volume=True)
            except ContainerConfigError as exc:
                raise MountError(str(exc)) from None
            files[item["path"]] = (value.encode(), int(item.get("mode", mode)))
        return files

    def _token(self, state: PodState, source: dict[str, Any]) -> str:
        """A bound token for the pod's ServiceAccount, from the TokenRequest API, as the kubelet
        asks for a serviceAccountToken projection (once per pod here)."""
        account = state.spec.get("serviceAccountName") or "default"
        audience = source.get("audience", "")
        seconds = int(source.get("expirationSeconds") or 3600)
        key = (account, audience, seconds)
        if key not in state.tokens:
            args = ["create", "token", account, "-n", self.namespace, f"--duration={seconds}s"]
            args += ["--bound-object-kind=Pod", f"--bound-object-name={state.name}"]
            args += [f"--bound-object-uid={state.uid}"]
            if audience:
                args.append(f"--audience={audience}")
            result = self._kubectl(*args, check=False)
            if result.returncode != 0:
                raise MountError(f"failed to fetch token: {result.stderr.strip()}")
            state.tokens[key] = result.stdout.strip()
        return state.tokens[key]

    def _mounts(self, state: PodState, env: Mapping[str, str]) -> list[tuple[str, Path]]:
        """(mountPath, host directory or file) for each volumeMount, longest mountPath first."""
        volumes = {v["name"]: v for v in state.spec.get("volumes") or []}
        spec = state.container_spec
        mounts = []
        for index, mount in enumerate(spec.get("volumeMounts") or []):
            volume = volumes[mount["name"]]
            if "hostPath" in volume:
                base = Path(volume["hostPath"]["path"])
            else:
                base = state.directory / "volumes" / mount["name"]
            sub = mount.get("subPath") or expand(mount.get("subPathExpr") or "", env)
            host = base
            if sub:
                host = base / sub
                if any(kind in volume for kind in PROJECTED_TYPES):
                    # The kubelet bind-mounts what the subPath resolves to at container start, so
                    # later updates of the volume do not reach it: a copy behaves the same.
                    copy = state.directory / "subpaths" / f"{spec['name']}-{index}"
                    if copy.is_dir() and not copy.is_symlink():
                        shutil.rmtree(copy)
                    else:
                        copy.unlink(missing_ok=True)
                    copy.parent.mkdir(parents=True, exist_ok=True)
                    if host.is_dir():
                        shutil.copytree(host, copy)
                    elif host.exists():
                        shutil.copyfile(host, copy)
                    else:
                        raise ContainerConfigError(
                            f'failed to prepare subPath for volumeMount "{mount["name"]}" of '
                            f'container "{spec["name"]}"'
                        )
                    host = copy
                else:
                    host.mkdir(parents=True, exist_ok=True)
            path = mount["mountPath"].rstrip("/")
            if path:
                mounts.append((path, host))
        return sorted(mounts, key=lambda m: len(m[0]), reverse=True)

    # ----------------------------------------------------------------------------- probes
    def _probe(self, now: float) -> None:
        """Run the probes that are due, all at once, and act on their results."""
        due: list[tuple[PodState, Container, Probe]] = []
        for state in self.pods.values():
            container = state.container
            if container is None or container.kill_deadline is not None:
                continue
            if container.process.poll() is not None:
                continue  # the next sync records the exit
            for probe in container.probes.values():
                if now < probe.next_due or (probe.kind == "startup") == container.started:
                    continue
                probe.next_due = now + probe.period
                due.append((state, container, probe))
        if not due:
            return
        if self._probe_pool is None:
            self._probe_pool = concurrent.futures.ThreadPoolExecutor(8, "podrunner-probe")
        outcomes = self._probe_pool.map(lambda d: run_probe(d[2].spec, d[0]), due)
        for (state, container, probe), ok in zip(due, outcomes, strict=True):
            changed = probe.record(ok)
            if probe.kind == "readiness" and changed is not None:
                container.ready = changed
            elif probe.kind == "startup" and changed:
                container.started = True
                container.ready = "readiness" not in container.probes
                readiness = container.probes.get("readiness")
                if readiness is not None:  # the kubelet triggers it when the container starts
                    readiness.next_due = now
            elif probe.kind in ("startup", "liveness") and changed is False:
                self._kill(state, container, probe, now)

    def _kill(self, state: PodState, container: Container, probe: Probe, now: float) -> None:
        """A failed liveness or startup probe: stop the server; the next sync restarts it."""
        grace = probe.spec.get("terminationGracePeriodSeconds")
        if grace is None:
            grace = state.spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
        with self.log_path(state.name).open("a") as log:
            log.write(f"--- pod runner: {probe.kind} probe failed, killing the container ---\n")
        container.process.send_signal(signal.SIGTERM)
        container.kill_deadline = now + float(grace)
        container.ready = False

    # ----------------------------------------------------------------------------- status
    def _report(self, state: PodState) -> None:
        """Patch the pod's status (status subresource) when it differs from what the runner
        knows: containerStatuses, Ready/ContainersReady and the phase."""
        spec, status = state.spec, state.pod.get("status", {})
        ours = self._container_status(state)
        containers_ready = bool(ours["ready"])
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        gates = [g["conditionType"] for g in spec.get("readinessGates") or []]
        gates_ready = all((conditions.get(g) or {}).get("status") == "True" for g in gates)
        state.ready = containers_ready and gates_ready
        names = [c["name"] for c in spec["containers"]]
        # Pods of several containers are refused: each of them shows the refusal.
        statuses = [ours] + [
            {**ours, "name": c["name"], "image": c.get("image", "")} for c in spec["containers"][1:]
        ]
        unready = f"containers with unready status: [{' '.join(names)}]"
        wanted = {
            CLAIM_CONDITION: _condition(True, "", ""),
            "ContainersReady": _condition(containers_ready, "ContainersNotReady", unready),
            "Ready": _condition(
                state.ready,
                "ContainersNotReady" if not containers_ready else "ReadinessGatesNotReady",
                unready if not containers_ready else "readiness gates are not all True",
            ),
        }
        # Never back to Pending, even before the first start: kwok would take the pod over.
        phase = "Running"
        if state.done:
            phase = "Succeeded" if not (state.last_terminated or {}).get("exitCode") else "Failed"
        current = {c.get("name"): c for c in status.get("containerStatuses") or []}
        same = (
            status.get("phase") == phase
            and all(_same(conditions.get(t) or {}, c) for t, c in wanted.items())
            and len(current) == len(statuses)
            and all(_same(current.get(s["name"]) or {}, s) for s in statuses)
        )
        if same:
            return
        stamp = _now()
        # A condition's lastTransitionTime moves only when its status does.
        patched = [
            {"type": t, **c, "lastTransitionTime": stamp}
            if (conditions.get(t) or {}).get("status") != c["status"]
            else {"type": t, **c}
            for t, c in wanted.items()
        ]
        patch = {"status": {"phase": phase, "conditions": patched, "containerStatuses": statuses}}
        result = self._kubectl(
            "patch", "pod", state.name, "-n", self.namespace, "--subresource=status",
            "--type=strategic", "-p", json.dumps(patch), check=False,
        )  # fmt: skip
        if result.returncode != 0 and "NotFound" not in result.stderr:
            self._note(f"status patch of {state.name} failed: {result.stderr.strip()}")

    def _container_status(self, state: PodState) -> dict[str, Any]:
        spec, container = state.container_spec, state.container
        out: dict[str, Any] = {
            "name": spec["name"],
            "image": spec.get("image", ""),
            "imageID": "",
            "restartCount": state.restart_count,
            "ready": False,
            "started": False,
            "lastState": {},
        }
        if container is not None:
            out["containerID"] = container.container_id
            out["state"] = {"running": {"startedAt": container.started_at}}
            out["ready"], out["started"] = container.ready, container.started
        elif state.done and state.last_terminated is not None:
            out["containerID"] = state.last_terminated["containerID"]
            out["state"] = {"terminated": state.last_terminated}
        else:
            reason, message = state.waiting
            reason = reason or "ContainerCreating"
            waiting = {"reason": reason, "message": message} if message else {"reason": reason}
            out["state"] = {"waiting": waiting}
        if state.last_terminated is not None and not state.done:
            out["lastState"] = {"terminated": state.last_terminated}
        return out


# --------------------------------------------------------------------------------- helpers
def _check_supported(pod: dict[str, Any]) -> None:
    """Refuse, loudly, what the runner cannot honour."""
    spec = pod["spec"]
    if len(spec["containers"]) != 1 or spec.get("initContainers"):
        raise _unsupported("a pod with more than one container or with init containers")
    container = spec["containers"][0]
    command = container.get("command")
    if command and command not in MODELSERVER_COMMANDS:
        raise _unsupported(f"command {command} (the runner runs python -m modelserver)")
    for kind in ("startup", "readiness", "liveness"):
        handlers = [k for k in ("exec", "grpc") if k in (container.get(f"{kind}Probe") or {})]
        if handlers:
            raise _unsupported(f"a {handlers[0]} {kind}Probe")


def _uses_objects(pod: dict[str, Any]) -> bool:
    for volume in pod["spec"].get("volumes") or []:
        if "secret" in volume or "configMap" in volume or "projected" in volume:
            return True
    for container in pod["spec"].get("containers") or []:
        if container.get("envFrom"):
            return True
        for var in container.get("env") or []:
            source = var.get("valueFrom") or {}
            if "secretKeyRef" in source or "configMapKeyRef" in source:
                return True
    return False


def _lookup(objects: Objects, kind: str, name: str) -> dict[str, bytes] | None:
    return (objects.secrets if kind == "secret" else objects.config_maps).get(name)


def _project_object(
    source: dict[str, Any], name: str, objects: Objects, kind: str, mode: int
) -> dict[str, tuple[bytes, int]]:
    """The files of a secret or configMap volume (or projection): every key, or `items`."""
    data = _lookup(objects, kind, name)
    optional = bool(source.get("optional"))
    if data is None:
        if optional:
            return {}
        raise MountError(f'{kind.lower()} "{name}" not found')
    items = source.get("items")
    if not items:
        return {key: (value, mode) for key, value in data.items()}
    files = {}
    for item in items:
        if item["key"] not in data:
            if optional:
                continue
            what = "secret key" if kind == "secret" else "config key"
            raise MountError(f"{kind.lower()} references non-existent {what}: {item['key']}")
        files[item["path"]] = (data[item["key"]], int(item.get("mode", mode)))
    return files


def _write_atomically(directory: Path, files: Mapping[str, tuple[bytes, int]]) -> None:
    """The kubelet's atomic writer: the files go to a fresh timestamped directory, `..data` is
    switched to it with one rename, and each top-level name is a symlink through `..data`, so a
    reader sees the old set or the new set, never a mix."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = directory / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{uuid.uuid4().hex[:9]}"
    stamp.mkdir()
    for relative, (data, mode) in files.items():
        path = stamp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode & 0o777)
    staging = directory / "..data_tmp"
    staging.unlink(missing_ok=True)
    staging.symlink_to(stamp.name)
    os.replace(staging, directory / "..data")
    top = {Path(relative).parts[0] for relative in files}
    for name in top:
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")
    for entry in directory.iterdir():
        if entry.name in ("..data", stamp.name):
            continue
        if entry.name.startswith("..") and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name not in top:
            entry.unlink(missing_ok=True)


def resolve_env(pod: dict[str, Any], container: dict[str, Any], objects: Objects) -> dict[str, str]:
    """The container's environment as the kubelet builds it (makeEnvironmentVariables): envFrom
    first, then env in order, `$(VAR)` expanded against what is defined so far."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref = source["configMapRef"]
            text = objects.config_map_text.get(ref["name"])
            if text is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'configmap "{ref["name"]}" not found')
            env.update({prefix + k: v for k, v in text.items()})
        elif "secretRef" in source:
            ref = source["secretRef"]
            data = objects.secrets.get(ref["name"])
            if data is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'secret "{ref["name"]}" not found')
            env.update({prefix + k: _text(v) for k, v in data.items()})
    for var in container.get("env") or []:
        name, source = var["name"], var.get("valueFrom")
        if var.get("value"):
            env[name] = expand(var["value"], env)
        elif source is None:
            env[name] = ""
        elif "fieldRef" in source:
            env[name] = field_value(pod, source["fieldRef"]["fieldPath"], volume=False)
        elif "secretKeyRef" in source or "configMapKeyRef" in source:
            is_secret = "secretKeyRef" in source
            ref = source["secretKeyRef" if is_secret else "configMapKeyRef"]
            found: Mapping[str, bytes | str] | None = (
                objects.secrets.get(ref["name"])
                if is_secret
                else objects.config_map_text.get(ref["name"])
            )
            kind = "secret" if is_secret else "configmap"
            if found is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'{kind} "{ref["name"]}" not found')
            if ref["key"] not in found:
                if ref.get("optional"):
                    continue
                title = "Secret" if is_secret else "ConfigMap"
                raise ContainerConfigError(
                    f"couldn't find key {ref['key']} in {title} {namespace}/{ref['name']}"
                )
            value = found[ref["key"]]
            env[name] = _text(value) if isinstance(value, bytes) else value
        else:
            raise _unsupported(f"env {name} from {sorted(source)}")
    return env


def _text(value: bytes) -> str:
    # Bytes that are not UTF-8 survive the trip into the process's environment unchanged.
    return value.decode("utf-8", "surrogateescape")


def field_value(pod: dict[str, Any], path: str, *, volume: bool) -> str:
    """A downward API fieldRef; whole label/annotation maps only in volumes, as the API allows."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": status.get("hostIP", ""),
        "status.hostIPs": ",".join(i["ip"] for i in status.get("hostIPs") or []),
        "status.podIP": status.get("podIP", ""),
        "status.podIPs": ",".join(i["ip"] for i in status.get("podIPs") or []),
    }
    if path in simple:
        return str(simple[path])
    for prefix, key in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
        values: dict[str, str] = meta.get(key) or {}
        if path == prefix and volume:
            return "\n".join(f"{k}={json.dumps(v)}" for k, v in sorted(values.items()))
        if path.startswith(f"{prefix}['") and path.endswith("']"):
            return values.get(path[len(prefix) + 2 : -2], "")
    raise _unsupported(f"fieldRef {path}")


def expand(value: str, variables: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: `$$` is a literal `$`, unknown references stay as written."""
    out, i = [], 0
    while i < len(value):
        if value[i] == "$" and i + 1 < len(value):
            nxt = value[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            end = value.find(")", i + 2) if nxt == "(" else -1
            if end != -1:
                name = value[i + 2 : end]
                out.append(variables[name] if name in variables else value[i : end + 1])
                i = end + 1
                continue
        out.append(value[i])
        i += 1
    return "".join(out)


def host_path(value: str, mounts: list[tuple[str, Path]], default: str | None = None) -> str:
    """`value` with a container path (plain or file://) inside a mountPath made a host path."""
    for scheme in ("", "file://"):
        if not value.startswith(scheme + "/"):
            continue
        path = value[len(scheme) :]
        for mount_path, host in mounts:
            if path == mount_path or path.startswith(mount_path + "/"):
                return scheme + str(host) + path[len(mount_path) :]
    return value if default is None else default


def _exists(value: str) -> bool:
    return Path(value.removeprefix("file://")).exists()


def run_probe(spec: dict[str, Any], state: PodState) -> bool:
    """One httpGet or tcpSocket probe against the pod, as the kubelet's prober sends it."""
    ports = {p.get("name"): p["containerPort"] for p in state.container_spec.get("ports") or []}
    timeout = float(spec.get("timeoutSeconds") or 1)
    action = spec.get("httpGet") or spec.get("tcpSocket") or {}
    port = action.get("port")
    port = ports.get(port) if isinstance(port, str) and not port.isdigit() else port
    if port is None:
        return False
    host = action.get("host") or state.ip
    if "tcpSocket" in spec:
        try:
            socket.create_connection((host, int(port)), timeout=timeout).close()
            return True
        except OSError:
            return False
    scheme = (action.get("scheme") or "HTTP").lower()
    path = action.get("path") or "/"
    address = f"[{host}]" if ":" in host else host
    url = f"{scheme}://{address}:{port}{path if path.startswith('/') else '/' + path}"
    headers = {"User-Agent": PROBE_USER_AGENT, "Accept": "*/*"}
    headers.update({h["name"]: h["value"] for h in action.get("httpHeaders") or []})
    try:
        with _PROBE_OPENER.open(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
            return bool(200 <= r.status < 400)
    except urllib.error.HTTPError as exc:
        return 300 <= exc.code < 400  # a redirect counts as success, and is not followed
    except (OSError, ValueError):
        return False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# No proxy from the environment, no certificate check (the kubelet checks none), no redirects.
_PROBE_OPENER = urllib.request.build_opener(
    urllib.request.ProxyHandler({}),
    urllib.request.HTTPSHandler(context=ssl._create_unverified_context()),
    _NoRedirect(),
)


def _condition(ok: bool, reason: str, message: str) -> dict[str, Any]:
    if ok:
        return {"status": "True", "reason": None, "message": None}
    return {"status": "False", "reason": reason, "message": message}


def _same(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether the API object already shows `wanted` (empty and absent fields count as equal)."""
    return all(
        _plain(current.get(k)) == _plain(v) for k, v in wanted.items() if k != "lastTransitionTime"
    )


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v not in (None, "", {}, False)} or None
    return None if value in ("", {}, False) else value


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _go_duration(seconds: float) -> str:
    """Whole seconds as Go prints a time.Duration: 10s, 1m20s, 5m0s."""
    minutes, secs = divmod(math.ceil(seconds), 60)
    if not minutes:
        return f"{secs}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m{secs}s" if hours else f"{minutes}m{secs}s"


def _port(pod: dict[str, Any]) -> int:
    return int(pod["spec"]["containers"][0].get("ports", [{}])[0].get("containerPort", 8080))


def _revision(pod: dict[str, Any]) -> dict[str, str]:
    revision = pod["metadata"].get("labels", {}).get("modeldeploy.io/revision")
    return {"revision": revision} if revision else {}
