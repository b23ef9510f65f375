"""What one chain's sync knows and has done, for health, metrics and the watchdog.

The syncer writes these small objects; `http/` and the daemon's watchdog only read them.
None of them does I/O.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from indexer.models import BlockRef


@dataclass
class SyncCounters:
    """What the loop has written: rows per table, batches, time spent writing."""

    rows_written: dict[str, int] = field(default_factory=dict)  # per table
    batches: int = 0
    batch_secs_total: float = 0.0
    last_batch_secs: float = 0.0

    def count(self, written: dict[str, int], secs: float) -> None:
        for table, rows in written.items():
            self.rows_written[table] = self.rows_written.get(table, 0) + rows
        self.batches += 1
        self.batch_secs_total += secs
        self.last_batch_secs = secs

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
    """Reorgs rolled back: how many, the deepest, the last."""

    count: int = 0
    deepest: int = 0
    last_depth: int | None = None
    last_at: float | None = None  # unix time

    def record(self, depth: int) -> None:
        self.count += 1
        self.deepest = max(self.deepest, depth)
        self.last_depth = depth
        self.last_at = time.time()


@dataclass
class ChainState:
    """One chain's sync, as health checks and metrics see it."""

    name: str
    start_block: int
    confirmations: int
    tip: BlockRef | None = None  # the checkpoint, as last read or written
    head: int | None = None  # the node's head, as last seen
    head_checks: int = 0  # times the node's head was asked for, since start
    halted: str | None = None  # why, once the chain halted (an operator must act)
    writer_lock: str | None = "not taken yet"  # why the writer lock is not ours (None: it is)
    waiting: str | None = None  # what the chain waits out now (a database outage)
    # The answer every endpoint gives and our checks refuse, while the chain is stuck on it.
    refused: str | None = None
    refused_answers: int = 0  # answers refused by every endpoint, since start
    unexpected_errors: int = 0  # exceptions no handler names (bugs), waited out
    counters: SyncCounters = field(default_factory=SyncCounters)
    reorgs: ReorgStats = field(default_factory=ReorgStats)
    # Monotonic time of the last write, rollback, or check that found nothing to do.
    last_progress: float = field(default_factory=time.monotonic)

    def progressed(self) -> None:
        self.last_progress = time.monotonic()

    @property
    def lag(self) -> int | None:
        """Node head minus our tip (None until the head is known)."""
        if self.head is None:
            return None
        return self.head - (self.tip.number if self.tip else self.start_block - 1)

    def stalled(self, *, timeout_secs: float, now: float | None = None) -> bool:
        """Behind the node yet no progress for `timeout_secs` (not halted, not idle).

        Without the writer lock, progress is not ours to make: a chain in that state is not
        stalled (a restart would not help; another instance may be syncing it). Nor is one
        stuck on an answer every endpoint gives and we refuse (`refused`).
        """
        if self.halted is not None or self.writer_lock is not None or self.head is None:
            return False
        if self.refused is not None:
            return False  # stuck on a node's answer: a restart would not help
        now = time.monotonic() if now is None else now
        behind = self.head - self.confirmations > (self.tip.number if self.tip else -1)
        return behind and now - self.last_progress > timeout_secs

    def not_ready(self, *, max_lag_blocks: int) -> str | None:
        """Why this chain is not ready (None when it is)."""
        if self.halted:
            return f"halted: {self.halted}"
        if self.writer_lock:
            return f"writer lock not held: {self.writer_lock}"
        if self.waiting:
            return f"waiting: {self.waiting}"
        if self.refused:
            return self.refused
        if self.head is None:
            return "node head not known yet"
        allowed = max_lag_blocks + self.confirmations
        lag = self.head - (self.tip.number if self.tip else -1)
        if lag > allowed:
            return f"lag {lag:,d} blocks exceeds {allowed:,d}"
        return None
