"""Pure helpers of the serving benchmark: read wrk's output, summarise rounds, write the table.

Kept apart from the orchestration (run.py) so tests/serving can check them without servers.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

BEGIN = "<!-- serving-bench:begin -->"
END = "<!-- serving-bench:end -->"
# The gRPC rows have their own markers, so a gRPC-only run rewrites only them.
GRPC_BEGIN = "<!-- serving-grpc-bench:begin -->"
GRPC_END = "<!-- serving-grpc-bench:end -->"

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


def parse_wrk(output: str) -> WrkResult:
    """Requests/s, p50, p99, requests and errors (socket errors + non-2xx) of ``wrk --latency``."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    count = re.search(r"(\d+) requests in", output)
    if not (rps and p50 and p99 and count):
        raise ValueError(f"unexpected wrk output:\n{output}")
    errors = 0
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sock:
        errors += sum(int(g) for g in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    return WrkResult(
        float(rps.group(1)), _ms(p50.group(1)), _ms(p99.group(1)), int(count.group(1)), errors
    )


# ghz ends a timed run by closing its connections under the calls still in flight; those calls
# fail on the client's side ("use of closed network connection") and are not the server's errors.
_GHZ_CLIENT_CLOSED = "use of closed network connection"


def parse_ghz(output: str) -> WrkResult:
    """The same summary from ``ghz --format json``: errors are calls that did not end OK,
    except those ghz itself cut off when the run's time was up."""
    import json

    doc = json.loads(output)
    latencies = {int(d["percentage"]): d["latency"] / 1e6 for d in doc["latencyDistribution"]}
    count = int(doc["count"])
    ok = int((doc.get("statusCodeDistribution") or {}).get("OK", 0))
    cut = sum(n for e, n in (doc.get("errorDistribution") or {}).items() if _GHZ_CLIENT_CLOSED in e)
    return WrkResult(float(doc["rps"]), latencies[50], latencies[99], count - cut, count - ok - cut)


@dataclass
class Cell:
    """All rounds of one (server, model, concurrency)."""

    runs: list[WrkResult] = field(default_factory=list)

    def median(self) -> WrkResult:
        return WrkResult(
            statistics.median(r.rps for r in self.runs),
            statistics.median(r.p50_ms for r in self.runs),
            statistics.median(r.p99_ms for r in self.runs),
            int(statistics.median(r.requests for r in self.runs)),
            sum(r.errors for r in self.runs),
        )


def _fmt_ms(ms: float) -> str:
    return f"{ms * 1000:.0f} µs" if ms < 1 else (f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms")


def render_table(
    servers: Sequence[str],
    labels: Mapping[str, str],
    models: Sequence[str],
    concurrencies: Sequence[int],
    cells: Mapping[tuple[str, str, int], Cell],
    rss_mb: Mapping[tuple[str, str], float],
    ready_s: Mapping[tuple[str, str], float],
) -> str:
    """One markdown table per model: a row per server; req/s, p50 and p99 per concurrency."""
    out = []
    for model in models:
        header = ["server"]
        for c in concurrencies:
            header += [f"c={c} req/s", f"c={c} p50", f"c={c} p99"]
        header += ["errors", "RSS", "start→ready"]
        out.append(f"**{model}**\n")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        for server in servers:
            row = [labels.get(server, server)]
            errors = 0
            for c in concurrencies:
                cell = cells.get((server, model, c))
                if cell is None or not cell.runs:
                    row += ["-", "-", "-"]
                    continue
                med = cell.median()
                errors += med.errors
                row += [f"{med.rps:,.0f}", _fmt_ms(med.p50_ms), _fmt_ms(med.p99_ms)]
            row.append(str(errors))
            rss = rss_mb.get((server, model))
            row.append(f"{rss:.0f} MB" if rss is not None else "-")
            ready = ready_s.get((server, model))
            row.append(f"{ready:.2f} s" if ready is not None else "-")
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out)


def replace_section(
    document: str,
    generated: str,
    heading: str = "## Serving",
    begin: str = BEGIN,
    end: str = END,
) -> str:
    """Put ``generated`` between the markers in the Serving section, creating what is missing."""
    block = f"{begin}\n{generated.rstrip()}\n{end}"
    if begin in document and end in document:
        start = document.index(begin)
        stop = document.index(end) + len(end)
        return document[:start] + block + document[stop:]
    if heading not in document:
        base = document.rstrip() + "\n\n" if document.strip() else "# Benchmarks\n\n"
        return f"{base}{heading}\n\n{block}\n"
    at = document.index(heading) + len(heading)
    return document[:at] + "\n\n" + block + document[at:]


def ratio_lines(
    ours: str,
    peers: Iterable[str],
    models: Sequence[str],
    concurrencies: Sequence[int],
    cells: Mapping[tuple[str, str, int], Cell],
    labels: Mapping[str, str],
) -> list[str]:
    """'ours vs peer' throughput ratios and p99 comparisons, one line per model and concurrency."""
    lines = []
    for model in models:
        for c in concurrencies:
            mine = cells.get((ours, model, c))
            if mine is None or not mine.runs:
                continue
            m = mine.median()
            parts = []
            for peer in peers:
                other = cells.get((peer, model, c))
                if other is None or not other.runs:
                    continue
                o = other.median()
                ratio = m.rps / o.rps if o.rps else float("inf")
                p99 = "≤" if m.p99_ms <= o.p99_ms else ">"
                parts.append(f"{ratio:.1f}x {labels.get(peer, peer)} (p99 {p99})")
            lines.append(f"- {model} c={c}: " + ", ".join(parts))
    return lines


def overhead_lines(
    base: str,
    variants: Iterable[str],
    models: Sequence[str],
    concurrency: int,
    cells: Mapping[tuple[str, str, int], Cell],
    labels: Mapping[str, str],
) -> list[str]:
    """One line per model and variant: its throughput and p99 against ``base`` at one concurrency.

    Example: base 10,000 req/s p99 4.0 ms, variant 9,000 req/s p99 5.0 ms →
    "lr c=64 <label>: 9,000 req/s (-10% vs 10,000), p99 5.0 ms (vs 4.0 ms)".
    """
    lines = []
    for model in models:
        ref = cells.get((base, model, concurrency))
        if ref is None or not ref.runs:
            continue
        r = ref.median()
        for variant in variants:
            cell = cells.get((variant, model, concurrency))
            if cell is None or not cell.runs:
                continue
            v = cell.median()
            change = (v.rps / r.rps - 1) * 100 if r.rps else 0.0
            lines.append(
                f"- {model} c={concurrency} {labels.get(variant, variant)}: {v.rps:,.0f} req/s "
                f"({change:+.0f}% vs {r.rps:,.0f}), p99 {_fmt_ms(v.p99_ms)} "
                f"(vs {_fmt_ms(r.p99_ms)})"
            )
    return lines
