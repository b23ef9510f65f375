"""Shared fixtures: a real Postgres (never skipped), a fresh database per test.

The server comes from INDEXER_TEST_DSN (default: the local trust-auth server CI starts).
A template database gets the migrations once per session; each test gets its own copy with
CREATE DATABASE ... TEMPLATE, which is fast and isolates tests completely.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

DEFAULT_TEST_DSN = "postgresql://postgres@127.0.0.1:5432/test"
TEMPLATE_DB = f"indexer_tpl_{os.getpid()}"


@pytest.fixture(autouse=True)
def _scrub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may depend on the developer's INDEXER_* settings."""
    for key in list(os.environ):
        if key.startswith("INDEXER_") and key != "INDEXER_TEST_DSN":
            monkeypatch.delenv(key)


def with_database(dsn: str, dbname: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + dbname))


@pytest.fixture(scope="session")
def pg_server_dsn() -> str:
    dsn = os.environ.get("INDEXER_TEST_DSN", DEFAULT_TEST_DSN)
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        pytest.fail(f"Postgres is required for the tests ({exc}); set INDEXER_TEST_DSN")
    return dsn


def _admin(dsn: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(dsn, autocommit=True)


@pytest.fixture(scope="session")
def template_db(pg_server_dsn: str) -> Iterator[str]:
    import asyncio

    from indexer.config import DatabaseConfig
    from indexer.store.migrate import migrate

    with _admin(pg_server_dsn) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}"')
        conn.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    asyncio.run(migrate(DatabaseConfig(url=with_database(pg_server_dsn, TEMPLATE_DB))))
    yield TEMPLATE_DB
    with _admin(pg_server_dsn) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')


def _create_db(server_dsn: str, *, template: str | None) -> Iterator[str]:
    name = f"indexer_test_{uuid.uuid4().hex[:12]}"
    with _admin(server_dsn) as conn:
        if template:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(server_dsn, name)
    finally:
        with _admin(server_dsn) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(pg_server_dsn: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for this test."""
    yield from _create_db(pg_server_dsn, template=template_db)


@pytest.fixture
def empty_db_url(pg_server_dsn: str) -> Iterator[str]:
    """A fresh database with no schema at all."""
    yield from _create_db(pg_server_dsn, template=None)


@pytest.fixture
def anvil() -> Iterator[Any]:
    """A real anvil node on a free loopback port, mining only on demand."""
    from indexer.devnet.anvil import Anvil

    with Anvil() as node:
        yield node
