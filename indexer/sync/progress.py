"""Backfill progress: a status line on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

logger = logging.getLogger(__name__)

_RATE_WINDOW_SECS = 10.0


@dataclass
class _ChainProgress:
    height: int
    target: int
    samples: list[tuple[float, int]] = field(default_factory=list)

    def rate(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, h0), (t1, h1) = self.samples[0], self.samples[-1]
        return (h1 - h0) / (t1 - t0) if t1 > t0 else 0.0


class Progress:
    """Tracks per-chain height against a target and shows it, throttled."""

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        log_interval_secs: float = 10.0,
    ) -> None:
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._log_interval_secs = log_interval_secs
        self._chains: dict[str, _ChainProgress] = {}
        self._last_draw = 0.0
        self._last_log: dict[str, float] = {}

    def update(self, chain: str, *, height: int, target: int) -> None:
        now = time.monotonic()
        state = self._chains.setdefault(chain, _ChainProgress(height, target))
        state.height, state.target = height, target
        state.samples.append((now, height))
        while len(state.samples) > 2 and now - state.samples[0][0] > _RATE_WINDOW_SECS:
            state.samples.pop(0)
        if self._tty:
            if now - self._last_draw >= 0.2 or height >= target:
                self._last_draw = now
                self._draw()
        elif now - self._last_log.get(chain, 0.0) >= self._log_interval_secs:
            self._last_log[chain] = now
            logger.info(
                "%s: %s",
                chain,
                self.describe(chain),
                extra={"action": "progress", "chain": chain, "height": height},
            )

    def describe(self, chain: str) -> str:
        state = self._chains[chain]
        rate = state.rate()
        remaining = max(state.target - state.height, 0)
        if remaining == 0:
            eta = "synced"
        elif rate > 0:
            eta = "ETA " + _hms(remaining / rate)
        else:
            eta = "ETA ?"
        pct = 100.0 * state.height / state.target if state.target > 0 else 100.0
        return (
            f"height {state.height:,d} / {state.target:,d} ({pct:.1f}%)  "
            f"{rate:,.0f} blocks/s  {eta}"
        )

    def finish(self) -> None:
        if self._tty and self._chains:
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self) -> None:
        line = "  |  ".join(f"{name}: {self.describe(name)}" for name in self._chains)
        self._stream.write("\r\x1b[2K" + line)
        self._stream.flush()


def _hms(secs: float) -> str:
    secs = int(secs)
    return f"{secs // 3600:d}:{secs % 3600 // 60:02d}:{secs % 60:02d}"
