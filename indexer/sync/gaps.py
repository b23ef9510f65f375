"""Find missing ranges below the tip and fill them through the same fetch -> validate as sync.

A hole [s, e] is refetched in batches by `pipeline.LinkedBatches` (the unit sync uses: the
first batch must extend the stored block s-1, or the anchor at the start block; each next
one the batch before; a batch refused as too large is asked again smaller), and each batch
is written in one transaction that re-reads its stored neighbours: the last one must be
named as parent by the stored block e+1. If a neighbour does not link, the stored chain
there is stale — the node reorged below our tip — and the range is handed to the reorg
logic (`on_reorg`), never written unlinked. A range that keeps failing goes to
`gap_failures` with its error and is retried later with backoff; it is never dropped
silently.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from indexer import errors
from indexer.chain import ChainSource
from indexer.config import ChainConfig
from indexer.events.matcher import EventSet
from indexer.store.repairs import RepairStore
from indexer.sync.pipeline import LinkedBatches

logger = logging.getLogger(__name__)

_BROKEN_BATCH_RETRIES = 3


@dataclass(frozen=True, slots=True)
class RangeReport:
    start: int
    end: int
    status: str  # "repaired", "failed", "stale", "skipped", "dry-run"
    detail: str = ""

    def __str__(self) -> str:
        size = self.end - self.start + 1
        text = f"{self.start:,d}-{self.end:,d} ({size:,d} blocks): {self.status}"
        return f"{text}: {self.detail}" if self.detail else text


OnReorg = Callable[[], Awaitable[None]]


class GapRepairer:
    def __init__(
        self,
        cfg: ChainConfig,
        *,
        source: ChainSource,
        repairs: RepairStore,
        on_report: Callable[[RangeReport], None] | None = None,
        events: EventSet | None = None,
    ) -> None:
        self.cfg = cfg
        self.source = source
        self.repairs = repairs
        self._on_report = on_report
        self.missing_blocks = 0  # after the last pass (for metrics)
        self.failed_ranges = 0  # dead-letter ranges after the last pass (for metrics)
        # Its batch size halves when a node refuses a batch as too large, for every range.
        self.batches = LinkedBatches(
            source, start_block=cfg.start_block, batch_size=cfg.batch_size,
            depth=cfg.prefetch_batches, events=events,
        )  # fmt: skip

    def _report(self, report: RangeReport) -> RangeReport:
        level = logging.INFO if report.status in ("repaired", "dry-run") else logging.WARNING
        logger.log(
            level,
            "%s: gap %s",
            self.cfg.name,
            report,
            extra={"chain": self.cfg.name, "height": report.start, "action": "repair"},
        )
        if self._on_report:
            self._on_report(report)
        return report

    async def repair(
        self,
        *,
        low: int | None = None,
        high: int | None = None,
        dry_run: bool = False,
        retry_failed: bool = False,
        on_reorg: OnReorg | None = None,
        max_passes: int = 3,
    ) -> list[tuple[int, int]]:
        """Repair the gaps in [low, high]; return the gaps that remain."""
        low = self.cfg.start_block if low is None else max(low, self.cfg.start_block)
        high = (1 << 62) if high is None else high
        for _ in range(max_passes):
            gaps = await self.repairs.gaps(low=low, high=high)
            self.missing_blocks = sum(e - s + 1 for s, e in gaps)
            if not gaps or dry_run:
                for s, e in gaps:
                    self._report(RangeReport(s, e, "dry-run", "missing"))
                return gaps
            due = await self._due(retry_failed)
            stale = False
            for start, end in gaps:
                if not due(start):
                    self._report(RangeReport(start, end, "skipped", "failed before; retry later"))
                    continue
                report = self._report(await self._repair_range(start, end))
                stale = stale or report.status == "stale"
            if stale and on_reorg is not None:
                await on_reorg()
                continue
            break
        remaining = await self.repairs.gaps(low=low, high=high)
        self.missing_blocks = sum(e - s + 1 for s, e in remaining)
        self.failed_ranges = len(await self.repairs.failures())
        return remaining

    async def _due(self, retry_failed: bool) -> Callable[[int], bool]:
        if retry_failed:
            return lambda start: True
        now = datetime.now(UTC)
        waiting = [f for f in await self.repairs.failures() if f.next_retry_at > now]
        return lambda start: not any(f.start <= start <= f.end for f in waiting)

    async def _repair_range(self, start: int, end: int) -> RangeReport:
        below = None
        if start > self.cfg.start_block:
            below = await self.repairs.stored_block(start - 1)
            if below is None:
                return RangeReport(start, end, "failed", "the block below the gap vanished")
        batches = self.batches
        batches.reset(below)
        batches.set_limit(end)
        broken = written = 0
        try:
            while batches.next_height <= end:
                position = batches.next_height
                try:
                    blocks = await batches.next()
                    last = blocks[-1].number
                    written += await self.repairs.write(
                        blocks, below=below, above=end + 1 if last == end else None
                    )
                except errors.BrokenBatch as exc:
                    broken += 1
                    if broken <= _BROKEN_BATCH_RETRIES:
                        batches.reset(below)
                        continue
                    return await self._failed(position, end, exc)
                except (errors.ReorgDetected, errors.NeighbourMismatch) as exc:
                    return RangeReport(position, end, "stale", str(exc))
                except errors.SourceError as exc:
                    return await self._failed(position, end, exc)
                except BaseException:
                    batches.reset(below)
                    raise
                below = blocks[-1].ref
        finally:
            batches.reset(None)  # nothing in flight between ranges
        if written == 0:
            return RangeReport(start, end, "repaired", "stored meanwhile by another repairer")
        return RangeReport(start, end, "repaired")

    async def _failed(self, start: int, end: int, exc: Exception) -> RangeReport:
        await self.repairs.record_failure(start, end, str(exc))
        return RangeReport(start, end, "failed", str(exc))
