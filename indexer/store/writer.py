"""One chain's write path: a batch's rows (through the sinks) and the checkpoint, atomically.

A `ChainWriter` owns a dedicated connection that holds the chain's writer lock (a session
advisory lock), and every write goes through that same connection: if the session ends, the
lock goes with it and so does our right to write (fencing). Losing it is noticed at once by a
failed statement, and within seconds while idle by `check_lock` (the syncer's heartbeat),
which asks the server whether the session still holds it. Either way the connection is
dropped and the lock taken again, on a new session, before anything else goes through the
writer; if another session took it meanwhile, every operation raises `WriterLockHeld` until
it is ours again. A checkpoint read under an earlier tenure of the lock is stale: a write
based on it raises `WriterLockLost` (read the checkpoint again) instead of writing. And the
checkpoint moves by compare-and-swap, so even a writer that lost its lock unnoticed could
not move it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg

from indexer import errors
from indexer.config import DatabaseConfig
from indexer.events import registry
from indexer.events.matcher import EventSet
from indexer.models import Block, BlockRef
from indexer.store import LOCK_NS_CHAIN_TX, LOCK_NS_WRITER, connect, translate
from indexer.store.queries import Q
from indexer.store.sinks import PLAIN, ChainSinks

logger = logging.getLogger(__name__)

# A lock check that gets no answer this fast means the session cannot be trusted any more.
LOCK_CHECK_TIMEOUT_SECS = 5.0


class ChainWriter:
    """The single writer of one chain."""

    def __init__(
        self, db: DatabaseConfig, *, chain: int, name: str, chain_sinks: ChainSinks = PLAIN
    ) -> None:
        self._db = db
        self.sinks = chain_sinks  # every table this chain writes (and rolls back)
        self.chain = chain
        self.name = name
        self._conn: psycopg.AsyncConnection[Any] | None = None  # set while the lock is ours
        self._spare: psycopg.AsyncConnection[Any] | None = None  # asked, lock held elsewhere
        self._busy = asyncio.Lock()  # one operation at a time on the lock's session
        self.tenure = 0  # how many times the lock was taken
        self._tip_tenure = 0  # the tenure under which the caller last read the checkpoint
        self.lost: str | None = "not taken yet"  # why the lock is not ours (None: it is)
        self._announce = False  # a loss was logged: log taking it back too

    async def open(self) -> None:
        """Connect and take the writer lock; raise `WriterLockHeld` if another instance has it."""
        async with self._busy:
            await self._take()

    async def close(self) -> None:
        for conn in (self._conn, self._spare):
            if conn is not None:
                await conn.close()
        self._conn = self._spare = None
        self.lost = "closed"

    async def __aenter__(self) -> ChainWriter:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def check_lock(self) -> None:
        """Make sure the lock is still ours; if not, drop the session and take it again.

        Asks the server (not the connection object): a terminated session, a connection cut
        or a server restart all show here within one call. Raises `WriterLockHeld` when
        another session holds the lock now, `StoreUnavailable` when it cannot be taken now.
        An operation in progress on the session checks it by itself: then this returns.
        """
        if self._busy.locked():
            return
        async with self._busy:
            if self._conn is not None:
                reason = await self._lock_missing(self._conn)
                if reason is not None:
                    logger.error(
                        "%s: writer lock lost (%s); nothing is written until it is ours again",
                        self.name,
                        reason,
                        extra={"chain": self.name, "action": "lock_lost"},
                    )
                    self._announce = True
                    await self._drop(reason)
            if self._conn is None:
                await self._take()

    async def _lock_missing(self, conn: psycopg.AsyncConnection[Any]) -> str | None:
        """Why the lock is not held on `conn` (None when it is)."""
        try:
            async with asyncio.timeout(LOCK_CHECK_TIMEOUT_SECS):
                with translate(f"check the writer lock of chain {self.name}"):
                    cur = await conn.execute(
                        Q["writer_lock_held"], {"namespace": LOCK_NS_WRITER, "key": self.chain}
                    )
                    row = await cur.fetchone()
        except TimeoutError:
            return f"its session did not answer within {LOCK_CHECK_TIMEOUT_SECS:g}s"
        except errors.StoreUnavailable as exc:
            if exc.reconnect:
                return str(exc)
            return None  # the session answered (a timeout, a conflict): the lock is still ours
        if not (row and row[0]):
            return "the server no longer lists it"
        return None

    async def _take(self) -> None:
        """Take the lock on a new session (the caller holds `_busy`).

        While another session holds it, the session that asked is kept for the next try.
        """
        try:
            conn, self._spare = self._spare, None
            if conn is None:
                conn = await connect(self._db, purpose=f"writer:{self.name}")
            try:
                with translate(f"take the writer lock of chain {self.name}"):
                    cur = await conn.execute(
                        Q["try_advisory_lock"], {"namespace": LOCK_NS_WRITER, "key": self.chain}
                    )
                    row = await cur.fetchone()
            except BaseException:
                await conn.close()
                raise
            if not row or not row[0]:
                self._spare = conn
                raise errors.WriterLockHeld(
                    f"chain {self.name}: another indexer instance is syncing this chain "
                    "(it holds the writer lock); refusing to start a second writer"
                    if self.tenure == 0
                    else f"chain {self.name}: another session (a second indexer sync, or "
                    "an indexer rewind) took the writer lock while ours was lost; this "
                    "instance writes nothing until it can take it back"
                )
        except errors.StoreError as exc:
            self.lost = str(exc)
            raise
        self._conn = conn
        self.tenure += 1
        if self.tenure > 1:
            # After a loss the heartbeat reported, say so; after dropping the session on
            # purpose (a read-only server, a broken statement), the retry says enough.
            logger.log(
                logging.WARNING if self._announce else logging.DEBUG,
                "%s: writer lock taken again",
                self.name,
                extra={"chain": self.name, "action": "lock_restored"},
            )
            self._announce = False
        self.lost = None

    async def _drop(self, reason: str) -> None:
        conn, self._conn = self._conn, None
        self.lost = reason
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    @contextlib.asynccontextmanager
    async def _session(
        self, action: str, *, write: bool = False
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """The lock's session, for one operation: taken again first if it was lost.

        A write (`write=True`) on a checkpoint read under an earlier tenure raises
        `WriterLockLost`: someone else may have moved it while the lock was not ours.
        """
        async with self._busy:
            if self._conn is None:
                await self._take()
            assert self._conn is not None
            if write and self._tip_tenure != self.tenure:
                raise errors.WriterLockLost(
                    f"chain {self.name}: the writer lock was lost and taken again; the "
                    "checkpoint is read again before anything is written"
                )
            try:
                with translate(action):
                    yield self._conn
            except errors.StoreUnavailable as exc:
                if exc.reconnect:
                    await self._drop(str(exc))
                raise

    async def tip(self) -> BlockRef | None:
        """Read the checkpoint and check that the stored block at its height has its hash.

        Writes based on it are allowed for as long as the lock stays ours (this tenure).
        """
        async with self._session(f"read checkpoint of chain {self.name}") as conn:
            cur = await conn.execute(Q["checkpoint_get"], {"chain": self.chain})
            row = await cur.fetchone()
            tip = None if row is None or row[0] is None else BlockRef(int(row[0]), bytes(row[1]))
            if tip is not None:
                cur = await conn.execute(
                    Q["block_hash_at"], {"chain": self.chain, "number": tip.number}
                )
                stored = await cur.fetchone()
                if stored is None or bytes(stored[0]) != tip.hash:
                    raise errors.StoreError(
                        f"chain {self.name}: checkpoint {tip} does not match the stored block "
                        "at that height; run `indexer verify`"
                    )
            self._tip_tenure = self.tenure
        return tip

    async def stored_hashes(self, numbers: Sequence[int]) -> dict[int, bytes]:
        """Stored hashes at `numbers` (heights not stored are absent)."""
        async with self._session(f"read stored hashes of chain {self.name}") as conn:
            cur = await conn.execute(
                Q["stored_hashes"], {"chain": self.chain, "numbers": list(numbers)}
            )
            return {int(n): bytes(h) for n, h in await cur.fetchall()}

    async def rows_above(self, number: int) -> dict[str, int]:
        """Rows stored above `number`, per table (what a rollback to it deletes)."""
        async with self._session(f"count rows of chain {self.name}") as conn:
            return await self.sinks.count_all_above(conn.cursor(), self.chain, number)

    async def attach_events(self, events: EventSet, *, start_block: int) -> None:
        """Line up the chain's event tables with the config (`events.registry.attach`), under
        the chain's write lock; from then on this writer writes and rolls them back too."""
        async with self._session(f"attach the event tables of chain {self.name}") as conn:
            async with conn.transaction():
                cur = conn.cursor()
                await lock_chain_writes(cur, self.chain)
                await cur.execute(Q["checkpoint_get"], {"chain": self.chain})
                row = await cur.fetchone()
                tip = None
                if row is not None and row[0] is not None:
                    tip = BlockRef(int(row[0]), bytes(row[1]))
                self.sinks = await registry.attach(
                    conn, chain=self.chain, name=self.name, events=events, tip=tip,
                    start_block=start_block,
                )  # fmt: skip

    async def record_head(self, head: int) -> None:
        """Remember the node head last seen (for `stats` and the coverage view)."""
        async with self._session(f"record node head of chain {self.name}") as conn:
            await conn.execute(Q["chain_set_head"], {"chain": self.chain, "head": head})

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
        action = f"roll back chain {self.name} to {fork_number:,d}"
        async with self._session(action, write=True) as conn, conn.transaction():
            cur = conn.cursor()
            await lock_chain_writes(cur, self.chain)
            await self.sinks.delete_all_above(cur, self.chain, fork_number)
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
        action = f"write blocks {blocks[0].number:,d}-{new_tip.number:,d} of {self.name}"
        async with self._session(action, write=True) as conn, conn.transaction():
            cur = conn.cursor()
            await lock_chain_writes(cur, chain)
            written = await self.sinks.write_all(cur, chain, blocks)
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
