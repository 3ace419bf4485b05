"""A revision changes with what the pods run, and only with that."""

from __future__ import annotations

import pytest
from core_fixtures import make_md
from modeldeploy.naming import REVISION
from modeldeploy.observed import Observed
from modeldeploy.revision import SPEC_DIGEST, revision_of, rollout_cause, spec_digest

IMAGE = "img:1"


def rev(spec=None):
    return revision_of(make_md(spec), IMAGE)


def test_model_serving_or_image_changes_make_a_new_revision():
    base = rev()
    assert rev({"model": {"uri": "s3://models/fraud/v8/model.joblib"}}) != base
    assert rev({"serving": {"workers": 2}}) != base
    assert revision_of(make_md(), "img:2") != base


def test_scaling_rollout_and_traffic_changes_keep_the_revision():
    base = rev()
    assert rev({"scaling": {"replicas": 5}}) == base
    assert rev({"rollout": {"steps": [50, 100]}}) == base
    assert rev({"scaling": {"minReplicas": 1, "maxReplicas": 4}}) == base


def test_a_default_written_out_is_the_same_revision():
    assert rev({"serving": {"port": 8080}}) == rev()
    assert len(rev()) == 10


def test_anything_the_operator_renders_differently_is_a_new_revision_but_not_a_spec_change():
    md = make_md()
    base = revision_of(md, IMAGE)
    with_credential = make_md({"serving": {"authSecretRef": {"name": "token"}}})
    assert revision_of(with_credential, IMAGE, "ab" * 32) != revision_of(with_credential, IMAGE)
    assert revision_of(md, IMAGE, "ab" * 32) == base, "no auth: the credential's hash is not sent"
    assert spec_digest(make_md().spec) == spec_digest(md.spec)
    assert spec_digest(make_md({"serving": {"port": 8080}}).spec) == spec_digest(md.spec)
    assert spec_digest(make_md({"serving": {"workers": 2}}).spec) != spec_digest(md.spec)


def observed_stable(md, revision: str, digest: str | None) -> Observed:
    annotations = {SPEC_DIGEST: digest} if digest else {}
    deployment = {"metadata": {"name": f"fraud-{revision}", "labels": {REVISION: revision},
                               "annotations": annotations}}  # fmt: skip
    return Observed(deployments=[deployment])


@pytest.mark.parametrize(
    ("stable_spec", "digest_kept", "cause"),
    [
        ({}, True, "Operator"),  # same spec: a new default image or template did it
        ({"model": {"uri": "s3://models/fraud/v6/model.joblib"}}, True, "Spec"),
        ({}, False, "Operator"),  # a Deployment from an operator that kept no digest
    ],
)
def test_rollout_cause(stable_spec, digest_kept, cause):
    md = make_md(status={"stableRevision": "old"})
    digest = spec_digest(make_md(stable_spec).spec) if digest_kept else None
    assert rollout_cause(md, observed_stable(md, "old", digest), "new") == cause
    assert rollout_cause(md, observed_stable(md, "old", digest), "old") is None
