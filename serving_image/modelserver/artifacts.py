"""Fetching model artifacts: local paths, file://, http(s)://, s3:// and gs:// through fsspec.

Remote artifacts are streamed to a local cache file (written to a temporary name and renamed, so
a half-written file is never loaded and concurrent workers cannot see each other's partial
downloads) while their sha256 is computed. When an expected sha256 is given the digest must match
before anything is unpickled: a pickle runs code when it loads, so a wrong file must never reach
the runtime.

Credentials come from the environment the way each fsspec backend reads them (AWS_* variables or
AWS_SHARED_CREDENTIALS_FILE for s3fs, GOOGLE_APPLICATION_CREDENTIALS for gcsfs), so a mounted
secret works without any setting here; ``storage_options`` adds backend options as JSON.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import ModelLoadError

_CHUNK = 1 << 20
# fsspec protocol -> the pip extra of the serving image that provides it
_EXTRAS = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "http": "serving",
    "https": "serving",
}


def redact(uri: str) -> str:
    """The URI without user info or query string (pre-signed URLs carry secrets there)."""
    parts = urlsplit(uri)
    if not parts.scheme or parts.scheme == "file":
        return uri
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def is_local(uri: str) -> bool:
    scheme = urlsplit(uri).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def local_path(uri: str) -> str:
    return urlsplit(uri).path if uri.startswith("file://") else uri


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_digest(uri: str, expected: str | None, actual: str) -> None:
    if expected is not None and actual != expected.strip().lower():
        raise ModelLoadError(
            f"sha256 mismatch for {redact(uri)}: expected {expected.strip().lower()}, got "
            f"{actual}; refusing to load it"
        )


def _cache_path(uri: str, cache_dir: str) -> str:
    key = hashlib.sha256(uri.encode()).hexdigest()[:24]
    name = os.path.basename(urlsplit(uri).path) or "artifact"
    return os.path.join(cache_dir, "artifacts", key, name)


def _open_remote(uri: str, storage_options: Mapping[str, Any]) -> Any:
    import fsspec

    protocol = urlsplit(uri).scheme
    try:
        return fsspec.open(uri, "rb", **storage_options).open()
    except ImportError as exc:
        extra = _EXTRAS.get(protocol, "serving")
        raise ModelLoadError(
            f"{protocol}:// artifacts need a package that is not installed ({exc.name or exc}); "
            f"install the extra 'modelserver[{extra}]'"
        ) from exc
    except ValueError as exc:
        if "Protocol not known" in str(exc):
            raise ModelLoadError(
                f"unsupported artifact scheme {protocol}:// in {redact(uri)}: use a path, file://, "
                "http(s)://, s3:// or gs://"
            ) from exc
        raise


def fetch(
    uri: str, cache_dir: str, sha256: str | None, storage_options: Mapping[str, Any] | None = None
) -> str:
    """A local path holding the artifact at ``uri``, verified against ``sha256`` when given.

    Raises ModelLoadError with a message that says what is wrong: missing, unreadable, or not
    the expected bytes.
    """
    if is_local(uri):
        path = local_path(uri)
        if not os.path.isfile(path):
            raise ModelLoadError(f"artifact not found: {path} does not exist or is not a file")
        try:
            _check_digest(uri, sha256, sha256_file(path) if sha256 else "")
        except OSError as exc:
            raise ModelLoadError(f"artifact {path} cannot be read: {exc}") from exc
        return path

    target = _cache_path(uri, cache_dir)
    if sha256 and os.path.isfile(target) and sha256_file(target) == sha256.strip().lower():
        return target  # verified copy from an earlier start or another worker
    os.makedirs(os.path.dirname(target), exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                src = _open_remote(uri, storage_options or {})
                with src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            except FileNotFoundError as exc:
                raise ModelLoadError(f"artifact not found: {redact(uri)} ({exc})") from exc
            except ModelLoadError:
                raise
            except Exception as exc:  # every backend has its own error types
                raise ModelLoadError(
                    f"could not download {redact(uri)}: {type(exc).__name__}: {exc}"
                ) from exc
        if os.path.getsize(tmp) == 0:
            raise ModelLoadError(f"artifact {redact(uri)} is empty (0 bytes)")
        _check_digest(uri, sha256, digest.hexdigest())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
