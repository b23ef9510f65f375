"""Prefetcher: fetch block batches ahead of the writer, in order, with bounded look-ahead.

Forward-only. Up to `depth` consecutive batches are in flight at once (so the network works
while the database writes), none above `limit`. The syncer takes batches strictly in order
with `next_batch()` and moves the start with `reset(height)` after a refetch or a rollback.

Memory is bounded in bytes, not in batches (`indexer.chain.budget`). Each fetch runs with a
`budget.Hold` in its context; the transport charges the answer a batch is made from to the
chain's budget and puts the charge in that hold. The hold is released when the writer is
done with the batch (the next `next_batch()` call), when the batch is dropped (`reset`,
`set_limit`, `close`), or when the fetch ends in a failure (its task is done, so are its
bytes). Beyond the first batch in flight, another fetch starts only while the budget has
room for one more batch the size of the largest recent one besides what the fetches in
flight will take (until a first batch came and showed its size, one fetch at a time); when
it runs low the look-ahead shrinks, and reading refuses what does not fit (the pipeline
then asks for smaller batches). A source whose transport charges nothing (Electrum: its
line limit bounds it) is not held back.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from dataclasses import dataclass

from indexer.chain import ChainSource, budget
from indexer.models import Block

_RECENT_BATCHES = 8  # the look-ahead plans with the largest of this many recent batches


@dataclass(frozen=True, slots=True)
class _Fetch:
    start: int
    task: asyncio.Task[list[Block]]
    hold: budget.Hold


class Prefetcher:
    def __init__(self, source: ChainSource, *, batch_size: int, depth: int) -> None:
        self._source = source
        self._batch_size = batch_size
        self._depth = depth
        self._next = 0  # first height not yet scheduled
        self._limit = -1  # highest height we may fetch
        self._inflight: deque[_Fetch] = deque()
        self._handed_out: budget.Hold | None = None  # the batch the writer has now
        self._budget: budget.ByteBudget | None = None  # the one the source charges, once seen
        self._seen_batch = False  # a batch came: whether and how much the source charges
        self._recent_bytes: deque[int] = deque(maxlen=_RECENT_BATCHES)

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def held_bytes(self) -> int:
        """Bytes charged for batches fetched or handed out and not released yet."""
        held = self._handed_out.bytes if self._handed_out is not None else 0
        return held + sum(f.hold.bytes for f in self._inflight)

    def shrink(self, height: int) -> int:
        """Halve the batch size (a node refused the larger one); restart at `height`."""
        self._batch_size = max(1, self._batch_size // 2)
        self.reset(height)
        return self._batch_size

    def grow(self, most: int) -> int:
        """Double the batch size, up to `most`, for batches not scheduled yet."""
        self._batch_size = min(most, self._batch_size * 2)
        return self._batch_size

    def reset(self, height: int) -> None:
        """Drop everything in flight; the next batch starts at `height`."""
        self._release_handed_out()
        self._cancel_all()
        self._next = height

    def set_limit(self, limit: int) -> None:
        """Fetch nothing above `limit`; lowering it drops batches that reach above it."""
        if limit < self._limit and self._inflight:
            first = self._inflight[0].start
            self._cancel_all()
            self._next = first
        self._limit = limit

    async def next_batch(self) -> list[Block]:
        """The next batch in height order (waits for it); a limit must leave one to fetch.

        Asking for it means the writer is done with the batch handed out before: its bytes
        are given back now.
        """
        self._release_handed_out()
        self._fill()
        assert self._inflight, "next_batch() with nothing to fetch"
        fetch = self._inflight[0]
        try:
            blocks = await asyncio.shield(fetch.task)
        except BaseException:
            # A failed batch invalidates those behind it: start again from its first height.
            self.reset(fetch.start)
            raise
        self._inflight.popleft()
        self._handed_out = fetch.hold
        self._learn(fetch.hold)
        self._fill()
        return blocks

    async def close(self) -> None:
        tasks = [f.task for f in self._inflight]
        self.reset(self._next)
        if tasks:  # wait for them to end (their failures are moot and retrieved already)
            await asyncio.wait(tasks)

    # -- Internals

    def _fill(self) -> None:
        while len(self._inflight) < self._depth and self._next <= self._limit:
            if self._inflight and not self._room_for_another():
                break
            count = min(self._batch_size, self._limit - self._next + 1)
            hold = budget.Hold()
            task = asyncio.create_task(
                self._source.blocks(self._next, count),
                name=f"fetch-{self._next}",
                context=budget.context_holding(hold),
            )
            self._inflight.append(_Fetch(self._next, task, hold))
            self._next += count

    def _room_for_another(self) -> bool:
        """Whether the budget has room for one more batch besides those still being read."""
        if not self._seen_batch:
            return False
        spent = self._budget
        if spent is None or not self._recent_bytes:
            return True
        typical = max(self._recent_bytes)
        reading = sum(1 for f in self._inflight if not f.task.done())
        # A read takes its answer's size (and up to 1/8 more while its buffer grows), and one
        # read at a time briefly as much again (the buffer copied into one `bytes`).
        return spent.available_bytes >= (typical + typical // 8) * (reading + 1) + typical

    def _learn(self, hold: budget.Hold) -> None:
        self._seen_batch = True
        if hold.budget is not None:
            self._budget = hold.budget
            self._recent_bytes.append(hold.bytes)

    def _release_handed_out(self) -> None:
        if self._handed_out is not None:
            self._handed_out.release()
            self._handed_out = None

    def _cancel_all(self) -> None:
        while self._inflight:
            fetch = self._inflight.popleft()
            if fetch.task.done():
                _consume(fetch.task)
                fetch.hold.release()
                continue
            fetch.task.cancel()
            # Its bytes are given back once it has ended (a cancelled read frees them as it
            # unwinds); its failure is retrieved so that none goes unreported as "never".
            fetch.task.add_done_callback(_consume)
            fetch.task.add_done_callback(functools.partial(_release, fetch.hold))


def _consume(task: asyncio.Task[list[Block]]) -> None:
    if not task.cancelled():
        task.exception()


def _release(hold: budget.Hold, _task: asyncio.Task[list[Block]]) -> None:
    hold.release()
