"""The sync loop of one chain: fetch -> validate -> write + checkpoint -> repeat.

Invariants this loop keeps:
- what is stored is always a linked chain from start_block to the checkpoint: a batch is
  written only after `validate.check_links` accepted it against the tip we read from the
  database, and blocks plus checkpoint commit in one transaction (`ChainWriter.write_batch`);
- nothing above the node head less `confirmations`, nor above `--to`, is ever fetched;
- no database transaction is open while we wait for a node: fetching happens in the
  prefetcher, writing starts only once a batch is in hand;
- `stop` is honoured between batches: a batch is written whole or not at all.
Transient node and database failures are waited out with capped backoff; a batch that fails
validation is refetched; only operator-level problems end the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from indexer import errors
from indexer.chain import ChainSource, anchor_below
from indexer.config import ChainConfig
from indexer.models import BlockRef
from indexer.store import Store
from indexer.store.writer import ChainWriter
from indexer.sync import reorg, validate
from indexer.sync.fetcher import Prefetcher
from indexer.sync.progress import Progress

logger = logging.getLogger(__name__)

T = TypeVar("T")
_MAX_BACKOFF_SECS = 30.0
_WARN_INTERVAL_SECS = 60.0


class _Stopped(Exception):
    """The stop event fired while we waited."""


@dataclass
class SyncCounters:
    """What this chain's loop has done, for metrics, health and the stall detector."""

    rows_written: dict[str, int] = field(default_factory=dict)  # per table
    batches: int = 0
    batch_secs_total: float = 0.0
    last_batch_secs: float = 0.0
    # Monotonic time of the last write, rollback, or check that found nothing to do.
    last_progress: float = field(default_factory=time.monotonic)

    @property
    def blocks_written(self) -> int:
        return self.rows_written.get("blocks", 0)

    @property
    def transactions_written(self) -> int:
        return self.rows_written.get("transactions", 0)

    @property
    def logs_written(self) -> int:
        return self.rows_written.get("logs", 0)


@dataclass
class ReorgStats:
    """Counters for metrics and health: reorgs rolled back, deepest, last."""

    count: int = 0
    deepest: int = 0
    last_depth: int | None = None
    last_at: float | None = None  # unix time

    def record(self, depth: int) -> None:
        self.count += 1
        self.deepest = max(self.deepest, depth)
        self.last_depth = depth
        self.last_at = time.time()


