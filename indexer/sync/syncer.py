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
loop (`retry.Outage`); the batch in hand is kept through a database outage and written once
the database takes it, so nothing more is fetched meanwhile (the prefetcher is full). A
refusal only an operator can lift (a missing privilege) halts the chain, retried every
`DENIED_RECHECK_SECS`, without ending the process (a restart would not help). The writer
lock is checked every `LOCK_HEARTBEAT_SECS`, even while idle (`guard_lock`); without it
nothing is written, and after it was taken again the checkpoint is read again first. What
the loop knows and did is kept in `state` (`sync.state.ChainState`) for health, metrics and
the watchdog.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from indexer import errors
from indexer.chain import ChainSource
from indexer.config import ChainConfig
from indexer.events.matcher import EventSet
from indexer.models import Block
from indexer.store.writer import ChainWriter
from indexer.sync import reorg
from indexer.sync.pipeline import LinkedBatches
from indexer.sync.progress import Progress
from indexer.sync.retry import (
    DENIED_LOG_SECS,
    DENIED_RECHECK_SECS,
    MAX_BACKOFF_SECS,
    REFUSED_LOG_SECS,
    Backoff,
    Outage,
)
from indexer.sync.state import ChainState

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Failures in a row of every endpoint after which the chain says it is waiting for its node.
NODE_UNREADY_AFTER_FAILURES = 3

# How often the writer lock is checked while idle (a session killed under an idle daemon is
# noticed within this long, and the lock taken again).
LOCK_HEARTBEAT_SECS = 2.0


class _Stopped(Exception):
    """The stop event fired while we waited."""


