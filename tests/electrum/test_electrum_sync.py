"""Bitcoin headers through a real ElectrumX into Postgres: the same engine, same tables."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import psycopg

from indexer import config, daemon, errors
from indexer.sync.progress import Progress
from tests.electrum import regtest
from tests.electrum.bitcoind_sim import BitcoindSim
from tests.electrum.electrumx_proc import ElectrumXProc
from tests.integration.helpers import async_wait_for, checkpoint, run_cli, sync_to
from tests.support.oracle import check_invariants, table_counts


def btc_config(db_url: str, url: str, **chain: Any) -> config.Config:
    return config.build(
        {
            "database": {"url": db_url},
            "chains": [
                {
                    "name": "btc",
                    "kind": "electrum",
                    "urls": [url],
                    "genesis_hash": regtest.GENESIS_HASH_HEX,
                    "batch_size": 500,
                    "poll_interval_secs": 0.2,
                    **chain,
                }
            ],
        },
        {},
    )


def write_btc_config(path: Path, db_url: str, url: str, **chain: Any) -> Path:
    extra = "".join(f"{k} = {v!r}\n" for k, v in chain.items())
    path.write_text(
        f'[database]\nurl = "{db_url}"\n[[chains]]\nname = "btc"\nkind = "electrum"\n'
        f'urls = ["{url}"]\ngenesis_hash = "{regtest.GENESIS_HASH_HEX}"\nbatch_size = 500\n'
        f"poll_interval_secs = 0.2\n{extra}"
    )
    return path


def stored(db_url: str) -> list[tuple[int, str, str]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT number, hash, parent_hash FROM blocks ORDER BY number")
        return [(int(n), bytes(h).hex(), bytes(p).hex()) for n, h, p in rows]


def assert_equals_sim(db_url: str, sim: BitcoindSim) -> None:
    rows = stored(db_url)
    assert [n for n, _, _ in rows] == list(range(sim.height + 1))
    for number, block_hash, parent in rows:
        assert block_hash == sim.block_hash(number), f"block {number} differs"
        want_parent = sim.block_hash(number - 1) if number else "00" * 32
        assert parent == want_parent
    check_invariants(db_url, "btc")


def reorg_rows(db_url: str) -> list[tuple[str, int, int]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT kind, fork_number, depth FROM reorgs ORDER BY id")
        return [(str(k), int(f), int(d)) for k, f, d in rows]


async def test_2000_headers_equal_the_simulator(
    db_url: str, bitcoind_sim: BitcoindSim, electrumx: ElectrumXProc
) -> None:
    bitcoind_sim.generate(2000)
    electrumx.wait_synced(2000)
    assert await sync_to(btc_config(db_url, electrumx.tcp_url), 2000) == 0
    assert_equals_sim(db_url, bitcoind_sim)
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT version, merkle_root, bits, nonce, tx_count FROM blocks WHERE number = 1234"
        ).fetchone()
    block = bitcoind_sim.block(1234)
    assert row is not None
    assert (row[0], bytes(row[1]).hex(), row[2], row[3], row[4]) == (
        block.header.version, regtest.hash_to_hex(block.header.merkle_root_bytes),
        block.header.bits, block.header.nonce, 0,
    )  # fmt: skip
    assert table_counts(db_url)["transactions"] == 0


async def test_reorgs_while_following(
    db_url: str, bitcoind_sim: BitcoindSim, electrumx: ElectrumXProc
) -> None:
    bitcoind_sim.generate(60)
    electrumx.wait_synced(60)
    cfg = btc_config(db_url, electrumx.tcp_url)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run_sync(cfg, stop=stop, progress=Progress(tty=False)))
    try:
        expected = []
        for depth in (1, 4, 10):
            tip = bitcoind_sim.height
            await async_wait_for(lambda t=tip: checkpoint(db_url, "btc") == t, what="synced")
            bitcoind_sim.reorg(depth, depth + 1)  # ElectrumX sees a longer branch
            electrumx.wait_synced(bitcoind_sim.height, hash_hex=bitcoind_sim.tip().hash_hex)
            expected.append(("reorg", tip - depth, depth))
            await async_wait_for(
                lambda: stored(db_url)[-1][1] == bitcoind_sim.tip().hash_hex,
                what=f"the depth-{depth} branch",
                timeout_secs=30,
            )
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 20) == 0
    assert_equals_sim(db_url, bitcoind_sim)
    assert reorg_rows(db_url) == expected


def test_reorg_while_stopped_and_past_the_limit(
    db_url: str, bitcoind_sim: BitcoindSim, electrumx: ElectrumXProc, tmp_path: Path
) -> None:
    bitcoind_sim.generate(40)
    electrumx.wait_synced(40)
    path = write_btc_config(tmp_path / "c.toml", db_url, electrumx.tcp_url, max_reorg_depth=6)
    assert run_cli("--config", str(path), "sync", "--to", "40").returncode == 0

    bitcoind_sim.reorg(5, 6)  # while stopped: 36..41 new
    electrumx.wait_synced(41, hash_hex=bitcoind_sim.tip().hash_hex)
    assert run_cli("--config", str(path), "sync", "--to", "41").returncode == 0
    assert_equals_sim(db_url, bitcoind_sim)
    assert reorg_rows(db_url) == [("reorg", 35, 5)]

    before = table_counts(db_url)
    bitcoind_sim.reorg(9, 10)  # deeper than max_reorg_depth 6
    electrumx.wait_synced(42, hash_hex=bitcoind_sim.tip().hash_hex)
    result = run_cli("--config", str(path), "sync", "--to", "42")
    assert result.returncode == errors.EXIT_REORG_TOO_DEEP, result.stderr
    assert (
        "reorg of depth 9" in result.stderr
        and "indexer rewind --chain btc --to 32" in result.stderr
    )
    assert table_counts(db_url) == before

    rewound = run_cli("--config", str(path), "rewind", "--chain", "btc", "--to", "32", "--yes")
    assert rewound.returncode == 0, rewound.stderr
    assert run_cli("--config", str(path), "sync", "--to", "42").returncode == 0
    assert_equals_sim(db_url, bitcoind_sim)
    verified = run_cli("--config", str(path), "verify", "--against-node")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    with psycopg.connect(db_url) as conn:
        conn.execute("DELETE FROM blocks WHERE number BETWEEN 10 AND 14 OR number = 30")
    repaired = run_cli("--config", str(path), "repair-gaps")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert_equals_sim(db_url, bitcoind_sim)
    stats = run_cli("--config", str(path), "stats")
    assert "btc (electrum)" in stats.stdout and "coverage        100.00%" in stats.stdout


def test_wrong_genesis_refuses_to_start(
    db_url: str, electrumx: ElectrumXProc, tmp_path: Path
) -> None:
    mainnet = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
    path = write_btc_config(tmp_path / "c.toml", db_url, electrumx.tcp_url)
    path.write_text(path.read_text().replace(regtest.GENESIS_HASH_HEX, mainnet))
    result = run_cli("--config", str(path), "sync", "--to", "1")
    assert result.returncode == errors.EXIT_USAGE, result.stderr
    assert "chains[btc].genesis_hash" in result.stderr
