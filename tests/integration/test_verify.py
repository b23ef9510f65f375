"""`indexer verify` honours --from/--to in every check and counts every problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from indexer import errors
from indexer.devnet.traffic import fill_blocks
from tests.integration.helpers import make_config, run_cli, sync_to, write_config


async def test_against_node_honours_the_range_inside_a_chunk(
    db_url: str, anvil: Any, tmp_path: Path
) -> None:
    anvil.mine(60)
    assert await sync_to(make_config(db_url, anvil.url), 60) == 0
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE blocks SET hash = %s WHERE number = 55", (b"\x02" * 32,))
    path = write_config(tmp_path / "c.toml", db_url, anvil.url)
    inside = run_cli("--config", str(path), "verify", "--against-node", "--from", "0", "--to", "50")
    assert inside.returncode == errors.EXIT_OK, inside.stdout
    assert "block 55" not in inside.stdout
    outside = run_cli("--config", str(path), "verify", "--against-node", "--from", "50")
    assert outside.returncode == errors.EXIT_FAILURE
    assert "block 55: stored 0x0202" in outside.stdout


async def test_every_problem_is_counted_past_the_ones_listed(
    db_url: str, anvil: Any, tmp_path: Path
) -> None:
    anvil.mine(1300)
    assert await sync_to(make_config(db_url, anvil.url, batch_size=500), 1300) == 0
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE blocks SET parent_hash = %s WHERE number > 0", (b"\x01" * 32,))
    path = write_config(tmp_path / "c.toml", db_url, anvil.url)
    result = run_cli("--config", str(path), "verify", "--against-node")
    assert result.returncode == errors.EXIT_FAILURE
    # Each changed parent hash breaks its link and its block hash: two problems each.
    assert "dev: 2,600 problem(s)" in result.stdout, result.stdout[-500:]
    assert "and 1,200 more like the line above" in result.stdout
    assert result.stdout.count("parent hash 0x0101") == 100


@pytest.mark.parametrize(
    ("store", "change"),
    [
        (
            "receipts",
            "UPDATE transactions SET value = value + 1 WHERE block_number = 7 AND tx_index = 0",
        ),
        (
            "receipts",
            "UPDATE receipts SET status = 1 - status WHERE block_number = 7 AND tx_index = 0",
        ),
        (
            "receipts",
            "UPDATE logs SET data = '\\x00'::bytea WHERE block_number = 7 AND log_index = 0",
        ),
        ("receipts", "UPDATE blocks SET state_root = sha3_uncles WHERE number = 7"),
        ("receipts", "UPDATE withdrawals SET amount = amount + 1 WHERE block_number = 7"),
        ("logs", "DELETE FROM logs WHERE block_number = 7 AND log_index = 0"),
        ("blocks", "UPDATE blocks SET gas_used = gas_used + 1 WHERE number = 7"),
    ],
)
async def test_at_rest_every_stored_commitment_recomputes_without_a_node(
    db_url: str, anvil: Any, tmp_path: Path, store: str, change: str
) -> None:
    fill_blocks(anvil, 10, txs_per_block=(2, 4), seed=43)
    head = anvil.block_number()
    assert await sync_to(make_config(db_url, anvil.url, store=store), head) == 0
    path = write_config(tmp_path / "c.toml", db_url, anvil.url, store=store)
    clean = run_cli("--config", str(path), "verify")
    assert clean.returncode == errors.EXIT_OK, clean.stdout
    level = "headers" if store == "blocks" else "full"
    assert f"stored commitments: {level}" in clean.stdout
    with psycopg.connect(db_url) as conn:
        changed = conn.execute(change).rowcount
    assert changed >= 1 or "withdrawals" in change, "the change must hit a stored row"
    if changed == 0:
        return  # anvil made no withdrawal in block 7: nothing to change there
    result = run_cli("--config", str(path), "verify")
    assert result.returncode == errors.EXIT_FAILURE, result.stdout
    # A log dropped where no receipt commits to it: its index is missing (its address and
    # topics may be in the bloom through another log).
    expected = "a log is missing" if change.startswith("DELETE") else "stored rows do not recompute"
    assert "block 7: " in result.stdout and expected in result.stdout, result.stdout
