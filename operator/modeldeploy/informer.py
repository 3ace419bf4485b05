"""Watch-fed caches of the children: a pass reads memory, not the API server.

Why our own reflector rather than kopf's watches: a pass needs the children as a consistent,
queryable set (every Deployment, Service, HPA, Pod, HTTPRoute of one ModelDeployment), from any
worker thread; kopf delivers events to handlers but keeps no such store. This is client-go's
informer, reduced to what the operator needs:

- one list + watch per kind (and per namespace when the RBAC is namespaced), filtered on the
  server by the label every child carries (`app.kubernetes.io/managed-by=modeldeploy` with the
  owner label present), so the operator never receives the rest of the cluster;
- the store is replaced by each list and kept current by the watch (ADDED, MODIFIED, DELETED),
  resumed from the last resourceVersion (bookmarks keep it fresh), relisted on 410 Gone;
- a broken watch marks its store unsynced until the relist, and passes wait for it: after an API
  server outage a pass must not judge pods by the state they had when the watch broke (a canary
  pod "not ready for 60 s" that turned ready while the operator was blind);
- every change calls `on_change(namespace, owner)`, which queues that ModelDeployment;
- writes the operator makes are put into the store at once (`store.put` of the response), so the
  next pass does not plan from its own stale copy.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from .kube import Kube, collection_path
from .naming import MANAGED_BY, MANAGER, OWNER

log = logging.getLogger("modeldeploy.informer")
CHILD_SELECTOR = f"{MANAGED_BY}={MANAGER},{OWNER}"
WATCH_SECONDS = 300
# Relist attempts while the API server is unreachable: 1, 2, 4, 8, 8, ... s, so the caches (and the
# passes that wait for them) are back within seconds of its return.
MAX_BACKOFF_SECONDS = 8.0
CHILD_KINDS = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("v1", "Pod"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("gateway.networking.k8s.io/v1", "GRPCRoute"),
)
Owner = tuple[str, str]  # (namespace, ModelDeployment name)


def _rv(obj: dict[str, Any]) -> int | None:
    value = obj.get("metadata", {}).get("resourceVersion")
    return int(value) if value and str(value).isdigit() else None


@dataclass
class Store:
    """One kind's objects by (namespace, name), with an index by owning ModelDeployment."""

    api_version: str
    kind: str
    _objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    _by_owner: dict[Owner, set[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    synced: threading.Event = field(default_factory=threading.Event)
    served: bool = True  # False when the API server does not serve the kind (no Gateway API)

    def put(self, obj: dict[str, Any]) -> Owner | None:
        """Store `obj` unless the store already holds a newer version; returns its owner."""
        obj.setdefault("apiVersion", self.api_version)
        obj.setdefault("kind", self.kind)
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        owner = self._owner(obj)
        with self._lock:
            held = self._objects.get(key)
            newer, older = _rv(obj), _rv(held) if held else None
            if held is not None and newer is not None and older is not None and newer < older:
                return owner  # a late watch event for a version we already wrote through
            if held is not None:
                self._unindex(key, held)
            self._objects[key] = obj
            if owner:
                self._by_owner.setdefault(owner, set()).add(meta["name"])
        return owner

    def delete(self, namespace: str, name: str) -> Owner | None:
        with self._lock:
            held = self._objects.pop((namespace, name), None)
            if held is None:
                return None
            self._unindex((namespace, name), held)
            return self._owner(held)

    def replace(self, objects: list[dict[str, Any]], namespace: str | None) -> set[Owner]:
        """A fresh list (of one namespace, or all): returns every owner whose set changed."""
        before = {k: _rv(o) for k, o in self._snapshot() if namespace is None or k[0] == namespace}
        touched: set[Owner] = set()
        seen = set()
        for obj in objects:
            meta = obj["metadata"]
            key = (meta["namespace"], meta["name"])
            seen.add(key)
            if before.get(key, -1) != _rv(obj):
                owner = self.put(obj)
                if owner:
                    touched.add(owner)
        for key in set(before) - seen:
            owner = self.delete(*key)
            if owner:
                touched.add(owner)
        return touched

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._objects.get((namespace, name))

    def names(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._objects)

    def owned_by(self, namespace: str, owner: str) -> list[dict[str, Any]]:
        with self._lock:
            names = sorted(self._by_owner.get((namespace, owner), ()))
            return [self._objects[(namespace, n)] for n in names if (namespace, n) in self._objects]

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)

    def _snapshot(self) -> list[tuple[tuple[str, str], dict[str, Any]]]:
        with self._lock:
            return list(self._objects.items())

    def _unindex(self, key: tuple[str, str], obj: dict[str, Any]) -> None:
        owner = self._owner(obj)
        if owner and owner in self._by_owner:
            self._by_owner[owner].discard(key[1])
            if not self._by_owner[owner]:
                del self._by_owner[owner]

    @staticmethod
    def _owner(obj: dict[str, Any]) -> Owner | None:
        meta = obj.get("metadata", {})
        name = (meta.get("labels") or {}).get(OWNER)
        return (meta["namespace"], name) if name else None


class Reflector:
    """List + watch one kind (in one namespace, or all) into a Store, in a daemon thread."""

    def __init__(
        self,
        kube: Kube,
        store: Store,
        namespace: str | None,
        on_change: Callable[[Owner], None],
        stop: threading.Event,
        selector: str = CHILD_SELECTOR,
    ) -> None:
        self.kube, self.store, self.namespace = kube, store, namespace
        self.on_change, self.stop, self.selector = on_change, stop, selector
        self.failures = 0

    def start(self) -> Reflector:
        name = f"watch-{self.store.kind.lower()}-{self.namespace or 'all'}"
        threading.Thread(target=self._run, name=name, daemon=True).start()
        return self

    def _path(self) -> str:
        if self.namespace:
            return collection_path(self.store.api_version, self.store.kind, self.namespace)
        prefix = "/api" if "/" not in self.store.api_version else "/apis"
        plural = collection_path(self.store.api_version, self.store.kind, "x").rsplit("/", 1)[1]
        return f"{prefix}/{self.store.api_version}/{plural}"

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                version = self._list()
                self.failures = 0
                self._watch(version)
            except ApiException as error:
                if error.status == 404:
                    # The kind is not served (no Gateway API): nothing to cache; look again later.
                    self.store.served = False
                    self.store.synced.set()
                    self.stop.wait(60)
                    continue
                self._back_off(f"API server answered {error.status} {error.reason}")
            except Exception as error:  # a dropped connection, a timeout: relist after a pause
                self._back_off(f"{type(error).__name__}: {error}")

    def _back_off(self, why: str) -> None:
        # Until the relist, the store may miss changes: passes wait (ChildCache.synced), rather
        # than judge a pod by a state that is minutes old.
        self.store.synced.clear()
        self.failures += 1
        delay = min(MAX_BACKOFF_SECONDS, 2.0 ** (self.failures - 1))
        log.warning(
            "watch of %s in %s failed (%d in a row), relisting in %.0fs: %s",
            self.store.kind, self.namespace or "all namespaces", self.failures, delay, why[:200],
        )  # fmt: skip
        self.stop.wait(delay)

    def _list(self) -> str:
        items, version, token = [], "", ""
        while True:
            query: list[tuple[str, Any]] = [("labelSelector", self.selector), ("limit", 500)]
            if token:
                query.append(("continue", token))
            page = self.kube.get_path(self._path(), query)
            items += page.get("items", [])
            version = page.get("metadata", {}).get("resourceVersion", version)
            token = page.get("metadata", {}).get("continue", "")
            if not token:
                break
        self.store.served = True
        for owner in self.store.replace(items, self.namespace):
            self.on_change(owner)
        self.store.synced.set()
        return version

    def _watch(self, version: str) -> None:
        query: list[tuple[str, Any]] = [
            ("labelSelector", self.selector), ("watch", "true"), ("allowWatchBookmarks", "true"),
            ("resourceVersion", version), ("timeoutSeconds", WATCH_SECONDS),
        ]  # fmt: skip
        for event in self.kube.watch_path(self._path(), query, WATCH_SECONDS + 30):
            if self.stop.is_set():
                return
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "BOOKMARK":
                continue
            if kind == "ERROR":
                code = obj.get("code")
                if code == 410:
                    return  # too old a resourceVersion: relist
                raise ApiException(status=code or 500, reason=obj.get("message", "watch error"))
            meta = obj.get("metadata", {})
            owner = (
                self.store.delete(meta["namespace"], meta["name"])
                if kind == "DELETED"
                else self.store.put(obj)
            )
            if owner:
                self.on_change(owner)


@dataclass
class ChildCache:
    """Every child kind's store, fed by reflectors."""

    stores: dict[str, Store] = field(
        default_factory=lambda: {kind: Store(api, kind) for api, kind in CHILD_KINDS}
    )

    def start(
        self,
        kube: Kube,
        namespaces: tuple[str, ...],
        on_change: Callable[[Owner], None],
        stop: threading.Event,
    ) -> ChildCache:
        for store in self.stores.values():
            for namespace in namespaces or (None,):
                Reflector(kube, store, namespace, on_change, stop).start()
        return self

    def wait_synced(self, timeout: float) -> bool:
        return all(store.synced.wait(timeout) for store in self.stores.values())

    def synced(self) -> bool:
        """Every kind listed since its watch last broke: the cache holds the current picture."""
        return all(store.synced.is_set() for store in self.stores.values())

    def children(self, kind: str, namespace: str, owner: str) -> list[dict[str, Any]]:
        return self.stores[kind].owned_by(namespace, owner)

    def versions(self, namespace: str, owner: str) -> tuple[tuple[str, str, str], ...]:
        """(kind, name, resourceVersion) of each child of `owner`: changes whenever one does."""
        return tuple(
            sorted(
                (kind, child["metadata"]["name"], str(child["metadata"].get("resourceVersion")))
                for kind, store in self.stores.items()
                for child in store.owned_by(namespace, owner)
            )
        )

    def remember(self, obj: dict[str, Any]) -> None:
        """Write-through: the object the API server returned for our own write."""
        store = self.stores.get(obj.get("kind", ""))
        if store is not None and obj.get("metadata", {}).get("name"):
            store.put(obj)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        store = self.stores.get(kind)
        if store is not None:
            store.delete(namespace, name)


def parse_lines(chunks: Iterator[bytes]) -> Iterator[dict[str, Any]]:
    """JSON objects from a newline-delimited stream split into arbitrary chunks."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)
    if buffer.strip():
        yield json.loads(buffer)
