"""The child cache as worked examples: what a list, a watch event and our own write do to it."""

from __future__ import annotations

from modeldeploy.informer import Store, parse_lines


def obj(name: str, owner: str | None = "fraud", rv: str = "1", namespace: str = "ml") -> dict:
    labels = {"modeldeploy.io/name": owner} if owner else {}
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "resourceVersion": rv}
    }


def test_objects_are_found_by_their_owner():
    store = Store("apps/v1", "Deployment")
    store.put(obj("fraud-a"))
    store.put(obj("fraud-b"))
    store.put(obj("other-a", owner="other"))
    assert [o["metadata"]["name"] for o in store.owned_by("ml", "fraud")] == ["fraud-a", "fraud-b"]
    assert store.owned_by("ml", "fraud")[0]["kind"] == "Deployment", "list items get their kind"
    assert store.delete("ml", "fraud-a") == ("ml", "fraud")
    assert [o["metadata"]["name"] for o in store.owned_by("ml", "fraud")] == ["fraud-b"]


def test_a_late_watch_event_does_not_undo_our_own_newer_write():
    store = Store("apps/v1", "Deployment")
    store.put(obj("fraud-a", rv="7"))  # the object our apply returned
    store.put(obj("fraud-a", rv="5"))  # the watch catching up with an older version
    assert store.get("ml", "fraud-a")["metadata"]["resourceVersion"] == "7"


def test_a_relist_reports_every_owner_whose_children_changed():
    store = Store("v1", "Pod")
    store.replace([obj("p1", rv="1"), obj("p2", owner="other", rv="1")], None)
    touched = store.replace([obj("p1", rv="1"), obj("p3", owner="third", rv="2")], None)
    assert touched == {("ml", "other"), ("ml", "third")}, "unchanged p1 touches nobody"
    assert store.names() == [("ml", "p1"), ("ml", "p3")]


def test_a_namespaced_relist_leaves_other_namespaces_alone():
    store = Store("v1", "Pod")
    store.put(obj("p1", namespace="a"))
    store.put(obj("p2", namespace="b"))
    store.replace([], "a")
    assert store.names() == [("b", "p2")]


def test_watch_lines_split_across_chunks():
    chunks = [b'{"type": "ADDED", "obj', b'ect": {}}\n{"type"', b': "BOOKMARK"}\n']
    assert [e["type"] for e in parse_lines(iter(chunks))] == ["ADDED", "BOOKMARK"]


class OnePage:
    def get_path(self, path: str, query: list) -> dict:
        return {"items": [], "metadata": {"resourceVersion": "7"}}


def test_a_broken_watch_holds_the_passes_until_its_kind_is_listed_again():
    import threading

    from modeldeploy.informer import ChildCache, Reflector

    cache = ChildCache()
    for store in cache.stores.values():
        store.synced.set()
    assert cache.synced()
    stopped = threading.Event()
    stopped.set()  # the back-off's wait returns at once
    pods = Reflector(OnePage(), cache.stores["Pod"], "ml", lambda owner: None, stopped)  # type: ignore[arg-type]
    pods._back_off("connection refused")
    assert not cache.synced()
    assert pods._list() == "7"
    assert cache.synced()
