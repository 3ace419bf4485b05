"""`kubectl modeldeploy` (alias `kubectl md`): look at a ModelDeployment's rollout and ask things
of it without editing its spec.

    kubectl modeldeploy status NAME [-n NS] [--watch]   revisions, pods, steps, checks, holds
    kubectl modeldeploy history NAME [-n NS]            finished rollouts, newest first
    kubectl modeldeploy promote|abort|retry NAME        one-shot requests (annotations)
    kubectl modeldeploy pause|resume NAME               hold / release the canary

Requests are the annotations of operator/modeldeploy/actions.py. A command writes one, then waits
(`--timeout`, 60 s) until the operator acknowledges it — in `status.actions` for the one-shot
requests, in the phase for pause and resume — and says what came of it. Installed as the console
scripts `kubectl-modeldeploy` and `kubectl-md`, which kubectl finds on PATH as plugins.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from .screen import (
    PAUSED,
    PREFIX,
    Style,
    conditions,
    history_screen,
    revision_label,
    status_screen,
    truthy,
)

GROUP, VERSION, PLURAL = "modeldeploy.io", "v1alpha1", "modeldeployments"
NAME_LABEL = "modeldeploy.io/name"
POLL_SECONDS = 0.5


class Failure(Exception):
    """A request that cannot be made or was not acknowledged: printed, exit code 1."""


class Cluster:
    """The few API calls the plugin makes, with the user's kubeconfig (KUBECONFIG, ~/.kube/config,
    or in-cluster) through the official client's ApiClient, raw JSON in and out.

    Only the ApiClient: the typed APIs build hundreds of pydantic models on import, seconds
    that a command run from a shell should not cost.
    """

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None):
        from kubernetes import config
        from kubernetes.client.api_client import ApiClient

        default_ns = "default"
        try:
            self.api = config.new_client_from_config(config_file=kubeconfig, context=context)
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
            if context:
                active = next((c for c in contexts if c["name"] == context), active)
            default_ns = (active or {}).get("context", {}).get("namespace") or default_ns
        except config.ConfigException:
            if kubeconfig or context:
                raise
            config.load_incluster_config()
            self.api = ApiClient()
            with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
                default_ns = f.read().strip()
        self.namespace = namespace or default_ns

    def _call(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        method, url, headers, body, _ = self.api.param_serialize(
            method, path, query_params=query, header_params=headers, body=body,
            auth_settings=["BearerToken"],
        )  # fmt: skip
        response = self.api.call_api(method, url, headers, body, _request_timeout=(5, 20))
        response.read()
        if not 200 <= response.status < 300:
            raise ApiException(http_resp=response)
        return dict(json.loads(response.data))

    def _path(self, name: str = "") -> str:
        base = f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}"
        return f"{base}/{name}" if name else base

    def get(self, name: str) -> dict[str, Any]:
        return self._call("GET", self._path(name))

    def children(self, name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The model's Deployments and Pods (by the label the operator puts on both)."""
        query = [("labelSelector", f"{NAME_LABEL}={name}")]
        ns = self.namespace
        deployments = self._call("GET", f"/apis/apps/v1/namespaces/{ns}/deployments", query)
        pods = self._call("GET", f"/api/v1/namespaces/{ns}/pods", query)
        return deployments["items"], pods["items"]

    def annotate(self, name: str, annotations: dict[str, str | None]) -> None:
        """A JSON merge patch of metadata.annotations (None removes one)."""
        self._call(
            "PATCH", self._path(name), body={"metadata": {"annotations": annotations}},
            content_type="application/merge-patch+json",
        )  # fmt: skip


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def fresh_token() -> str:
    """A value never written before: the time to the millisecond, e.g. 2026-11-30T10:00:00.123Z."""
    return now().isoformat(timespec="milliseconds").replace("+00:00", "Z")


