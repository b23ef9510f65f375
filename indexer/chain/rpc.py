"""JSON-RPC over HTTP with aiohttp: batching, bounded concurrency, timeouts, retries, failover.

This is the boundary where aiohttp and transport errors become `errors.Source*`:
- unreachable, timed out, HTTP 429 / 5xx  -> `SourceTransient` (retried here, next endpoint);
- malformed JSON, wrong ids, missing batch items -> `ResponseCorrupted` (retried here too:
  the next endpoint may answer properly; the caller refetches if it keeps happening);
- a JSON-RPC error object -> `RpcError` (not retried here: the caller decides).
Several URLs are alternatives for the same chain: a failed attempt moves to the next one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import orjson
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
)

from indexer import errors, redact

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_RESPONSE_BYTES = 256 * 1024 * 1024
_ERROR_LOG_INTERVAL_SECS = 60.0
RECHECK_INTERVAL_SECS = 60.0


CIRCUIT_CLOSED, CIRCUIT_OPEN, CIRCUIT_HALF_OPEN = "closed", "open", "half_open"


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


@dataclass
class _Endpoint:
    """One URL with its circuit breaker: after `failures_to_open` consecutive failures it
    opens for a cool-down, then lets a single probe through (half open); success closes it."""

    url: str
    concurrency: int
    stats: EndpointStats = field(init=False)
    semaphore: asyncio.Semaphore = field(init=False)
    consecutive_failures: int = 0
    open_until: float = 0.0
    probing: bool = False
    rate_limited_until: float = 0.0
    verified: bool = True  # False: its chain id is not known yet; no requests go there

    def __post_init__(self) -> None:
        self.stats = EndpointStats(redact.redact_url(self.url))
        self.semaphore = asyncio.Semaphore(self.concurrency)

    def available_at(self, now: float) -> float:
        """When this endpoint may take a request (<= now: it may now)."""
        if self.probing:
            return now + 1.0  # one probe at a time; ask again later
        if self.stats.circuit == CIRCUIT_OPEN:
            return max(self.open_until, self.rate_limited_until)
        return self.rate_limited_until

    def succeeded(self) -> None:
        self.consecutive_failures = 0
        self.probing = False
        self.stats.circuit = CIRCUIT_CLOSED

    def failed(self, *, failures_to_open: int, cooldown_secs: float) -> None:
        self.consecutive_failures += 1
        if self.probing or self.consecutive_failures >= failures_to_open:
            if self.stats.circuit != CIRCUIT_OPEN:
                logger.warning(
                    "%s: circuit open for %gs after %d consecutive failures",
                    self.stats.url,
                    cooldown_secs,
                    self.consecutive_failures,
                    extra={"action": "circuit_open"},
                )
            self.stats.circuit = CIRCUIT_OPEN
            self.open_until = time.monotonic() + cooldown_secs
        self.probing = False


class RpcClient:
    """A JSON-RPC client over one or more equivalent HTTP endpoints."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout_secs: float,
        max_concurrency: int = 8,
        max_attempts: int = 5,
        failures_to_open: int = 5,
        cooldown_secs: float = 30.0,
        label: str = "rpc",
    ) -> None:
        assert urls, "at least one URL"
        self._endpoints = [_Endpoint(url, max_concurrency) for url in urls]
        self._next_endpoint = 0
        self._timeout_secs = timeout_secs
        self._failures_to_open = failures_to_open
        self._cooldown_secs = cooldown_secs
        self.verifier: Callable[[str], Awaitable[None]] | None = None
        self._last_recheck = time.monotonic()
        self._max_attempts = max_attempts
        self._label = label
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self._last_error_log = 0.0
        self._failing = False

    async def __aenter__(self) -> RpcClient:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._timeout_secs, sock_connect=10),
            headers={"Content-Type": "application/json"},
            connector=aiohttp.TCPConnector(limit=64, enable_cleanup_closed=True),
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def endpoints(self) -> list[EndpointStats]:
        return [e.stats for e in self._endpoints]

    @property
    def urls(self) -> list[str]:
        return [e.url for e in self._endpoints]

    def alternate_url(self) -> str | None:
        """A verified endpoint other than the one requests go to now (None if there is none)."""
        count = len(self._endpoints)
        for offset in range(1, count):
            endpoint = self._endpoints[(self._next_endpoint + offset) % count]
            if endpoint.verified:
                return endpoint.url
        return None

    # -- Endpoint identity: an endpoint serves requests only once its chain was checked.

    def set_verified(self, url: str, verified: bool) -> None:
        endpoint = next(e for e in self._endpoints if e.url == url)
        endpoint.verified = verified
        if verified:
            endpoint.succeeded()

    def unverified_urls(self) -> list[str]:
        return [e.url for e in self._endpoints if not e.verified]

    async def _recheck_due(self) -> None:
        """Now and then, ask the verifier about endpoints that were unreachable at start."""
        if self.verifier is None or not self.unverified_urls():
            return
        now = time.monotonic()
        if now - self._last_recheck < RECHECK_INTERVAL_SECS:
            return
        self._last_recheck = now
        for url in self.unverified_urls():
            await self.verifier(url)

    # -- Public calls

    async def call(
        self,
        method: str,
        params: Sequence[Any] = (),
        *,
        url: str | None = None,
        attempts: int | None = None,
    ) -> Any:
        """Send one request and return its `result`."""
        (result,) = await self.batch_parsed([(method, params)], _identity, url=url,
                                            attempts=attempts)  # fmt: skip
        return result

    async def batch_parsed(
        self,
        calls: Sequence[tuple[str, Sequence[Any]]],
        parse: Callable[[list[Any]], T],
        *,
        url: str | None = None,
        attempts: int | None = None,
    ) -> T:
        """Send `calls` as one JSON-RPC batch to one endpoint; `parse` their results in order.

        With `url`, only that endpoint is asked (used to check every endpoint's chain id).
        `parse` is applied to the results as part of the attempt.

        A `ResponseCorrupted` from `parse` (an answer that is well-formed JSON-RPC but wrong:
        another block than asked, a log naming another block) counts against the endpoint
        that sent it, like a transport failure, and the next attempt goes to the next
        endpoint: a node that lies is failed over, not retried forever.
        """

        async def decode(raw: bytes, ids: list[int], where: str) -> T:
            return parse(results_of(raw, ids, calls, where))

        return await self.batch_decoded(calls, decode, url=url, attempts=attempts)

    async def batch_decoded(
        self,
        calls: Sequence[tuple[str, Sequence[Any]]],
        decode: Callable[[bytes, list[int], str], Awaitable[T]],
        *,
        url: str | None = None,
        attempts: int | None = None,
    ) -> T:
        """Like `batch_parsed`, with `decode` given the raw response body.

        `decode(body, ids, where)` gets the request ids in call order and the endpoint's
        name for messages; `results_of` turns the body into the results when it needs them.
        It is part of the attempt: its `ResponseCorrupted` fails the endpoint over.
        """
        retrying = AsyncRetrying(
            retry=retry_if_exception_type((errors.SourceTransient, errors.ResponseCorrupted)),
            wait=_wait,
            stop=stop_after_attempt(attempts or self._max_attempts),
            before_sleep=self._before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if url is None:
                    await self._recheck_due()
                endpoint = self._pick(url)
                results = await self._send(endpoint, calls, decode)
        if self._failing:
            self._failing = False
            logger.info("%s: connection restored", self._label, extra={"action": "rpc_restored"})
        return results

    # -- Internals

    def _pick(self, url: str | None) -> _Endpoint:
        """The current endpoint if it may take a request, else the next one that may.

        With every circuit open (or every endpoint rate limited), raise `SourceTransient`
        carrying how long to wait, so that the retry policy sleeps instead of spinning.
        """
        if url is not None:
            return next(e for e in self._endpoints if e.url == url)
        now = time.monotonic()
        count = len(self._endpoints)
        for offset in range(count):
            index = (self._next_endpoint + offset) % count
            endpoint = self._endpoints[index]
            if endpoint.verified and endpoint.available_at(now) <= now:
                if endpoint.stats.circuit == CIRCUIT_OPEN:
                    endpoint.stats.circuit = CIRCUIT_HALF_OPEN
                    endpoint.probing = True
                self._next_endpoint = index
                return endpoint
        wait = max(0.05, min(e.available_at(now) for e in self._endpoints if e.verified) - now)
        raise errors.SourceTransient(
            f"{self._label}: every endpoint is unavailable (circuit open or rate limited) "
            f"for another {wait:.1f}s",
            retry_after_secs=wait,
        )

    def _fail_over(self, endpoint: _Endpoint) -> None:
        if self._endpoints[self._next_endpoint % len(self._endpoints)] is endpoint:
            self._next_endpoint += 1

    def _before_sleep(self, state: RetryCallState) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= _ERROR_LOG_INTERVAL_SECS:
            self._failing = True  # announce the recovery of what we warned about
            self._last_error_log = now
            exc = state.outcome.exception() if state.outcome else None
            logger.warning(
                "%s: %s (attempt %d, retrying)",
                self._label,
                exc,
                state.attempt_number,
                extra={"action": "rpc_retry"},
            )

    async def _send(
        self,
        endpoint: _Endpoint,
        calls: Sequence[tuple[str, Sequence[Any]]],
        decode: Callable[[bytes, list[int], str], Awaitable[T]],
    ) -> T:
        assert self._session is not None, "RpcClient used outside `async with`"
        ids = [next(self._ids) for _ in calls]
        body = orjson.dumps(
            [
                {"jsonrpc": "2.0", "id": i, "method": m, "params": list(p)}
                for i, (m, p) in zip(ids, calls, strict=True)
            ]
        )
        where = endpoint.stats.url
        stats = endpoint.stats
        stats.requests += 1
        started = time.monotonic()
        try:
            async with endpoint.semaphore:
                try:
                    async with asyncio.timeout(self._timeout_secs):
                        raw = await self._post(endpoint.url, body, where)
                except TimeoutError as exc:
                    raise errors.SourceTimeout(
                        f"{where}: no answer within {self._timeout_secs:g}s"
                    ) from exc
                except aiohttp.ClientError as exc:
                    raise errors.SourceTransient(f"{where}: {type(exc).__name__}") from exc
            results = await decode(raw, ids, where)
        except (errors.SourceTransient, errors.ResponseCorrupted) as exc:
            stats.errors += 1
            stats.last_error = str(exc)
            retry_after = exc.context.get("retry_after_secs")
            if isinstance(retry_after, int | float):
                stats.rate_limited += 1
                endpoint.rate_limited_until = time.monotonic() + float(retry_after)
            if len(self._endpoints) > 1:
                # A circuit only helps when there is another endpoint to turn to; a single
                # endpoint is waited out by the retry and the syncer's backoff instead.
                endpoint.failed(
                    failures_to_open=self._failures_to_open, cooldown_secs=self._cooldown_secs
                )
            self._fail_over(endpoint)
            raise
        except BaseException:
            endpoint.probing = False
            raise
        else:
            endpoint.succeeded()
            return results
        finally:
            stats.latency_secs_total += time.monotonic() - started

    async def _post(self, url: str, body: bytes, where: str) -> bytes:
        assert self._session is not None
        async with self._session.post(url, data=body) as resp:
            if resp.status == 429 or resp.status >= 500:
                retry_after = _retry_after(resp.headers.get("Retry-After"))
                if resp.status == 429 and retry_after is None:
                    retry_after = 1.0
                raise errors.SourceTransient(
                    f"{where}: HTTP {resp.status}", retry_after_secs=retry_after
                )
            if resp.status == 413:
                raise errors.BatchTooLarge(f"{where}: HTTP 413 (request too large)")
            if resp.status != 200:
                raise errors.SourceError(f"{where}: HTTP {resp.status}")
            if resp.content_length is not None and resp.content_length > MAX_RESPONSE_BYTES:
                raise errors.BatchTooLarge(f"{where}: response larger than the cap")
            chunks = []
            size = 0
            async for chunk in resp.content.iter_any():  # as received: no re-chunking copy
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise errors.BatchTooLarge(f"{where}: response larger than the cap")
        return b"".join(chunks)  # one copy (a growing bytearray copies on every resize)


def results_of(
    raw: bytes, ids: list[int], calls: Sequence[tuple[str, Sequence[Any]]], where: str
) -> list[Any]:
    """A batch response body's results, in call order (see `_match`)."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.ResponseCorrupted(f"{where}: response is not valid JSON") from exc
    return _match(payload, ids, calls, where)


def _too_large(code: Any, message: Any) -> bool:
    return code == -32003 or (isinstance(message, str) and "too large" in message.lower())


def _identity(results: list[Any]) -> list[Any]:
    return results


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), 60.0)
    except ValueError:
        return None


def _wait(state: RetryCallState) -> float:
    """Capped exponential backoff with jitter, or the server's Retry-After when longer."""
    attempt = max(state.attempt_number, 1)
    base: float = min(4.0, 0.25 * 2.0 ** (attempt - 1)) + random.uniform(0, 0.25)
    exc = state.outcome.exception() if state.outcome else None
    hinted = exc.context.get("retry_after_secs") if isinstance(exc, errors.IndexerError) else None
    return max(base, float(hinted)) if isinstance(hinted, int | float) else base


def _match(
    payload: Any, ids: list[int], calls: Sequence[tuple[str, Sequence[Any]]], where: str
) -> list[Any]:
    """Pair a batch response with its requests by id; every id exactly once."""
    if isinstance(payload, dict) and "error" in payload:
        # A node that rejects the whole batch answers with one error object: with several
        # items, that is a batch limit (geth, Erigon, Besu, providers all answer so).
        err = payload["error"] if isinstance(payload["error"], dict) else {}
        message = str(err.get("message", "?"))[:200]
        if len(calls) > 1:
            raise errors.BatchTooLarge(f"{where}: batch of {len(calls)} rejected: {message}")
        raise errors.RpcError(
            f"{where}: request rejected: {message}",
            code=int(err.get("code", 0)) if isinstance(err.get("code"), int) else 0,
        )
    if not isinstance(payload, list):
        raise errors.ResponseCorrupted(f"{where}: batch response is not a list")
    by_id: dict[int, dict[str, Any]] = {}
    for item in payload:
        if not isinstance(item, dict) or not isinstance(item.get("id"), int):
            raise errors.ResponseCorrupted(f"{where}: batch item without an integer id")
        if item["id"] in by_id:
            raise errors.ResponseCorrupted(f"{where}: id {item['id']} answered twice")
        by_id[item["id"]] = item
    if set(by_id) != set(ids):
        raise errors.ResponseCorrupted(
            f"{where}: batch answer ids do not match the request "
            f"({len(set(ids) - set(by_id))} missing, {len(set(by_id) - set(ids))} unexpected)"
        )
    results = []
    for i, (method, _params) in zip(ids, calls, strict=True):
        item = by_id[i]
        if "error" in item and item["error"] is not None:
            err = item["error"] if isinstance(item["error"], dict) else {}
            code = err.get("code")
            if len(calls) > 1 and _too_large(code, err.get("message")):
                # geth answers items past its response-size limit with -32003.
                raise errors.BatchTooLarge(f"{where}: batch of {len(calls)} answered too large")
            raise errors.RpcError(
                f"{where}: {method} failed: {str(err.get('message', '?'))[:200]}",
                code=code if isinstance(code, int) else 0,
            )
        if "result" not in item:
            raise errors.ResponseCorrupted(f"{where}: {method} answer has neither result nor error")
        results.append(item["result"])
    return results
