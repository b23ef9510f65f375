"""Backfill an event table from the chain's stored logs, while sync follows the head.

A table sync decodes live from `live_from` up; below that, down to its `start_block`, its
events come from the `logs` table, with no node requests at all. A table with a factory is
not decoded live: the backfill follows its factory's table, up to as far as that is synced,
taking the logs of each address in the factory's column from the height it appears there.
One chunk of heights at a time, each one transaction on a pooled connection under the
chain's write lock (so no batch, rollback or repair of the chain runs meanwhile): the
registry line is read and locked, the table's rows of the chunk are deleted, the chunk's
logs with the event's topic are read and decoded, the rows copied in, and `backfilled_to`
moved to the chunk's end. A chunk is written whole or not at all, and written again whole if
it must be (a crash, an earlier `start_block`), so a backfill killed at any point resumes
from the registry and ends exact.
Chunks aim at `TARGET_LOGS` logs and take the lock for a fraction of a second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any, cast

from psycopg import sql

from indexer import _rows, errors
from indexer.chain.rpc import RpcClient
from indexer.events import node_logs
from indexer.events.matcher import EventSet, EventTable, LogRow
from indexer.store import Store
from indexer.store.queries import Q
from indexer.store.sinks import ChainSinks, EventSink
from indexer.store.writer import lock_chain_writes

logger = logging.getLogger(__name__)

TARGET_LOGS = 20_000  # logs per chunk, about
FIRST_SPAN = 1_000  # heights in a table's first chunk
MAX_SPAN = 1_000_000
IDLE_SECS = 5.0  # how often to look for work when there is none


class EventBackfiller:
    """Backfills one chain's event tables (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        *,
        chain: int,
        name: str,
        events: EventSet,
        sinks: ChainSinks,
        rpc: RpcClient | None = None,
    ) -> None:
        self._store = store
        self._rpc = rpc  # for tables filled from the node (a chain that stores no logs)
        self.chain = chain
        self.name = name
        self.events = events
        self._sinks = {s.table.name: s for s in sinks.written if isinstance(s, EventSink)}
        self._span = {t.name: FIRST_SPAN for t in events.tables}
        # For metrics and stats: per table, in this process.
        self.backfilled_to: dict[str, int] = {}
        self.pending_blocks: dict[str, int] = {}
        self.rows_written: dict[str, int] = {t.name: 0 for t in events.tables}

    async def run(self, *, stop: asyncio.Event, done: asyncio.Event, finish: bool = False) -> None:
        """Backfill chunk after chunk until every table is caught up, then look again now and
        then (a rollback or an earlier start block makes new work), until `stop`, or `done`
        (sync ended). With `finish` (`sync --to`), once sync ended, go on until caught up."""
        while not stop.is_set():
            if done.is_set() and not finish:
                return
            try:
                worked = await self.step()
            except (errors.StoreUnavailable, errors.StoreDenied, errors.SourceError) as exc:
                logger.warning(
                    "%s: event backfill waits: %s", self.name, exc,
                    extra={"chain": self.name, "action": "event_backfill"},
                )  # fmt: skip
                worked = False
            if worked:
                await asyncio.sleep(0)  # let sync's batches through between chunks
                continue
            if done.is_set():
                return  # caught up, and sync has ended
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(done.wait())]
            try:
                await asyncio.wait(waiters, timeout=IDLE_SECS, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def step(self) -> bool:
        """Backfill one chunk of the first table that needs one; False when none does."""
        for table in self.events.tables:
            if await self._chunk(table):
                return True
        return False

    async def _chunk(self, table: EventTable) -> bool:
        sink = self._sinks[table.name]
        started = time.monotonic()
        action = f"backfill event table {table.name} of {self.name}"
        planned = None
        if table.fill == "node":
            # Logs from the node: planned in one transaction, fetched with none open, written
            # in another that checks nothing moved meanwhile (see `_node_logs`).
            async with self._store.connection(action) as conn, conn.transaction():
                planned = await self._plan(conn.cursor(), table)
            if planned is None:
                return False
            fetched = await self._node_logs(table, *planned)
        async with self._store.connection(action) as conn, conn.transaction():
            cur = conn.cursor()
            await lock_chain_writes(cur, self.chain)
            plan = await self._plan(cur, table)
            if plan is None:
                return False
            low, high, target = plan
            if planned is not None:
                if plan[0] != planned[0]:
                    return True  # a rollback or another start block came first: plan again
                high = min(high, planned[1])
                logs = await self._checked_against_stored(cur, table, fetched, low, high)
                if logs is None:
                    return False  # the node's logs are of another branch: later
            elif table.spec is not None and table.factory is None:
                # Decoded in C from the logs' binary COPY rows, written as such (no node).
                stored = await _stored_log_rows(conn, self.chain, table, low, high)
                encoded, written, skipped, read = await asyncio.to_thread(
                    _rows.event_rows, stored, table.spec
                )
                del stored
                await sink.rewrite(cur, self.chain, low=low, high=high, encoded=encoded,
                                   count=written, skipped=skipped)  # fmt: skip
                logs = None
            else:
                logs = await _stored_logs(conn, self.chain, table, low, high)
            if logs is not None:
                if table.factory is not None and logs:
                    created = await _factory_addresses(conn, self.chain, table.factory, high)
                    logs = [log for log in logs if created.get(log[4], high + 1) <= log[0]]
                rows, skipped = await asyncio.to_thread(table.rows_of_logs, logs)
                await sink.rewrite(cur, self.chain, low=low, high=high, rows=rows,
                                   skipped=skipped)  # fmt: skip
                written, read = len(rows), len(logs)
        self.backfilled_to[table.name] = high
        self.pending_blocks[table.name] = max(0, target - high)
        self.rows_written[table.name] += written
        span = high - low + 1
        self._span[table.name] = _next_span(span, read)
        logger.debug(
            "%s: %s backfilled %d-%d: %d rows, %d undecodable (%.2fs)",
            self.name, table.name, low, high, written, len(skipped),
            time.monotonic() - started,
            extra={"chain": self.name, "height": high, "action": "event_backfill"},
        )  # fmt: skip
        if high == target and table.fill == "live":
            logger.info(
                "%s: event table %s backfilled up to %s: synced with the head",
                self.name, table.name, f"{high:,d}",
                extra={"chain": self.name, "height": high, "action": "event_backfilled"},
            )  # fmt: skip
        return True

    async def _plan(self, cur: Any, table: EventTable) -> tuple[int, int, int] | None:
        """The next chunk of `table` (low, high, and the height it is to reach), reading and
        locking its registry line; None when it has none to do."""
        await cur.execute(Q["event_registry_lock"], {"chain": self.chain, "table": table.name})
        row = await cur.fetchone()
        if row is None or row[2] is None:
            return None  # not attached (yet, or any more)
        live_from, backfilled_to = int(row[2]), int(row[3])
        if table.factory is not None:
            # As far as the factory's table is synced (`event_tables`, the view's rule).
            await cur.execute(
                Q["event_table_synced_to"], {"name": self.name, "table": table.factory[0]}
            )
            found = await cur.fetchone()
            if found is None:
                return None
            target = int(found[0])
        elif table.fill == "node":
            await cur.execute(Q["checkpoint_get"], {"chain": self.chain})
            tip = await cur.fetchone()
            if tip is None or tip[0] is None:
                return None
            target = int(tip[0])
        else:
            target = live_from - 1
        self.backfilled_to[table.name] = backfilled_to
        self.pending_blocks[table.name] = max(0, target - backfilled_to)
        if backfilled_to >= target:
            return None
        low = backfilled_to + 1
        return low, min(target, low + self._span[table.name] - 1), target

    async def _node_logs(self, table: EventTable, low: int, high: int, _target: int) -> _Fetched:
        """The chunk's logs from the node, filtered by the event's topic and contracts."""
        if self._rpc is None:
            raise errors.ConfigError(f"{self.name}: event table {table.name} needs a node")
        addresses: Iterable[bytes] | None = table.addresses
        if table.factory is not None:
            async with self._store.connection(f"read the factory of {table.name}") as conn:
                created = await _factory_addresses(conn, self.chain, table.factory, high)
            addresses = created.keys()
            if not created:
                return _Fetched([], {})
        logs, hashes = await node_logs.fetch_logs(
            self._rpc, low=low, high=high, topic0=table.topic0, addresses=addresses
        )
        return _Fetched(logs, hashes)

    async def _checked_against_stored(
        self, cur: Any, table: EventTable, fetched: _Fetched, low: int, high: int
    ) -> list[LogRow] | None:
        """The fetched logs of [low, high], if every block they name is the one we store at
        its height (None: the node answered from another branch)."""
        numbers = sorted(n for n in fetched.hashes if low <= n <= high)
        if numbers:
            await cur.execute(Q["blocks_hashes_at"], {"chain": self.chain, "numbers": numbers})
            stored = {int(n): bytes(h) for n, h in await cur.fetchall()}
            moved = [n for n in numbers if stored.get(n) != fetched.hashes[n]]
            if moved:
                logger.warning(
                    "%s: event table %s: the node's logs of block %s are of another block "
                    "than the one stored; asking again later",
                    self.name, table.name, f"{moved[0]:,d}",
                    extra={"chain": self.name, "height": moved[0], "action": "event_backfill"},
                )  # fmt: skip
                return None
        return [log for log in fetched.logs if low <= log[0] <= high]


class _Fetched:
    """What the node answered for a chunk: its logs and the hash of each block they name."""

    def __init__(self, logs: list[LogRow], hashes: dict[int, bytes]) -> None:
        self.logs = logs
        self.hashes = hashes


def _next_span(span: int, logs: int) -> int:
    """The next chunk's heights, aiming at `TARGET_LOGS` logs (at most doubling)."""
    if logs <= 0:
        return min(MAX_SPAN, span * 2)
    return max(1, min(MAX_SPAN, span * 2, span * TARGET_LOGS // logs))


def _logs_query(
    table: EventTable, chain: int, low: int, high: int, *, copy: bool
) -> tuple[Any, dict[str, Any]]:
    """The named query of the stored logs of [low, high] with the table's topic0 (an
    anonymous event's: its topic count), as rows or as binary COPY rows, and its params."""
    params: dict[str, Any] = {"chain": chain, "low": low, "high": high}
    if table.topic0 is None:
        name = "logs_with_topic_count"
        params["count"] = table.topic_count
    else:
        name = "logs_with_topic0"
        params["topic0"] = table.topic0
    return Q[f"{name}_copy" if copy else name], params


async def _stored_logs(
    conn: Any, chain: int, table: EventTable, low: int, high: int
) -> list[LogRow]:
    query, params = _logs_query(table, chain, low, high, copy=False)
    cur = conn.cursor(binary=True)  # ints, bytes, and topics a list of bytes: as they are
    await cur.execute(query, params)
    return cast(list[LogRow], await cur.fetchall())


_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


async def _stored_log_rows(
    conn: Any, chain: int, table: EventTable, low: int, high: int
) -> memoryview:
    """The logs `_stored_logs` reads, as the binary COPY rows of `logs` (no header or
    trailer), for `_rows.event_rows`."""
    query, params = _logs_query(table, chain, low, high, copy=True)
    chunks: list[bytes] = []
    async with conn.cursor().copy(query, params) as copy:
        async for chunk in copy:
            chunks.append(bytes(chunk))
    data = b"".join(chunks)
    del chunks
    # Header: signature, flags (int32), extension length (int32) and extension; trailer -1.
    if not data.startswith(_COPY_SIGNATURE) or len(data) < 21 or data[-2:] != b"\xff\xff":
        raise errors.StoreError(f"reading the logs of {table.name}: not a binary COPY answer")
    start = 19 + int.from_bytes(data[15:19], "big")
    return memoryview(data)[start:-2]  # the rows, not copied again


async def _factory_addresses(
    conn: Any, chain: int, factory: tuple[str, str], high: int
) -> dict[bytes, int]:
    """Every address in the factory's column up to `high`, with the first height it is at."""
    table, column = factory
    query = sql.SQL(
        "SELECT {col}, min(block_number) FROM {table} WHERE chain = %(chain)s "
        "AND block_number <= %(high)s AND {col} IS NOT NULL GROUP BY {col}"
    ).format(col=sql.Identifier(column), table=sql.Identifier(table))
    cur = conn.cursor(binary=True)
    await cur.execute(query, {"chain": chain, "high": high})
    return {bytes(address): int(first) for address, first in await cur.fetchall()}
