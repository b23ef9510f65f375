"""Crash and outage drills: SIGKILL at random moments amid reorgs; the database cut mid-sync."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg

from indexer.devnet.traffic import fill_blocks
from tests.integration.helpers import (
    checkpoint,
    make_config,
    run_cli,
    spawn_cli,
    sync_to,
    wait_for,
    write_config,
)
from tests.support.faultproxy import FaultProxy
from tests.support.oracle import assert_equals_node, check_invariants
from tests.support.tcpproxy import TcpProxy

KILLS = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sigkill_at_random_moments_with_reorgs(db_url: str, anvil: Any, tmp_path: Path) -> None:
    rng = random.Random(2026)
    fill_blocks(anvil, 200, txs_per_block=(1, 3), seed=41)
    anvil.mine(1300)
    accounts = anvil.accounts()
    # Small batches: the backfill spans many of the kills, which land mid-batch, mid-commit,
    # mid-rollback or at start-up.
    path = write_config(tmp_path / "c.toml", db_url, anvil.url, batch_size=2,
                        prefetch_batches=1, repair_interval_secs=0)  # fmt: skip
    heights = []
    for round_ in range(KILLS):
        if round_ % 3 == 1:
            # A reorg while we are down or about to start (a new branch with a transaction).
            depth = rng.randint(1, 12)
            tx = {"from": accounts[5], "to": accounts[6], "value": hex(rng.randint(1, 10**9))}
            anvil.reorg(depth, [(tx, 0)])
        if round_ % 4 == 2:
            fill_blocks(anvil, rng.randint(1, 8), txs_per_block=(1, 2), seed=100 + round_)
        proc = spawn_cli("--config", str(path), "sync")
        try:
            time.sleep(rng.uniform(0.3, 1.5))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=10)
        heights.append(check_invariants(db_url, "dev"))  # committed work is whole, linked
    # The kills really interrupted the backfill: several found it part-way.
    assert len([h for h in heights if h is not None and h < 1490]) >= 2, heights
    tip = anvil.block_number()
    result = run_cli("--config", str(path), "sync", "--to", str(tip), timeout_secs=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert check_invariants(db_url, "dev") == tip
    assert_equals_node(db_url, "dev", anvil.url)


def test_database_cut_mid_sync_resumes_by_itself(db_url: str, anvil: Any, tmp_path: Path) -> None:
    fill_blocks(anvil, 60, txs_per_block=(1, 3), seed=42)
    anvil.mine(600)
    parts = urlsplit(db_url)
    port = free_port()
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        via_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
        path = write_config(tmp_path / "c.toml", via_proxy, anvil.url, batch_size=3,
                            prefetch_batches=1)  # fmt: skip
        path.write_text(path.read_text() + f'[http]\nlisten = "127.0.0.1:{port}"\n')
        proc = spawn_cli("--config", str(path), "sync")
        try:
            wait_for(lambda: (checkpoint(db_url) or 0) >= 150, what="backfill under way")
            for _ in range(2):
                proxy.cut()  # like a Postgres restart: every session gone, connects refused
                # The sync itself (not only the readiness probe) knows the database is away.
                wait_for(lambda: "database" in _chain_reason(port), what="the outage seen")
                before = checkpoint(db_url)
                check_invariants(db_url, "dev")
                proxy.start()
                wait_for(lambda b=before: (checkpoint(db_url) or 0) > (b or 0) + 30,
                         what="sync resumes by itself", timeout_secs=60)  # fmt: skip
            fill_blocks(anvil, 5, txs_per_block=(1, 2), seed=43)
            tip = anvil.block_number()
            wait_for(lambda: checkpoint(db_url) == tip, what="caught up", timeout_secs=120)
            assert proc.poll() is None
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
        assert proc.returncode == 0
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url)


def _chain_reason(port: int) -> str:
    """Why /health/ready says chain dev is not ready ("" when it is, or no answer yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=10):
            return ""
    except urllib.error.HTTPError as exc:
        return str(orjson.loads(exc.read())["chains"]["dev"]["reason"] or "")
    except urllib.error.URLError:
        return ""


async def test_no_transaction_stays_open_across_a_node_request(
    db_url: str, anvil: Any, caplog: Any
) -> None:
    """With idle_in_transaction_session_timeout far below the node's latency, Postgres would
    kill any session that kept a transaction open while we wait for the node: none is."""
    fill_blocks(anvil, 40, txs_per_block=(1, 3), seed=44)
    dbname = db_url.rsplit("/", 1)[1]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            f"ALTER DATABASE \"{dbname}\" SET idle_in_transaction_session_timeout = '100ms'"
        )
    with FaultProxy(anvil.url) as proxy:
        slow = proxy.add_fault("slow_body", times=1_000, delay=0.01, chunk_bytes=2048)
        cfg = make_config(db_url, proxy.url, batch_size=4, prefetch_batches=1)
        caplog.set_level(logging.WARNING)
        assert await asyncio.wait_for(sync_to(cfg, 40), 120) == 0
        assert slow.applied >= 10
    problems = [r.getMessage() for r in caplog.records if r.name.startswith("indexer")]
    assert problems == [], problems
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url)
