"""Fetch -> validate, once for sync and gap repair: batches that extend the block before them.

`LinkedBatches` hands out consecutive batches of blocks from a `Prefetcher` (bounded
look-ahead, never above the limit), each checked by `validate.check_links` against the block
it must extend: the stored tip, the stored block below a gap, or, at the start block, the
anchor (the genesis parent, or the node's block below `start_block`, fetched here). The
three outcomes of a batch are the caller's to act on: it extends (returned), its first block
does not link (`ReorgDetected`), or it is broken inside (`BrokenBatch`: fetched again on
the next call, never a reason to roll back). A batch the node refuses as too large (or
whose answer the chain's memory budget refuses, `indexer.chain.budget`) is asked again half
as large, here, until one block per batch; after `REGROW_AFTER_BATCHES` batches in a row
that came whole, the size doubles again, up to the configured one, so that a node that was
hostile or overloaded for a while does not leave the chain crawling for good.

A checked batch gets the rows of the chain's event tables (`events.matcher.EventSet`), decoded
from its logs, so that they are written with their blocks.

`LinkedBatches` does not write: the caller writes what it gets and calls `reset` when it
moved the chain itself (a rollback, a failed write). `write_up_to` is the plain loop over
it that writes through a `ChainWriter`.
"""

from __future__ import annotations

import logging

from indexer import errors
from indexer.chain import ChainSource, anchor_below
from indexer.events.matcher import EventSet
from indexer.models import Block, BlockRef
from indexer.store.writer import ChainWriter
from indexer.sync import validate
from indexer.sync.fetcher import Prefetcher

logger = logging.getLogger(__name__)

REGROW_AFTER_BATCHES = 16


class LinkedBatches:
    def __init__(
        self,
        source: ChainSource,
        *,
        start_block: int,
        batch_size: int,
        depth: int,
        events: EventSet | None = None,
    ) -> None:
        self._source = source
        self._events = events  # event tables: their rows are added to each checked batch
        self._start_block = start_block
        self._batch_size = batch_size  # as configured; the fetcher's may be smaller for a while
        self._whole = 0  # batches in a row that came whole since the size last changed
        self._fetcher = Prefetcher(source, batch_size=batch_size, depth=depth)
        self._after: BlockRef | None = None  # what the next batch must extend
        self._anchor: BlockRef | None = None  # the block below start_block, once fetched

    @property
    def batch_size(self) -> int:
        return self._fetcher.batch_size

    @property
    def next_height(self) -> int:
        return self._after.number + 1 if self._after is not None else self._start_block

    def reset(self, after: BlockRef | None) -> None:
        """Go on right above `after` (None: at the start block, on the anchor)."""
        self._after = after
        self._fetcher.reset(self.next_height)

    def set_limit(self, limit: int) -> None:
        """Fetch nothing above `limit`."""
        self._fetcher.set_limit(limit)

    async def next(self) -> list[Block]:
        """The next batch, checked to extend the previous one (see the module docstring).

        The limit must leave at least one block to fetch.
        """
        while True:
            height = self.next_height
            try:
                blocks = await self._fetcher.next_batch()
            except errors.BatchTooLarge as exc:
                self._whole = 0
                if self._fetcher.batch_size == 1:
                    raise
                size = self._fetcher.shrink(height)
                logger.warning(
                    "%s: %s; fetching %d blocks per batch from now on",
                    self._source.label,
                    exc,
                    size,
                    extra={"chain": self._source.label, "height": height,
                           "action": "batch_shrunk"},
                )  # fmt: skip
                continue
            break
        self._regrow(height)
        after = self._after
        if after is None:
            if self._anchor is None:
                self._anchor = await anchor_below(self._source, self._start_block)
            after = self._anchor
        try:
            validate.check_links(after, blocks)
        except errors.ReorgDetected as exc:
            self._fetcher.reset(height)
            if self._after is None:
                # Nothing stored below: the first block does not link to the anchor (the
                # genesis parent or the node's block below start_block). Refetch both.
                self._anchor = None
                raise errors.BrokenBatch(str(exc), height=height) from exc
            raise
        except errors.BrokenBatch:
            self._fetcher.reset(height)
            raise
        self._after = blocks[-1].ref
        return self._events.attach(blocks) if self._events else blocks

    async def close(self) -> None:
        await self._fetcher.close()

    def _regrow(self, height: int) -> None:
        """Count a batch that came whole; double a shrunk size after enough of them."""
        if self._fetcher.batch_size >= self._batch_size:
            return
        self._whole += 1
        if self._whole < REGROW_AFTER_BATCHES:
            return
        self._whole = 0
        size = self._fetcher.grow(self._batch_size)
        logger.info(
            "%s: %d batches in a row came whole; fetching %d blocks per batch from now on",
            self._source.label,
            REGROW_AFTER_BATCHES,
            size,
            extra={"chain": self._source.label, "height": height, "action": "batch_grown"},
        )


async def write_up_to(
    batches: LinkedBatches, writer: ChainWriter, *, tip: BlockRef | None, limit: int
) -> BlockRef | None:
    """Fetch, validate and write batches above `tip` until the checkpoint reaches `limit`.

    The loop `ChainSyncer` runs while following, without its waiting and outage policy: a
    failure is raised (gap repair uses it to sync a rolled-back branch again).
    """
    batches.reset(tip)
    batches.set_limit(limit)
    try:
        while batches.next_height <= limit:
            blocks = await batches.next()
            await writer.write_batch(blocks, expected=tip, head=None)
            tip = blocks[-1].ref
    finally:
        batches.reset(tip)
    return tip
