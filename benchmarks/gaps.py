"""Gap and coverage query time on 1M and 10M stored blocks (issue: gaps in well under 1 s).

Loads N blocks of one chain with binary COPY in 100k-row statements (the coverage triggers
run per statement, as in production), punches holes (1,000 single blocks and 10 ranges),
then times `SELECT * FROM gaps` and `SELECT * FROM coverage` (median of 5) and, for
reference, the same answer computed by a window function over the blocks table itself.
Prints the EXPLAIN ANALYZE of the gaps query. Usage:
`python -m benchmarks.gaps --dsn postgresql://... [--blocks 1000000 10000000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg

from indexer.config import DatabaseConfig
from indexer.store.migrate import migrate

STATEMENT_ROWS = 100_000
NAIVE_GAPS = """
SELECT number_before + 1 AS gap_start, number - 1 AS gap_end
FROM (SELECT number, lag(number) OVER (ORDER BY number) AS number_before
      FROM blocks WHERE chain = 1) t
WHERE number - number_before > 1
"""


def _with_db(dsn: str, name: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{name}"


def _timed(conn: psycopg.Connection[Any], query: str, runs: int = 5) -> tuple[float, int]:
    times, rows = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        rows = len(conn.execute(query).fetchall())
        times.append(time.perf_counter() - started)
    return statistics.median(times), rows


def load(conn: psycopg.Connection[Any], n: int) -> float:
    started = time.perf_counter()
    ts = datetime(2020, 1, 1, tzinfo=UTC)
    for lo in range(0, n, STATEMENT_ROWS):
        with (
            conn.transaction(),
            conn.cursor().copy(
                "COPY blocks (chain, number, hash, parent_hash, timestamp, tx_count) "
                "FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(["int2", "int8", "bytea", "bytea", "timestamptz", "int4"])
            for number in range(lo, min(lo + STATEMENT_ROWS, n)):
                h = number.to_bytes(32, "big")
                copy.write_row((1, number, h, h, ts, 0))
    return time.perf_counter() - started


def run_one(dsn: str, n: int) -> dict[str, Any]:
    name = f"bench_gaps_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_db(dsn, name)
    try:
        asyncio.run(migrate(DatabaseConfig(url=url)))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO chains (id, name, kind, chain_id, start_block) "
                "VALUES (1, 'bench', 'evm', 1, 0)"
            )
            load_secs = load(conn, n)
            rng = random.Random(1)
            singles = rng.sample(range(1, n - 1), 1000)
            conn.execute("DELETE FROM blocks WHERE chain = 1 AND number = ANY(%s)", (singles,))
            for _ in range(10):
                lo = rng.randrange(1, n - 1000)
                conn.execute(
                    "DELETE FROM blocks WHERE chain = 1 AND number BETWEEN %s AND %s",
                    (lo, lo + rng.randrange(10, 500)),
                )
            conn.execute("VACUUM ANALYZE blocks")
            conn.execute("VACUUM ANALYZE block_ranges")
            gaps_secs, gap_rows = _timed(conn, "SELECT * FROM gaps")
            coverage_secs, _ = _timed(conn, "SELECT * FROM coverage")
            naive_secs, naive_rows = _timed(conn, NAIVE_GAPS, runs=3)
            assert naive_rows == gap_rows, (naive_rows, gap_rows)
            plan = "\n".join(
                str(r[0]) for r in conn.execute("EXPLAIN (ANALYZE, COSTS OFF) SELECT * FROM gaps")
            )
        return {
            "blocks": n,
            "load_secs": round(load_secs, 2),
            "gaps": gap_rows,
            "gaps_query_ms": round(gaps_secs * 1000, 2),
            "coverage_query_ms": round(coverage_secs * 1000, 2),
            "window_over_blocks_ms": round(naive_secs * 1000, 1),
            "plan": plan,
        }
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--blocks", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args(argv)
    results = []
    for n in args.blocks:
        result = run_one(args.dsn, n)
        results.append(result)
        print(
            f"{n:>12,d} blocks  load {result['load_secs']:7.1f}s  {result['gaps']:5d} gaps  "
            f"gaps {result['gaps_query_ms']:8.2f} ms  "
            f"coverage {result['coverage_query_ms']:8.2f} ms  "
            f"(window over blocks: {result['window_over_blocks_ms']:9.1f} ms)",
            flush=True,
        )
    print("\nEXPLAIN ANALYZE SELECT * FROM gaps, at", f"{args.blocks[-1]:,d}", "blocks:")
    print(results[-1]["plan"])
    if args.json:
        with open(args.json, "wb") as f:
            f.write(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
