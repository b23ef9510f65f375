"""JSON-RPC over HTTP with aiohttp: batching, bounded concurrency, timeouts, retries, failover.

This is the boundary where aiohttp and transport errors become `errors.Source*`:
- unreachable, timed out, HTTP 429 / 5xx  -> `SourceTransient` (retried here, next endpoint);
  a connect that does not complete (a black hole: nothing accepts, nothing refuses) is said
  as such, "no connection within Ns (connect timeout)", after at most `CONNECT_TIMEOUT_SECS`
  or the request timeout if that is shorter;
- malformed JSON, wrong ids, missing batch items -> `ResponseCorrupted` (retried here too:
  the next endpoint may answer properly; the caller refetches if it keeps happening);
- HTTP 401 / 403, and JSON-RPC -32700 (parse error) or -32600 (invalid request) in answer to
  the valid requests we send -> `EndpointRefused`, a `ResponseCorrupted`: that endpoint, or
  something between us and it, is broken (a wrong key, a mangling proxy), so it is failed
  over like a wrong answer; what it means is said plainly, the URL only ever redacted;
- any other JSON-RPC error object -> `RpcError` (not retried here: the caller decides).
Several URLs are alternatives for the same chain: a failed attempt moves to the next one,
by the policy of the endpoint pool every transport shares (`indexer.chain.endpoints`).
Endpoints that did not answer at start are asked again every `RECHECK_INTERVAL_SECS`, in the
background: one that still does not answer never holds up a request to the others.

Memory: every answer is read into one buffer (`_read_body`) against the chain's
`budget.ByteBudget`, charged as its bytes arrive; reading stops and the answer is refused
(`BatchTooLarge`: the pipeline asks for smaller batches) once it would exceed the largest
answer the budget allows or what the budget has left. A refused or undecodable answer is
given back at once (buffer emptied, connection closed, the exception's frames cleared); a
decoded one stays charged while a prefetched batch made from it waits for the writer
(`budget.Hold`), or until it is decoded.
A decoded answer's buffer, once nothing else refers to it, is kept for the next answer of
about its size (`_Buffers`: at most two, of 1 MiB or more, for at most 30 s unused): a new
buffer of a large answer is new pages, whose faults cost more than reading it (about 0.5 ms
of CPU per full mainnet block here).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from types import SimpleNamespace
from typing import Any, TypeVar

import aiohttp
import orjson

from indexer import _rows, errors
from indexer.chain import budget
from indexer.chain.endpoints import Endpoint, EndpointPool, EndpointStats, Policy

logger = logging.getLogger(__name__)

T = TypeVar("T")
# An answer's bytes as read: the read buffer itself, not a copy (see `_read_body`).
Body = bytes | bytearray

# The largest answer with the default budget (each client's is `budget.max_answer_bytes`).
MAX_RESPONSE_BYTES = budget.max_answer_bytes(budget.DEFAULT_MAX_BYTES_IN_FLIGHT)
RECHECK_INTERVAL_SECS = 60.0
CONNECT_TIMEOUT_SECS = 10.0  # at most; the request timeout, if shorter, bounds it too

# What an HTTP refusal means, said plainly: the status alone tells, whatever the body says.
_REFUSED_STATUS = {
    401: "the endpoint refused our credentials (check the key in the URL)",
    403: "the endpoint denied access (check the key in the URL, and what it is allowed to call)",
}
# JSON-RPC errors that, in answer to the valid requests we send, mean a broken endpoint.
_BROKEN_CODES = {-32700: "parse error", -32600: "invalid request"}


class _Buffers:
    """Read buffers kept for the next answers (see the module docstring)."""

    KEEP = 2
    MIN_BYTES = 1 << 20
    IDLE_SECS = 30.0

    def __init__(self) -> None:
        self._kept: list[tuple[float, bytearray]] = []  # (when given back, buffer)

    def take(self, size: int) -> bytearray:
        """A buffer of `size` bytes (not zeroed: the caller writes every one)."""
        now = time.monotonic()
        self._kept = [(t, b) for t, b in self._kept if now - t < self.IDLE_SECS]
        for i, (_, kept) in enumerate(self._kept):
            if kept.__alloc__() // 2 <= size < kept.__alloc__():  # fits, without moving
                del self._kept[i]
                _rows.resize_buffer(kept, size)
                return kept
        if size < self.MIN_BYTES:
            return _rows.new_buffer(size)
        buffer = _rows.new_buffer(size + size // 8)  # room for the next, slightly larger one
        _rows.resize_buffer(buffer, size)
        return buffer

    def give(self, buffer: Body) -> None:
        """`buffer` back, kept if nothing but the caller refers to it any more."""
        # References: the caller's, this argument, getrefcount's argument.
        if (
            isinstance(buffer, bytearray)
            and buffer.__alloc__() >= self.MIN_BYTES
            and len(self._kept) < self.KEEP
            and sys.getrefcount(buffer) == 3
        ):
            self._kept.append((time.monotonic(), buffer))


class RpcClient:
    """A JSON-RPC client over one or more equivalent HTTP endpoints (an `EndpointPool`)."""

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
        max_bytes_in_flight: int = budget.DEFAULT_MAX_BYTES_IN_FLIGHT,
    ) -> None:
        # A circuit only helps when there is another endpoint to turn to; a single endpoint
        # is waited out by the retry and the syncer's backoff instead.
        self.pool = EndpointPool(
            urls,
            label=label,
            policy=Policy(
                max_attempts=max_attempts,
                concurrency=max_concurrency,
                failures_to_open=failures_to_open,
                cooldown_secs=cooldown_secs,
                max_cooldown_secs=max(cooldown_secs, 4.0),
                circuit_with_one_endpoint=False,
            ),
        )
        self._timeout_secs = timeout_secs
        self._connect_secs = min(timeout_secs, CONNECT_TIMEOUT_SECS)
        # Bytes in flight for this chain: answers being read and batches made from them.
        self.budget = budget.ByteBudget(max_bytes_in_flight, label=label)
        self.verifier: Callable[[str], Awaitable[None]] | None = None
        self._last_recheck = time.monotonic()
        self._recheck: asyncio.Task[None] | None = None
        self._label = label
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self._buffers = _Buffers()

    async def __aenter__(self) -> RpcClient:
        tracing = aiohttp.TraceConfig()
        tracing.on_connection_create_start.append(_connecting)
        tracing.on_connection_create_end.append(_connected)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                total=self._timeout_secs, sock_connect=self._connect_secs
            ),
            headers={"Content-Type": "application/json"},
            connector=aiohttp.TCPConnector(limit=64, enable_cleanup_closed=True),
            trace_configs=[tracing],
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        recheck, self._recheck = self._recheck, None
        if recheck is not None:
            recheck.cancel()
            await asyncio.gather(recheck, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def endpoints(self) -> list[EndpointStats]:
        return self.pool.stats

    @property
    def urls(self) -> list[str]:
        return self.pool.urls

    def alternate_url(self) -> str | None:
        """A verified endpoint other than the one requests go to now (None if there is none)."""
        return self.pool.alternate_url()

    # -- Endpoint identity: an endpoint serves requests only once its chain was checked.

    def set_verified(self, url: str, verified: bool) -> None:
        self.pool.set_verified(url, verified)

    def unverified_urls(self) -> list[str]:
        return [e.url for e in self.pool.endpoints if not e.verified and e.banned is None]

    def _recheck_due(self) -> None:
        """Now and then, ask the verifier about endpoints that were unreachable at start.

        In a task of its own: an endpoint that still does not answer (a black hole keeps a
        connect waiting for its timeout) must not hold up the request that found it due.
        """
        if self.verifier is None or not self.unverified_urls():
            return
        if self._recheck is not None and not self._recheck.done():
            return
        now = time.monotonic()
        if now - self._last_recheck < RECHECK_INTERVAL_SECS:
            return
        self._last_recheck = now
        self._recheck = asyncio.create_task(
            self._recheck_all(self.verifier), name=f"{self._label}: endpoint recheck"
        )

    async def _recheck_all(self, verifier: Callable[[str], Awaitable[None]]) -> None:
        for url in self.unverified_urls():
            try:
                await verifier(url)
            except Exception as exc:  # a bug of ours: said, not lost in a task nobody awaits
                logger.error(
                    "%s: endpoint recheck failed: unexpected %s: %s (please report it)",
                    self._label,
                    type(exc).__name__,
                    exc,
                    extra={"chain": self._label, "action": "unexpected"},
                )

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

        async def decode(raw: Body, ids: list[int], where: str) -> T:
            return parse(results_of(raw, ids, calls, where))

        return await self.batch_decoded(calls, decode, url=url, attempts=attempts)

    async def batch_decoded(
        self,
        calls: Sequence[tuple[str, Sequence[Any]]],
        decode: Callable[[Body, list[int], str], Awaitable[T]],
        *,
        url: str | None = None,
        attempts: int | None = None,
    ) -> T:
        """Like `batch_parsed`, with `decode` given the raw response body.

        `decode(body, ids, where)` gets the request ids in call order and the endpoint's
        name for messages; `results_of` turns the body into the results when it needs them.
        It is part of the attempt: its `ResponseCorrupted` fails the endpoint over.
        """
        if url is None:
            self._recheck_due()
        return await self.pool.run(
            lambda endpoint: self._send(endpoint, calls, decode), url=url, attempts=attempts
        )

    async def batch_for_endpoint(
        self,
        build: Callable[[str], Sequence[tuple[str, Sequence[Any]]]],
        decode: Callable[[Body, list[int], Sequence[tuple[str, Sequence[Any]]], str], Awaitable[T]],
        *,
        attempts: int | None = None,
    ) -> T:
        """Like `batch_decoded`, with the calls built for the endpoint the pool picked.

        `build(url)` gives the calls for that endpoint (what it can answer); `decode(body,
        ids, calls, url)` gets them back with its URL (never shown: redact it), e.g. to ask
        the same endpoint a second batch.
        """
        self._recheck_due()

        async def attempt(endpoint: Endpoint) -> T:
            calls = build(endpoint.url)

            async def with_url(raw: Body, ids: list[int], where: str) -> T:
                return await decode(raw, ids, calls, endpoint.url)

            return await self._send(endpoint, calls, with_url)

        return await self.pool.run(attempt, attempts=attempts)

    # -- Internals

    async def _send(
        self,
        endpoint: Endpoint,
        calls: Sequence[tuple[str, Sequence[Any]]],
        decode: Callable[[Body, list[int], str], Awaitable[T]],
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
        charge = self.budget.charge()
        progress = _Progress()
        try:
            try:
                async with asyncio.timeout(self._timeout_secs):
                    raw = await self._post(endpoint.url, body, where, charge, progress)
            except TimeoutError as exc:  # aiohttp's connect timeout is one too
                if progress.connecting:
                    raise errors.SourceTimeout(
                        f"{where}: no connection within {self._connect_secs:g}s (connect timeout)"
                    ) from exc
                raise errors.SourceTimeout(
                    f"{where}: no answer within {self._timeout_secs:g}s"
                ) from exc
            except aiohttp.ClientError as exc:
                raise errors.SourceTransient(f"{where}: {type(exc).__name__}") from exc
            result = await decode(raw, ids, where)
        except BaseException as exc:
            # Given back at once: the answer's bytes and whatever the frames of `exc` (kept
            # for a retry, a log line or a task result) still reach.
            raw = bytearray()
            charge.release()
            budget.forget_frames(exc)
            raise
        self._buffers.give(raw)
        del raw
        hold = budget.current_hold()
        if hold is None:
            charge.release()
        else:
            hold.keep(charge)  # the prefetched batch stays charged until the writer is done
        return result

    async def _post(
        self, url: str, body: bytes, where: str, charge: budget.Charge, progress: _Progress
    ) -> bytearray:
        assert self._session is not None
        async with self._session.post(url, data=body, trace_request_ctx=progress) as resp:
            if resp.status == 429 or resp.status >= 500:
                retry_after = _retry_after(resp.headers.get("Retry-After"))
                if resp.status == 429 and retry_after is None:
                    retry_after = 1.0
                raise errors.SourceTransient(
                    f"{where}: HTTP {resp.status}", retry_after_secs=retry_after
                )
            if resp.status == 413:
                raise errors.BatchTooLarge(f"{where}: HTTP 413 (request too large)")
            if resp.status in _REFUSED_STATUS:
                raise errors.EndpointRefused(
                    f"{where}: HTTP {resp.status}: {_REFUSED_STATUS[resp.status]}"
                )
            if resp.status != 200:
                raise errors.SourceError(f"{where}: HTTP {resp.status}")
            return await _read_body(resp, charge, where, self._buffers)


class _Progress:
    """How far one request got, as aiohttp's tracing tells: a timeout while it is still
    connecting is a connect timeout."""

    __slots__ = ("connecting",)

    def __init__(self) -> None:
        self.connecting = False


async def _connecting(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceConnectionCreateStartParams,
) -> None:
    if isinstance(context.trace_request_ctx, _Progress):
        context.trace_request_ctx.connecting = True


async def _connected(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceConnectionCreateEndParams,
) -> None:
    if isinstance(context.trace_request_ctx, _Progress):
        context.trace_request_ctx.connecting = False


async def _read_body(
    resp: aiohttp.ClientResponse, charge: budget.Charge, where: str, buffers: _Buffers
) -> bytearray:
    """The whole body of `resp`, charged to `charge` as it arrives (see the module docstring).

    Into one buffer, made to size when the length is announced (else grown: by up to 1/8
    more than it holds, charged too), which is the answer itself: it is not copied again
    (decoders take any bytes-like object; msgspec's raw items refer to it). One large buffer
    rather than many chunks: when it is freed, its memory goes back to the system at once
    instead of leaving holes in the heap. A refusal empties the buffer and closes the
    connection before it raises: nothing of the answer stays in memory, in this frame or in
    aiohttp's (which buffers at most its read size ahead of what we take).
    """
    limit = charge.budget.max_answer_bytes
    length = resp.content_length
    buffer = bytearray()
    size = 0
    try:
        if length is not None:
            if not _fits(charge, length, limit):
                raise _refusal(charge, where, f"announces {length:,d} bytes")
            # Not zeroed (new, or kept from an earlier answer): every byte is written below
            # before anything reads it (a shorter answer is cut to what came). aiohttp stops
            # at the announced length, or fails.
            buffer = buffers.take(length)
        async for chunk in resp.content.iter_any():
            end = size + len(chunk)
            if length is not None:
                if end > length:
                    raise _refusal(charge, where, f"goes past the {length:,d} bytes announced")
                _rows.copy_into(buffer, size, chunk)  # new pages: faults, off the GIL
            elif _fits(charge, end + end // 8 + 64, limit, size=end):
                buffer += chunk
            else:
                raise _refusal(charge, where, f"reached {end:,d} bytes and goes on")
            size = end
        if size != len(buffer):
            del buffer[size:]  # shorter than announced (aiohttp raises first), or grown
    except BaseException:
        resp.close()  # nothing more of this answer is read; aiohttp drops what it buffered
        buffer.clear()  # freed now, even while a traceback keeps this frame
        raise
    charge.resize(size)  # no more than charged as it came: cannot fail
    return buffer


def _fits(charge: budget.Charge, room: int, limit: int, *, size: int | None = None) -> bool:
    """Whether an answer of `size` (default `room`) bytes may take `room` bytes now."""
    return (room if size is None else size) <= limit and charge.resize(max(room, charge.bytes))


def _refusal(charge: budget.Charge, where: str, what: str) -> errors.BatchTooLarge:
    spent = charge.budget
    spent.refused += 1
    return errors.BatchTooLarge(
        f"{where}: answer refused: it {what}; an answer may take {spent.max_answer_bytes:,d} "
        f"bytes, and {spent.available_bytes + charge.bytes:,d} of this chain's "
        f"{spent.capacity_bytes:,d}-byte budget are free"
    )


def results_of(
    raw: Body, ids: list[int], calls: Sequence[tuple[str, Sequence[Any]]], where: str
) -> list[Any]:
    """A batch response body's results, in call order (see `_match`)."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.ResponseCorrupted(f"{where}: response is not valid JSON") from exc
    return _match(payload, ids, calls, where)


def _broken(where: str, code: int, message: str, what: str) -> errors.EndpointRefused:
    return errors.EndpointRefused(
        f"{where}: JSON-RPC {code} ({_BROKEN_CODES[code]}) in answer to {what}, a valid "
        f"request: the endpoint, or something between us and it, is broken ({message!r})"
    )


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


def _match(
    payload: Any, ids: list[int], calls: Sequence[tuple[str, Sequence[Any]]], where: str
) -> list[Any]:
    """Pair a batch response with its requests by id; every id exactly once."""
    if isinstance(payload, dict) and "error" in payload:
        # A node that rejects the whole batch answers with one error object: with several
        # items, that is a batch limit (geth, Erigon, Besu, providers all answer so, with
        # -32600 or a code of their own), unless it is a parse error: a body the node could
        # not read at all, whose ids it could not know (JSON-RPC 2.0, section 5).
        err = payload["error"] if isinstance(payload["error"], dict) else {}
        message = str(err.get("message", "?"))[:200]
        given = err.get("code")
        rejected = given if isinstance(given, int) else 0
        if rejected == -32700 or (rejected in _BROKEN_CODES and len(calls) == 1):
            what = calls[0][0] if len(calls) == 1 else f"a batch of {len(calls)} calls"
            raise _broken(where, rejected, message, what)
        if len(calls) > 1:
            raise errors.BatchTooLarge(f"{where}: batch of {len(calls)} rejected: {message}")
        raise errors.RpcError(f"{where}: request rejected: {message}", code=rejected)
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
            if code in _BROKEN_CODES:
                raise _broken(where, code, str(err.get("message", "?"))[:200], method)
            raise errors.RpcError(
                f"{where}: {method} failed: {str(err.get('message', '?'))[:200]}",
                code=code if isinstance(code, int) else 0,
                method=method,
            )
        if "result" not in item:
            raise errors.ResponseCorrupted(f"{where}: {method} answer has neither result nor error")
        results.append(item["result"])
    return results
