"""Recovery benchmarks: reorg latency at depth 1, 16 and 64, and `repair-gaps` throughput.

Reorg latency: `indexer sync` follows the replay node's head (full mainnet-shaped blocks,
`poll_interval_secs` 0.1); the node then switches branch (`replay_reorg`: the top `depth`
blocks replaced, one block added, as when a heavier branch wins). Latency is the time from
the switch until our stored block at the new head has the node's hash. Because every write
is linked and atomic, a matching tip means the stored chain matches the node's. The figure
includes waiting for the next head poll (up to `poll_interval_secs`), the fork-point search,
the confirmation reads, the rollback transaction and refetching depth + 1 blocks.

repair-gaps: a synced chain loses a large range (deleted by hand), then `indexer repair-gaps`
refills it; blocks/s over the command's wall time.

Usage: `python -m benchmarks.reorg_latency [--repeats 3] [--repair-blocks 100000 1000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg

from benchmarks.backfill import (
    DEFAULT_DSN,
    Settings,
    count_rows,
    fresh_database,
    indexer_command,
    run_indexer,
    write_config,
)
from benchmarks.replay_node import REPO, ReplayNode, Shape
from indexer.config import DatabaseConfig
from indexer.store.migrate import migrate

DEPTHS = (1, 16, 64)


def _stored_hash(conn: psycopg.Connection[Any], number: int) -> bytes | None:
    row = conn.execute("SELECT hash FROM blocks WHERE chain = 1 AND number = %s", (number,))
    found = row.fetchone()
    return None if found is None else bytes(found[0])


def _wait_for(conn: psycopg.Connection[Any], number: int, hash_hex: str, timeout: float) -> float:
    """Poll (every 2 ms) until block `number` is stored with `hash_hex`; the time it happened."""
    want = bytes.fromhex(hash_hex.removeprefix("0x"))
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if _stored_hash(conn, number) == want:
            return time.perf_counter()
        time.sleep(0.002)
    raise TimeoutError(f"block {number} never reached hash {hash_hex}")


def reorg_latency(*, dsn: str, repeats: int, head: int = 400) -> list[dict[str, Any]]:
    settings = Settings(batch_size=100, prefetch_batches=4, poll_interval_secs=0.1)
    results: list[dict[str, Any]] = []
    with (
        ReplayNode(Shape(variant="full"), head=head) as node,
        fresh_database(dsn, "bench_reorg") as db_url,
        tempfile.TemporaryDirectory() as tmp,
    ):
        asyncio.run(migrate(DatabaseConfig(url=db_url)))
        config = write_config(
            Path(tmp, "indexer.toml"), db_url=db_url, node_url=node.url, settings=settings
        )
        cmd = indexer_command(config, "sync")
        with (
            Path(tmp, "indexer.log").open("wb") as log,
            psycopg.connect(db_url, autocommit=True) as conn,
        ):
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            try:
                tip = node.call("eth_getBlockByNumber", ["latest", False])
                _wait_for(conn, int(tip["number"], 16), tip["hash"], timeout=120)
                for depth in DEPTHS:
                    times = []
                    for _ in range(repeats):
                        before = time.perf_counter()
                        switched = node.call("replay_reorg", [depth, 1])
                        done = _wait_for(conn, switched["head"], switched["hash"], timeout=60)
                        times.append(done - before)
                        fork = switched["fork"]
                        node_fork = node.call("eth_getBlockByNumber", [hex(fork + 1), False])
                        assert _stored_hash(conn, fork + 1) == bytes.fromhex(
                            node_fork["hash"][2:]
                        ), "stored chain does not match the node above the fork point"
                        time.sleep(0.3)
                    recorded = conn.execute(
                        "SELECT depth FROM reorgs ORDER BY id DESC LIMIT 1"
                    ).fetchone()
                    results.append(
                        {
                            "depth": depth,
                            "repeats": repeats,
                            "median_ms": round(statistics.median(times) * 1000, 1),
                            "max_ms": round(max(times) * 1000, 1),
                            "recorded_depth": None if recorded is None else int(recorded[0]),
                            "poll_interval_secs": settings.poll_interval_secs,
                        }
                    )
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return results


def repair_throughput(*, dsn: str, variant: str, blocks: int, hole: int) -> dict[str, Any]:
    """Sync `blocks`, delete `hole` blocks in the middle, time `indexer repair-gaps`."""
    batch = 2000 if variant == "headers" else 100
    settings = Settings(batch_size=batch, prefetch_batches=4)
    low = (blocks - hole) // 2
    high = low + hole - 1
    with (
        ReplayNode(Shape(variant=variant), head=blocks + 10) as node,
        fresh_database(dsn, "bench_repair") as db_url,
        tempfile.TemporaryDirectory() as tmp,
    ):
        asyncio.run(migrate(DatabaseConfig(url=db_url)))
        config = write_config(
            Path(tmp, "indexer.toml"), db_url=db_url, node_url=node.url, settings=settings
        )
        log = Path(tmp, "indexer.log")
        run_indexer(["sync", "--to", str(blocks - 1)], config=config, db_url=db_url, log_path=log)
        with psycopg.connect(db_url, autocommit=True) as conn, conn.transaction():
            for table, column in (
                ("logs", "block_number"),
                ("transactions", "block_number"),
                ("blocks", "number"),
            ):
                conn.execute(
                    f"DELETE FROM {table} WHERE chain = 1 AND {column} BETWEEN %s AND %s",
                    (low, high),
                )
        with contextlib.suppress(psycopg.Error), psycopg.connect(db_url, autocommit=True) as c:
            c.execute("VACUUM ANALYZE blocks")
        run = run_indexer(["repair-gaps"], config=config, db_url=db_url, log_path=log)
        rows = count_rows(db_url)
        with psycopg.connect(db_url) as conn:
            gaps = conn.execute("SELECT count(*) FROM gaps").fetchone()
    assert rows["blocks"] == blocks and gaps is not None and gaps[0] == 0, (rows, gaps)
    return {
        "variant": variant,
        "settings": settings.label(),
        "stored_blocks": blocks,
        "hole_blocks": hole,
        "wall_secs": round(run["wall_secs"], 2),
        "blocks_per_sec": round(hole / run["wall_secs"]),
        "indexer_cpu_secs": round(run["indexer_cpu_secs"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--repair-headers", type=int, default=100_000, help="hole size")
    parser.add_argument("--repair-full", type=int, default=1000, help="hole size")
    args = parser.parse_args(argv)
    for result in reorg_latency(dsn=args.dsn, repeats=args.repeats):
        print(orjson.dumps(result).decode(), flush=True)
    for variant, hole in (("headers", args.repair_headers), ("full", args.repair_full)):
        result = repair_throughput(dsn=args.dsn, variant=variant, blocks=hole * 2, hole=hole)
        print(orjson.dumps(result).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
