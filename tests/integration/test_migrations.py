"""Migrations apply once, in order, concurrently safe, and refuse edited history."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import psycopg
import pytest

from indexer import errors
from indexer.config import DatabaseConfig
from indexer.store.migrate import discover, migrate, migrations_dir


async def test_apply_all_then_nothing(empty_db_url: str) -> None:
    db = DatabaseConfig(url=empty_db_url)
    applied = await migrate(db)
    assert [m.version for m in applied] == [m.version for m in discover()]
    assert await migrate(db) == []
    with psycopg.connect(empty_db_url) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema='public'"
            )
        }
    assert {"chains", "blocks", "transactions", "logs", "checkpoints", "reorgs"} <= tables


async def test_concurrent_migrations_do_not_race(empty_db_url: str) -> None:
    db = DatabaseConfig(url=empty_db_url)
    results = await asyncio.gather(*(migrate(db) for _ in range(4)))
    assert sorted(len(r) for r in results) == [0, 0, 0, len(discover())]


async def test_edited_migration_is_refused(empty_db_url: str, tmp_path: Path) -> None:
    db = DatabaseConfig(url=empty_db_url)
    await migrate(db)
    copy = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), copy)
    first = sorted(copy.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(errors.MigrationError, match="changed after it was applied"):
        await migrate(db, directory=copy)


async def test_failed_migration_leaves_nothing_half_applied(
    empty_db_url: str, tmp_path: Path
) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), copy)
    n = len(list(copy.glob("*.sql")))
    (copy / f"{n + 1:04d}_broken.sql").write_text(
        "CREATE TABLE half_done (x int);\nSELECT no_such_function();\n"
    )
    db = DatabaseConfig(url=empty_db_url)
    with pytest.raises(errors.StoreError):
        await migrate(db, directory=copy)
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)
        assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone() == (n,)
