"""Write one benchmark's section of docs/benchmarks.md, leaving the other sections alone."""

from __future__ import annotations

import re
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Each section is written by the command it names; numbers from different runs are not\n"
    "comparable (the machine drifts 15-25 %), so every comparison is made inside one run.\n"
)


def replace_section(key: str, title: str, body: str) -> None:
    """Replace (or append) the section between `<!-- key:start -->` and `<!-- key:end -->`."""
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else HEADER
    section = f"<!-- {key}:start -->\n## {title}\n\n{body.strip()}\n<!-- {key}:end -->"
    pattern = re.compile(rf"<!-- {re.escape(key)}:start -->.*?<!-- {re.escape(key)}:end -->", re.S)
    text = (
        pattern.sub(lambda _: section, text)
        if pattern.search(text)
        else f"{text.rstrip()}\n\n{section}\n"
    )
    BENCHMARKS.parent.mkdir(parents=True, exist_ok=True)
    BENCHMARKS.write_text(text)
