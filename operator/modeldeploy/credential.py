"""The operator's own credential for model pods that require a bearer token.

Why a credential of its own: the operator must run its model gates and read /metrics on models
that require a token, but it must not be able to read users' Secrets (its RBAC grants no Secret
access outside its own namespace). So it holds a random token of its own, kept in one Secret in
its own namespace — created on first start, or supplied by an admin — and the pods of a model with
auth get only the token's SHA-256 (`MODELSERVER_OPERATOR_TOKEN_SHA256`). The model server accepts
that token on its read-only and gate endpoints (health, metadata, metrics, v2 infer) and nowhere
else; a user's inference traffic still needs the user's token, which the operator never sees.

Rotation: write a new `token` into the Secret and move the old value to `previousToken`, then
restart the operator. Pods made since carry the new hash; until every older pod is gone, the
operator presents the previous token to pods that refuse the new one.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from kubernetes.client.exceptions import ApiException

from .kube import Kube

log = logging.getLogger("modeldeploy.credential")
SECRET_NAME = "modeldeploy-operator-credential"
TOKEN_KEY = "token"
PREVIOUS_KEY = "previousToken"
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class Credential:
    """The tokens the operator presents to model pods, current first."""

    tokens: tuple[str, ...]

    @property
    def verifier(self) -> str:
        """The SHA-256 (hex) of the current token: what pods are told to accept."""
        return verifier_of(self.tokens[0])


def verifier_of(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def operator_namespace(configured: str | None) -> str:
    """Where the credential Secret lives: the configured namespace, else the pod's own."""
    if configured:
        return configured
    if IN_CLUSTER_NAMESPACE.exists():
        return IN_CLUSTER_NAMESPACE.read_text().strip()
    return os.environ.get("POD_NAMESPACE") or "default"


def load_or_create(kube: Kube, namespace: str) -> Credential:
    """Read the credential Secret, creating it with a fresh random token if it does not exist.

    Two replicas starting at once may both try to create it: the loser reads the winner's.
    """
    secret = kube.get("v1", "Secret", namespace, SECRET_NAME)
    if secret is None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": SECRET_NAME,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/part-of": "modeldeploy"},
            },
            "type": "Opaque",
            "stringData": {TOKEN_KEY: secrets.token_hex(32)},
        }
        try:
            kube.create(body)
            log.info("created the operator credential Secret %s/%s", namespace, SECRET_NAME)
        except ApiException as error:
            if error.status != 409:
                raise
        secret = kube.get("v1", "Secret", namespace, SECRET_NAME)
        if secret is None:
            raise RuntimeError(f"Secret {namespace}/{SECRET_NAME} vanished right after creation")
    data = secret.get("data") or {}
    if TOKEN_KEY not in data:
        raise RuntimeError(f"Secret {namespace}/{SECRET_NAME} has no key {TOKEN_KEY!r}")
    tokens = [base64.b64decode(data[TOKEN_KEY]).decode().strip()]
    if data.get(PREVIOUS_KEY):
        tokens.append(base64.b64decode(data[PREVIOUS_KEY]).decode().strip())
    return Credential(tuple(t for t in tokens if t))
