"""A revision changes with what the pods run, and only with that."""

from __future__ import annotations

from core_fixtures import make_md
from modeldeploy.revision import revision_of

IMAGE = "img:1"


def rev(spec=None):
    return revision_of(make_md(spec).spec, IMAGE)


def test_model_serving_or_image_changes_make_a_new_revision():
    base = rev()
    assert rev({"model": {"uri": "s3://models/fraud/v8/model.joblib"}}) != base
    assert rev({"serving": {"workers": 2}}) != base
    assert revision_of(make_md().spec, "img:2") != base


def test_scaling_rollout_and_traffic_changes_keep_the_revision():
    base = rev()
    assert rev({"scaling": {"replicas": 5}}) == base
    assert rev({"rollout": {"steps": [50, 100]}}) == base
    assert rev({"scaling": {"minReplicas": 1, "maxReplicas": 4}}) == base


def test_a_default_written_out_is_the_same_revision():
    assert rev({"serving": {"port": 8080}}) == rev()
    assert len(rev()) == 10
