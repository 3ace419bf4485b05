"""Turn a pydantic JSON Schema into a Kubernetes structural schema (OpenAPI v3 subset).

What changes and why:

- ``$ref``/``$defs`` are inlined: CRD schemas cannot reference.
- ``title`` is dropped: ``kubectl explain`` shows descriptions, titles are noise.
- ``Optional[X]`` (``anyOf: [X, null]``) becomes ``X``: an unset field is absent, not null, so
  CEL ``has()`` and pruning behave as users expect.
- ``exclusiveMinimum: n`` (draft 2020-12) becomes ``minimum: n, exclusiveMinimum: true``.
- ``const`` becomes a one-value ``enum``; ``additionalProperties: false`` is dropped (the API
  server prunes and, with strict field validation, reports unknown fields).
- A free-form object (``dict[str, Any]``) becomes ``x-kubernetes-preserve-unknown-fields``.
- Defaults come from the models (``default_factory`` included). A nested model's default is
  written out in full because the API server validates defaults against CEL rules as they are,
  without nested defaulting. Empty lists and maps get no default (absent already means empty).
- Docstring line breaks inside a paragraph are joined, so ``kubectl explain`` reflows them,
  and scalar defaults are appended to the description ("Defaults to 60s."), because
  ``kubectl explain`` does not show a schema's ``default``.

Every property must end up with a ``description`` and a ``type`` (or be int-or-string, or
preserve unknown fields); :func:`structural_problems` lists those that do not.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import core_schema

# Keys a CRD schema may carry that we emit; anything else from pydantic is a bug to look at.
ALLOWED_KEYS = frozenset(
    {
        "type",
        "format",
        "description",
        "default",
        "enum",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "items",
        "properties",
        "required",
        "additionalProperties",
        "x-kubernetes-int-or-string",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-validations",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
    }
)


class _Generator(GenerateJsonSchema):
    """Pydantic's generator, but defaults made by ``default_factory`` are written too."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        if "default_factory" not in schema:
            return super().get_default_value(schema)
        if schema.get("default_factory_takes_data"):
            return NoDefault
        value = schema["default_factory"]()  # type: ignore[call-arg]
        if isinstance(value, list | dict) and not value:
            # An absent list or map already means empty; writing [] into every object is noise.
            return NoDefault
        if isinstance(value, BaseModel):
            # Written out in full, not as {}: the API server checks a default against the CEL
            # rules without filling in the nested defaults first.
            return _without_empty(value.model_dump(mode="json", by_alias=True, exclude_none=True))
        return value


def _without_empty(value: Any) -> Any:
    """Drop empty lists and maps, which have no schema default (absent means empty)."""
    if isinstance(value, dict):
        cleaned = {k: _without_empty(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v != [] and v != {}}
    return value


def pydantic_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema (validation mode, camelCase names), defaults included."""
    return model.model_json_schema(by_alias=True, mode="validation", schema_generator=_Generator)


def to_structural(schema: dict[str, Any], *, defaults: bool = True) -> dict[str, Any]:
    """Convert a pydantic JSON Schema with ``$defs`` into an inlined structural schema.

    ``defaults=False`` leaves every default out (for status, which the operator writes whole).
    """
    if not defaults:
        schema = _drop_defaults(schema)
    defs = schema.get("$defs", {})
    root = {k: v for k, v in schema.items() if k != "$defs"}
    return _convert(root, defs)


def _drop_defaults(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_defaults(v) for k, v in value.items() if k != "default"}
    if isinstance(value, list):
        return [_drop_defaults(v) for v in value]
    return value


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline a ``$ref``; keys next to the ref (description, default) win over the target's."""
    if "$ref" not in node:
        return node
    target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
    target = _resolve(target, defs)
    siblings = {k: v for k, v in node.items() if k != "$ref"}
    return {**target, **siblings}


def _unwrap_optional(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [X, {type: null}]`` → X, keeping the outer description and default."""
    options = node.get("anyOf")
    if not options:
        return node
    non_null = [o for o in options if o.get("type") != "null"]
    if len(non_null) == len(options):
        return node
    if len(non_null) != 1:
        raise ValueError(f"unsupported union with null: {options}")
    outer = {k: v for k, v in node.items() if k != "anyOf"}
    if "default" in outer and outer["default"] is None:
        del outer["default"]
    return {**_resolve(non_null[0], defs), **outer}


def _reflow(text: str) -> str:
    """Join lines within a paragraph; keep blank lines between paragraphs."""
    paragraphs = re.split(r"\n\s*\n", text.strip())
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def _default_note(node: dict[str, Any]) -> str:
    """`` Defaults to 60s.`` for scalar and list defaults: ``kubectl explain`` omits defaults."""
    default = node.get("default")
    if default is None or default == "" or isinstance(default, dict):
        return ""
    text = default if isinstance(default, str) else json.dumps(default)
    return f" Defaults to {text}."


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = _unwrap_optional(_resolve(node, defs), defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title":
            continue
        if key == "description":
            out[key] = _reflow(value) + _default_note(node)
        elif key == "properties":
            out[key] = {name: _convert(prop, defs) for name, prop in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs)
        elif key == "additionalProperties":
            if isinstance(value, dict) and value:
                out[key] = _convert(value, defs)
            elif value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            # additionalProperties: false is what structural pruning does anyway
        elif key == "const":
            out["enum"] = [value]
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "anyOf" and node.get("x-kubernetes-int-or-string"):
            out[key] = value
        elif key in ALLOWED_KEYS:
            out[key] = copy.deepcopy(value)
        else:
            raise ValueError(f"schema key {key!r} has no structural equivalent: {node}")
    if out.get("type") == "object" and "properties" in out:
        out.pop("x-kubernetes-preserve-unknown-fields", None)
    return out


def structural_problems(schema: dict[str, Any], path: str = "") -> list[str]:
    """Every property lacking a description or a type, as ``path: problem`` lines."""
    problems: list[str] = []
    typed = (
        "type" in schema
        or schema.get("x-kubernetes-int-or-string")
        or schema.get("x-kubernetes-preserve-unknown-fields")
    )
    if not typed:
        problems.append(f"{path or '<root>'}: no type")
    for name, prop in schema.get("properties", {}).items():
        child = f"{path}.{name}"
        if not prop.get("description"):
            problems.append(f"{child}: no description")
        problems.extend(structural_problems(prop, child))
    if "items" in schema:
        problems.extend(structural_problems(schema["items"], f"{path}[]"))
    if isinstance(schema.get("additionalProperties"), dict):
        problems.extend(structural_problems(schema["additionalProperties"], f"{path}{{}}"))
    return problems