class ChainSyncer:
    def __init__(
        self,
        cfg: ChainConfig,
        *,
        source: ChainSource,
        writer: ChainWriter,
        store: Store,
        stop: asyncio.Event,
        progress: Progress,
        to_height: int | None = None,
        max_outage_secs: float = 300.0,
    ) -> None:
        self.cfg = cfg
        self.max_outage_secs = max_outage_secs
        self.source = source
        self.writer = writer
        self.store = store
        self.stop = stop
        self.progress = progress
        self.to_height = to_height
        self.fetcher = Prefetcher(source, batch_size=cfg.batch_size, depth=cfg.prefetch_batches)
        self.tip: BlockRef | None = None
        self.head: int | None = None
        self._head_at = 0.0
        self._failures = 0
        self._last_warn = 0.0
        self._following_logged = False
        self.reorgs = ReorgStats()
        self._prepared = False
        self._anchor: BlockRef | None = None  # what the first block must link to
        self.counters = SyncCounters()
        self.halted: str | None = None  # why, once the chain halted
        self._db_down_since: float | None = None

    @property
    def _log(self) -> dict[str, object]:
        return {"chain": self.cfg.name, "height": self.tip.number if self.tip else None}

    def _next_height(self) -> int:
        return self.tip.number + 1 if self.tip else self.cfg.start_block

    def _done(self) -> bool:
        return self.to_height is not None and self._next_height() > self.to_height

    async def prepare(self) -> None:
        """Read and check the resume point (the daemon does this before READY=1)."""
        self.tip = await self.writer.tip()
        self._prepared = True

    async def run(self) -> None:
        """Sync until `stop` is set or, with `to_height`, until the checkpoint reaches it."""
        try:
            if not self._prepared:
                await self.prepare()
            logger.info(
                "%s: resuming after %s",
                self.cfg.name,
                self.tip if self.tip else f"nothing (start block {self.cfg.start_block:,d})",
                extra={**self._log, "action": "resume"},
            )
            self.fetcher.reset(self._next_height())
            while not self.stop.is_set():
                try:
                    self._check_outage()
                    if self._done():
                        # Before declaring --to reached, make sure our tip is still canonical:
                        # a reorg that kept the height is invisible to forward fetching.
                        await self._limit()
                        if not await self._tip_replaced():
                            break
                        await self._handle_reorg()
                        continue
                    await self._step()
                    self._failures = 0
                    self._db_down_since = None
                except _Stopped:
                    break
                except errors.BatchTooLarge as exc:
                    if self.fetcher.batch_size == 1:
                        await self._back_off(exc)
                        continue
                    size = self.fetcher.shrink(self._next_height())
                    logger.warning(
                        "%s: %s; fetching %d blocks per batch from now on",
                        self.cfg.name,
                        exc,
                        size,
                        extra={**self._log, "action": "batch_shrunk"},
                    )
                except errors.RpcError as exc:
                    if exc.fatal:
                        raise
                    await self._back_off(exc)
                except (
                    errors.SourceError,
                    errors.BrokenBatch,
                    errors.ReorgNotConfirmed,
                ) as exc:
                    await self._back_off(exc)
                except errors.StoreUnavailable as exc:
                    if self._db_down_since is None:
                        self._db_down_since = time.monotonic()
                    await self._back_off(exc)
                    await self._reconnect()
        except _Stopped:
            pass
        finally:
            await self.fetcher.close()
            self.progress.finish()
        if self._done():
            logger.info(
                "%s: reached height %s",
                self.cfg.name,
                f"{self.to_height:,d}",
                extra={**self._log, "action": "done"},
            )

    async def _step(self) -> None:
        limit = await self._limit()
        next_height = self._next_height()
        if next_height > limit:
            if await self._tip_replaced():
                await self._handle_reorg()
                return
            if not self._following_logged and self.to_height is None:
                self._following_logged = True
                logger.info(
                    "%s: caught up at %s, following the head",
                    self.cfg.name,
                    self.tip,
                    extra={**self._log, "action": "following"},
                )
            self.counters.last_progress = time.monotonic()  # nothing to do is not a stall
            await self._sleep(self.cfg.poll_interval_secs)
            return
        self.fetcher.set_limit(limit)
        blocks = await self._until_stop(self.fetcher.next_batch())
        if self.tip is None and self._anchor is None:
            self._anchor = await self._until_stop(anchor_below(self.source, self.cfg.start_block))
        base = self.tip if self.tip is not None else self._anchor
        assert base is not None
        try:
            validate.check_links(base, blocks)
        except errors.ReorgDetected as exc:
            if self.tip is None:
                # Nothing stored yet: the first block does not link to the genesis anchor
                # (or the node's block below start_block). Refetch both; write nothing.
                self._anchor = None
                self.fetcher.reset(next_height)
                raise errors.BrokenBatch(str(exc)) from exc
            logger.warning(
                "%s: %s",
                self.cfg.name,
                exc,
                extra={**self._log, "action": "reorg_detected"},
            )
            await self._handle_reorg()
            return
        except errors.BrokenBatch:
            self.fetcher.reset(next_height)
            raise
        # The batch is in hand: only now does a transaction open (no network await inside).
        started = time.monotonic()
        written = await self.writer.write_batch(blocks, expected=self.tip, head=self.head)
        self.tip = blocks[-1].ref
        self._count(written, time.monotonic() - started)
        self.progress.update(self.cfg.name, height=self.tip.number, target=limit)

    def _count(self, written: dict[str, int], secs: float) -> None:
        c = self.counters
        for table, rows in written.items():
            c.rows_written[table] = c.rows_written.get(table, 0) + rows
        c.batches += 1
        c.batch_secs_total += secs
        c.last_batch_secs = secs
        c.last_progress = time.monotonic()

    def _check_outage(self) -> None:
        """Give up after a database outage longer than allowed: a restart may help."""
        if self._db_down_since is None:
            return
        down_secs = time.monotonic() - self._db_down_since
        if down_secs > self.max_outage_secs:
            raise errors.StoreError(
                f"chain {self.cfg.name}: database unavailable for {down_secs:.0f}s "
                f"(max_outage_secs {self.max_outage_secs:g}); exiting so that the service "
                "manager restarts us"
            )

    def stalled(self, *, timeout_secs: float, now: float | None = None) -> bool:
        """Behind the node yet no progress for `timeout_secs` (not halted, not idle)."""
        if self.halted is not None or self.head is None:
            return False
        now = time.monotonic() if now is None else now
        behind = self.head - self.cfg.confirmations > (self.tip.number if self.tip else -1)
        return behind and now - self.counters.last_progress > timeout_secs

    async def _tip_replaced(self) -> bool:
        """While idle at the head: is our tip still the node's block at that height?

        A reorg that keeps the height (or that we have not yet seen a higher block of) is
        only visible here. A node below our tip is lagging: we wait for it.
        """
        if self.tip is None or self.head is None or self.head < self.tip.number:
            return False
        node = await self._until_stop(self.source.hashes([self.tip.number]))
        theirs = node.get(self.tip.number)
        if theirs is None or theirs == self.tip.hash:
            return False
        logger.warning(
            "%s: the node replaced our tip %s with 0x%s",
            self.cfg.name,
            self.tip,
            theirs.hex(),
            extra={**self._log, "action": "reorg_detected"},
        )
        return True

    async def _handle_reorg(self) -> None:
        """Find the fork point, confirm it, then roll back in one transaction (or halt)."""
        tip = self.tip
        assert tip is not None, "a reorg needs a stored tip"
        self.fetcher.reset(tip.number + 1)
        fork = await self._until_stop(
            reorg.find_fork_point(
                tip=tip,
                start_block=self.cfg.start_block,
                source=self.source,
                stored=self.writer.stored_hashes,
            )
        )
        new_tip_hash = await self._until_stop(
            reorg.confirm(fork, tip=tip, source=self.source, stored=self.writer.stored_hashes)
        )
        depth = tip.number - fork.number
        if depth > self.cfg.max_reorg_depth:
            raise errors.ReorgTooDeep(
                f"chain {self.cfg.name}: reorg of depth {depth:,d} (our tip {tip}, last "
                f"common block {fork.number:,d}) exceeds max_reorg_depth "
                f"{self.cfg.max_reorg_depth:,d}; nothing was deleted. If the node's chain is "
                f"the right one, recover with: indexer rewind --chain {self.cfg.name} "
                f"--to {fork.number}",
                depth=depth,
            )
        await self.writer.roll_back(
            expected=tip,
            fork=fork.block,
            fork_number=fork.number,
            kind="reorg",
            new_tip_hash=new_tip_hash,
        )
        self.tip = fork.block
        self.reorgs.record(depth)
        self.counters.last_progress = time.monotonic()
        self.fetcher.reset(self._next_height())
        logger.warning(
            "%s: rolled back %d block(s) to %s (fork point found in %d round trip(s)); "
            "syncing the new branch",
            self.cfg.name,
            depth,
            fork.block or f"before start block {self.cfg.start_block:,d}",
            fork.round_trips,
            extra={**self._log, "action": "reorg"},
        )

    async def _limit(self) -> int:
        """Highest height we may fetch now: node head less confirmations, capped by --to."""
        now = time.monotonic()
        stale = now - self._head_at >= self.cfg.poll_interval_secs
        if self.head is None or stale:
            head = await self._until_stop(self.source.head())
            if head != self.head:
                # Recorded for `stats` and the coverage view; a failure here is not fatal.
                await self.store.set_head(self.writer.chain, head)
            self.head, self._head_at = head, now
        limit = self.head - self.cfg.confirmations
        if self.to_height is not None:
            limit = min(limit, self.to_height)
        return limit

    async def _reconnect(self) -> None:
        while not self.stop.is_set():
            try:
                await self.writer.reconnect()
                self.tip = await self.writer.tip()
                self.fetcher.reset(self._next_height())
                logger.info(
                    "%s: database connection restored",
                    self.cfg.name,
                    extra={**self._log, "action": "db_restored"},
                )
                return
            except errors.StoreUnavailable as exc:
                self._check_outage()
                await self._back_off(exc)

    async def _back_off(self, exc: Exception) -> None:
        self._failures += 1
        self.fetcher.reset(self._next_height())
        delay = min(_MAX_BACKOFF_SECS, 0.5 * 2 ** min(self._failures - 1, 8))
        now = time.monotonic()
        if self._failures == 1 or now - self._last_warn >= _WARN_INTERVAL_SECS:
            self._last_warn = now
            logger.warning(
                "%s: %s (failure %d; retrying in %.1fs)",
                self.cfg.name,
                exc,
                self._failures,
                delay,
                extra={**self._log, "action": "retry"},
            )
        await self._sleep(delay)

    async def _sleep(self, secs: float) -> None:
        try:
            await asyncio.wait_for(self.stop.wait(), timeout=secs)
        except TimeoutError:
            return
        raise _Stopped

    async def _until_stop(self, aw: Awaitable[T]) -> T:
        """Await `aw`, or raise `_Stopped` as soon as the stop event fires."""
        work = asyncio.ensure_future(aw)
        stopper = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if work.done():
            return work.result()
        work.cancel()
        raise _Stopped
