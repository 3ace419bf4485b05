"""The manifest corpus through the pydantic models: what the API server refuses, they refuse.

Each file under tests/manifests/invalid has one defect and ``# expect:`` lines naming the field
(and, for rules, the message). tests/integration/test_api_validation.py applies the same files to
a real API server with the same expectations, which is what keeps the two validators in step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from modeldeploy.api import InvalidModelDeployment, parse_model_deployment

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"


def load(kind: str) -> list[tuple[str, dict[str, Any], list[str]]]:
    """(file name, object, expected fragments) for every manifest under ``kind``."""
    cases = []
    for path in sorted((MANIFESTS / kind).glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        expects = [
            line.split(":", 1)[1].strip()
            for line in text.splitlines()
            if line.startswith("# expect:")
        ]
        cases.append((path.name, yaml.safe_load(text), expects))
    return cases


INVALID = load("invalid")
VALID = load("valid")


def test_the_corpus_is_substantial_and_every_invalid_file_says_what_to_expect() -> None:
    assert len(INVALID) >= 20
    assert len(VALID) >= 5
    for name, _, expects in INVALID:
        assert expects, f"{name} has no '# expect:' line"
    for name, _, expects in VALID:
        assert not expects, f"{name} is valid but expects an error"


@pytest.mark.parametrize(("name", "obj", "expects"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_manifest_is_refused_naming_the_field(
    name: str, obj: dict[str, Any], expects: list[str]
) -> None:
    with pytest.raises(InvalidModelDeployment) as info:
        parse_model_deployment(obj)
    message = str(info.value)
    for fragment in expects:
        assert fragment.lower() in message.lower(), f"{name}: {fragment!r} not in {message!r}"


@pytest.mark.parametrize(("name", "obj", "expects"), VALID, ids=[c[0] for c in VALID])
def test_valid_manifest_is_accepted(name: str, obj: dict[str, Any], expects: list[str]) -> None:
    md = parse_model_deployment(obj)
    assert md.metadata.name == obj["metadata"]["name"]
