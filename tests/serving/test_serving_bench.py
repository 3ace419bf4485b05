"""The benchmark's pure helpers: reading wrk's output and writing the docs section."""

from __future__ import annotations

import sys

from servingkit import REPO

sys.path.insert(0, str(REPO / "bench" / "serving"))
from report import (
    BEGIN,
    END,
    GRPC_BEGIN,
    GRPC_END,
    Cell,
    WrkResult,
    overhead_lines,
    parse_ghz,
    parse_wrk,
    render_table,
    replace_section,
)

WRK = """Running 10s test @ http://127.0.0.1:8080/v2/models/lr/infer
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.52ms  400.00us  12.00ms   90.00%
    Req/Sec    10.50k   500.00    11.00k    70.00%
  Latency Distribution
     50%  850.00us
     75%    1.60ms
     90%    2.10ms
     99%    1.20s
  104500 requests in 10.00s, 22.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 4
Requests/sec:  10450.12
Transfer/sec:      2.20MB
"""


def test_parse_wrk() -> None:
    r = parse_wrk(WRK)
    assert r == WrkResult(rps=10450.12, p50_ms=0.85, p99_ms=1200.0, requests=104500, errors=9)


def test_median_table_and_docs_section() -> None:
    cell = Cell(
        [
            WrkResult(100, 1, 2, 1000, 0),
            WrkResult(300, 3, 4, 3000, 1),
            WrkResult(200, 2, 3, 2000, 0),
        ]
    )
    assert cell.median() == WrkResult(200, 2, 3, 2000, 1)
    key = ("ours", "lr")
    labels = {"ours": "modelserver"}
    table = render_table(
        ["ours"], labels, ["lr"], [16], {(*key, 16): cell}, {key: 130.4}, {key: 1.234}
    )
    assert "| modelserver | 200 | 2.0 ms | 3.0 ms | 1 | 130 MB | 1.23 s |" in table
    doc = "# Benchmarks\n\n## Control plane\n\nnumbers\n"
    once = replace_section(doc, "first")
    assert once.startswith(doc.rstrip()) and "## Serving" in once and "first" in once
    twice = replace_section(once + "\nmy notes\n", "second")
    assert "first" not in twice and "second" in twice and "my notes" in twice
    assert twice.count(BEGIN) == 1 and twice.count(END) == 1


def test_overhead_lines_compare_each_variant_with_the_base() -> None:
    cells = {
        ("ours", "lr", 64): Cell([WrkResult(10_000, 1, 4, 100_000, 0)]),
        ("ours-log", "lr", 64): Cell([WrkResult(9_000, 1, 5, 90_000, 0)]),
    }
    labels = {"ours-log": "logging on"}
    lines = overhead_lines("ours", ["ours-log", "ours-log-dead"], ["lr"], 64, cells, labels)
    assert lines == ["- lr c=64 logging on: 9,000 req/s (-10% vs 10,000), p99 5.0 ms (vs 4.0 ms)"]


GHZ = """{"count": 1000, "total": 10000000000, "average": 1500000, "rps": 99.9,
"latencyDistribution": [{"percentage": 10, "latency": 500000}, {"percentage": 50, "latency": 1250000},
{"percentage": 99, "latency": 7000000}], "statusCodeDistribution": {"OK": 997, "Unavailable": 3},
"errorDistribution": {"rpc error: code = Unavailable desc = error reading from server: read tcp 127.0.0.1:1->127.0.0.1:2: use of closed network connection": 2,
"rpc error: code = Unavailable": 1}}"""


def test_parse_ghz_and_the_grpc_section() -> None:
    # the two calls ghz cut off at the end are neither requests nor the server's errors
    assert parse_ghz(GHZ) == WrkResult(rps=99.9, p50_ms=1.25, p99_ms=7.0, requests=998, errors=1)
    doc = f"## Serving\n\n{BEGIN}\nrest\n{END}\n\n### gRPC\n\n{GRPC_BEGIN}\nold\n{GRPC_END}\n"
    new = replace_section(doc, "grpc rows", begin=GRPC_BEGIN, end=GRPC_END)
    assert "rest" in new and "old" not in new and "grpc rows" in new
