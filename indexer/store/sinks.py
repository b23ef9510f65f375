"""Sinks: how each declared table is written, rolled back and counted, inside a transaction.

A sink owns one table's statements, all derived from its declaration (`indexer.tables`):
the binary COPY of a batch's rows, the delete of every row above a height, and the count
of those rows. Every write transaction of a chain (a sync batch, a gap repair) writes
through `write_all`, and every rollback or rewind deletes through `delete_all_above`: both
iterate the same `SINKS`, so a table that has a sink is rolled back with its blocks, and a
table cannot be written without one. Rollbacks visit every sink whatever the chain stores
now: rows written under an earlier `store` setting go too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from indexer import errors, tables
from indexer.models import Block, Rows

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no extension
_COPY_TRAILER = b"\xff\xff"


class TableSink:
    """One table's statements, derived from its declaration."""

    def __init__(self, table: tables.Table) -> None:
        self.table = table
        name = sql.Identifier(table.name)
        height = sql.Identifier(table.height)
        self._copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            name, sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
        )
        above = sql.SQL("WHERE chain = %(chain)s AND {} > %(number)s").format(height)
        self._delete = sql.SQL("DELETE FROM {} ").format(name) + above
        self._count = sql.SQL("SELECT count(*) FROM {} ").format(name) + above

    def rows(self, block: Block) -> Rows | None:
        """This table's rows of `block` (None when the block carries none)."""
        return block.rows.get(self.table.name)

    async def write(
        self, cur: psycopg.AsyncCursor[Any], chain: int, blocks: Sequence[Block]
    ) -> int:
        """COPY the rows of `blocks`; return how many were written."""
        found = [r for r in map(self.rows, blocks) if r is not None and r.count]
        if not found:
            return 0
        values = [r for r in found if r.values]
        encoded = [r.encoded for r in found if r.encoded]
        prefix = self.table.copy_prefix(chain)
        if not all(data.startswith(prefix) for data in encoded):
            raise errors.StoreError(
                f"{self.table.name}: rows encoded for another chain than {chain}; not written"
            )
        if values:
            async with cur.copy(self._copy) as copy:
                copy.set_types(self.table.copy_types)
                for rows in values:
                    for row in rows.values:
                        await copy.write_row((chain, *row))
        if encoded:
            async with cur.copy(self._copy) as copy:
                await copy.write(b"".join([_COPY_HEADER, *encoded, _COPY_TRAILER]))
        return sum(r.count for r in found)

    async def delete_above(self, cur: psycopg.AsyncCursor[Any], chain: int, number: int) -> int:
        await cur.execute(self._delete, {"chain": chain, "number": number})
        return cur.rowcount

    async def count_above(self, cur: psycopg.AsyncCursor[Any], chain: int, number: int) -> int:
        await cur.execute(self._count, {"chain": chain, "number": number})
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


SINKS = tuple(TableSink(t) for t in tables.ALL)


async def write_all(
    cur: psycopg.AsyncCursor[Any], chain: int, blocks: Sequence[Block]
) -> dict[str, int]:
    """Write `blocks` and their rows through every sink; rows written per table."""
    return {sink.table.name: await sink.write(cur, chain, blocks) for sink in SINKS}


async def delete_all_above(
    cur: psycopg.AsyncCursor[Any], chain: int, number: int
) -> dict[str, int]:
    """Delete every row of `chain` above `number`, children first; rows deleted per table."""
    return {
        sink.table.name: await sink.delete_above(cur, chain, number) for sink in reversed(SINKS)
    }


async def count_all_above(cur: psycopg.AsyncCursor[Any], chain: int, number: int) -> dict[str, int]:
    """What `delete_all_above` would delete, per table, in table order."""
    return {sink.table.name: await sink.count_above(cur, chain, number) for sink in SINKS}
