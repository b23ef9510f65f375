"""`event_registry` at start-up: the chain's event tables lined up with the config.

`attach` runs once per chain before sync starts, in one transaction on the writer's
connection under the chain's write lock (so no batch, rollback, repair or backfill runs
meanwhile). For each event table in the config: its table must be as `indexer migrate` made
it from the declaration (else `ConfigError`, naming it); a new one is registered, live from
the height above the checkpoint, backfill from its start block; a registered one keeps its
progress, and a changed `start_block` moves it (earlier: the backfill goes back that far;
later: the rows below it are deleted). An event table registered but no longer in the config
is detached (nothing more is decoded into it; what it holds stays exact, rollbacks still
delete from it), or forgotten if its table was dropped. It returns the sinks of the chain.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from indexer import errors, tables
from indexer.events import schema
from indexer.events.matcher import EventSet
from indexer.models import BlockRef
from indexer.store.queries import Q
from indexer.store.sinks import ChainSinks


def _rollback_only(name: str) -> tables.Table:
    """Enough of a table no longer in the config to delete and count its rows by height."""
    c = tables.Column
    columns = (tables.CHAIN, c("block_number", tables.BIGINT), c("log_index", tables.INTEGER))
    return tables.Table(name, columns, height="block_number", position="log_index")


async def attach(
    conn: psycopg.AsyncConnection[Any],
    *,
    chain: int,
    name: str,
    events: EventSet,
    tip: BlockRef | None,
    start_block: int,
) -> ChainSinks:
    """Line up `event_registry` with `events` (see the module docstring); in a transaction
    the caller opened and locked."""
    cur = conn.cursor()
    live_from = start_block if tip is None else tip.number + 1
    await cur.execute(Q["event_registry_of_chain"], {"chain": chain})
    registered = {str(r[0]): r for r in await cur.fetchall()}
    for table in events.tables:
        found = await schema.catalog_columns(conn, table.name)
        diff = schema.differences(table.table, found)
        if diff is not None:
            raise errors.ConfigError(
                f"event table {table.name!r} (chain {name}): {diff}; run `indexer migrate` "
                "(as the owner role) after changing [[events]]"
            )
        row = registered.pop(table.name, None)
        if row is None:
            await cur.execute(
                Q["event_registry_insert"],
                {"chain": chain, "table": table.name, "signature": table.signature,
                 "start_block": table.start_block, "live_from": max(live_from, table.start_block),
                 "factory": table.factory_name, "fill": table.fill},
            )  # fmt: skip
            continue
        _, signature, old_start, old_live, backfilled_to = (
            row[0], str(row[1]), int(row[2]), row[3], int(row[4]),
        )  # fmt: skip
        if signature != table.signature:
            raise errors.ConfigError(
                f"event table {table.name!r} (chain {name}) holds events {signature}; the "
                f"config asks for {table.signature}: drop the table (and run `indexer "
                "migrate`) or name another one"
            )
        new_start = table.start_block
        deleted = deleted_undecodable = 0
        if new_start > old_start:
            await cur.execute(
                sql.SQL("DELETE FROM {} WHERE chain = %(chain)s AND block_number < %(start)s")
                .format(sql.Identifier(table.name)),
                {"chain": chain, "start": new_start},
            )  # fmt: skip
            deleted = cur.rowcount
            await cur.execute(
                Q["event_undecodable_delete_below"],
                {"chain": chain, "table": table.name, "start": new_start},
            )
            deleted_undecodable = cur.rowcount
            backfilled_to = max(backfilled_to, new_start - 1)
        elif new_start < old_start:
            backfilled_to = new_start - 1  # chunks are rewritten whole: exact either way
        resume = int(old_live) if old_live is not None else live_from
        if row[7] != table.factory_name or row[8] != table.fill:
            # Another set of contracts: everything is rewritten, chunk by chunk, from the
            # start block (live decoding, for a table without a factory now, from the tip).
            backfilled_to, resume = new_start - 1, live_from
        await cur.execute(
            Q["event_registry_attach"],
            {"chain": chain, "table": table.name, "start_block": new_start,
             "live_from": max(resume, new_start), "factory": table.factory_name,
             "fill": table.fill,
             "backfilled_to": backfilled_to, "deleted": deleted,
             "deleted_undecodable": deleted_undecodable},
        )  # fmt: skip
    detached: list[tables.Table] = []
    for table_name in registered:
        if await schema.catalog_columns(conn, table_name):
            await cur.execute(
                Q["event_registry_detach"],
                {"chain": chain, "table": table_name, "tip": -1 if tip is None else tip.number},
            )
            detached.append(_rollback_only(table_name))
        else:
            await cur.execute(Q["event_registry_forget"], {"chain": chain, "table": table_name})
    return ChainSinks(events=[t.table for t in events.tables], registered=detached)
