"""pydantic JSON Schema → structural schema, one conversion at a time."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pytest
from modeldeploy.api.rules import ApiModel, Rule
from modeldeploy.api.schema import pydantic_schema, structural_problems, to_structural
from modeldeploy.api.types import Quantity
from pydantic import BaseModel, Field


class Inner(ApiModel):
    """Inner docstring."""

    size: int = Field(default=3, ge=1, description="A size.")
    tags: list[str] = Field(default_factory=list, max_length=4, description="Tags.")


class Outer(ApiModel):
    """Outer docstring
    spread over two lines.

    Second paragraph."""

    inner: Inner = Field(default_factory=Inner, description="The inner part.")
    maybe: Inner | None = Field(default=None, description="Optional inner.")
    ratio: float = Field(default=0.5, gt=0, lt=1, description="A ratio.")
    fixed: Literal["only"] = Field(default="only", description="A constant.")
    free: dict[str, Any] = Field(default_factory=dict, description="Anything.")
    labels: dict[str, str] = Field(default_factory=dict, max_length=8, description="Labels.")
    cpu: Quantity = Field(default="1", description="CPU.")

    __rules__ = (Rule(cel="self.ratio < 1.0", message="ratio below one", check=lambda o: True),)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return to_structural(pydantic_schema(Outer))


def test_refs_are_inlined_and_titles_dropped(schema: dict[str, Any]) -> None:
    text = repr(schema)
    assert "$ref" not in text and "$defs" not in text and "'title'" not in text
    assert schema["properties"]["inner"]["properties"]["size"]["type"] == "integer"


def test_optional_becomes_the_plain_type_without_a_null_default(schema: dict[str, Any]) -> None:
    maybe = schema["properties"]["maybe"]
    assert maybe["type"] == "object"
    assert maybe["description"] == "Optional inner."
    assert "default" not in maybe and "anyOf" not in maybe


def test_field_description_wins_over_the_model_docstring(schema: dict[str, Any]) -> None:
    assert schema["properties"]["inner"]["description"].startswith("The inner part.")


def test_docstrings_are_reflowed_by_paragraph(schema: dict[str, Any]) -> None:
    assert schema["description"] == "Outer docstring spread over two lines.\n\nSecond paragraph."


def test_factory_defaults_are_written_in_full_without_empty_collections(
    schema: dict[str, Any],
) -> None:
    assert schema["properties"]["inner"]["default"] == {"size": 3}
    assert "default" not in schema["properties"]["free"]
    assert "default" not in schema["properties"]["inner"]["properties"]["tags"]


def test_scalar_defaults_are_spelled_out_for_kubectl_explain(schema: dict[str, Any]) -> None:
    assert schema["properties"]["ratio"]["description"] == "A ratio. Defaults to 0.5."
    assert schema["properties"]["cpu"]["description"] == "CPU. Defaults to 1."


def test_exclusive_bounds_use_the_openapi_v3_boolean_form(schema: dict[str, Any]) -> None:
    ratio = schema["properties"]["ratio"]
    assert (ratio["minimum"], ratio["exclusiveMinimum"]) == (0, True)
    assert (ratio["maximum"], ratio["exclusiveMaximum"]) == (1, True)


def test_literal_becomes_an_enum(schema: dict[str, Any]) -> None:
    assert schema["properties"]["fixed"]["enum"] == ["only"]
    assert schema["properties"]["fixed"]["type"] == "string"


def test_free_form_maps_preserve_unknown_fields_and_typed_maps_stay_typed(
    schema: dict[str, Any],
) -> None:
    assert schema["properties"]["free"] == {
        "description": "Anything.",
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    labels = schema["properties"]["labels"]
    assert labels["additionalProperties"] == {"type": "string"}
    assert labels["maxProperties"] == 8


def test_closed_objects_do_not_say_additional_properties_false(schema: dict[str, Any]) -> None:
    assert "additionalProperties" not in schema
    assert "additionalProperties" not in schema["properties"]["inner"]


def test_quantities_use_the_int_or_string_form(schema: dict[str, Any]) -> None:
    cpu = schema["properties"]["cpu"]
    assert cpu["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert cpu["x-kubernetes-int-or-string"] is True
    assert "type" not in cpu


def test_model_rules_become_x_kubernetes_validations(schema: dict[str, Any]) -> None:
    assert schema["x-kubernetes-validations"] == [
        {"rule": "self.ratio < 1.0", "message": "ratio below one"}
    ]


def test_defaults_can_be_left_out_entirely() -> None:
    bare = to_structural(pydantic_schema(Outer), defaults=False)
    assert "default" not in repr(bare)
    assert bare["properties"]["ratio"]["description"] == "A ratio."


def test_unsupported_unions_are_refused() -> None:
    class Either(BaseModel):
        value: int | str = Field(description="Either.")

    with pytest.raises(ValueError, match="no structural equivalent"):
        to_structural(pydantic_schema(Either))


def test_undescribed_fields_are_reported() -> None:
    class Bare(BaseModel):
        name: Annotated[str, Field(max_length=3)]

    assert structural_problems(to_structural(pydantic_schema(Bare))) == [".name: no description"]
