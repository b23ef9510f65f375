"""Prefetcher: fetch block batches ahead of the writer, in order, with bounded look-ahead.

Forward-only. Up to `depth` consecutive batches are in flight at once (so the network works
while the database writes), none above `limit`. The syncer takes batches strictly in order
with `next_batch()` and moves the start with `reset(height)` after a refetch or a rollback.
Memory is bounded by depth x batch_size blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from indexer.chain import ChainSource
from indexer.models import Block


class Prefetcher:
    def __init__(self, source: ChainSource, *, batch_size: int, depth: int) -> None:
        self._source = source
        self._batch_size = batch_size
        self._depth = depth
        self._next = 0  # first height not yet scheduled
        self._limit = -1  # highest height we may fetch
        self._inflight: deque[tuple[int, asyncio.Task[list[Block]]]] = deque()

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def shrink(self, height: int) -> int:
        """Halve the batch size (a node refused the larger one); restart at `height`."""
        self._batch_size = max(1, self._batch_size // 2)
        self.reset(height)
        return self._batch_size

    def reset(self, height: int) -> None:
        """Drop everything in flight; the next batch starts at `height`."""
        self._cancel_all()
        self._next = height

    def set_limit(self, limit: int) -> None:
        """Fetch nothing above `limit`; lowering it drops batches that reach above it."""
        if limit < self._limit and self._inflight:
            first = self._inflight[0][0]
            self._cancel_all()
            self._next = first
        self._limit = limit

    async def next_batch(self) -> list[Block]:
        """The next batch in height order (waits for it); a limit must leave one to fetch."""
        self._fill()
        assert self._inflight, "next_batch() with nothing to fetch"
        start, task = self._inflight[0]
        try:
            blocks = await asyncio.shield(task)
        except BaseException:
            # A failed batch invalidates those behind it: start again from its first height.
            self.reset(start)
            raise
        self._inflight.popleft()
        self._fill()
        return blocks

    async def close(self) -> None:
        tasks = [t for _, t in self._inflight]
        self._cancel_all()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    # -- Internals

    def _fill(self) -> None:
        while len(self._inflight) < self._depth and self._next <= self._limit:
            count = min(self._batch_size, self._limit - self._next + 1)
            task = asyncio.create_task(
                self._source.blocks(self._next, count), name=f"fetch-{self._next}"
            )
            self._inflight.append((self._next, task))
            self._next += count

    def _cancel_all(self) -> None:
        while self._inflight:
            _, task = self._inflight.popleft()
            task.cancel()
            # Retrieve the result later so no "exception was never retrieved" warning.
            task.add_done_callback(_consume)


def _consume(task: asyncio.Task[list[Block]]) -> None:
    if not task.cancelled():
        task.exception()
