"""Drift detection: what counts as a difference between desired and observed children."""

from __future__ import annotations

import copy

import pytest
from modeldeploy.diff import matches

DESIRED = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "d", "labels": {"a": "1"}, "annotations": {}},
    "spec": {
        "replicas": 2,
        "template": {
            "spec": {
                "containers": [
                    {"name": "s", "resources": {"requests": {"cpu": "0.5", "memory": "1Gi"}}}
                ]
            }
        },
    },
}


def observed(**changes):
    obj = copy.deepcopy(DESIRED)
    obj["metadata"].pop("annotations")  # the API server drops empty maps
    obj["metadata"]["uid"] = "x"  # and adds fields of its own
    obj["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "500m"
    obj["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    for path, value in changes.items():
        node = obj
        *parents, leaf = path.split(".")
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        node[leaf] = value
    return obj


def test_server_defaults_and_canonical_quantities_are_not_drift():
    assert matches(DESIRED, observed())


@pytest.mark.parametrize(
    "change",
    [
        {"spec.replicas": 3},
        {"metadata.labels": {"a": "2"}},
        {"spec.template.spec.containers.0.resources.requests.cpu": "600m"},
        {"spec.template.spec.containers": []},
    ],
)
def test_a_changed_field_we_set_is_drift(change):
    assert not matches(DESIRED, observed(**change))


def test_a_missing_object_never_matches():
    assert not matches(DESIRED, None)


def test_a_selector_must_match_exactly():
    desired = {"spec": {"selector": {"app": "a"}}}
    assert matches(desired, {"spec": {"selector": {"app": "a"}}})
    assert not matches(desired, {"spec": {"selector": {"app": "a", "pin": "r1"}}})