class ChainSyncer:
    def __init__(
        self,
        cfg: ChainConfig,
        *,
        source: ChainSource,
        writer: ChainWriter,
        stop: asyncio.Event,
        progress: Progress,
        to_height: int | None = None,
        max_outage_secs: float = 300.0,
        events: EventSet | None = None,
    ) -> None:
        self.cfg = cfg
        self.source = source
        self.writer = writer
        self.stop = stop
        self.progress = progress
        self.to_height = to_height
        self.state = ChainState(cfg.name, cfg.start_block, cfg.confirmations)
        self.batches = LinkedBatches(
            source,
            start_block=cfg.start_block,
            batch_size=cfg.batch_size,
            depth=cfg.prefetch_batches,
            events=events,
        )
        self._backoff = Backoff()
        self._outage = Outage(max_outage_secs, label=f"chain {cfg.name}")
        self._head_at = 0.0
        self._following_logged = False
        self._prepared = False
        self._pending: list[Block] | None = None  # fetched, checked, not yet written
        self._tenure = 0  # the writer lock's tenure under which state.tip was read
        self._stale = False  # a database failure: read the checkpoint again before going on
        self._denied_logged_at: float | None = None  # while writes are refused (halted)
        self._refused_logged_at: float | None = None  # while stuck on a refused answer

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
        self._tenure = self.writer.tenure
        self.state.writer_lock = self.writer.lost
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
                    if self._stale or self.writer.tenure != self._tenure:
                        await self._reload()
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
                    self._store_ok()
                except _Stopped:
                    break
                except errors.RpcError as exc:
                    if not exc.fatal:
                        await self._back_off(exc)
                    elif self.to_height is not None:
                        raise  # a one-shot run: say so and end
                    else:
                        # The node lacks a method we need, or refuses its params: only an
                        # operator can fix that (another node, its API enabled), and a
                        # restart would not; the chain halts, tried again now and then.
                        await self._denied(exc, fix="an operator points it at a node that has it")
                except (errors.ResponseCorrupted, errors.BrokenBatch) as exc:
                    await self._refused(exc)
                except (errors.SourceError, errors.ReorgNotConfirmed) as exc:
                    if self._backoff.failures + 1 >= NODE_UNREADY_AFTER_FAILURES:
                        # No endpoint answers (down, a black hole, rate limited): not ready,
                        # whatever the head last seen says, until a step goes through.
                        self.state.waiting = f"node: {exc}"
                    await self._back_off(exc)
                except errors.WriterLockLost:
                    self._stale = True  # read the checkpoint again, then go on
                except errors.WriterLockHeld:
                    # Another session took the lock while ours was lost: write nothing, and
                    # stand by (not an outage, and no exit, which would only loop); the
                    # heartbeat takes the lock back as soon as it is free (`guard_lock`
                    # says so in the log).
                    self._stale = True
                    await self._sleep(LOCK_HEARTBEAT_SECS)
                except errors.StoreUnavailable as exc:
                    self._stale = True
                    self._outage.started(str(exc))
                    self.state.waiting = f"database: {exc}"
                    await self._back_off(exc, reset=False)
                except errors.StoreDenied as exc:
                    if self.to_height is not None:
                        raise  # a one-shot run: say so and end
                    self._stale = True
                    await self._denied(exc)
                except errors.IndexerError:
                    raise  # a typed error this loop does not wait out: it ends the chain
                except Exception as exc:  # a bug: said, then waited out
                    await self._unexpected(exc)
                finally:
                    self.state.writer_lock = self.writer.lost
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
        blocks = self._pending
        if blocks is None:
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
            self._pending = blocks
        # The batch is in hand: only now does a transaction open (no network await inside).
        started = time.monotonic()
        try:
            written = await self.writer.write_batch(blocks, expected=state.tip, head=state.head)
        except (
            errors.StoreUnavailable,
            errors.StoreDenied,
            errors.WriterLockHeld,
            errors.WriterLockLost,
        ):
            # Kept, and written as it is once the database takes it (nothing is fetched
            # again); `_reload` drops it if the checkpoint moved meanwhile.
            raise
        except BaseException:
            self._pending = None
            self.batches.reset(state.tip)
            raise
        self._pending = None
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
            state.head_checks += 1
            if head != state.head:
                # Recorded for `stats` and the coverage view (through the writer: the sync
                # path needs no pooled connection).
                await self.writer.record_head(head)
            state.head, self._head_at = head, now
        assert state.head is not None
        limit = state.head - self.cfg.confirmations
        if self.to_height is not None:
            limit = min(limit, self.to_height)
        return limit

    async def _reload(self) -> None:
        """Read the checkpoint again (after a database failure, or the lock taken again).

        What was fetched beyond it stays valid if it did not move; otherwise it is dropped.
        """
        tip = await self.writer.tip()
        self._tenure = self.writer.tenure
        self._stale = False
        if tip != self.state.tip:
            logger.warning(
                "%s: the checkpoint moved to %s while the writer lock was not ours",
                self.cfg.name,
                tip,
                extra={**self._log, "action": "checkpoint_moved"},
            )
            self.state.tip = tip
            self._pending = None
            self.batches.reset(tip)

    async def _refused(self, exc: errors.ResponseCorrupted | errors.BrokenBatch) -> None:
        """Every endpoint gave an answer our checks refuse: say so (readiness, a metric, an
        error line at most once a minute) and try again with capped backoff. Restarting would
        not help, so this is not a stall (`ChainState.stalled`)."""
        state = self.state
        state.refused = f"refused answer at {self._next_height():,d}: {exc}"
        state.refused_answers += 1
        now = time.monotonic()
        if self._refused_logged_at is None or now - self._refused_logged_at >= REFUSED_LOG_SECS:
            self._refused_logged_at = now
            logger.error(
                "%s: %s; every endpoint gives it: retrying (at most %gs apart) until one "
                "answers what the checks take",
                self.cfg.name,
                state.refused,
                MAX_BACKOFF_SECS,
                extra={**self._log, "action": "refused_answer"},
            )
        await self._back_off(exc, say=False)

    async def _unexpected(self, exc: Exception) -> None:
        """An exception no handler names (a bug): logged with its type and where it was
        raised (never a traceback), then waited out like a transient fault."""
        self.state.unexpected_errors += 1
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
        logger.error(
            "%s: unexpected %s%s: %s; treated as transient, retrying with backoff (please "
            "report it)",
            self.cfg.name,
            type(exc).__name__,
            where,
            exc,
            extra={**self._log, "action": "unexpected"},
        )
        await self._back_off(exc, say=False)

    def _store_ok(self) -> None:
        """A step went through: whatever the database made us wait for is over."""
        lasted = self._outage.ended()
        if lasted is not None:
            logger.info(
                "%s: database connection restored after %.0fs",
                self.cfg.name,
                lasted,
                extra={**self._log, "action": "db_restored"},
            )
        self.state.waiting = None
        if self.state.refused is not None:
            logger.info(
                "%s: the answer at %s is taken now; going on",
                self.cfg.name,
                self.state.tip,
                extra={**self._log, "action": "refused_cleared"},
            )
            self.state.refused = None
            self._refused_logged_at = None
        if self._denied_logged_at is not None:
            self._denied_logged_at = None
            self.state.halted = None
            logger.warning(
                "%s: the database accepts our writes again; resumed",
                self.cfg.name,
                extra={**self._log, "action": "resumed"},
            )

    async def _denied(
        self, exc: errors.IndexerError, *, fix: str = "an operator grants it"
    ) -> None:
        """Halt this chain until an operator fixes what is missing (a privilege, a node's
        method); try again now and then."""
        now = time.monotonic()
        self.state.halted = f"{exc} (tried again every {DENIED_RECHECK_SECS:g}s)"
        if self._denied_logged_at is None or now - self._denied_logged_at >= DENIED_LOG_SECS:
            self._denied_logged_at = now
            logger.error(
                "%s: halted: %s; nothing is written until %s (tried again every %gs, no "
                "restart needed)",
                self.cfg.name,
                exc,
                fix,
                DENIED_RECHECK_SECS,
                extra={**self._log, "action": "halted"},
            )
        await self._sleep(DENIED_RECHECK_SECS)

    async def guard_lock(self, *, done: asyncio.Event) -> None:
        """Check the writer lock every `LOCK_HEARTBEAT_SECS` until `stop` or `done`.

        The lock's session can end while we are idle (pg_terminate_backend, a restart, a
        cut): the check notices within one beat and takes the lock again at once, so the
        lock is never left free while this instance runs. Readiness follows `writer.lost`.
        """
        warned: str | None = None
        while not (self.stop.is_set() or done.is_set()):
            try:
                await self.writer.check_lock()
            except errors.StoreError as exc:
                # WriterLockHeld (a standby), or the database does not answer: the sync loop
                # waits, counts the outage and logs; say it here once per cause.
                cause = type(exc).__name__
                if cause != warned:
                    warned = cause
                    logger.warning(
                        "%s: writer lock not held: %s",
                        self.cfg.name,
                        exc,
                        extra={**self._log, "action": "lock_check"},
                    )
            else:
                warned = None
            self.state.writer_lock = self.writer.lost
            waiters = [asyncio.ensure_future(self.stop.wait()), asyncio.ensure_future(done.wait())]
            try:
                await asyncio.wait(
                    waiters, timeout=LOCK_HEARTBEAT_SECS, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def _back_off(self, exc: Exception, *, reset: bool = True, say: bool = True) -> None:
        """Wait before trying again; `reset` drops what was fetched (a node fault); `say`
        logs a warning (the first time, then at most once a minute)."""
        if reset:
            self._pending = None
            self.batches.reset(self.state.tip)
        delay, warn = self._backoff.failed()
        if warn and say:
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
