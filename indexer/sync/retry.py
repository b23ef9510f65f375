"""The syncer's waiting policy: capped exponential backoff, and how long an outage may last.

Small objects with no I/O; the syncer asks them how long to wait and whether to say so.
"""

from __future__ import annotations

import time

from indexer import errors

MAX_BACKOFF_SECS = 30.0
WARN_INTERVAL_SECS = 60.0


class Backoff:
    """Consecutive failures: 0.5 s doubling to `MAX_BACKOFF_SECS`; a warning the first time
    and then at most once per `WARN_INTERVAL_SECS`."""

    def __init__(self) -> None:
        self.failures = 0
        self._last_warn = 0.0

    def failed(self) -> tuple[float, bool]:
        """Count a failure; return (seconds to wait, whether to log it)."""
        self.failures += 1
        delay = min(MAX_BACKOFF_SECS, 0.5 * 2 ** min(self.failures - 1, 8))
        now = time.monotonic()
        warn = self.failures == 1 or now - self._last_warn >= WARN_INTERVAL_SECS
        if warn:
            self._last_warn = now
        return delay, warn

    def succeeded(self) -> None:
        self.failures = 0


class Outage:
    """A database outage: waited out, up to `max_secs`; then a restart may help."""

    def __init__(self, max_secs: float, *, label: str) -> None:
        self.max_secs = max_secs
        self._label = label
        self.since: float | None = None  # monotonic

    def started(self) -> None:
        if self.since is None:
            self.since = time.monotonic()

    def ended(self) -> None:
        self.since = None

    def check(self) -> None:
        """Raise `StoreError` once the outage has lasted longer than allowed."""
        if self.since is None:
            return
        down_secs = time.monotonic() - self.since
        if down_secs > self.max_secs:
            raise errors.StoreError(
                f"chain {self._label}: database unavailable for {down_secs:.0f}s "
                f"(max_outage_secs {self.max_secs:g}); exiting so that the service "
                "manager restarts us"
            )
