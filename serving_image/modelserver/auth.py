"""Optional bearer-token auth.

The token comes from a file (a mounted Kubernetes secret; re-read when it changes, so a rotated
secret takes effect without a restart) or from MODELSERVER_AUTH_TOKEN. Presented tokens are
compared with ``hmac.compare_digest`` so the time taken does not leak how much of a guess was
right.
"""

from __future__ import annotations

import hmac
import os
import time

from .config import ConfigError, Settings

_RECHECK_SECONDS = 2.0


class TokenSource:
    def __init__(self, token: bytes | None = None, path: str | None = None) -> None:
        self._token = token
        self._path = path
        self._mtime = 0.0
        self._checked = 0.0
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

    def check(self, authorization: bytes | None) -> bool:
        """Whether an Authorization header value carries the token."""
        token = self.token()
        if token is None or authorization is None:
            return False
        scheme, _, presented = authorization.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(presented.strip(), token)


def token_source(settings: Settings) -> TokenSource | None:
    """The configured token source, or None when auth is off."""
    if settings.auth_token_file:
        return TokenSource(path=settings.auth_token_file)
    if settings.auth_token:
        return TokenSource(token=settings.auth_token.strip().encode())
    return None
