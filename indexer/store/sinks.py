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
from indexer.store.queries import Q
from indexer.wallets.model import WalletChange

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
        self._delete_between = sql.SQL(
            "DELETE FROM {} WHERE chain = %(chain)s AND {} BETWEEN %(low)s AND %(high)s"
        ).format(name, height)

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
        await self.write_encoded(cur, chain, [r.encoded for r in found if r.encoded])
        await self.write_values(cur, chain, [row for r in found for row in r.values])
        return sum(r.count for r in found)

    async def write_encoded(
        self, cur: psycopg.AsyncCursor[Any], chain: int, parts: Sequence[bytes]
    ) -> None:
        """COPY rows already encoded (`Rows.encoded`: binary COPY rows, back to back); each
        part must be of `chain` (StoreError before anything is written, otherwise)."""
        if not parts:
            return
        prefix = self.table.copy_prefix(chain)
        if not all(data.startswith(prefix) for data in parts):
            raise errors.StoreError(
                f"{self.table.name}: rows encoded for another chain than {chain}; not written"
            )
        async with cur.copy(self._copy) as copy:
            await copy.write(b"".join([_COPY_HEADER, *parts, _COPY_TRAILER]))

    async def write_values(
        self, cur: psycopg.AsyncCursor[Any], chain: int, rows: Sequence[tuple[Any, ...]]
    ) -> int:
        """COPY rows of values (`chain` left out); return how many."""
        if rows:
            async with cur.copy(self._copy) as copy:
                copy.set_types(self.table.copy_types)
                for row in rows:
                    await copy.write_row((chain, *row))
        return len(rows)

    async def delete_above(self, cur: psycopg.AsyncCursor[Any], chain: int, number: int) -> int:
        await cur.execute(self._delete, {"chain": chain, "number": number})
        return cur.rowcount

    async def delete_between(
        self, cur: psycopg.AsyncCursor[Any], chain: int, low: int, high: int
    ) -> int:
        """Delete `chain`'s rows of heights [low, high]; return how many."""
        await cur.execute(self._delete_between, {"chain": chain, "low": low, "high": high})
        return cur.rowcount

    async def count_above(self, cur: psycopg.AsyncCursor[Any], chain: int, number: int) -> int:
        await cur.execute(self._count, {"chain": chain, "number": number})
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


class EventSink(TableSink):
    """An event table's sink: its rows, the logs it skipped (`event_undecodable`) and its line
    of `event_registry` (rows and skipped logs counted; on a rollback, where live decoding and
    the backfill resume), all in the same transaction."""

    async def write(
        self, cur: psycopg.AsyncCursor[Any], chain: int, blocks: Sequence[Block]
    ) -> int:
        written = await super().write(cur, chain, blocks)
        skipped = [
            (b.number, i)
            for b in blocks
            for r in [self.rows(b)]
            if r is not None
            for i in r.skipped
        ]
        await self.count(cur, chain, rows=written, skipped=skipped)
        return written

    async def count(
        self,
        cur: psycopg.AsyncCursor[Any],
        chain: int,
        *,
        rows: int,
        skipped: Sequence[tuple[int, int]],
    ) -> None:
        """Record skipped logs; add `rows` and the skipped logs to the registry's counts."""
        if skipped:
            async with cur.copy(Q["event_undecodable_copy"]) as copy:
                for number, log_index in skipped:
                    await copy.write_row((chain, self.table.name, number, log_index))
        if rows or skipped:
            await cur.execute(
                Q["event_registry_count"],
                {"chain": chain, "table": self.table.name, "rows": rows,
                 "undecodable": len(skipped)},
            )  # fmt: skip

    async def delete_above(self, cur: psycopg.AsyncCursor[Any], chain: int, number: int) -> int:
        deleted = await super().delete_above(cur, chain, number)
        await cur.execute(
            Q["event_undecodable_delete_above"],
            {"chain": chain, "table": self.table.name, "number": number},
        )
        await cur.execute(
            Q["event_registry_roll_back"],
            {"chain": chain, "table": self.table.name, "number": number, "deleted": deleted,
             "deleted_undecodable": cur.rowcount},
        )  # fmt: skip
        return deleted

    async def rewrite(
        self,
        cur: psycopg.AsyncCursor[Any],
        chain: int,
        *,
        low: int,
        high: int,
        rows: Sequence[tuple[Any, ...]] = (),
        encoded: bytes = b"",
        count: int = 0,
        skipped: Sequence[tuple[int, int]],
    ) -> None:
        """A backfill chunk: replace everything of heights [low, high] with `rows` (or
        `count` rows `encoded` as binary COPY rows: `_rows.event_rows`) and `skipped`, and
        record the table backfilled up to `high`."""
        deleted = await self.delete_between(cur, chain, low, high)
        await cur.execute(
            Q["event_undecodable_delete_between"],
            {"chain": chain, "table": self.table.name, "low": low, "high": high},
        )
        deleted_skipped = cur.rowcount
        await self.write_encoded(cur, chain, [encoded] if encoded else [])
        written = await self.write_values(cur, chain, rows) + count
        await self.count(cur, chain, rows=written - deleted, skipped=skipped)
        await cur.execute(
            Q["event_registry_backfilled"],
            {"chain": chain, "table": self.table.name, "backfilled_to": high,
             "undecodable": -deleted_skipped},
        )  # fmt: skip


