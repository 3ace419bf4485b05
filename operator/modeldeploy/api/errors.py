"""Turn pydantic errors into the API server's vocabulary: ``field.path: message``."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from .rules import RULE_ERROR_TYPE


@dataclass(frozen=True)
class FieldError:
    """One problem with one field: ``path`` is dotted like kubectl's (``spec.steps[1]``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InvalidModelDeployment(ValueError):
    """A ModelDeployment the API server would refuse; ``errors`` lists every field at fault."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("invalid ModelDeployment: " + "; ".join(str(e) for e in errors))


def _path(error: ErrorDetails, prefix: str) -> str:
    path = prefix
    for part in error["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    if error["type"] == RULE_ERROR_TYPE:
        path += (error.get("ctx") or {}).get("field_path", "")
    return path.removeprefix(".")


def format_errors(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    """Flatten a pydantic ValidationError into field errors, one per path (the first)."""
    seen: dict[str, FieldError] = {}
    for error in exc.errors(include_url=False):
        path = _path(error, prefix)
        seen.setdefault(path, FieldError(path, error["msg"].removeprefix("Value error, ")))
    return list(seen.values())
