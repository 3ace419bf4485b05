"""Tables for the child builders: each spec shape → the objects the operator applies."""

from __future__ import annotations

import pytest
from core_fixtures import make_md
from modeldeploy.children import (
    build_deployment,
    build_hpa,
    build_service,
    model_location,
    server_env,
)
from modeldeploy.naming import REVISION, shorten

IMAGE = "registry.example/modelserver:1"


def env_of(deployment: dict) -> dict[str, str]:
    return {
        e["name"]: e["value"]
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }


def test_deployment_runs_the_serving_image_with_the_model_settings():
    md = make_md({"model": {"version": "v7", "sha256": "a" * 64, "predictProba": True}})
    deployment = build_deployment(md, "abc1234567", IMAGE, replicas=3)
    assert deployment["metadata"]["name"] == "fraud-abc1234567"
    assert deployment["spec"]["replicas"] == 3
    env = env_of(deployment)
    assert env["MODELSERVER_MODEL_URI"] == "s3://models/fraud/v7/model.joblib"
    assert env["MODELSERVER_FORMAT"] == "sklearn"
    assert env["MODELSERVER_MODEL_NAME"] == "fraud"
    assert env["MODELSERVER_MODEL_VERSION"] == "abc1234567"
    assert env["MODELSERVER_MODEL_SHA256"] == "a" * 64
    assert env["MODELSERVER_DEFAULT_OUTPUTS"] == "predict_proba"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels[REVISION] == "abc1234567" and labels["app.kubernetes.io/version"] == "v7"
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


def test_hpa_in_charge_leaves_replicas_out_of_the_deployment():
    md = make_md({"scaling": {"minReplicas": 2, "maxReplicas": 6}})
    assert "replicas" not in build_deployment(md, "r1", IMAGE, replicas=None)["spec"]
    hpa = build_hpa(md, "fraud-r1")
    assert hpa is not None
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["scaleTargetRef"]["name"] == "fraud-r1"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


@pytest.mark.parametrize(
    ("scaling", "metric_types"),
    [
        ({"replicas": 2}, None),
        ({"minReplicas": 1, "maxReplicas": 3}, ["Resource"]),
        ({"minReplicas": 1, "maxReplicas": 3, "targetRequestsPerSecond": 50}, ["Pods"]),
        (
            {
                "minReplicas": 1,
                "maxReplicas": 3,
                "targetRequestsPerSecond": 50,
                "targetCPUUtilizationPercentage": 60,
            },
            ["Resource", "Pods"],
        ),
    ],
)
def test_hpa_metrics_follow_the_targets(scaling, metric_types):
    hpa = build_hpa(make_md({"scaling": scaling}), "fraud-r1")
    if metric_types is None:
        assert hpa is None
    else:
        assert hpa is not None
        assert [m["type"] for m in hpa["spec"]["metrics"]] == metric_types


def test_pods_meet_the_restricted_pod_security_standard():
    pod = build_deployment(make_md(), "r1", IMAGE, 1)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]["securityContext"]
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False
    volume_kinds = {next(k for k in v if k != "name") for v in pod["volumes"]}
    assert volume_kinds <= {"emptyDir", "secret", "persistentVolumeClaim", "configMap"}


def test_probes_use_the_open_inference_protocol_health_endpoints():
    container = build_deployment(make_md(), "r1", IMAGE, 1)["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert (
        container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"]
        >= 300
    )


@pytest.mark.parametrize(
    ("uri", "served", "claim"),
    [
        ("s3://b/k.joblib", "s3://b/k.joblib", None),
        ("https://h/m.onnx", "https://h/m.onnx", None),
        ("pvc://models/fraud/v7.joblib", "file:///mnt/models/models/fraud/v7.joblib", "models"),
    ],
)
def test_model_location(uri, served, claim):
    location, volume, mount = model_location(uri)
    assert location == served
    assert (volume["persistentVolumeClaim"]["claimName"] if volume else None) == claim
    assert mount is None or mount["readOnly"] is True


def test_auth_and_storage_secrets_are_mounted_not_copied():
    md = make_md(
        {
            "serving": {
                "authSecretRef": {"name": "tok", "key": "bearer"},
                "storageSecretRef": {"name": "s3"},
            }
        }
    )
    pod = build_deployment(md, "r1", IMAGE, 1)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert env_of({"spec": {"template": {"spec": pod}}})["MODELSERVER_AUTH_TOKEN_FILE"].endswith(
        "/token"
    )
    assert {
        "name": "auth",
        "secret": {"secretName": "tok", "items": [{"key": "bearer", "path": "token"}]},
    } in pod["volumes"]
    assert container["envFrom"] == [{"secretRef": {"name": "s3"}}]


def test_user_env_overrides_our_defaults():
    md = make_md(
        {
            "serving": {
                "env": [{"name": "MODELSERVER_WORKERS", "value": "4"}, {"name": "X", "value": "1"}]
            }
        }
    )
    env = server_env(md, "r1", "s3://b/k")
    names = [e["name"] for e in env]
    assert names.count("MODELSERVER_WORKERS") == 1
    assert {"name": "MODELSERVER_WORKERS", "value": "4"} in env


def test_service_selects_every_revision_of_this_model_only():
    service = build_service(make_md())
    assert service["spec"]["selector"] == {
        "modeldeploy.io/name": "fraud",
        "app.kubernetes.io/component": "model-server",
    }
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_long_names_are_shortened_with_a_hash():
    name = "a" * 70
    short = shorten(name)
    assert len(short) == 63 and short.startswith("a" * 54)
    assert shorten(name) != shorten("a" * 69 + "b")
    assert shorten("short") == "short"