class WalletSink(TableSink):
    """The wallet tables of a chain (`tables.WALLET_TABLES`). Their rows are written by wallet
    sync (`apply`), not with blocks; a rollback or rewind above a height turns what it
    confirmed above that height back to unconfirmed, and marks the scripts whose history it
    touched to be synced (and proven) again: in the same transaction as the blocks' delete."""

    def __init__(self) -> None:
        super().__init__(tables.WALLET_TRANSACTIONS)
        self._history = TableSink(tables.WALLET_HISTORY)
        self._inputs = TableSink(tables.WALLET_INPUTS)

    async def write(
        self, cur: psycopg.AsyncCursor[Any], chain: int, blocks: Sequence[Block]
    ) -> int:
        return 0  # headers bring no wallet rows

    async def delete_above(self, cur: psycopg.AsyncCursor[Any], chain: int, number: int) -> int:
        params = {"chain": chain, "number": number}
        await cur.execute(Q["wallet_roll_back_scripts"], params)
        await cur.execute(Q["wallet_roll_back_history"], params)
        await cur.execute(Q["wallet_roll_back_transactions"], params)
        unconfirmed = cur.rowcount
        for name in ("wallet_roll_back_inputs", "wallet_roll_back_outputs",
                     "wallet_roll_back_spends"):  # fmt: skip
            await cur.execute(Q[name], params)
        return unconfirmed

    async def count_above(self, cur: psycopg.AsyncCursor[Any], chain: int, number: int) -> int:
        await cur.execute(Q["wallet_count_above"], {"chain": chain, "number": number})
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def delete_between(
        self, cur: psycopg.AsyncCursor[Any], chain: int, low: int, high: int
    ) -> int:
        raise AssertionError("wallet rows are never rewritten by height")

    async def apply(
        self, cur: psycopg.AsyncCursor[Any], chain: int, change: WalletChange, *, now: int
    ) -> None:
        """Store a round's new histories of some scripts of a wallet, and what follows from
        them: transactions no history names any more go (with their inputs and outputs);
        those named are stored or moved to their new height; the outputs they create and
        spend are marked. The caller holds the chain's write lock and has checked that every
        proof's block is the one stored at its height."""
        wallet = change.wallet
        base = {"chain": chain, "wallet": wallet}
        hashes = [u.scripthash for u in change.updates]
        await cur.execute(Q["wallet_history_txids"], {**base, "scripthashes": hashes})
        affected = {bytes(r[0]) for r in await cur.fetchall()}
        await cur.execute(Q["wallet_history_delete"], {**base, "scripthashes": hashes})
        history = [
            (wallet, u.scripthash, txid, change.txs[txid].height)
            for u in change.updates
            for txid in u.txids
        ]
        await self._history.write_values(cur, chain, history)
        await cur.executemany(
            Q["wallet_script_synced"],
            [{**base, "scripthash": u.scripthash, "status": u.status, "used": bool(u.txids)}
             for u in change.updates],
        )  # fmt: skip
        affected |= {txid for u in change.updates for txid in u.txids}
        txids = sorted(affected)
        await cur.execute(Q["wallet_orphans"], {**base, "txids": txids})
        gone = [bytes(r[0]) for r in await cur.fetchall()]
        left = frozenset(gone)
        present = [t for t in txids if t in change.txs and t not in left]
        for query in ("wallet_transactions_delete", "wallet_inputs_delete",
                      "wallet_outputs_delete"):  # fmt: skip
            await cur.execute(Q[query], {**base, "txids": gone})
        await cur.execute(Q["wallet_inputs_delete"], {**base, "txids": present})
        first_seen = tables.WALLET_TRANSACTIONS.column("first_seen").check(now)
        puts, inputs, outputs = [], [], []
        for txid in present:
            tx = change.txs[txid]
            proof = tx.proof
            puts.append({
                **base, "txid": txid, "raw": tx.parsed.raw, "first_seen": first_seen,
                "height": None if proof is None else proof.height,
                "block_hash": None if proof is None else proof.block_hash,
                "position": None if proof is None else proof.position,
                "merkle_branch": None if proof is None else list(proof.branch),
            })  # fmt: skip
            for vin, (prev_txid, prev_vout) in enumerate(tx.parsed.inputs):
                inputs.append((wallet, txid, vin, prev_txid, prev_vout, tx.height))
            for vout, (script, value) in enumerate(tx.parsed.outputs):
                mine = change.scripts.get(script)
                if mine is not None:
                    outputs.append({
                        **base, "txid": txid, "vout": vout, "address": mine.address,
                        "script": script, "value": value, "height": tx.height,
                    })  # fmt: skip
        if puts:
            await cur.executemany(Q["wallet_transaction_put"], puts)
        await self._inputs.write_values(cur, chain, inputs)
        if outputs:
            await cur.executemany(Q["wallet_output_put"], outputs)
        await cur.execute(Q["wallet_spent_clear"], {**base, "txids": txids})
        await cur.execute(Q["wallet_spent_set"], {**base, "txids": txids})


