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
from psycopg_pool import AsyncConnectionPool, PoolTimeout, TooManyRequests

from indexer import errors, redact
from indexer.config import DatabaseConfig
from indexer.store.queries import Q

logger = logging.getLogger(__name__)

APPLICATION_NAME = "indexer"
# Advisory-lock namespaces (first key of the two-int form).
LOCK_NS_MIGRATE = 0x1D3C_0001
LOCK_NS_WRITER = 0x1D3C_0002
LOCK_NS_CHAIN_TX = 0x1D3C_0003
LOCK_NS_REGISTER = 0x1D3C_0004
# Requests that may wait for a pooled connection; more fail at once (no unbounded queue).
POOL_MAX_WAITING = 64
# A server that vanished without closing the connection (a cut cable, a frozen host) is
# noticed by the kernel within about half a minute, even mid-statement, instead of ~15 min.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,  # ms
}


# How each SQLSTATE (else its two-character class) reads to an operator, and what it is:
# `StoreUnavailable` and its subclasses are waited out, `StoreDenied` needs an operator, and
# whatever is not listed is a plain `StoreError` (a bug, never retried).
_READ_ONLY = "the database is read-only (a hot standby, or default_transaction_read_only)"
_DENIED = "permission denied: the database role lacks a privilege (see config/roles.sql)"
_SQLSTATES: dict[str, tuple[type[errors.StoreError], str]] = {
    "25006": (errors.DatabaseReadOnly, _READ_ONLY),
    "57014": (errors.StoreUnavailable, "statement cancelled (statement_timeout, or an operator)"),
    "55P03": (errors.StoreUnavailable, "lock not available (lock_timeout)"),
    "40P01": (errors.StoreUnavailable, "deadlock detected; the transaction is retried"),
    "40001": (errors.StoreUnavailable, "serialization failure; the transaction is retried"),
    "53100": (errors.StoreUnavailable, "the database server's disk is full"),
    "53200": (errors.StoreUnavailable, "the database server is out of memory"),
    "53300": (errors.StoreUnavailable, "the database server has too many connections"),
    "57P01": (errors.DatabaseDisconnected, "the database server is shutting down"),
    "57P02": (errors.DatabaseDisconnected, "the database server crashed"),
    "57P03": (errors.DatabaseDisconnected, "the database server is starting up or recovering"),
    "42501": (errors.StoreDenied, _DENIED),
    "08": (errors.DatabaseDisconnected, "database connection failure"),
    "40": (errors.StoreUnavailable, "transaction rolled back by the server; retried"),
    "53": (errors.StoreUnavailable, "the database server is out of resources"),
    "57": (errors.DatabaseDisconnected, "the database session was ended by the server"),
    "58": (errors.StoreUnavailable, "database server system error (I/O)"),
    "28": (errors.StoreDenied, "the database refused the role (invalid authorization)"),
}


def classify(exc: psycopg.Error) -> tuple[type[errors.StoreError], str]:
    """The `StoreError` class `exc` becomes, and what it means (see `_SQLSTATES`)."""
    if isinstance(exc, PoolTimeout):
        return errors.StoreUnavailable, "no database connection available"
    if isinstance(exc, TooManyRequests):
        return errors.StoreUnavailable, "no database connection available (too many waiting)"
    sqlstate = exc.sqlstate
    if sqlstate:
        found = _SQLSTATES.get(sqlstate) or _SQLSTATES.get(sqlstate[:2])
        if found:
            return found
    elif isinstance(exc, psycopg.OperationalError):
        # No SQLSTATE: libpq could not connect, or the connection broke.
        return errors.DatabaseDisconnected, "database unavailable"
    return errors.StoreError, ""


@contextlib.contextmanager
def translate(action: str) -> Iterator[None]:
    """Turn psycopg errors raised inside into `StoreError`s that name `action` and the cause.

    The one place that decides, by SQLSTATE, what a database error is (`classify`).
    """
    try:
        yield
    except psycopg.Error as exc:
        kind, meaning = classify(exc)
        brief = _brief(exc)
        if isinstance(exc, (PoolTimeout, TooManyRequests)):
            text = f"{action}: {meaning}"
        elif exc.sqlstate:
            text = f"{action}: {meaning or 'error'} (SQLSTATE {exc.sqlstate}: {brief})"
        else:
            text = f"{action}: {meaning}: {brief}" if meaning else f"{action}: {brief}"
        raise kind(text, sqlstate=exc.sqlstate) from exc


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
            **KEEPALIVES,
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
                **KEEPALIVES,
            },
            check=AsyncConnectionPool.check_connection,
            configure=_configure,
            timeout=db.connect_timeout_secs,
            max_waiting=POOL_MAX_WAITING,
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
                try:
                    yield conn
                except psycopg.Error as exc:
                    if classify(exc)[0].reconnect:
                        # Its session is gone, or its server takes no writes (a standby after
                        # a failover): never hand it out again.
                        await conn.close()
                    raise

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
        Registrations are serialised (a transaction lock), so processes registering different
        chains at once never pick the same id.
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
                await conn.execute(
                    Q["advisory_xact_lock"], {"namespace": LOCK_NS_REGISTER, "key": 0}
                )
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

    async def chain_stats(self, name: str) -> dict[str, Any] | None:
        async with self.connection(f"read stats of {name}") as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(Q["stats_chain"], {"name": name})
            return await cur.fetchone()

    async def wallet_stats(self, name: str) -> list[dict[str, Any]]:
        """Per wallet of chain `name`: scripts, transactions, last sync."""
        async with self.connection(f"read wallet stats of {name}") as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(Q["stats_wallets"], {"name": name})
            return await cur.fetchall()

    async def event_table_stats(self, name: str) -> list[dict[str, Any]]:
        """The `event_tables` view's rows of chain `name`."""
        async with self.connection(f"read event table stats of {name}") as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(Q["stats_event_tables"], {"name": name})
            return await cur.fetchall()
