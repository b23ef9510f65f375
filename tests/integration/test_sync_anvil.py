"""`indexer sync` against a real anvil node and a real Postgres."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from indexer import daemon, errors
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


async def test_index_500_blocks_with_transactions_and_logs(db_url: str, anvil: Any) -> None:
    summary = fill_blocks(anvil, 500, txs_per_block=(1, 4), seed=1)
    assert summary.tx_count > 500 and summary.log_count > 100
    cfg = make_config(db_url, anvil.url, batch_size=37)

    assert await sync_to(cfg, 500) == errors.EXIT_OK

    assert check_invariants(db_url, "dev") == 500
    assert_equals_node(db_url, "dev", anvil.url)
    counts = table_counts(db_url)
    assert counts["blocks"] == 501
    assert counts["transactions"] == summary.tx_count
    assert counts["logs"] == summary.log_count

    # Idempotent: a second run writes nothing and leaves the checkpoint row untouched.
    with psycopg.connect(db_url) as conn:
        before = conn.execute("SELECT number, hash, updated_at FROM checkpoints").fetchall()
    assert await sync_to(cfg, 500) == errors.EXIT_OK
    with psycopg.connect(db_url) as conn:
        after = conn.execute("SELECT number, hash, updated_at FROM checkpoints").fetchall()
    assert after == before
    assert table_counts(db_url) == counts


async def test_start_block_and_to_bound(db_url: str, anvil: Any) -> None:
    anvil.mine(300)
    cfg = make_config(db_url, anvil.url, start_block=120, batch_size=50)
    assert await sync_to(cfg, 250) == errors.EXIT_OK
    assert check_invariants(db_url, "dev", start_block=120) == 250
    assert table_counts(db_url)["blocks"] == 131  # never above --to
    assert_equals_node(db_url, "dev", anvil.url, start=120)


async def test_follows_the_head_and_respects_confirmations(db_url: str, anvil: Any) -> None:
    anvil.mine(40)
    cfg = make_config(db_url, anvil.url, confirmations=5, batch_size=16)
    stop = asyncio.Event()
    started: list[Runtime] = []
    task = asyncio.create_task(
        daemon.run_sync(cfg, stop=stop, progress=Progress(tty=False), on_ready=started.append),
        name="sync",
    )
    await async_wait_for(lambda: checkpoint(db_url) == 35, what="checkpoint 35")
    state = started[0].chains[0].state
    checks = state.head_checks
    # Three more looks at the node's head: nothing closer than 5 blocks to it is written.
    await async_wait_for(lambda: state.head_checks >= checks + 3, what="three head checks")
    assert checkpoint(db_url) == 35
    fill_blocks(anvil, 20, txs_per_block=(1, 3), seed=2)
    await async_wait_for(lambda: checkpoint(db_url) == 55, what="checkpoint 55")
    stop.set()
    assert await asyncio.wait_for(task, 10) == errors.EXIT_OK
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url)


async def test_to_waits_for_the_node_to_reach_height(db_url: str, anvil: Any) -> None:
    anvil.mine(10)
    cfg = make_config(db_url, anvil.url)
    task = asyncio.create_task(sync_to(cfg, 30))
    await async_wait_for(lambda: checkpoint(db_url) == 10, what="checkpoint 10")
    assert not task.done()
    anvil.mine(25)
    assert await asyncio.wait_for(task, 30) == errors.EXIT_OK
    assert checkpoint(db_url) == 30


def test_wrong_chain_id_refuses_to_start(db_url: str, anvil: Any, tmp_path: Path) -> None:
    anvil.mine(5)
    path = write_config(tmp_path / "c.toml", db_url, anvil.url)
    path.write_text(path.read_text().replace("chain_id = 31337", "chain_id = 1"))
    result = run_cli("--config", str(path), "sync", "--to", "5")
    assert result.returncode == errors.EXIT_USAGE, result.stderr
    assert "chains[dev].chain_id" in result.stderr and "31337" in result.stderr
    assert table_counts(db_url)["blocks"] == 0


def test_config_error_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[database]\nurl = "postgresql://127.0.0.1/x"\n[[chains]]\nname = "dev"\n'
        'kind = "evm"\nurls = ["http://127.0.0.1:1"]\nchain_id = 1\nbatch_sise = 5\n'
    )
    result = run_cli("--config", str(path), "sync")
    assert result.returncode == errors.EXIT_USAGE
    assert "chains[0].batch_sise: unknown key" in result.stderr


def test_unknown_chain_is_a_usage_error(db_url: str, anvil: Any, tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", db_url, anvil.url)
    result = run_cli("--config", str(path), "sync", "--chain", "nope")
    assert result.returncode == errors.EXIT_USAGE
    assert "--chain: no chain named 'nope'" in result.stderr


def test_second_instance_on_the_same_chain_is_refused(
    db_url: str, anvil: Any, tmp_path: Path
) -> None:
    anvil.mine(20)
    path = write_config(tmp_path / "c.toml", db_url, anvil.url)
    first = spawn_cli("--config", str(path), "sync")
    try:
        wait_for(lambda: checkpoint(db_url) == 20, what="first instance to sync")
        second = run_cli("--config", str(path), "sync", timeout_secs=60)
        assert second.returncode == errors.EXIT_FAILURE
        assert "another indexer instance is syncing this chain" in second.stderr
        assert first.poll() is None, "the first instance must be unaffected"
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    assert first.returncode == errors.EXIT_OK
    check_invariants(db_url, "dev")


def test_sigkill_mid_backfill_then_restart(db_url: str, anvil: Any, tmp_path: Path) -> None:
    fill_blocks(anvil, 100, txs_per_block=(1, 3), seed=3)
    anvil.mine(800)
    fill_blocks(anvil, 100, txs_per_block=(1, 3), seed=4)
    target = 1000
    # Small batches make the backfill long enough to kill it half-way.
    path = write_config(tmp_path / "c.toml", db_url, anvil.url, batch_size=2,
                        prefetch_batches=1)  # fmt: skip
    proc = spawn_cli("--config", str(path), "sync", "--to", str(target))
    try:
        wait_for(lambda: (checkpoint(db_url) or 0) >= 150, what="backfill under way")
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = checkpoint(db_url)
    assert killed_at is not None and killed_at < target
    check_invariants(db_url, "dev")  # whatever was committed is whole and linked

    result = run_cli("--config", str(path), "sync", "--to", str(target))
    assert result.returncode == errors.EXIT_OK, result.stderr
    assert check_invariants(db_url, "dev") == target
    assert_equals_node(db_url, "dev", anvil.url)


def test_secrets_never_reach_output(db_url: str, anvil: Any, tmp_path: Path) -> None:
    anvil.mine(5)
    secret_db = db_url.replace("postgresql://postgres@", "postgresql://postgres:CANARYPW@")
    dead = "http://127.0.0.1:9/v2/CANARYKEYabcdefghijklmnopq?apikey=CANARYAPI"
    path = write_config(tmp_path / "c.toml", secret_db, [anvil.url, dead],
                        request_timeout_secs=2.0)  # fmt: skip
    result = run_cli("--config", str(path), "--log-level", "debug", "sync", "--to", "5")
    # The dead endpoint cannot answer eth_chainId: it is left out (and named, redacted).
    assert result.returncode == 0, result.stderr
    assert "127.0.0.1:9/***/***" in result.stderr and "apikey=***" in result.stderr
    assert "CANARY" not in result.stdout + result.stderr
    # With only dead endpoints the sync cannot start; the error names them, redacted.
    path = write_config(tmp_path / "d.toml", secret_db, [dead], request_timeout_secs=2.0)
    result = run_cli("--config", str(path), "--log-level", "debug", "sync", "--to", "5")
    assert result.returncode == errors.EXIT_FAILURE
    assert "127.0.0.1:9/***/***" in result.stderr
    assert "CANARY" not in result.stdout + result.stderr


@pytest.mark.parametrize("batch_size", [1, 7])
async def test_small_batches(db_url: str, anvil: Any, batch_size: int) -> None:
    fill_blocks(anvil, 30, txs_per_block=(0, 3), seed=5)
    cfg = make_config(db_url, anvil.url, batch_size=batch_size, prefetch_batches=3)
    assert await sync_to(cfg, 30) == errors.EXIT_OK
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url)


@pytest.mark.parametrize("store", ["blocks", "transactions"])
async def test_store_less(db_url: str, anvil: Any, store: str, tmp_path: Path) -> None:
    summary = fill_blocks(anvil, 40, txs_per_block=(1, 3), seed=6)
    cfg = make_config(db_url, anvil.url, store=store, batch_size=9)
    assert await sync_to(cfg, 40) == errors.EXIT_OK
    with_txs = store == "transactions"
    check_invariants(db_url, "dev", transactions=with_txs)
    assert_equals_node(db_url, "dev", anvil.url, transactions=with_txs, logs=False)
    counts = table_counts(db_url)
    assert counts["logs"] == 0
    assert counts["transactions"] == (summary.tx_count if with_txs else 0)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT sum(tx_count) FROM blocks").fetchone() == (summary.tx_count,)
    path = write_config(tmp_path / "c.toml", db_url, anvil.url, store=store)
    result = run_cli("--config", str(path), "verify", "--against-node")
    assert result.returncode == 0, result.stdout


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def test_decode_worker_processes_write_the_same_rows_and_die_with_the_daemon(
    db_url: str, anvil: Any, tmp_path: Path
) -> None:
    summary = fill_blocks(anvil, 120, txs_per_block=(1, 4), seed=41)
    anvil.mine(600)
    target = 720
    path = write_config(tmp_path / "c.toml", db_url, anvil.url, batch_size=2,
                        prefetch_batches=1, decode_workers=2)  # fmt: skip
    proc = spawn_cli("--config", str(path), "sync", "--to", str(target))
    try:
        wait_for(lambda: (checkpoint(db_url) or 0) >= 100, what="backfill under way")
        workers = _children(proc.pid)
        assert len(workers) >= 2, workers  # the pool's processes (and its resource tracker)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)  # no child keeps the daemon's pipes open
    finally:
        if proc.poll() is None:
            proc.kill()
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers),
             what="decode workers to die with the daemon")  # fmt: skip
    check_invariants(db_url, "dev")

    result = run_cli("--config", str(path), "sync", "--to", str(target))
    assert result.returncode == errors.EXIT_OK, result.stderr
    assert check_invariants(db_url, "dev") == target
    assert_equals_node(db_url, "dev", anvil.url)
    assert table_counts(db_url)["transactions"] == summary.tx_count
