"""Names and labels of the children a ModelDeployment owns.

One place decides them so that the builders, the readers and the tests agree. Names that could
exceed a limit are shortened with a hash of the full name, so two long names never collide.
"""

from __future__ import annotations

import hashlib

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "modeldeploy"
INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"
APP_NAME = "app.kubernetes.io/name"
APP_VERSION = "app.kubernetes.io/version"
SERVER_COMPONENT = "model-server"
REVISION = "modeldeploy.io/revision"
# Which ModelDeployment a child belongs to: the same as INSTANCE, under our own prefix, so a user's
# own app.kubernetes.io labels can never make us adopt or delete their objects.
OWNER = "modeldeploy.io/name"

DNS_LABEL_MAX = 63


def shorten(name: str, limit: int = DNS_LABEL_MAX) -> str:
    """`name` if it fits in `limit`, else a prefix plus 8 hex of its sha256.

    Example: shorten("a" * 70) == "a" * 54 + "-" + 8 hex digits (63 characters).
    """
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


def deployment_name(md_name: str, revision: str) -> str:
    """One Deployment per revision: promotion relabels nothing and restarts no pod."""
    return f"{md_name}-{revision}"


def service_name(md_name: str) -> str:
    """The Service clients call; its name is the ModelDeployment's (a DNS-1035 label already)."""
    return md_name


def role_service_name(md_name: str, role: str) -> str:
    """`<name>-stable` / `<name>-canary`, the Gateway API router's backends."""
    return shorten(f"{md_name}-{role}")


def hpa_name(md_name: str) -> str:
    return md_name


def selector_labels(md_name: str) -> dict[str, str]:
    """Labels every serving pod of `md_name` carries, whatever its revision."""
    return {OWNER: md_name, COMPONENT: SERVER_COMPONENT}


def owned_selector(md_name: str) -> str:
    """Label selector for every child the operator made for `md_name`."""
    return f"{OWNER}={md_name},{MANAGED_BY}={MANAGER}"


def common_labels(md_name: str) -> dict[str, str]:
    return {
        APP_NAME: "modelserver",
        INSTANCE: md_name,
        MANAGED_BY: MANAGER,
        OWNER: md_name,
        COMPONENT: SERVER_COMPONENT,
    }
