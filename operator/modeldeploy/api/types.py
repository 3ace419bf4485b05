"""Reusable field types: durations, model URIs, quantities and Kubernetes names.

Each type validates the same way in pydantic and in the API server. Patterns avoid backslashes
(``[.]`` rather than ``\\.``) so they read the same in Python, in RE2 and inside CEL string
literals.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from .rules import Rule, Rules

# --- durations ---------------------------------------------------------------------------------

DURATION_PATTERN = "^([0-9]+([.][0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:[.][0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Return the seconds in a Go-style duration string such as ``30s``, ``250ms`` or ``1h30m``.

    The accepted form is the one the CRD accepts (and CEL's ``duration()`` understands): one or
    more ``<number><unit>`` parts with units ms, s, m or h. Examples: ``"1m30s"`` → 90.0,
    ``"1.5h"`` → 5400.0, ``"250ms"`` → 0.25.
    """
    if not isinstance(text, str) or not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(
            f"invalid duration {text!r}: use numbers with units ms, s, m or h, "
            "e.g. 30s, 5m or 1h30m"
        )
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


MAX_DURATION_LENGTH = 32


class DurationRange(Rules):
    """``Annotated`` marker for a duration string bounded to ``[minimum, maximum]``.

    Example: ``interval: Annotated[str, DurationRange("1s", "1h")]``. The CEL rule checks the
    pattern before calling ``duration()``, so a malformed value gets this message rather than a
    CEL evaluation error; ``maxLength`` keeps the rule's estimated cost small.
    """

    def __init__(self, minimum: str = "0s", maximum: str = "24h") -> None:
        low, high = parse_duration(minimum), parse_duration(maximum)

        def check(value: str) -> bool:
            return (
                len(value) <= MAX_DURATION_LENGTH
                and re.fullmatch(DURATION_PATTERN, value) is not None
                and low <= parse_duration(value) <= high
            )

        super().__init__(
            Rule(
                cel=(
                    f"self.matches('{DURATION_PATTERN}') && duration(self) >= duration('{minimum}')"
                    f" && duration(self) <= duration('{maximum}')"
                ),
                message=f"must be a duration from {minimum} to {maximum}, such as 30s, 5m or 1h30m",
                check=check,
            )
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = super().__get_pydantic_json_schema__(schema, handler)
        json_schema["maxLength"] = MAX_DURATION_LENGTH
        return json_schema


# --- model URIs --------------------------------------------------------------------------------

# [!-~] is every printable ASCII character except space: URIs must be percent-encoded.
MODEL_URI_PATTERN = (
    "^(file:///[!-~]+"
    # A host is required: https:///model.joblib has none and would fail only at pod start.
    "|https?://[a-zA-Z0-9][!-~]*"
    "|(s3|gs)://[a-z0-9][-a-z0-9._]*[a-z0-9]/[!-~]+"
    "|pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[!-~]+)$"
)
MODEL_URI_MESSAGE = (
    "uri must be file:///path, http(s)://host/path, s3://bucket/key, gs://bucket/key "
    "or pvc://claim-name/path (no spaces)"
)

ModelUri = Annotated[
    str,
    Field(min_length=8, max_length=2048),
    Rules(
        Rule(
            cel=f"self.matches('{MODEL_URI_PATTERN}')",
            message=MODEL_URI_MESSAGE,
            check=lambda v: bool(re.fullmatch(MODEL_URI_PATTERN, v)),
        )
    ),
]

# --- Kubernetes names --------------------------------------------------------------------------

DNS1035_LABEL = "^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
LABEL_VALUE = "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
QUALIFIED_NAME = (
    "^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
ENV_VAR_NAME = "^[-._a-zA-Z][-._a-zA-Z0-9]*$"
_IDENTIFIERS = "[A-Za-z_][A-Za-z0-9_]*([.][A-Za-z_][A-Za-z0-9_]*)*"
PYTHON_IMPORT_PATH = f"^{_IDENTIFIERS}(:{_IDENTIFIERS})?$"

ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN)]
"""The name of a Secret, ConfigMap or other namespaced object (a DNS-1123 subdomain)."""

LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]
"""A string that is also a valid label value, so the operator can copy it onto pods."""

# --- quantities --------------------------------------------------------------------------------

QUANTITY_PATTERN = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
MAX_QUANTITY_LENGTH = 64
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def parse_quantity(value: int | str) -> Decimal:
    """Return the exact value of a Kubernetes quantity: ``"500m"`` → 0.5, ``"1Gi"`` → 1073741824.

    Used to compare requests with limits the way the API server's ``quantity()`` does.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    if not isinstance(value, str) or not re.fullmatch(QUANTITY_PATTERN, value):
        raise ValueError(f"invalid quantity {value!r}: use e.g. 500m, 2, 512Mi or 1Gi")
    match = re.fullmatch(r"([0-9.]+)([KMGTPE]i|[numkMGTPE]?)([eE][-+]?[0-9.]+)?", value)
    if match is None:  # the pattern above guarantees a match; this guards refactors
        raise ValueError(f"invalid quantity {value!r}")
    number, suffix, exponent = match.groups()
    amount = Decimal(number)
    if exponent:
        return amount * Decimal(10) ** int(Decimal(exponent[1:]))
    if suffix in _BINARY:
        return amount * _BINARY[suffix]
    return amount.scaleb(_DECIMAL[suffix])


QUANTITY_MESSAGE = "must be a quantity such as 500m, 2, 512Mi or 1Gi"


def _validate_quantity(value: Any) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if (
        isinstance(value, str)
        and len(value) <= MAX_QUANTITY_LENGTH
        and re.fullmatch(QUANTITY_PATTERN, value)
    ):
        return value
    raise ValueError(QUANTITY_MESSAGE)


class _QuantitySchema:
    """Validates an int ≥ 0 or a quantity string; renders Kubernetes' int-or-string schema.

    One validator rather than an ``int | str`` union, so a bad value yields one message instead
    of one per union member.
    """

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(_validate_quantity)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "maxLength": MAX_QUANTITY_LENGTH,
            "minimum": 0,
            "x-kubernetes-int-or-string": True,
        }


Quantity = Annotated[int | str, _QuantitySchema()]
"""A resource quantity such as ``500m``, ``2`` or ``1Gi`` (an integer or a string)."""