def wait_for(
    cluster: Cluster,
    name: str,
    done: Callable[[dict[str, Any]], bool],
    timeout: float,
    waiting_for: str,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        md = cluster.get(name)
        if done(md):
            return md
        if time.monotonic() >= deadline:
            raise Failure(
                f"timed out after {timeout:g}s waiting for the operator to acknowledge "
                f"{waiting_for} on {cluster.namespace}/{name}. Is the modeldeploy operator "
                f"running and watching namespace {cluster.namespace}? The request stays in "
                "place and is acted on when the operator gets to it."
            )
        time.sleep(POLL_SECONDS)


def _status(md: dict[str, Any]) -> dict[str, Any]:
    return md.get("status") or {}


def request(cluster: Cluster, name: str, action: str, timeout: float) -> str:
    """promote, abort or retry: write a fresh token, wait for status.actions, report."""
    before = _status(cluster.get(name))
    where = f"{cluster.namespace}/{name}"
    canary = before.get("canaryRevision")
    if action in ("promote", "abort") and not canary:
        stable = revision_label(before.get("stableRevision", "?"), before.get("stableVersion"))
        raise Failure(
            f"{where} has no canary to {action} (phase {before.get('phase')}, stable {stable})"
        )
    if action == "retry" and not before.get("rejectedRevisions"):
        raise Failure(f"{where} has no rejected revision to retry")
    token = fresh_token()
    key = f"{PREFIX}{action}"
    cluster.annotate(name, {key: token})
    md = wait_for(
        cluster,
        name,
        lambda md: (_status(md).get("actions") or {}).get(action) == token,
        timeout,
        f"{key}={token}",
    )
    after = _status(md)
    head = f"{key}={token} acknowledged"
    if action == "promote":
        history: list[dict[str, Any]] = after.get("history") or []
        entry = next((h for h in history if h.get("revision") == canary), {})
        if entry.get("outcome") == "Promoted":
            return f"{head}: revision {canary} is stable ({entry.get('message', '')})"
        return f"{head}: {canary} was not promoted (it had ended: {entry.get('message', '?')})"
    if action == "abort":
        record = after.get("lastRollback") or {}
        if record.get("revision") == canary:
            stable = revision_label(after.get("stableRevision", "?"), after.get("stableVersion"))
            return f"{head}: revision {canary} rolled back, traffic on stable {stable}"
        return f"{head}: {canary} had already ended"
    started = after.get("canaryRevision")
    if started:
        return f"{head}: rejected revisions may be tried again; {started} starts as a canary"
    return f"{head}: rejected revisions may be tried again when the spec asks for them"


def pause(cluster: Cluster, name: str, timeout: float) -> str:
    cluster.annotate(name, {PAUSED: "true"})
    where = f"{cluster.namespace}/{name}"
    md = cluster.get(name)
    if not _status(md).get("canaryRevision"):
        return f"{PAUSED}=true set on {where}: no canary now; the next one holds at its first step"
    md = wait_for(
        cluster,
        name,
        lambda md: _status(md).get("phase") == "Paused" or not _status(md).get("canaryRevision"),
        timeout,
        f"{PAUSED}=true",
    )
    status = _status(md)
    if not status.get("canaryRevision"):
        return f"{PAUSED}=true set on {where}; the canary had ended before it could pause"
    progress = conditions(status).get("Progressing", {}).get("message", "")
    return f"paused: {progress}"


def resume(cluster: Cluster, name: str, timeout: float) -> str:
    md = cluster.get(name)
    where = f"{cluster.namespace}/{name}"
    if truthy((md["metadata"].get("annotations") or {}).get(PAUSED)):
        cluster.annotate(name, {PAUSED: None})
    if ((md.get("spec") or {}).get("rollout") or {}).get("paused"):
        raise Failure(
            f"{where} stays paused: spec.rollout.paused is true (declared in Git; change it there)"
        )

    def resumed(md: dict[str, Any]) -> bool:
        status = _status(md)
        return conditions(status).get("Progressing", {}).get("reason") != "Paused"

    md = wait_for(cluster, name, resumed, timeout, f"the removal of {PAUSED}")
    status = _status(md)
    if not status.get("canaryRevision"):
        return f"resumed: {where} has no canary now"
    stalled = conditions(status).get("Stalled", {})
    progress = conditions(status).get("Progressing", {}).get("message", "")
    if stalled.get("status") == "True":
        return f"resumed, but still held ({stalled.get('reason')}): {stalled.get('message', '')}"
    return f"resumed: {progress}"


def _terminal_size() -> os.terminal_size:
    return shutil.get_terminal_size((120, 40))


def show_status(cluster: Cluster, name: str, style: Style) -> list[str]:
    md = cluster.get(name)
    deployments, pods = cluster.children(name)
    return status_screen(md, deployments, pods, now(), style)


def watch(cluster: Cluster, name: str, style: Style, interval: float) -> None:
    """Redraw in place until Ctrl-C: on a terminal the cursor goes back up over the last frame
    and writes over it (the scrollback keeps one frame), lines cut to the terminal's width;
    into a pipe each changed frame is printed after a blank line."""
    tty = sys.stdout.isatty()
    drawn, last = 0, None
    if tty:
        sys.stdout.write("\x1b[?25l")  # hide the cursor while redrawing
    try:
        while True:
            lines = show_status(cluster, name, style)
            if tty:
                size = _terminal_size()
                lines = [_cut(line, size.columns - 1) for line in lines[: max(1, size.lines - 1)]]
                # Each line overwrites the old one and clears its rest, then what is left below
                # is cleared: never a clear of the whole screen, which terminals like tmux
                # (scroll-on-clear) would push into the scrollback, a frame per redraw.
                frame = "".join(f"{line}\x1b[K\n" for line in lines) + "\x1b[J"
                up = f"\x1b[{drawn}F" if drawn else ""
                sys.stdout.write(up + frame)
                drawn = len(lines)
            elif lines != last:
                sys.stdout.write(("\n" if last is not None else "") + "\n".join(lines) + "\n")
            last = lines
            sys.stdout.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        if tty:
            sys.stdout.write("\x1b[?25h")
            sys.stdout.flush()


def _cut(line: str, width: int) -> str:
    """`line` cut to `width` visible characters, colour escapes kept."""
    out, seen, escape = [], 0, False
    for char in line:
        if char == "\x1b":
            escape = True
        if escape:
            out.append(char)
            escape = char != "m"
            continue
        if seen >= width:
            continue
        out.append(char)
        seen += 1
    return "".join(out)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="kubectl modeldeploy",
        description=(
            "Look at a ModelDeployment's rollout and promote, abort, retry, pause or resume it "
            "through annotations the operator acknowledges in status (alias: kubectl md)."
        ),
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("name", help="the ModelDeployment")
    common.add_argument("-n", "--namespace", help="its namespace (default: the context's)")
    common.add_argument("--context", help="kubeconfig context to use")
    common.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube)")
    waits = argparse.ArgumentParser(add_help=False)
    waits.add_argument(
        "--timeout",
        type=float,
        default=60,
        help="seconds to wait for the operator's acknowledgement (default 60)",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = commands.add_parser(
        "status",
        parents=[common],
        help="revisions, pods, step, weights, checks, holds, the last rollback",
    )
    status.add_argument("-w", "--watch", action="store_true", help="redraw until Ctrl-C")
    status.add_argument("--interval", type=float, default=1.0, help="seconds between redraws")
    status.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    commands.add_parser("history", parents=[common], help="finished rollouts, newest first")
    helps = {
        "promote": "promote the canary now, skipping its remaining steps",
        "abort": "roll the canary back now and reject its revision",
        "retry": "try rejected revisions again (without changing the spec)",
        "pause": "hold the canary at its step (annotation modeldeploy.io/paused)",
        "resume": "remove modeldeploy.io/paused",
    }
    for action, text in helps.items():
        commands.add_parser(action, parents=[common, waits], help=text)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. A closed pipe (`kubectl md history x | head`) ends it quietly, as for
    `cat`; SIGPIPE itself stays ignored, since a default SIGPIPE would also kill the process
    when the client writes to an API server connection the server already closed (on Ctrl-C,
    with no traceback and no exit status)."""
    try:
        code = _main(argv)
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:  # Ctrl-C before anything was asked of the cluster: no traceback
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush
        return 141


def _main(argv: Sequence[str] | None) -> int:
    args = parser().parse_args(argv)
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config import ConfigException
    from urllib3.exceptions import HTTPError

    where = f"{args.namespace or '(default namespace)'}/{args.name}"
    try:
        cluster = Cluster(args.kubeconfig, args.context, args.namespace)
        where = f"{cluster.namespace}/{args.name}"
        if args.command == "status":
            color = args.color == "always" or (
                args.color == "auto" and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
            )
            style = Style(color=color)
            if args.watch:
                watch(cluster, args.name, style, args.interval)
            else:
                print("\n".join(show_status(cluster, args.name, style)))
        elif args.command == "history":
            print("\n".join(history_screen(cluster.get(args.name), now())))
        elif args.command == "pause":
            print(pause(cluster, args.name, args.timeout))
        elif args.command == "resume":
            print(resume(cluster, args.name, args.timeout))
        else:
            print(request(cluster, args.name, args.command, args.timeout))
    except Failure as failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    except ApiException as error:
        if error.status == 404:
            print(f"error: ModelDeployment {where} not found", file=sys.stderr)
        else:
            reason = error.reason
            with contextlib.suppress(ValueError):
                reason = json.loads(error.body or "{}").get("message") or reason
            print(f"error: the API server answered {error.status}: {reason}", file=sys.stderr)
        return 1
    except ConfigException as error:
        print(f"error: no usable kubeconfig: {error}", file=sys.stderr)
        return 1
    except HTTPError as error:
        print(f"error: cannot reach the API server: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
