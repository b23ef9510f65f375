"""One endpoint pool under every transport: which endpoint to ask, how often, and when not.

Several URLs of one chain are alternatives. `EndpointPool.run(attempt)` gives `attempt` one
endpoint and, when it fails, tries again on the next one, with this one policy for JSON-RPC
and Electrum alike (each transport sets the numbers in its `Policy`):

- concurrency: at most `concurrency` attempts in flight per endpoint;
- circuit breaker: after `failures_to_open` consecutive failures an endpoint is open (takes
  no requests) for a cool-down that starts at `cooldown_secs` and grows by `cooldown_growth`
  per failure, up to `max_cooldown_secs`; then one probe at a time (half open) until one
  succeeds. A failure while an endpoint is already open does not count again (attempts that
  were in flight together fail together);
- wrong answers (`ResponseCorrupted`, and `EndpointRefused`: a wrong API key, a parse error
  or invalid request in answer to a valid one): counted like any failure, or, with
  `corrupt_cooldown_secs`, the endpoint is dropped for that long at once and logged;
- Retry-After: an error that carries `retry_after_secs` keeps the endpoint out that long;
- bans: an endpoint on another chain or behind another certificate than pinned
  (`ChainMismatch`, `CertificateMismatch`) takes no more requests; when every endpoint is
  banned, the ban is raised;
- waiting: between attempts `retry_wait(attempt)` (exponential, capped), or until the first
  endpoint may take a request when none may now; never a busy loop;
- logging: a retry warning at most once a minute, and one "answers again" line when an
  endpoint that failed in a way we reported answers again.

JSON-RPC error objects (`RpcError`) and everything else go back to the caller at once.
Endpoint URLs appear only redacted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from indexer import errors, redact

logger = logging.getLogger(__name__)

T = TypeVar("T")

CIRCUIT_CLOSED, CIRCUIT_OPEN, CIRCUIT_HALF_OPEN = "closed", "open", "half_open"
_ERROR_LOG_INTERVAL_SECS = 60.0


@dataclass(frozen=True, slots=True)
class Policy:
    """The numbers of the one policy (see the module docstring)."""

    max_attempts: int = 5
    concurrency: int = 8
    failures_to_open: int = 5
    cooldown_secs: float = 30.0
    cooldown_growth: float = 1.0  # 2.0: the cool-down doubles with every further failure
    max_cooldown_secs: float = 30.0
    corrupt_cooldown_secs: float | None = None  # None: a wrong answer is one more failure
    circuit_with_one_endpoint: bool = True  # False: one endpoint is waited out, not opened
    retry_base_secs: float = 0.25  # the wait before attempt n+1: base * 2^(n-1) ...
    retry_max_secs: float = 4.0  # ... capped, plus jitter
    retry_jitter_secs: float = 0.25


@dataclass
class EndpointStats:
    """Counters and circuit state per endpoint (for metrics); `url` is redacted."""

    url: str
    requests: int = 0
    errors: int = 0
    rate_limited: int = 0
    latency_secs_total: float = 0.0
    last_error: str | None = None
    circuit: str = CIRCUIT_CLOSED


@dataclass(eq=False)
class Endpoint:
    """One URL of the pool, with its breaker state."""

    url: str
    concurrency: int
    stats: EndpointStats = field(init=False)
    semaphore: asyncio.Semaphore = field(init=False)
    consecutive_failures: int = 0
    open_until: float = 0.0
    probing: bool = False
    rate_limited_until: float = 0.0
    verified: bool = True  # False: its identity is not checked yet; no requests go there
    banned: errors.IndexerError | None = None
    reported: bool = False  # its failure was logged: say so when it answers again

    def __post_init__(self) -> None:
        self.stats = EndpointStats(redact.redact_url(self.url))
        self.semaphore = asyncio.Semaphore(self.concurrency)

    def available_at(self, now: float, probe_wait_secs: float) -> float:
        """When this endpoint may take a request (<= now: it may now)."""
        if self.probing:
            return now + probe_wait_secs  # one probe at a time; ask again later
        if self.stats.circuit == CIRCUIT_OPEN:
            return max(self.open_until, self.rate_limited_until)
        return self.rate_limited_until

    def usable(self) -> bool:
        return self.verified and self.banned is None


class EndpointPool:
    """Equivalent endpoints of one chain behind one retry and failover policy."""

    def __init__(self, urls: Sequence[str], *, label: str, policy: Policy) -> None:
        assert urls, "at least one URL"
        self.label = label
        self.policy = policy
        self._endpoints = [Endpoint(url, policy.concurrency) for url in urls]
        self._current = 0
        self._last_error_log = 0.0
        self._failing = False

    @property
    def endpoints(self) -> list[Endpoint]:
        return list(self._endpoints)

    @property
    def stats(self) -> list[EndpointStats]:
        return [e.stats for e in self._endpoints]

    @property
    def urls(self) -> list[str]:
        return [e.url for e in self._endpoints]

    def endpoint(self, url: str) -> Endpoint:
        return next(e for e in self._endpoints if e.url == url)

    def alternate_url(self) -> str | None:
        """A usable endpoint other than the current one (None if there is none)."""
        count = len(self._endpoints)
        for offset in range(1, count):
            endpoint = self._endpoints[(self._current + offset) % count]
            if endpoint.usable():
                return endpoint.url
        return None

    def usable_urls(self) -> list[str]:
        """The endpoints that may take a request now, the current one first."""
        now = time.monotonic()
        count = len(self._endpoints)
        order = [self._endpoints[(self._current + i) % count] for i in range(count)]
        probe_wait = self._probe_wait()
        return [e.url for e in order if e.usable() and e.available_at(now, probe_wait) <= now]

    def report(self, url: str, exc: errors.ResponseCorrupted) -> None:
        """An answer of `url` found wrong after its attempt succeeded: count it as failed."""
        endpoint = self.endpoint(url)
        self._failed(endpoint, exc)

    def set_verified(self, url: str, verified: bool) -> None:
        endpoint = self.endpoint(url)
        endpoint.verified = verified
        if verified:
            self._succeeded(endpoint)

    def ban(self, endpoint: Endpoint, exc: errors.IndexerError) -> None:
        """`endpoint` serves another chain (or certificate): never ask it again."""
        endpoint.banned = exc
        endpoint.stats.errors += 1
        endpoint.stats.last_error = str(exc)
        endpoint.stats.circuit = CIRCUIT_OPEN
        logger.error(
            "%s: %s; this endpoint takes no more requests",
            self.label,
            exc,
            extra={"chain": self.label, "action": "endpoint_banned"},
        )

    # -- Attempts with failover

    async def run(
        self,
        attempt: Callable[[Endpoint], Awaitable[T]],
        *,
        url: str | None = None,
        alternate: bool = False,
        attempts: int | None = None,
    ) -> T:
        """Run `attempt` on one endpoint; on a failure the policy retries, again on the next.

        With `url`, only that endpoint is asked. With `alternate`, another endpoint than the
        current one is preferred (a second opinion before deleting anything).
        """
        limit = attempts or self.policy.max_attempts
        for number in range(1, limit + 1):
            endpoint: Endpoint | None = None
            try:
                endpoint = self._pick(url, alternate=alternate)
                endpoint.stats.requests += 1
                started = time.monotonic()
                try:
                    async with endpoint.semaphore:
                        result = await attempt(endpoint)
                finally:
                    endpoint.stats.latency_secs_total += time.monotonic() - started
            except (errors.ChainMismatch, errors.CertificateMismatch) as exc:
                assert endpoint is not None
                self.ban(endpoint, exc)
                if url is not None:
                    raise
                if number == limit:
                    raise errors.SourceTransient(
                        f"{self.label}: no usable endpoint answered"
                    ) from exc
            except (errors.SourceTransient, errors.ResponseCorrupted) as exc:
                if endpoint is not None:
                    self._failed(endpoint, exc)
                if number == limit:
                    raise
                self._log_retry(exc, number)
                await asyncio.sleep(self._wait(number, exc))
            except BaseException:
                if endpoint is not None:
                    endpoint.probing = False
                raise
            else:
                self._succeeded(endpoint)
                return result
        raise AssertionError("unreachable: the last attempt returns or raises")

    # -- Policy

    def _pick(self, url: str | None, *, alternate: bool) -> Endpoint:
        """The endpoint to ask; raise `SourceTransient` (with how long to wait) if none may."""
        if url is not None:
            return self.endpoint(url)
        now = time.monotonic()
        count = len(self._endpoints)
        order = [(self._current + offset) % count for offset in range(count)]
        if alternate and count > 1:
            order = order[1:] + order[:1]
        probe_wait = self._probe_wait()
        for index in order:
            endpoint = self._endpoints[index]
            if endpoint.usable() and endpoint.available_at(now, probe_wait) <= now:
                if endpoint.stats.circuit == CIRCUIT_OPEN:
                    endpoint.stats.circuit = CIRCUIT_HALF_OPEN
                    endpoint.probing = True
                if not alternate:
                    self._current = index
                return endpoint
        live = [e for e in self._endpoints if e.banned is None]
        if not live:
            banned = self._endpoints[0].banned
            assert banned is not None
            raise banned
        usable = [e for e in live if e.verified] or live
        wait = max(0.05, min(e.available_at(now, probe_wait) for e in usable) - now)
        raise errors.SourceTransient(
            f"{self.label}: every endpoint is unavailable (circuit open or rate limited) "
            f"for another {wait:.1f}s",
            retry_after_secs=wait,
        )

    def _probe_wait(self) -> float:
        return min(1.0, self.policy.cooldown_secs)

    def _failed(self, endpoint: Endpoint, exc: errors.SourceError) -> None:
        policy = self.policy
        stats = endpoint.stats
        stats.errors += 1
        stats.last_error = str(exc)
        now = time.monotonic()
        retry_after = exc.context.get("retry_after_secs")
        if isinstance(retry_after, int | float):
            stats.rate_limited += 1
            endpoint.rate_limited_until = now + float(retry_after)
        if self._endpoints[self._current] is endpoint:
            self._current = (self._current + 1) % len(self._endpoints)
        was_probing, endpoint.probing = endpoint.probing, False
        if stats.circuit == CIRCUIT_OPEN and not was_probing:
            return  # already open: attempts that were in flight together fail together
        if len(self._endpoints) == 1 and not policy.circuit_with_one_endpoint:
            return  # nowhere else to turn: the retry waits instead
        endpoint.consecutive_failures += 1
        if isinstance(exc, errors.ResponseCorrupted) and policy.corrupt_cooldown_secs:
            self._open(endpoint, policy.corrupt_cooldown_secs, now)
            endpoint.reported = True
            logger.warning(
                "%s: dropping endpoint %s for %gs: %s",
                self.label,
                stats.url,
                policy.corrupt_cooldown_secs,
                exc,
                extra={"chain": self.label, "action": "endpoint_dropped"},
            )
            return
        if was_probing or endpoint.consecutive_failures >= policy.failures_to_open:
            extra_failures = max(0, endpoint.consecutive_failures - policy.failures_to_open)
            cooldown = min(
                policy.max_cooldown_secs,
                policy.cooldown_secs * policy.cooldown_growth**extra_failures,
            )
            if policy.cooldown_growth > 1:
                cooldown *= random.uniform(0.8, 1.2)
            if stats.circuit != CIRCUIT_HALF_OPEN and policy.failures_to_open > 1:
                endpoint.reported = True
                logger.warning(
                    "%s: circuit open for %gs after %d consecutive failures",
                    stats.url,
                    cooldown,
                    endpoint.consecutive_failures,
                    extra={"chain": self.label, "action": "circuit_open"},
                )
            self._open(endpoint, cooldown, now)

    @staticmethod
    def _open(endpoint: Endpoint, cooldown_secs: float, now: float) -> None:
        endpoint.stats.circuit = CIRCUIT_OPEN
        endpoint.open_until = now + cooldown_secs

    def _succeeded(self, endpoint: Endpoint) -> None:
        endpoint.consecutive_failures = 0
        endpoint.probing = False
        endpoint.stats.circuit = CIRCUIT_CLOSED
        if endpoint.reported or self._failing:
            endpoint.reported = False
            self._failing = False
            logger.info(
                "%s: %s answers again",
                self.label,
                endpoint.stats.url,
                extra={"chain": self.label, "action": "endpoint_restored"},
            )

    def _wait(self, attempt: int, exc: errors.SourceError) -> float:
        """How long to wait before the next attempt."""
        policy = self.policy
        base = min(policy.retry_max_secs, policy.retry_base_secs * 2.0 ** (attempt - 1))
        if base > 0:
            base += random.uniform(0, policy.retry_jitter_secs)
        hinted = exc.context.get("retry_after_secs")
        if isinstance(hinted, int | float):
            base = max(base, float(hinted))
        now = time.monotonic()
        probe_wait = self._probe_wait()
        usable = [e for e in self._endpoints if e.usable()]
        if usable:
            first = min(e.available_at(now, probe_wait) for e in usable) - now
            base = max(base, min(first, policy.max_cooldown_secs))
        return max(0.0, base)

    def _log_retry(self, exc: errors.SourceError, attempt: int) -> None:
        self._failing = True
        now = time.monotonic()
        if now - self._last_error_log >= _ERROR_LOG_INTERVAL_SECS:
            self._last_error_log = now
            logger.warning(
                "%s: %s (attempt %d, retrying)",
                self.label,
                exc,
                attempt,
                extra={"chain": self.label, "action": "endpoint_retry"},
            )
