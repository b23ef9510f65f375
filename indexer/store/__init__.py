"""Postgres access: connections, error translation, and the read side.

`Store` owns the shared connection pool (reads, stats, migrations). Each chain's writes go
through its own `store.writer.ChainWriter`, on a dedicated connection that also holds that
chain's writer lock. psycopg errors become `errors.StoreError` subclasses here and only here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
from psycopg.adapt import PyFormat
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from indexer import errors, redact
from indexer.config import DatabaseConfig
from indexer.store.queries import Q

logger = logging.getLogger(__name__)

APPLICATION_NAME = "indexer"
# Advisory-lock namespaces (first key of the two-int form).
LOCK_NS_MIGRATE = 0x1D3C_0001
LOCK_NS_WRITER = 0x1D3C_0002
LOCK_NS_CHAIN_TX = 0x1D3C_0003


@contextlib.contextmanager
def translate(action: str) -> Iterator[None]:
    """Turn psycopg errors raised inside into `StoreError`s that name `action`."""
    try:
        yield
    except PoolTimeout as exc:
        raise errors.StoreUnavailable(f"{action}: no database connection available") from exc
    except psycopg.OperationalError as exc:
        raise errors.StoreUnavailable(f"{action}: database unavailable: {_brief(exc)}") from exc
    except psycopg.Error as exc:
        raise errors.StoreError(f"{action}: {_brief(exc)}") from exc


def _brief(exc: BaseException) -> str:
    # psycopg messages may echo the conninfo, a piece of a URL libpq could not parse, or the
    # database name: keep the first line, scrubbed of every configured secret.
    return redact.scrub((str(exc).strip().splitlines() or [type(exc).__name__])[0])


def tune_adapters(conn: psycopg.AsyncConnection[Any]) -> None:
    """Binary COPY of `bytea` through psycopg's C dumper.

    `Copy.set_types(["bytea", ...])` picks the dumper registered last for the bytea oid,
    which is the pure-Python DB-API one; the C one is several times faster per row.
    """
    conn.adapters.register_dumper(bytes, psycopg.adapters.get_dumper(bytes, PyFormat.BINARY))


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    tune_adapters(conn)


async def connect(db: DatabaseConfig, *, purpose: str) -> psycopg.AsyncConnection[Any]:
    """Open a dedicated autocommit connection (for a writer or the migration lock)."""
    with translate(f"connect to {redact.redact_url(db.url)} ({purpose})"):
        conn = await psycopg.AsyncConnection.connect(
            db.url,
            autocommit=True,
            connect_timeout=max(1, int(db.connect_timeout_secs)),
            application_name=f"{APPLICATION_NAME}:{purpose}",
        )
    tune_adapters(conn)
    return conn


class Store:
    """The shared pool and the read-side queries."""

    def __init__(self, db: DatabaseConfig) -> None:
        self.db = db
        self._pool = AsyncConnectionPool(
            db.url,
            open=False,
            min_size=db.pool_min_size,
            max_size=db.pool_max_size,
            kwargs={
                "autocommit": True,
                "application_name": APPLICATION_NAME,
                "connect_timeout": max(1, int(db.connect_timeout_secs)),
            },
            check=AsyncConnectionPool.check_connection,
            configure=_configure,
            timeout=db.connect_timeout_secs,
            name="indexer",
        )

    async def open(self) -> None:
        """Open the pool and wait until the database answers (fail fast at start-up)."""
        with translate(f"open database pool {redact.redact_url(self.db.url)}"):
            await self._pool.open(wait=True, timeout=self.db.connect_timeout_secs)

    async def close(self) -> None:
        await self._pool.close()

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def connection(
        self, action: str, *, timeout_secs: float | None = None
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        with translate(action):
            async with self._pool.connection(timeout=timeout_secs) as conn:
                yield conn

    def pool_stats(self) -> dict[str, int]:
        return self._pool.get_stats()

    async def ping(self, *, pool_timeout_secs: float) -> None:
        """Raise `StoreError` unless a pooled connection answers a query."""
        async with self.connection("health check", timeout_secs=pool_timeout_secs) as conn:
            await conn.execute(Q["health_check"])

    async def database_size(self, *, pool_timeout_secs: float) -> int | None:
        """The size of the database in bytes (pg_database_size)."""
        async with self.connection("database size", timeout_secs=pool_timeout_secs) as conn:
            cur = await conn.execute(Q["database_size"])
            row = await cur.fetchone()
        return None if row is None else int(row[0])

    # -- Chains

    async def register_chain(
        self,
        *,
        name: str,
        kind: str,
        chain_id: int | None,
        genesis_hash: bytes | None,
        start_block: int,
    ) -> int:
        """Return the chain's id, creating its `chains` and `checkpoints` rows if new.

        A chain already registered under `name` must be the same chain (kind, chain id,
        genesis); otherwise the database holds another chain's data under this name.
        """
        params = {
            "name": name,
            "kind": kind,
            "chain_id": chain_id,
            "genesis_hash": genesis_hash,
            "start_block": start_block,
        }
        async with self.connection(f"register chain {name}") as conn:
            async with conn.transaction():
                await conn.execute(Q["chain_insert"], params)
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(Q["chain_get"], {"name": name})
                row = await cur.fetchone()
                assert row is not None
                for key in ("kind", "chain_id", "genesis_hash"):
                    if row[key] != params[key]:
                        raise errors.ChainMismatch(
                            f"chains[{name}].{key}: the database holds chain {name!r} with a "
                            f"different {key}; refusing to mix two chains under one name"
                        )
                chain = int(row["id"])
                if row["start_block"] != start_block:
                    await conn.execute(
                        Q["chain_set_start_block"], {"chain": chain, "start_block": start_block}
                    )
                await conn.execute(Q["checkpoint_init"], {"chain": chain})
        return chain

    async def chain_row(self, name: str) -> dict[str, Any] | None:
        """The `chains` row of `name`, or None when it was never synced."""
        async with self.connection(f"read chain {name}") as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(Q["chain_get"], {"name": name})
            return await cur.fetchone()

    async def set_head(self, chain: int, head: int) -> None:
        async with self.connection("record node head") as conn:
            await conn.execute(Q["chain_set_head"], {"chain": chain, "head": head})

    async def chain_stats(self, name: str) -> dict[str, Any] | None:
        async with self.connection(f"read stats of {name}") as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(Q["stats_chain"], {"name": name})
            return await cur.fetchone()
