"""The gap side of the store: what is missing, writing repaired ranges, the dead letters.

Repairs write through the shared pool, not through the chain's writer connection, so they can
run while `indexer sync` holds the writer lock. Every write transaction of a chain takes the
chain's transaction lock first (`writer.lock_chain_writes`), so a repair batch never
interleaves with a sync batch or a rollback; and inside that transaction the stored
neighbours are re-read and locked, so a repaired range links on both sides at commit time.
Repairers may run at once (the daemon's and `indexer repair-gaps`): heights that another one
stored meanwhile are left as they are when they hold the same blocks, so a range already
repaired is simply done.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from indexer import errors
from indexer.models import Block, BlockRef
from indexer.store import Store
from indexer.store.queries import Q
from indexer.store.sinks import PLAIN, ChainSinks
from indexer.store.writer import lock_chain_writes

logger = logging.getLogger(__name__)

FAILURE_BACKOFF_SECS = 60.0
FAILURE_MAX_BACKOFF_SECS = 6 * 3600.0


@dataclass(frozen=True, slots=True)
class GapFailure:
    start: int
    end: int
    error: str
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime
    next_retry_at: datetime


class RepairStore:
    def __init__(
        self, store: Store, *, chain: int, name: str, chain_sinks: ChainSinks = PLAIN
    ) -> None:
        self._store = store
        self.chain = chain
        self.name = name
        self.sinks = chain_sinks

    async def gaps(self, *, low: int, high: int) -> list[tuple[int, int]]:
        """Missing ranges overlapping [low, high], clipped to it."""
        async with self._store.connection(f"list gaps of {self.name}") as conn:
            cur = await conn.execute(
                Q["gaps_of_chain"], {"name": self.name, "low": low, "high": high}
            )
            rows = await cur.fetchall()
        return [(max(int(s), low), min(int(e), high)) for s, e in rows]

    async def failures(self) -> list[GapFailure]:
        async with self._store.connection(f"read gap failures of {self.name}") as conn:
            cur = await conn.execute(Q["gap_failures_of_chain"], {"chain": self.chain})
            return [GapFailure(int(r[0]), int(r[1]), *r[2:]) for r in await cur.fetchall()]

    async def stored_block(self, number: int) -> BlockRef | None:
        async with self._store.connection(f"read block {number} of {self.name}") as conn:
            cur = await conn.execute(Q["block_hash_at"], {"chain": self.chain, "number": number})
            row = await cur.fetchone()
        return None if row is None else BlockRef(number, bytes(row[0]))

    async def record_failure(self, start: int, end: int, error: str) -> None:
        async with self._store.connection(f"record gap failure of {self.name}") as conn:
            await conn.execute(
                Q["gap_failure_record"],
                {
                    "chain": self.chain,
                    "start": start,
                    "end": end,
                    "error": error[:2000],
                    "backoff_secs": FAILURE_BACKOFF_SECS,
                    "max_backoff_secs": FAILURE_MAX_BACKOFF_SECS,
                },
            )

    async def write(
        self, blocks: Sequence[Block], *, below: BlockRef | None, above: int | None
    ) -> int:
        """Write a validated run of blocks into a hole, atomically; return how many were new.

        `below` is the stored block the run extends (None at the start block); `above` is the
        height of the stored block that must name the run's last block as its parent (None
        when the run does not end the hole). Both are re-checked, and locked, inside the
        transaction; a mismatch raises `errors.NeighbourMismatch` and writes nothing. Heights
        another repairer stored meanwhile are skipped if they hold these very blocks (else
        `NeighbourMismatch` too: the two read different chains).
        """
        assert blocks
        first, last = blocks[0], blocks[-1]
        async with self._store.connection(f"repair blocks of {self.name}") as conn:
            async with conn.transaction():
                cur = conn.cursor()
                await lock_chain_writes(cur, self.chain)
                if below is not None:
                    await cur.execute(
                        Q["stored_block_at"], {"chain": self.chain, "number": below.number}
                    )
                    row = await cur.fetchone()
                    if row is None or bytes(row[0]) != below.hash:
                        raise errors.NeighbourMismatch(
                            f"{self.name}: stored block {below.number:,d} changed while "
                            "repairing above it"
                        )
                if above is not None:
                    assert above == last.number + 1
                    await cur.execute(Q["stored_block_at"], {"chain": self.chain, "number": above})
                    row = await cur.fetchone()
                    if row is None or bytes(row[1]) != last.hash:
                        raise errors.NeighbourMismatch(
                            f"{self.name}: stored block {above:,d} does not link to the node's "
                            f"block {last.number:,d}: the node's chain changed below our tip"
                        )
                await cur.execute(
                    Q["stored_hashes_between"],
                    {"chain": self.chain, "low": first.number, "high": last.number},
                )
                stored = {int(n): bytes(h) for n, h in await cur.fetchall()}
                for block in blocks:
                    if stored.get(block.number, block.hash) != block.hash:
                        raise errors.NeighbourMismatch(
                            f"{self.name}: block {block.number:,d} was stored meanwhile with "
                            "another hash than the node's"
                        )
                new = [b for b in blocks if b.number not in stored]
                if new:
                    await self.sinks.write_all(cur, self.chain, new)
                await cur.execute(
                    Q["gap_failures_clear"],
                    {"chain": self.chain, "start": first.number, "end": last.number},
                )
        return len(new)
