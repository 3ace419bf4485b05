"""Operator settings from the environment, with errors that name the variable."""

from __future__ import annotations

import pytest
from modeldeploy.config import OperatorConfig


def test_defaults_watch_every_namespace():
    config = OperatorConfig.from_env({})
    assert config.namespaces == () and config.metrics_port == 9090


def test_values_are_parsed():
    config = OperatorConfig.from_env(
        {
            "MODELDEPLOY_NAMESPACES": "a, b",
            "MODELDEPLOY_SERVING_IMAGE": "img:2",
            "MODELDEPLOY_RESYNC_SECONDS": "2.5",
        }
    )
    assert config.namespaces == ("a", "b")
    assert config.serving_image == "img:2" and config.resync_seconds == 2.5


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"MODELDEPLOY_METRICS_PORT": "http"}, "MODELDEPLOY_METRICS_PORT"),
        ({"MODELDEPLOY_RESYNC_SECONDS": "-1"}, "must be positive"),
        ({"MODELDEPLOY_LOG_FORMAT": "xml"}, "MODELDEPLOY_LOG_FORMAT"),
    ],
)
def test_bad_values_name_the_variable(env, fragment):
    with pytest.raises(ValueError, match=fragment):
        OperatorConfig.from_env(env)


def test_the_selector_reaches_kopfs_watch_of_modeldeployments():
    """kopf sends settings.watching.label_selectors to the API server as labelSelector; the key
    must match the ModelDeployment resource (a "group/plural" string does not)."""
    import kopf
    from kopf._cogs.structs.references import Resource
    from modeldeploy.handlers import configure_settings

    settings = kopf.OperatorSettings()
    configure_settings(settings, OperatorConfig.from_env({"MODELDEPLOY_SELECTOR": "shard=a"}))
    modeldeployments = Resource(
        "modeldeploy.io", "v1alpha1", "modeldeployments", kind="ModelDeployment", namespaced=True
    )
    deployments = Resource("apps", "v1", "deployments", kind="Deployment", namespaced=True)
    assert settings.watching.label_selectors.collect(modeldeployments) == ["shard=a"]
    assert settings.watching.label_selectors.collect(deployments) == []
