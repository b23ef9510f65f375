"""The read side `indexer verify` checks: what one chain's tables hold, by named query.

Each method returns plain rows; deciding what is a problem and saying so is `verify.py`'s.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from indexer import tables
from indexer.models import BlockRef
from indexer.store import Store
from indexer.store.queries import Q


class StoredChain:
    """One chain's stored rows, read through the shared pool."""

    def __init__(self, store: Store, *, chain: int, name: str) -> None:
        self._store = store
        self.chain = chain
        self.name = name

    async def _rows(self, query: str, **params: Any) -> list[tuple[Any, ...]]:
        async with self._store.connection(f"verify {self.name}") as conn:
            cur = await conn.execute(Q[query], {"chain": self.chain, **params})
            return await cur.fetchall()

    async def link_breaks(self, low: int, high: int, *, limit: int) -> list[tuple[Any, ...]]:
        """(total, number, parent_hash, predecessor's hash) where they differ; `limit` rows."""
        return await self._rows("verify_links", low=low, high=high, limit=limit)

    async def orphan_transactions(
        self, low: int, high: int, *, limit: int
    ) -> list[tuple[Any, ...]]:
        """(total, block_number, count) of transactions with no stored block."""
        return await self._rows("verify_orphan_transactions", low=low, high=high, limit=limit)

    async def orphan_logs(self, low: int, high: int, *, limit: int) -> list[tuple[Any, ...]]:
        """(total, block_number, log_index) of logs whose transaction is not stored."""
        return await self._rows("verify_orphan_logs", low=low, high=high, limit=limit)

    async def log_index_gaps(self, low: int, high: int, *, limit: int) -> list[tuple[Any, ...]]:
        """(total, block_number, count, min, max) where log indexes are not 0..n-1."""
        return await self._rows("verify_log_indexes", low=low, high=high, limit=limit)

    async def tx_count_mismatches(
        self, low: int, high: int, *, limit: int
    ) -> list[tuple[Any, ...]]:
        """(total, number, tx_count, stored transactions) where they differ."""
        return await self._rows("verify_tx_counts", low=low, high=high, limit=limit)

    async def range_mismatches(self, *, limit: int) -> list[tuple[Any, ...]]:
        """(total, problem, first, last): where block_ranges and blocks disagree."""
        return await self._rows("verify_ranges", limit=limit)

    async def checkpoint(self) -> BlockRef | None:
        rows = await self._rows("checkpoint_get")
        if not rows or rows[0][0] is None:
            return None
        return BlockRef(int(rows[0][0]), bytes(rows[0][1]))

    async def highest(self) -> int | None:
        """The highest stored height (None when nothing is stored)."""
        rows = await self._rows("highest_stored")
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    async def hash_at(self, number: int) -> bytes | None:
        rows = await self._rows("block_hash_at", number=number)
        return bytes(rows[0][0]) if rows else None

    async def rows_between(self, table: str, low: int, high: int) -> list[dict[str, Any]]:
        """Every row of the declared table `table` in [low, high], in block order."""
        async with self._store.connection(f"verify {self.name}") as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(_ROWS_BETWEEN[table], {"chain": self.chain, "low": low, "high": high})
            return await cur.fetchall()

    async def hashes_between(self, low: int, high: int) -> dict[int, bytes]:
        """Stored hashes in [low, high], by height."""
        rows = await self._rows("stored_hashes_between", low=low, high=high)
        return {int(n): bytes(h) for n, h in rows}


def _rows_between_sql(table: tables.Table) -> sql.Composed:
    order = [table.height] + ([table.position] if table.position else [])
    return sql.SQL(
        "SELECT * FROM {} WHERE chain = %(chain)s AND {} BETWEEN %(low)s AND %(high)s ORDER BY {}"
    ).format(
        sql.Identifier(table.name),
        sql.Identifier(table.height),
        sql.SQL(", ").join(sql.Identifier(c) for c in order),
    )


_ROWS_BETWEEN = {t.name: _rows_between_sql(t) for t in tables.ALL}
