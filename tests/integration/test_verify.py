"""`indexer verify` honours --from/--to in every check and counts every problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from indexer import errors
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
    assert "dev: 1,300 problem(s)" in result.stdout, result.stdout[-500:]
    assert "and 1,200 more" in result.stdout
    assert result.stdout.count("parent hash 0x0101") == 100