SINKS = tuple(TableSink(t) for t in tables.ALL)
WALLETS = WalletSink()


class ChainSinks:
    """The sinks of one chain: every declared table's, then its event tables' (`events`:
    those written; `registered`: every event table of the chain in `event_registry`, which
    rollbacks delete from too, whether the config still names it or not)."""

    def __init__(
        self, events: Sequence[tables.Table] = (), registered: Sequence[tables.Table] = ()
    ) -> None:
        self.written = SINKS + tuple(EventSink(t) for t in events)
        names = {t.name for t in events}
        unwritten = tuple(EventSink(t) for t in registered if t.name not in names)
        # Wallet rows of any chain: rolled back (turned unconfirmed) first, as children.
        self.all = self.written + unwritten + (WALLETS,)

    async def write_all(
        self, cur: psycopg.AsyncCursor[Any], chain: int, blocks: Sequence[Block]
    ) -> dict[str, int]:
        """Write `blocks` and their rows through every sink; rows written per table."""
        return {sink.table.name: await sink.write(cur, chain, blocks) for sink in self.written}

    async def delete_all_above(
        self, cur: psycopg.AsyncCursor[Any], chain: int, number: int
    ) -> dict[str, int]:
        """Delete every row of `chain` above `number`, children first; rows deleted per table."""
        return {
            sink.table.name: await sink.delete_above(cur, chain, number)
            for sink in reversed(self.all)
        }

    async def count_all_above(
        self, cur: psycopg.AsyncCursor[Any], chain: int, number: int
    ) -> dict[str, int]:
        """What `delete_all_above` would delete, per table, in table order."""
        return {sink.table.name: await sink.count_above(cur, chain, number) for sink in self.all}


PLAIN = ChainSinks()  # a chain with no event tables
