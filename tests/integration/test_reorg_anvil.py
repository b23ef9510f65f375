"""Reorgs against a real anvil node: detect, find the fork point, roll back, halt past the limit."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from indexer import daemon, errors
from indexer.config import Config
from indexer.devnet.traffic import fill_blocks
from indexer.runtime import Runtime
from indexer.sync.progress import Progress
from tests.integration.helpers import (
    async_wait_for,
    checkpoint,
    make_config,
    run_cli,
    spawn_cli,
    sync_to,
    wait_for,
    write_config,
)
from tests.support.oracle import assert_equals_node, check_invariants, table_counts


def node_tip(anvil: Any) -> tuple[int, bytes]:
    block = anvil.get_block("latest")
    return int(block["number"], 16), bytes.fromhex(block["hash"][2:])


def stored_tip(db_url: str) -> tuple[int, bytes] | None:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT number, hash FROM checkpoints").fetchone()
    return None if row is None or row[0] is None else (int(row[0]), bytes(row[1]))


def in_sync(db_url: str, anvil: Any) -> bool:
    return stored_tip(db_url) == node_tip(anvil)


def reorg_rows(db_url: str) -> list[tuple[str, int, int, bytes, bytes | None]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT kind, fork_number, depth, old_tip_hash, new_tip_hash FROM reorgs ORDER BY id"
        ).fetchall()
    return [
        (k, int(f), int(d), bytes(o), None if n is None else bytes(n)) for k, f, d, o, n in rows
    ]


def a_tx(anvil: Any, value: int = 1) -> dict[str, object]:
    """A plain transfer so that a replaced block surely gets a new hash."""
    accounts = anvil.accounts()
    return {"from": accounts[1], "to": accounts[2], "value": hex(value)}


@asynccontextmanager
async def following(cfg: Config, started: list[Runtime] | None = None
                    ) -> AsyncIterator[asyncio.Task[int]]:  # fmt: skip
    stop = asyncio.Event()
    on_ready = None if started is None else started.append
    task = asyncio.create_task(
        daemon.run_sync(cfg, stop=stop, progress=Progress(tty=False), on_ready=on_ready)
    )
    try:
        yield task
    finally:
        stop.set()
        code = await asyncio.wait_for(task, 20)
        assert code == errors.EXIT_OK


@pytest.mark.parametrize("depth", [1, 2, 7, 63])
async def test_reorg_while_following_the_head(db_url: str, anvil: Any, depth: int) -> None:
    fill_blocks(anvil, 80, txs_per_block=(1, 3), seed=depth)
    cfg = make_config(db_url, anvil.url, batch_size=25)
    async with following(cfg):
        await async_wait_for(lambda: in_sync(db_url, anvil), what="initial sync")
        old_tip = stored_tip(db_url)
        assert old_tip is not None
        anvil.reorg(depth, [(a_tx(anvil, 7), 0)])
        new_number, new_hash = node_tip(anvil)
        assert new_number == old_tip[0] and new_hash != old_tip[1]
        await async_wait_for(lambda: in_sync(db_url, anvil), what="the new branch")
        # Keep following on the new branch.
        fill_blocks(anvil, 3, txs_per_block=(1, 2), seed=100 + depth)
        await async_wait_for(lambda: in_sync(db_url, anvil), what="blocks after the reorg")
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url)
    assert reorg_rows(db_url) == [("reorg", old_tip[0] - depth, depth, old_tip[1], new_hash)]


async def test_reorg_while_stopped(db_url: str, anvil: Any) -> None:
    fill_blocks(anvil, 60, txs_per_block=(1, 3), seed=11)
    cfg = make_config(db_url, anvil.url)
    assert await sync_to(cfg, 60) == errors.EXIT_OK
    anvil.reorg(5, [(a_tx(anvil), 2)])
    fill_blocks(anvil, 4, txs_per_block=(1, 2), seed=12)
    assert await sync_to(cfg, 64) == errors.EXIT_OK
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url)
    rows = reorg_rows(db_url)
    assert [(k, f, d) for k, f, d, _, _ in rows] == [("reorg", 55, 5)]


async def test_same_height_reorg_is_caught_before_to_exits(db_url: str, anvil: Any) -> None:
    fill_blocks(anvil, 30, txs_per_block=(1, 2), seed=13)
    cfg = make_config(db_url, anvil.url)
    assert await sync_to(cfg, 30) == errors.EXIT_OK
    anvil.reorg(3, [(a_tx(anvil), 0)])
    assert await sync_to(cfg, 30) == errors.EXIT_OK
    assert_equals_node(db_url, "dev", anvil.url)
    assert [(k, f, d) for k, f, d, _, _ in reorg_rows(db_url)] == [("reorg", 27, 3)]


async def test_two_reorgs_back_to_back(db_url: str, anvil: Any) -> None:
    fill_blocks(anvil, 50, txs_per_block=(1, 3), seed=14)
    cfg = make_config(db_url, anvil.url, batch_size=10)
    async with following(cfg):
        await async_wait_for(lambda: in_sync(db_url, anvil), what="initial sync")
        anvil.reorg(4, [(a_tx(anvil, 1), 0)])
        anvil.reorg(9, [(a_tx(anvil, 2), 3)])
        await async_wait_for(lambda: in_sync(db_url, anvil), what="the second branch")
        anvil.reorg(2, [(a_tx(anvil, 3), 1)])
        await async_wait_for(lambda: in_sync(db_url, anvil), what="the third branch")
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url)
    rows = reorg_rows(db_url)
    assert rows and all(k == "reorg" and 1 <= d <= 9 for k, _, d, _, _ in rows)
    assert rows[-1][1:3] == (48, 2)


async def test_transaction_moves_to_another_block(db_url: str, anvil: Any) -> None:
    fill_blocks(anvil, 20, txs_per_block=(1, 2), seed=15)
    anvil.set_automine(False)
    tx_hash = anvil.rpc("eth_sendTransaction", [a_tx(anvil, 12345)])
    anvil.mine(1)  # block 21 holds the tx
    anvil.mine(1)  # block 22
    raw = anvil.rpc("eth_getRawTransactionByHash", [tx_hash])
    cfg = make_config(db_url, anvil.url)
    assert await sync_to(cfg, 22) == errors.EXIT_OK

    def where(h: str) -> list[int]:
        with psycopg.connect(db_url) as conn:
            return [
                int(r[0])
                for r in conn.execute(
                    "SELECT block_number FROM transactions WHERE hash = %s", (bytes.fromhex(h[2:]),)
                )
            ]

    assert where(tx_hash) == [21]
    anvil.reorg(2, [(raw, 1)])  # same signed tx, now in block 22
    receipt = anvil.rpc("eth_getTransactionReceipt", [tx_hash])
    assert int(receipt["blockNumber"], 16) == 22
    assert await sync_to(cfg, 22) == errors.EXIT_OK
    assert where(tx_hash) == [22]
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url)


def test_reorg_deeper_than_limit_halts_then_rewind_recovers(
    db_url: str, anvil: Any, tmp_path: Path
) -> None:
    fill_blocks(anvil, 40, txs_per_block=(1, 3), seed=16)
    path = write_config(tmp_path / "c.toml", db_url, anvil.url, max_reorg_depth=5)
    assert run_cli("--config", str(path), "sync", "--to", "40").returncode == 0
    before = table_counts(db_url)
    tip_before = stored_tip(db_url)
    anvil.reorg(8, [(a_tx(anvil), 0)])
    anvil.mine(2)

    result = run_cli("--config", str(path), "sync", "--to", "42")
    assert result.returncode == errors.EXIT_REORG_TOO_DEEP, result.stderr
    assert "reorg of depth 8" in result.stderr and "max_reorg_depth 5" in result.stderr
    assert "indexer rewind --chain dev --to 32" in result.stderr
    assert table_counts(db_url) == before and stored_tip(db_url) == tip_before

    # Without a terminal and without --yes, rewind shows the plan and refuses.
    refused = run_cli("--config", str(path), "rewind", "--chain", "dev", "--to", "32")
    assert refused.returncode == errors.EXIT_USAGE
    assert "delete 8 blocks" in refused.stderr
    assert table_counts(db_url) == before

    done = run_cli("--config", str(path), "rewind", "--chain", "dev", "--to", "32", "--yes")
    assert done.returncode == 0, done.stderr
    assert checkpoint(db_url) == 32
    assert [(k, f, d) for k, f, d, _, _ in reorg_rows(db_url)] == [("rewind", 32, 8)]
    assert reorg_rows(db_url)[0][4] is None

    assert run_cli("--config", str(path), "sync", "--to", "42").returncode == 0
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url)


async def test_head_going_backwards_is_lagging_not_a_reorg(db_url: str, anvil: Any) -> None:
    fill_blocks(anvil, 30, txs_per_block=(1, 2), seed=17)
    cfg = make_config(db_url, anvil.url)
    started: list[Runtime] = []
    async with following(cfg, started):
        await async_wait_for(lambda: in_sync(db_url, anvil), what="initial sync")
        counts = table_counts(db_url)
        anvil.rollback(3)
        state = started[0].chains[0].state
        checks = state.head_checks
        # Five looks at the lower head: height alone must never roll back.
        await async_wait_for(lambda: state.head_checks >= checks + 5, what="five head checks")
        assert table_counts(db_url) == counts, "height alone must never roll back"
        assert reorg_rows(db_url) == []
        fill_blocks(anvil, 5, txs_per_block=(1, 2), seed=18)  # a new, longer branch
        await async_wait_for(lambda: in_sync(db_url, anvil), what="the new branch")
    assert_equals_node(db_url, "dev", anvil.url)
    assert [(k, f, d) for k, f, d, _, _ in reorg_rows(db_url)] == [("reorg", 27, 3)]


def test_sigkill_during_rollback(db_url: str, anvil: Any, tmp_path: Path) -> None:
    fill_blocks(anvil, 40, txs_per_block=(1, 3), seed=19)
    path = write_config(tmp_path / "c.toml", db_url, anvil.url)
    assert run_cli("--config", str(path), "sync", "--to", "40").returncode == 0
    before, tip_before = table_counts(db_url), stored_tip(db_url)
    anvil.reorg(6, [(a_tx(anvil), 0)])

    # Hold a lock on `reorgs` so the rollback transaction stops at its last statement, after
    # its deletes, and kill the process right there.
    with psycopg.connect(db_url) as blocker:
        blocker.execute("LOCK TABLE reorgs IN EXCLUSIVE MODE")
        proc = spawn_cli("--config", str(path), "sync")
        try:

            def rollback_waiting() -> bool:
                with psycopg.connect(db_url, autocommit=True) as conn:
                    row = conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                        "'indexer:writer:dev' AND wait_event_type = 'Lock'"
                    ).fetchone()
                return row == (1,)

            wait_for(rollback_waiting, what="the rollback to block on the lock")
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
        blocker.rollback()

    def old_branch_whole() -> bool:
        return table_counts(db_url) == before and stored_tip(db_url) == tip_before

    wait_for(old_branch_whole, what="the killed rollback to vanish")
    check_invariants(db_url, "dev")
    assert reorg_rows(db_url) == []

    assert run_cli("--config", str(path), "sync", "--to", "40").returncode == 0
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url)
    assert [(k, f, d) for k, f, d, _, _ in reorg_rows(db_url)] == [("reorg", 34, 6)]


def test_halt_stops_only_that_chain(db_url: str, anvil: Any, tmp_path: Path) -> None:
    from indexer.devnet.anvil import Anvil

    with Anvil() as other:
        fill_blocks(anvil, 20, txs_per_block=(1, 2), seed=20)
        other.mine(20)
        path = tmp_path / "two.toml"
        path.write_text(
            f'[database]\nurl = "{db_url}"\n'
            f'[[chains]]\nname = "dev"\nkind = "evm"\nurls = ["{anvil.url}"]\nchain_id = 31337\n'
            "max_reorg_depth = 3\npoll_interval_secs = 0.2\n"
            f'[[chains]]\nname = "other"\nkind = "evm"\nurls = ["{other.url}"]\n'
            "chain_id = 31337\npoll_interval_secs = 0.2\n"
        )
        proc = spawn_cli("--config", str(path), "sync")
        try:
            wait_for(lambda: checkpoint(db_url, "dev") == 20 and checkpoint(db_url, "other") == 20,
                     what="both chains synced")  # fmt: skip
            counts = table_counts(db_url)
            anvil.reorg(5, [(a_tx(anvil), 0)])
            anvil.mine(1)
            other.mine(10)
            wait_for(lambda: checkpoint(db_url, "other") == 30, what="the other chain goes on")
            other.mine(5)
            wait_for(lambda: checkpoint(db_url, "other") == 35, what="the other chain goes on")
            assert proc.poll() is None, "one halted chain must not stop the daemon"
            assert checkpoint(db_url, "dev") == 20
            assert table_counts(db_url)["transactions"] == counts["transactions"]
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == errors.EXIT_REORG_TOO_DEEP, stderr
        assert "reorg of depth 5" in stderr
