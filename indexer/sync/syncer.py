"""The sync loop of one chain: fetch -> validate -> write + checkpoint -> repeat.

Invariants this loop keeps:
- what is stored is always a linked chain from start_block to the checkpoint: a batch is
  written only after it was checked to extend the tip we read from the database
  (`pipeline.LinkedBatches`), and its rows plus the checkpoint commit in one transaction
  (`ChainWriter.write_batch`);
- nothing above the node head less `confirmations`, nor above `--to`, is ever fetched;
- no database transaction is open while we wait for a node: fetching happens in the
  prefetcher, writing starts only once a batch is in hand;
- `stop` is honoured between batches: a batch is written whole or not at all.

A batch has three outcomes: it extends the tip (written), its first block does not link
(`reorg.resolve`: fork point, confirmation, rollback, or a halt past the depth limit), or it
is broken inside (refetched). Transient node and database failures are waited out with
capped backoff (`retry.Backoff`), a database outage longer than `max_outage_secs` ends the
loop (`retry.Outage`); only operator-level problems end it otherwise. What the loop knows
and did is kept in `state` (`sync.state.ChainState`) for health, metrics and the watchdog.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import TypeVar

from indexer import errors
from indexer.chain import ChainSource
from indexer.config import ChainConfig
from indexer.store import Store
from indexer.store.writer import ChainWriter
from indexer.sync import reorg
from indexer.sync.pipeline import LinkedBatches
from indexer.sync.progress import Progress
from indexer.sync.retry import Backoff, Outage
from indexer.sync.state import ChainState

logger = logging.getLogger(__name__)

T = TypeVar("T")


class _Stopped(Exception):
    """The stop event fired while we waited."""


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
        self.source = source
        self.writer = writer
        self.store = store
        self.stop = stop
        self.progress = progress
        self.to_height = to_height
        self.state = ChainState(cfg.name, cfg.start_block, cfg.confirmations)
        self.batches = LinkedBatches(
            source,
            start_block=cfg.start_block,
            batch_size=cfg.batch_size,
            depth=cfg.prefetch_batches,
        )
        self._backoff = Backoff()
        self._outage = Outage(max_outage_secs, label=cfg.name)
        self._head_at = 0.0
        self._following_logged = False
        self._prepared = False

    @property
    def _log(self) -> dict[str, object]:
        tip = self.state.tip
        return {"chain": self.cfg.name, "height": tip.number if tip else None}

    def _next_height(self) -> int:
        return self.state.tip.number + 1 if self.state.tip else self.cfg.start_block

    def _done(self) -> bool:
        return self.to_height is not None and self._next_height() > self.to_height

    async def prepare(self) -> None:
        """Read and check the resume point (the daemon does this before READY=1)."""
        self.state.tip = await self.writer.tip()
        self._prepared = True

    async def run(self) -> None:
        """Sync until `stop` is set or, with `to_height`, until the checkpoint reaches it."""
        try:
            if not self._prepared:
                await self.prepare()
            logger.info(
                "%s: resuming after %s",
                self.cfg.name,
                self.state.tip or f"nothing (start block {self.cfg.start_block:,d})",
                extra={**self._log, "action": "resume"},
            )
            self.batches.reset(self.state.tip)
            while not self.stop.is_set():
                try:
                    self._outage.check()
                    if self._done():
                        # Before declaring --to reached, make sure our tip is still canonical:
                        # a reorg that kept the height is invisible to forward fetching.
                        await self._limit()
                        if not await self._tip_replaced():
                            break
                        await self._handle_reorg()
                        continue
                    await self._step()
                    self._backoff.succeeded()
                    self._outage.ended()
                except _Stopped:
                    break
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
                    self._outage.started()
                    await self._back_off(exc)
                    await self._reconnect()
        except _Stopped:
            pass
        finally:
            await self.batches.close()
            self.progress.finish()
        if self._done():
            logger.info(
                "%s: reached height %s",
                self.cfg.name,
                f"{self.to_height:,d}",
                extra={**self._log, "action": "done"},
            )

    async def _step(self) -> None:
        state = self.state
        limit = await self._limit()
        if self._next_height() > limit:
            if await self._tip_replaced():
                await self._handle_reorg()
                return
            if not self._following_logged and self.to_height is None:
                self._following_logged = True
                logger.info(
                    "%s: caught up at %s, following the head",
                    self.cfg.name,
                    state.tip,
                    extra={**self._log, "action": "following"},
                )
            state.progressed()  # nothing to do is not a stall
            await self._sleep(self.cfg.poll_interval_secs)
            return
        self.batches.set_limit(limit)
        try:
            blocks = await self._until_stop(self.batches.next())
        except errors.ReorgDetected as exc:
            logger.warning("%s: %s", self.cfg.name, exc,
                           extra={**self._log, "action": "reorg_detected"})  # fmt: skip
            await self._handle_reorg()
            return
        # The batch is in hand: only now does a transaction open (no network await inside).
        started = time.monotonic()
        try:
            written = await self.writer.write_batch(blocks, expected=state.tip, head=state.head)
        except BaseException:
            self.batches.reset(state.tip)
            raise
        state.tip = blocks[-1].ref
        state.counters.count(written, time.monotonic() - started)
        state.progressed()
        self.progress.update(self.cfg.name, height=state.tip.number, target=limit)

    async def _tip_replaced(self) -> bool:
        """While idle at the head: is our tip still the node's block at that height?

        A reorg that keeps the height (or that we have not yet seen a higher block of) is
        only visible here. A node below our tip is lagging: we wait for it.
        """
        tip, head = self.state.tip, self.state.head
        if tip is None or head is None or head < tip.number:
            return False
        node = await self._until_stop(self.source.hashes([tip.number]))
        theirs = node.get(tip.number)
        if theirs is None or theirs == tip.hash:
            return False
        logger.warning(
            "%s: the node replaced our tip %s with 0x%s",
            self.cfg.name,
            tip,
            theirs.hex(),
            extra={**self._log, "action": "reorg_detected"},
        )
        return True

    async def _handle_reorg(self) -> None:
        """Resolve the reorg at our tip (`reorg.resolve`), or halt past the depth limit."""
        tip = self.state.tip
        assert tip is not None, "a reorg needs a stored tip"
        self.batches.reset(tip)
        rollback = await self._until_stop(
            reorg.resolve(tip=tip, chain=self.cfg, source=self.source, writer=self.writer)
        )
        fork = rollback.fork
        self.state.tip = fork.block
        self.state.reorgs.record(rollback.depth)
        self.state.progressed()
        self.batches.reset(fork.block)
        logger.warning(
            "%s: rolled back %d block(s) to %s (fork point found in %d round trip(s)); "
            "syncing the new branch",
            self.cfg.name,
            rollback.depth,
            fork.block or f"before start block {self.cfg.start_block:,d}",
            fork.round_trips,
            extra={**self._log, "action": "reorg"},
        )

    async def _limit(self) -> int:
        """Highest height we may fetch now: node head less confirmations, capped by --to."""
        now = time.monotonic()
        state = self.state
        stale = now - self._head_at >= self.cfg.poll_interval_secs
        if state.head is None or stale:
            head = await self._until_stop(self.source.head())
            if head != state.head:
                # Recorded for `stats` and the coverage view; a failure here is not fatal.
                await self.store.set_head(self.writer.chain, head)
            state.head, self._head_at = head, now
        assert state.head is not None
        limit = state.head - self.cfg.confirmations
        if self.to_height is not None:
            limit = min(limit, self.to_height)
        return limit

    async def _reconnect(self) -> None:
        while not self.stop.is_set():
            try:
                await self.writer.reconnect()
                self.state.tip = await self.writer.tip()
                self.batches.reset(self.state.tip)
                logger.info(
                    "%s: database connection restored",
                    self.cfg.name,
                    extra={**self._log, "action": "db_restored"},
                )
                return
            except errors.StoreUnavailable as exc:
                self._outage.check()
                await self._back_off(exc)

    async def _back_off(self, exc: Exception) -> None:
        self.batches.reset(self.state.tip)
        delay, warn = self._backoff.failed()
        if warn:
            logger.warning(
                "%s: %s (failure %d; retrying in %.1fs)",
                self.cfg.name,
                exc,
                self._backoff.failures,
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
