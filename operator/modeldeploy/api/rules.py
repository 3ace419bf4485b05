"""Cross-field rules written once, enforced twice: by the API server (CEL) and by pydantic.

Every rule pairs a CEL expression, which the CRD generator copies into
``x-kubernetes-validations``, with a Python predicate that the models run after validation. Both
sides report the same ``message``, so ``kubectl apply`` and the operator reject a manifest with
the same words. The shared invalid-manifest corpus under ``tests/manifests/invalid`` is what keeps
the two halves honest: every file there must be refused by both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

Reason = Literal[
    "FieldValueInvalid", "FieldValueRequired", "FieldValueForbidden", "FieldValueDuplicate"
]

RULE_ERROR_TYPE = "cel_rule"
"""The pydantic error type of a failed rule; its context carries the rule's ``field_path``."""


@dataclass(frozen=True)
class Rule:
    """One validation rule with its CEL form (for the API server) and Python form (for pydantic).

    ``check`` receives the validated value (a model instance for model rules, the plain value for
    field rules) and returns True when the value is acceptable. ``field_path`` is relative to the
    object the rule is attached to, written as CEL wants it (``.minReplicas``); the API server and
    :func:`modeldeploy.api.errors.format_errors` both append it to the error's location.
    Messages are static: a CEL ``messageExpression`` that concatenates values is estimated as
    unbounded by the API server's cost checker and refused.
    """

    cel: str
    message: str
    check: Callable[[Any], bool]
    field_path: str | None = None
    reason: Reason | None = None

    def to_schema(self) -> dict[str, str]:
        """Render the rule as one ``x-kubernetes-validations`` entry."""
        out = {"rule": self.cel, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        return out

    def enforce(self, value: Any) -> None:
        """Raise a pydantic error carrying this rule's message when ``check`` fails."""
        if self.check(value):
            return
        # Only context keys are substituted in the template, so the message passes through as is.
        context = {"field_path": self.field_path or ""}
        raise PydanticCustomError(RULE_ERROR_TYPE, self.message, context)


class Rules:
    """``Annotated`` marker that attaches rules to a single field's value.

    Example: ``steps: Annotated[list[int], Rules(STRICTLY_INCREASING)]`` adds the CEL rule to the
    ``steps`` schema and runs the same check after pydantic validated the list.
    """

    def __init__(self, *rules: Rule) -> None:
        self.rules = rules

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def run(value: Any) -> Any:
            for rule in self.rules:
                rule.enforce(value)
            return value

        return core_schema.no_info_after_validator_function(run, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        _append_rules(json_schema, self.rules)
        return json_schema


def _append_rules(json_schema: dict[str, Any], rules: tuple[Rule, ...]) -> None:
    if rules:
        json_schema.setdefault("x-kubernetes-validations", []).extend(r.to_schema() for r in rules)


def _model_schema_extra(schema: dict[str, Any], cls: type) -> None:
    _append_rules(schema, getattr(cls, "__rules__", ()))


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields refused, rules enforced.

    Subclasses list their cross-field rules in ``__rules__``; they run after field validation
    (so they see defaults, as CEL sees the API server's defaults) and land in the generated CRD.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        json_schema_extra=_model_schema_extra,
    )

    __rules__: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _enforce_rules(self) -> Self:
        for rule in type(self).__rules__:
            rule.enforce(self)
        return self