def test_payload_logging_is_rendered_into_the_serving_env_and_makes_a_new_revision():
    from modeldeploy.revision import revision_of

    logging = {
        "url": "http://audit-sink.monitoring.svc:8080/events",
        "mode": "requests",
        "sampleRate": 0.1,
        "redactHeaders": ["X-User-Id", "x-session"],
    }
    md = make_md({"model": {"version": "v7"}, "serving": {"logging": logging}})
    env = env_of(build_deployment(md, "r1", IMAGE, replicas=1))
    assert env["MODELSERVER_PAYLOAD_LOG_URL"] == "http://audit-sink.monitoring.svc:8080/events"
    assert env["MODELSERVER_PAYLOAD_LOG_MODE"] == "requests"
    assert env["MODELSERVER_PAYLOAD_LOG_SAMPLE_RATE"] == "0.1"
    assert env["MODELSERVER_PAYLOAD_LOG_REDACT_HEADERS"] == "X-User-Id,x-session"
    assert env["MODELSERVER_DEPLOYMENT_NAME"] == md.metadata.name
    assert env["MODELSERVER_NAMESPACE"] == md.metadata.namespace
    assert env["MODELSERVER_MODEL_VERSION_LABEL"] == "v7"
    # The server reads these variables back into the same settings.
    from modelserver.config import load_settings

    settings = load_settings([], env)
    assert settings.payload_log_url == logging["url"]
    assert settings.payload_log_sample_rate == 0.1
    assert settings.redacted_headers == ("x-user-id", "x-session")
    # Off by default, and a change to logging is a change to the pod template: a canary.
    plain = make_md({"model": {"version": "v7"}})
    assert not [k for k in env_of(build_deployment(plain, "r1", IMAGE, 1)) if "PAYLOAD" in k]
    assert revision_of(md, IMAGE) != revision_of(plain, IMAGE)
    sampled_more = make_md(
        {"model": {"version": "v7"}, "serving": {"logging": {**logging, "sampleRate": 0.5}}}
    )
    assert revision_of(sampled_more, IMAGE) != revision_of(md, IMAGE)


def test_a_private_ca_for_the_sink_is_mounted_from_its_config_map_and_named_in_the_env():
    logging = {
        "url": "https://audit-sink.monitoring.svc:8443/events",
        "caConfigMapRef": {"name": "audit-ca", "key": "ca-bundle.pem"},
    }
    md = make_md({"serving": {"logging": logging}})
    pod = build_deployment(md, "r1", IMAGE, replicas=1)["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "payload-log-ca")
    assert volume["configMap"] == {
        "name": "audit-ca", "items": [{"key": "ca-bundle.pem", "path": "ca.crt"}]
    }  # fmt: skip
    (container,) = pod["containers"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "payload-log-ca")
    assert mount["readOnly"] is True
    env = env_of(build_deployment(md, "r1", IMAGE, replicas=1))
    assert env["MODELSERVER_PAYLOAD_LOG_CA_FILE"] == f"{mount['mountPath']}/ca.crt"
    plain = make_md({"serving": {"logging": {"url": logging["url"]}}})
    plain_pod = build_deployment(plain, "r1", IMAGE, replicas=1)["spec"]["template"]["spec"]
    assert "payload-log-ca" not in {v["name"] for v in plain_pod["volumes"]}
    assert "MODELSERVER_PAYLOAD_LOG_CA_FILE" not in env_of(build_deployment(plain, "r1", IMAGE, 1))


def test_grpc_is_a_named_port_on_the_pods_and_an_h2c_port_on_the_service():
    md = make_md({"serving": {"grpc": {"enabled": True}}})
    container = build_deployment(md, "r1", IMAGE, replicas=1)["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "grpc", "containerPort": 9000, "protocol": "TCP"},
    ]
    assert env_of(build_deployment(md, "r1", IMAGE, replicas=1))["MODELSERVER_GRPC_PORT"] == "9000"
    assert build_service(md)["spec"]["ports"][1] == {
        "name": "grpc",
        "port": 9000,
        "targetPort": "grpc",
        "protocol": "TCP",
        "appProtocol": "kubernetes.io/h2c",
    }
    # The server reads the variable back into the same setting.
    from modelserver.config import load_settings

    env = env_of(build_deployment(md, "r1", IMAGE, replicas=1))
    assert load_settings([], env).grpc_port == 9000
    custom = make_md({"serving": {"grpc": {"enabled": True, "port": 50051}}})
    assert build_service(custom)["spec"]["ports"][1]["port"] == 50051


@pytest.mark.parametrize("grpc", [None, {}, {"enabled": False}, {"enabled": False, "port": 9001}])
def test_grpc_off_renders_nothing_and_keeps_the_revision(grpc):
    from modeldeploy.revision import revision_of

    plain = make_md()
    md = make_md({"serving": {"grpc": grpc}} if grpc is not None else None)
    deployment = build_deployment(md, "r1", IMAGE, replicas=1)
    assert [
        p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    ] == ["http"]
    assert "MODELSERVER_GRPC_PORT" not in env_of(deployment)
    assert [p["name"] for p in build_service(md)["spec"]["ports"]] == ["http"]
    assert revision_of(md, IMAGE) == revision_of(plain, IMAGE)
    on = make_md({"serving": {"grpc": {"enabled": True}}})
    assert revision_of(on, IMAGE) != revision_of(plain, IMAGE)  # turning it on is a canary
