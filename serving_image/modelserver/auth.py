"""Optional bearer-token auth: the user's token, and a narrower credential for the operator.

The user's token comes from a file (a mounted Kubernetes secret; re-read when it changes, so a
rotated secret takes effect without a restart) or from MODELSERVER_AUTH_TOKEN, and opens every
endpoint. The operator never sees that token: it holds its own, and pods carry only that token's
SHA-256 (MODELSERVER_OPERATOR_TOKEN_SHA256), which the app accepts on the endpoints the operator's
model gates and metric scrapes call. A digest in the pod spec reveals nothing usable, and the
operator's token cannot reach what the gates do not need (KServe v1 predict).

Presented tokens (and digests) are compared with ``hmac.compare_digest`` so the time taken does
not leak how much of a guess was right.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time

from .config import ConfigError, Settings

_RECHECK_SECONDS = 2.0


def bearer(authorization: bytes | None) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header value; None for anything else."""
    if authorization is None:
        return None
    scheme, _, presented = authorization.partition(b" ")
    token = presented.strip()
    if scheme.lower() != b"bearer" or not token:
        return None
    return token


class TokenSource:
    def __init__(
        self,
        token: bytes | None = None,
        path: str | None = None,
        operator_sha256: str | None = None,
    ) -> None:
        self._token = token
        self._path = path
        self._mtime = 0.0
        self._checked = 0.0
        self._operator_digest = (
            operator_sha256.strip().lower().encode() if operator_sha256 else None
        )
        if path is not None:
            self._reload(force=True)

    def _reload(self, force: bool = False) -> None:
        assert self._path is not None
        try:
            mtime = os.stat(self._path).st_mtime
        except OSError as exc:
            if force:
                raise ConfigError(f"--auth-token-file {self._path} cannot be read: {exc}") from exc
            return  # keep the last good token while a secret is being swapped
        if force or mtime != self._mtime:
            with open(self._path, "rb") as fh:
                token = fh.read().strip()
            if not token:
                if force:
                    raise ConfigError(f"--auth-token-file {self._path} is empty")
                return
            self._token, self._mtime = token, mtime

    def token(self) -> bytes | None:
        if self._path is not None:
            now = time.monotonic()
            if now - self._checked > _RECHECK_SECONDS:
                self._checked = now
                self._reload()
        return self._token

    @property
    def users_need_a_token(self) -> bool:
        """Whether a user token is configured (auth is on); with only the operator's digest,
        every endpoint but ``/v2/shadow`` stays open."""
        return self._token is not None

    def check(self, authorization: bytes | None) -> bool:
        """Whether an Authorization header value carries the user's token."""
        token = self.token()
        presented = bearer(authorization)
        if token is None or presented is None:
            return False
        return hmac.compare_digest(presented, token)

    def check_operator(self, authorization: bytes | None) -> bool:
        """Whether an Authorization header value carries the token whose digest is configured."""
        presented = bearer(authorization)
        if self._operator_digest is None or presented is None:
            return False
        digest = hashlib.sha256(presented).hexdigest().encode()
        return hmac.compare_digest(digest, self._operator_digest)


def token_source(settings: Settings) -> TokenSource | None:
    """The configured token source, or None when neither credential is configured.

    The operator's digest alone does not turn auth on (``users_need_a_token`` is False): without
    a user token every endpoint is open anyway. It still guards ``/v2/shadow``, which decides
    where copies of other callers' requests go and so is never open.
    """
    operator = settings.operator_token_sha256
    if settings.auth_token_file:
        return TokenSource(path=settings.auth_token_file, operator_sha256=operator)
    if settings.auth_token:
        return TokenSource(token=settings.auth_token.strip().encode(), operator_sha256=operator)
    if operator:
        return TokenSource(operator_sha256=operator)
    return None
