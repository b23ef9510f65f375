"""One chain's write path: a batch's rows (through the sinks) and the checkpoint, atomically.

A `ChainWriter` owns a dedicated connection that holds the chain's writer lock (a session
advisory lock) for as long as it lives, and every write goes through that same connection.
If the connection drops, the lock goes with it and so does our right to write: `reconnect`
must take the lock again before any further write (fencing). The checkpoint moves by
compare-and-swap, so even a writer that lost its lock unnoticed could not move it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg

from indexer import errors
from indexer.config import DatabaseConfig
from indexer.models import Block, BlockRef
from indexer.store import LOCK_NS_CHAIN_TX, LOCK_NS_WRITER, connect, sinks, translate
from indexer.store.queries import Q

logger = logging.getLogger(__name__)


class ChainWriter:
    """The single writer of one chain."""

    def __init__(self, db: DatabaseConfig, *, chain: int, name: str) -> None:
        self._db = db
        self.chain = chain
        self.name = name
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def open(self) -> None:
        """Connect and take the writer lock; raise `WriterLockHeld` if another instance has it."""
        conn = await connect(self._db, purpose=f"writer:{self.name}")
        try:
            with translate(f"take the writer lock of chain {self.name}"):
                cur = await conn.execute(
                    Q["try_advisory_lock"], {"namespace": LOCK_NS_WRITER, "key": self.chain}
                )
                row = await cur.fetchone()
            if not row or not row[0]:
                raise errors.WriterLockHeld(
                    f"chain {self.name}: another indexer instance is syncing this chain "
                    "(it holds the writer lock); refusing to start a second writer"
                )
        except BaseException:
            await conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def reconnect(self) -> None:
        """Drop the connection (and with it the lock) and take both again."""
        await self.close()
        await self.open()

    async def __aenter__(self) -> ChainWriter:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def conn(self) -> psycopg.AsyncConnection[Any]:
        assert self._conn is not None, "writer used before open()"
        return self._conn

    async def tip(self) -> BlockRef | None:
        """Read the checkpoint and check that the stored block at its height has its hash."""
        with translate(f"read checkpoint of chain {self.name}"):
            cur = await self.conn.execute(Q["checkpoint_get"], {"chain": self.chain})
            row = await cur.fetchone()
            tip = None if row is None or row[0] is None else BlockRef(int(row[0]), bytes(row[1]))
            if tip is not None:
                cur = await self.conn.execute(
                    Q["block_hash_at"], {"chain": self.chain, "number": tip.number}
                )
                stored = await cur.fetchone()
                if stored is None or bytes(stored[0]) != tip.hash:
                    raise errors.StoreError(
                        f"chain {self.name}: checkpoint {tip} does not match the stored block "
                        "at that height; run `indexer verify`"
                    )
        return tip

    async def stored_hashes(self, numbers: Sequence[int]) -> dict[int, bytes]:
        """Stored hashes at `numbers` (heights not stored are absent)."""
        with translate(f"read stored hashes of chain {self.name}"):
            cur = await self.conn.execute(
                Q["stored_hashes"], {"chain": self.chain, "numbers": list(numbers)}
            )
            return {int(n): bytes(h) for n, h in await cur.fetchall()}

    async def rows_above(self, number: int) -> dict[str, int]:
        """Rows stored above `number`, per table (what a rollback to it deletes)."""
        with translate(f"count rows of chain {self.name}"):
            return await sinks.count_all_above(self.conn.cursor(), self.chain, number)

    async def roll_back(
        self,
        *,
        expected: BlockRef,
        fork: BlockRef | None,
        fork_number: int,
        kind: str,
        new_tip_hash: bytes | None,
    ) -> None:
        """Delete everything above `fork_number` and move the checkpoint there, atomically.

        `fork` is the stored block at `fork_number` (None when nothing remains: the fork is
        below the start block). The checkpoint moves by compare-and-swap from `expected`, and
        a `reorgs` row records the rollback in the same transaction: after a crash the chain
        is either the old branch, whole, or rolled back and audited, never a mix. Every
        table's rows go through its sink (`store.sinks`).
        """
        assert fork is None or fork.number == fork_number
        with translate(f"roll back chain {self.name} to {fork_number:,d}"):
            async with self.conn.transaction():
                cur = self.conn.cursor()
                await lock_chain_writes(cur, self.chain)
                await sinks.delete_all_above(cur, self.chain, fork_number)
                await cur.execute(
                    Q["checkpoint_advance"],
                    {
                        "chain": self.chain,
                        "number": None if fork is None else fork.number,
                        "hash": None if fork is None else fork.hash,
                        "expected_number": expected.number,
                        "expected_hash": expected.hash,
                    },
                )
                if cur.rowcount != 1:
                    raise errors.CheckpointConflict(
                        f"chain {self.name}: checkpoint is no longer at {expected}; "
                        "is another writer running?"
                    )
                await cur.execute(
                    Q["reorg_insert"],
                    {
                        "chain": self.chain,
                        "kind": kind,
                        "fork_number": fork_number,
                        "depth": expected.number - fork_number,
                        "old_tip_hash": expected.hash,
                        "new_tip_hash": new_tip_hash,
                    },
                )

    async def write_batch(
        self, blocks: Sequence[Block], *, expected: BlockRef | None, head: int | None
    ) -> dict[str, int]:
        """Write `blocks` and move the checkpoint from `expected` to the last one, atomically.

        The caller has validated that `blocks` link to `expected`. Returns the rows written
        per table.
        """
        assert blocks, "empty batch"
        new_tip = blocks[-1].ref
        chain = self.chain
        with translate(f"write blocks {blocks[0].number:,d}-{new_tip.number:,d} of {self.name}"):
            async with self.conn.transaction():
                cur = self.conn.cursor()
                await lock_chain_writes(cur, chain)
                written = await sinks.write_all(cur, chain, blocks)
                await cur.execute(
                    Q["checkpoint_advance"],
                    {
                        "chain": chain,
                        "number": new_tip.number,
                        "hash": new_tip.hash,
                        "expected_number": None if expected is None else expected.number,
                        "expected_hash": None if expected is None else expected.hash,
                    },
                )
                if cur.rowcount != 1:
                    raise errors.CheckpointConflict(
                        f"chain {self.name}: checkpoint is no longer at {expected}; "
                        "is another writer running?"
                    )
                if head is not None:
                    await cur.execute(Q["chain_set_head"], {"chain": chain, "head": head})
        return written


async def lock_chain_writes(cur: psycopg.AsyncCursor[Any], chain: int) -> None:
    """Serialise this transaction with every other write transaction of `chain`."""
    await cur.execute(Q["chain_write_lock"], {"namespace": LOCK_NS_CHAIN_TX, "chain": chain})
