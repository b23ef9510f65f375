"""The syncer's waiting policy: capped exponential backoff, and how long an outage may last.

Small objects with no I/O; the syncer asks them how long to wait and whether to say so.
"""

from __future__ import annotations

import time

from indexer import errors

MAX_BACKOFF_SECS = 30.0
WARN_INTERVAL_SECS = 60.0
# A refusal only an operator can lift (a missing privilege) is tried again this often, and
# logged again at most this often while it lasts; never a tight loop, never an exit.
DENIED_RECHECK_SECS = 60.0
DENIED_LOG_SECS = 600.0
# An answer every endpoint gives and our checks refuse: an error line at most this often.
REFUSED_LOG_SECS = 60.0


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
    """A database outage: waited out, up to `max_secs`; then a restart may help.

    It lasts from the first failure until the operation that failed succeeds: a database
    that answers reads but refuses every write (read-only) is still out.
    """

    def __init__(self, max_secs: float, *, label: str) -> None:
        self.max_secs = max_secs
        self._label = label
        self.since: float | None = None  # monotonic
        self.reason = ""  # the last failure

    def started(self, reason: str = "") -> None:
        if self.since is None:
            self.since = time.monotonic()
        self.reason = reason or self.reason

    def ended(self) -> float | None:
        """End it; return how long it lasted (None when there was none)."""
        if self.since is None:
            return None
        lasted, self.since = time.monotonic() - self.since, None
        return lasted

    def check(self) -> None:
        """Raise `StoreError` once the outage has lasted longer than allowed."""
        if self.since is None:
            return
        down_secs = time.monotonic() - self.since
        if down_secs > self.max_secs:
            last = f"; last error: {self.reason}" if self.reason else ""
            raise errors.StoreError(
                f"{self._label}: database unavailable for {down_secs:.0f}s "
                f"(max_outage_secs {self.max_secs:g}); exiting so that the service "
                f"manager restarts us{last}"
            )
