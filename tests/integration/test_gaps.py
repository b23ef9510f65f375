"""Gaps and coverage: the views, `repair-gaps`, `verify`, dead letters, and the daemon's repair."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import orjson
import psycopg

from indexer import daemon, errors, tables
from indexer.devnet.traffic import fill_blocks
from indexer.sync.progress import Progress
from tests.integration.helpers import (
    async_wait_for,
    checkpoint,
    make_config,
    run_cli,
    sync_to,
    write_config,
)
from tests.support.faultproxy import FaultProxy
from tests.support.oracle import assert_equals_node, check_invariants, table_counts


def punch(db_url: str, heights: list[int]) -> None:
    """Make holes: delete these blocks with every row of theirs (every declared table)."""
    with psycopg.connect(db_url) as conn:
        for table in reversed(tables.ALL):
            conn.execute(
                f"DELETE FROM {table.name} WHERE {table.height} = ANY(%s)",
                (heights,),
            )


def gaps(db_url: str) -> list[tuple[int, int, int]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT gap_start, gap_end, size FROM gaps ORDER BY gap_start")
        return [(int(a), int(b), int(c)) for a, b, c in rows]


def coverage(db_url: str) -> dict[str, Any]:
    with psycopg.connect(db_url) as conn:
        cur = conn.execute("SELECT * FROM coverage")
        names = [d.name for d in cur.description or []]
        row = cur.fetchone()
    assert row is not None
    return dict(zip(names, row, strict=True))


async def test_gaps_view_lists_exactly_the_holes_and_repair_fills_them(
    db_url: str, anvil: Any, tmp_path: Path
) -> None:
    fill_blocks(anvil, 200, txs_per_block=(1, 3), seed=21)
    cfg = make_config(db_url, anvil.url, batch_size=30, repair_interval_secs=0)
    assert await sync_to(cfg, 200) == 0
    full = table_counts(db_url)
    rng = random.Random(7)
    singles = sorted(rng.sample(range(60, 120), 4))
    holes = [*range(0, 5), *singles, *range(140, 151), 199]
    punch(db_url, holes)

    expected = [(0, 4, 5)] + [(h, h, 1) for h in singles] + [(140, 150, 11), (199, 199, 1)]
    assert gaps(db_url) == expected
    cov = coverage(db_url)
    assert (cov["blocks_stored"], cov["blocks_expected"], cov["blocks_missing"]) == (
        201 - len(holes), 201, len(holes),
    )  # fmt: skip
    assert cov["gap_count"] == len(expected) and float(cov["coverage_pct"]) < 100

    path = write_config(tmp_path / "c.toml", db_url, anvil.url, batch_size=4)
    dry = run_cli("--config", str(path), "repair-gaps", "--dry-run")
    assert dry.returncode == errors.EXIT_FAILURE  # gaps remain
    assert "140-150 (11 blocks): dry-run" in dry.stdout
    assert gaps(db_url) == expected, "--dry-run must change nothing"

    result = run_cli("--config", str(path), "repair-gaps")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dev: no gaps" in result.stdout
    assert gaps(db_url) == []
    cov = coverage(db_url)
    assert float(cov["coverage_pct"]) == 100.0 and cov["gap_count"] == 0
    assert table_counts(db_url) == full
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url)
    verified = run_cli("--config", str(path), "verify", "--against-node")
    assert verified.returncode == 0, verified.stdout
    assert "dev: ok" in verified.stdout

    stats = run_cli("--config", str(path), "stats", "--json")
    row = orjson.loads(stats.stdout)[0]
    assert (row["coverage_pct"], row["blocks_missing"], row["gap_count"]) == (100.0, 0, 0)


async def test_repair_range_limits(db_url: str, anvil: Any, tmp_path: Path) -> None:
    fill_blocks(anvil, 60, txs_per_block=(1, 2), seed=22)
    assert await sync_to(make_config(db_url, anvil.url, repair_interval_secs=0), 60) == 0
    punch(db_url, [10, 11, 40, 41])
    path = write_config(tmp_path / "c.toml", db_url, anvil.url)
    result = run_cli("--config", str(path), "repair-gaps", "--from", "30", "--to", "50")
    assert result.returncode == 0, result.stdout
    assert gaps(db_url) == [(10, 11, 2)]
    assert run_cli("--config", str(path), "repair-gaps").returncode == 0
    assert gaps(db_url) == []


async def test_verify_names_a_corrupted_parent_hash(
    db_url: str, anvil: Any, tmp_path: Path
) -> None:
    fill_blocks(anvil, 30, txs_per_block=(1, 2), seed=23)
    assert await sync_to(make_config(db_url, anvil.url), 30) == 0
    path = write_config(tmp_path / "c.toml", db_url, anvil.url)
    assert run_cli("--config", str(path), "verify").returncode == 0
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE blocks SET parent_hash = %s WHERE number = 17", (b"\x01" * 32,))
    result = run_cli("--config", str(path), "verify")
    assert result.returncode == errors.EXIT_FAILURE
    assert "block 17: parent hash 0x0101" in result.stdout
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE blocks SET hash = %s WHERE number = 25", (b"\x02" * 32,))
    result = run_cli("--config", str(path), "verify", "--against-node")
    assert result.returncode == errors.EXIT_FAILURE
    assert "block 25: stored 0x0202" in result.stdout and "but the node has" in result.stdout


async def test_gap_whose_neighbour_was_reorged(db_url: str, anvil: Any, tmp_path: Path) -> None:
    fill_blocks(anvil, 60, txs_per_block=(1, 2), seed=24)
    assert await sync_to(make_config(db_url, anvil.url, repair_interval_secs=0), 60) == 0
    punch(db_url, list(range(40, 46)))
    accounts = anvil.accounts()
    anvil.reorg(16, [({"from": accounts[3], "to": accounts[4], "value": "0x5"}, 0)])  # 45..60
    path = write_config(tmp_path / "c.toml", db_url, anvil.url)
    result = run_cli("--config", str(path), "repair-gaps")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stale" in result.stdout
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url)
    assert gaps(db_url) == []


async def test_repair_concurrent_with_following_sync(
    db_url: str, anvil: Any, tmp_path: Path
) -> None:
    fill_blocks(anvil, 120, txs_per_block=(1, 3), seed=25)
    cfg = make_config(db_url, anvil.url, batch_size=10, repair_interval_secs=0)
    assert await sync_to(cfg, 120) == 0
    punch(db_url, [*range(20, 50), *range(70, 75), 100])
    path = write_config(tmp_path / "c.toml", db_url, anvil.url, batch_size=3)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run_sync(cfg, stop=stop, progress=Progress(tty=False)))
    repair = asyncio.create_task(asyncio.to_thread(run_cli, "--config", str(path), "repair-gaps"))
    for round_ in range(6):
        fill_blocks(anvil, 5, txs_per_block=(1, 3), seed=300 + round_)
        await asyncio.sleep(0.1)
    result = await repair
    assert result.returncode == 0, result.stdout + result.stderr
    await async_wait_for(lambda: checkpoint(db_url) == 150, what="sync to follow")
    stop.set()
    assert await asyncio.wait_for(task, 20) == 0
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url)
    assert gaps(db_url) == []


async def test_daemon_repairs_gaps_at_start_up(db_url: str, anvil: Any) -> None:
    fill_blocks(anvil, 50, txs_per_block=(1, 2), seed=26)
    cfg = make_config(db_url, anvil.url)
    assert await sync_to(cfg, 50) == 0
    punch(db_url, [5, 6, 7, 30])
    fill_blocks(anvil, 5, txs_per_block=(1, 2), seed=27)
    assert await sync_to(cfg, 55) == 0
    assert gaps(db_url) == []
    assert_equals_node(db_url, "dev", anvil.url)


async def test_failing_range_goes_to_dead_letters(db_url: str, anvil: Any, tmp_path: Path) -> None:
    fill_blocks(anvil, 40, txs_per_block=(1, 2), seed=28)
    assert await sync_to(make_config(db_url, anvil.url, repair_interval_secs=0), 40) == 0
    punch(db_url, [12, 13, 14])
    with FaultProxy(anvil.url) as proxy:
        bad = proxy.add_fault("wrong_block_number", method="eth_getBlockByNumber", times=10_000)
        path = write_config(tmp_path / "c.toml", db_url, proxy.url)
        result = run_cli("--config", str(path), "repair-gaps")
        assert result.returncode == errors.EXIT_FAILURE
        assert bad.applied >= 1
        assert "12-14 (3 blocks): failed" in result.stdout
        with psycopg.connect(db_url) as conn:
            row = conn.execute(
                "SELECT range_start, range_end, attempts, error FROM gap_failures"
            ).fetchone()
        assert row is not None and row[:3] == (12, 14, 1) and "asked for block" in row[3]
        cov = coverage(db_url)
        assert (cov["failed_ranges"], cov["failed_blocks"]) == (1, 3)
        stats = orjson.loads(run_cli("--config", str(path), "stats", "--json").stdout)[0]
        assert stats["failed_ranges"] == 1

        # A plain run waits for the backoff; --retry-failed tries now.
        again = run_cli("--config", str(path), "repair-gaps")
        assert "skipped" in again.stdout and again.returncode == errors.EXIT_FAILURE
        proxy.clear()
        fixed = run_cli("--config", str(path), "repair-gaps", "--retry-failed")
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM gap_failures").fetchone() == (0,)
    assert gaps(db_url) == []
    assert_equals_node(db_url, "dev", anvil.url)
