"""One connection to one Electrum server: newline-delimited JSON-RPC over asyncio streams.

Why our own small layer and not aiorpcx (the library ElectrumX itself uses): the client side
of the Electrum protocol is small (one JSON object per line, ids, notifications), and we need
exactly our own policy at every point where aiorpcx has its own: errors translated into our
tree at this boundary (`SourceTransient`/`SourceTimeout`/`ResponseCorrupted`/`RpcError`), a
cap on line length, whitespace padding tolerated (ElectrumX 2.0 pads replies with spaces),
a server that sends requests or unknown ids dropped, and no new dependency. aiorpcx brings
its own session machinery (error types, concurrency and cost accounting, logging) that we
would have to wrap and translate anyway.

A connection carries many requests at once (ids match answers to requests): ElectrumX holds
small replies on plain TCP for up to a second, so waiting for each answer before the next
request crawls. Every request has a timeout; expiry is `SourceTimeout`, never a cancellation.
Unsolicited notifications go to a callback as they arrive (O(1) each, nothing is queued), so
a flood costs CPU, never memory. The connection owns two tasks, the reader and the keep-alive
`server.ping`, and `close()` ends both. Once it fails (EOF, garbage, timeout of a ping) it
stays failed: every pending and later request raises; the server pool (`electrum_servers`)
opens a new one.

Memory per connection is bounded by the line limit, whatever the server sends, and for as
long as it sends it (the "memory budget" of `indexer.chain.budget`, in Electrum's terms):
the stream buffers at most twice `max_line_bytes` before it stops reading the socket (a
longer line is refused there: the connection fails, and the buffered bytes are dropped at
once); one line at a time is parsed, a long one only if its JSON is not denser than answers
we take (`MIN_BYTES_PER_VALUE`: parsing cannot make it more than about 5 times its size),
and the reader yields after each one so that the request waiting for it takes its answer
before the next line is read, so parsed answers do not pile up; a failure is kept without
the traceback that reached the line. With the default 8 MiB line limit: under 80 MiB per
server connection, any time (the buffer, the line, its copy and its parsed form).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import ssl
from collections.abc import Callable, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import orjson

from indexer import __version__, errors, redact

logger = logging.getLogger(__name__)

PROTOCOL_MIN = "1.4"
PROTOCOL_MAX = "1.7"  # the newest version whose header methods we parse (1.6+: `headers` list)
CLIENT_NAME = f"indexer/{__version__}"
DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024  # a padded 2016-header reply is ~0.5 MiB
DEFAULT_MAX_IN_FLIGHT = 32
DEFAULT_PING_INTERVAL_SECS = 60.0  # ElectrumX drops sessions idle for 600 s by default
# A long line must not hold more JSON values than one per this many bytes: parsed, each value
# is a Python object of up to ~72 bytes, so a line of `[{},{},...]` would take 20 times its
# size. Header answers have one per ~160 bytes (a list of 80-byte hex headers) or fewer.
DENSE_LINE_BYTES = 64 * 1024
MIN_BYTES_PER_VALUE = 32

Notify = Callable[[str, list[Any]], None]


# JSON-RPC error codes of a server that throttles us (aiorpcx, under ElectrumX's cost-based
# limits), with how long to leave that server alone: "excessive resource usage" (it then
# disconnects), "server busy".
THROTTLE_CODES: Final = {-101: 5.0, -102: 2.0}


def protocol_tuple(version: str) -> tuple[int, ...]:
    """'1.4.2' -> (1, 4, 2), '1.7.0' -> (1, 7); raise ValueError if not a dotted version."""
    parts = [int(p) for p in version.split(".")]
    if any(p < 0 for p in parts):
        raise ValueError(version)
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def normalize_fingerprint(fingerprint: str) -> str:
    """A SHA-256 certificate fingerprint as 64 lowercase hex digits (colons allowed in input)."""
    value = fingerprint.replace(":", "").strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError("a SHA-256 fingerprint is 64 hex digits")
    return value


def _ssl_context(pinned: bool) -> ssl.SSLContext:
    if not pinned:
        return ssl.create_default_context()  # CA and host name verified
    # A pinned self-signed certificate cannot pass CA verification; the pin replaces it and
    # is checked right after the handshake, before any request is sent.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _copy(exc: errors.SourceError) -> errors.SourceError:
    """A fresh exception of the same kind for each waiter (one instance raised many times
    would grow one traceback forever)."""
    return type(exc)(str(exc))


class ElectrumConnection:
    """One Electrum protocol session (tcp:// or ssl://), after `open()` until `close()`."""

    def __init__(
        self,
        url: str,
        *,
        timeout_secs: float,
        tls_fingerprint: str | None = None,
        protocol_max: str = PROTOCOL_MAX,
        ping_interval_secs: float = DEFAULT_PING_INTERVAL_SECS,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        on_notification: Notify | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("tcp", "ssl") or not parts.hostname or not parts.port:
            raise errors.ConfigError(f"{redact.redact_url(url)}: not a tcp:// or ssl:// URL")
        self.url = url
        self.where = redact.redact_url(url)
        self._host = parts.hostname
        self._port = parts.port
        self._tls = parts.scheme == "ssl"
        self._fingerprint = normalize_fingerprint(tls_fingerprint) if tls_fingerprint else None
        self._timeout_secs = timeout_secs
        self._protocol_max = protocol_max
        self._ping_interval_secs = ping_interval_secs
        self._max_line_bytes = max_line_bytes
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._on_notification = on_notification
        self._ids = itertools.count(1)
        self._last_id = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.failure: errors.SourceError | None = None
        self.protocol: tuple[int, ...] = ()
        self.server_software = ""

    @property
    def closed(self) -> bool:
        return self.failure is not None

    # -- Life cycle

    async def open(self) -> None:
        """Connect, check a pinned certificate and negotiate the protocol version."""
        try:
            async with asyncio.timeout(self._timeout_secs):
                self._reader, self._writer = await asyncio.open_connection(
                    self._host,
                    self._port,
                    ssl=_ssl_context(self._fingerprint is not None) if self._tls else None,
                    limit=self._max_line_bytes,
                )
        except TimeoutError as exc:
            raise errors.SourceTimeout(
                f"{self.where}: no connection within {self._timeout_secs:g}s"
            ) from exc
        except ssl.SSLError as exc:
            raise errors.SourceTransient(f"{self.where}: TLS failed: {exc.reason}") from exc
        except OSError as exc:
            raise errors.SourceTransient(f"{self.where}: cannot connect: {exc}") from exc
        try:
            self._check_pin()
            self._tasks.append(asyncio.create_task(self._read_loop(), name=f"read {self.where}"))
            await self._negotiate()
            if self._ping_interval_secs > 0:
                self._tasks.append(
                    asyncio.create_task(self._ping_loop(), name=f"ping {self.where}")
                )
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """End the session: pending requests fail, the owned tasks end, the socket closes."""
        self._fail(errors.SourceTransient(f"{self.where}: connection closed"))
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._writer is not None:
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    def _check_pin(self) -> None:
        if self._fingerprint is None or self._writer is None:
            return
        ssl_object = self._writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        seen = hashlib.sha256(der).hexdigest() if der else "none"
        if seen != self._fingerprint:
            raise errors.CertificateMismatch(
                f"{self.where}: TLS certificate sha256 {seen} is not the pinned {self._fingerprint}"
            )

    async def _negotiate(self) -> None:
        try:
            reply = await self.request(
                "server.version", [CLIENT_NAME, [PROTOCOL_MIN, self._protocol_max]]
            )
        except errors.RpcError as exc:
            raise errors.ResponseCorrupted(
                f"{self.where}: no common protocol version in {PROTOCOL_MIN}.."
                f"{self._protocol_max} ({exc})"
            ) from exc
        if (
            not isinstance(reply, list)
            or len(reply) != 2
            or not all(isinstance(part, str) for part in reply)
        ):
            raise errors.ResponseCorrupted(f"{self.where}: server.version answer is malformed")
        try:
            protocol = protocol_tuple(reply[1])
        except ValueError:
            raise errors.ResponseCorrupted(
                f"{self.where}: server.version names no protocol version"
            ) from None
        if not protocol_tuple(PROTOCOL_MIN) <= protocol <= protocol_tuple(self._protocol_max):
            raise errors.ResponseCorrupted(
                f"{self.where}: server chose protocol {reply[1]}, outside what we asked for"
            )
        self.server_software, self.protocol = reply[0][:100], protocol

    # -- Requests

    async def request(
        self, method: str, params: Sequence[Any] = (), *, timeout_secs: float | None = None
    ) -> Any:
        """Send one request and return its `result` (an error object raises `RpcError`)."""
        (result,) = await self._exchange([(method, params)], timeout_secs=timeout_secs)
        return result

    async def batch(
        self,
        calls: Sequence[tuple[str, Sequence[Any]]],
        *,
        timeout_secs: float | None = None,
    ) -> list[Any]:
        """Send `calls` as one JSON-RPC batch (one line, one request slot) and return their
        results in order; the first error object raises (`RpcError`). One answer line for
        many: a server that holds small answers back (ElectrumX pads and delays replies
        under 1 KiB) sends it at once."""
        return await self._exchange(calls, timeout_secs=timeout_secs) if calls else []

    # -- Internals

    async def _exchange(
        self, calls: Sequence[tuple[str, Sequence[Any]]], *, timeout_secs: float | None
    ) -> list[Any]:
        """Send `calls` on one line (one request as an object, several as a batch) in one
        request slot; their results in order."""
        timeout = self._timeout_secs if timeout_secs is None else timeout_secs
        async with self._in_flight:
            if self.failure is not None:
                raise _copy(self.failure)
            assert self._writer is not None, "request before open()"
            loop = asyncio.get_running_loop()
            ids = [next(self._ids) for _ in calls]
            self._last_id = ids[-1]
            futures: list[asyncio.Future[Any]] = []
            for request_id in ids:
                future: asyncio.Future[Any] = loop.create_future()
                self._pending[request_id] = future
                futures.append(future)
            messages = [
                {"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}
                for request_id, (method, params) in zip(ids, calls, strict=True)
            ]
            what = (
                calls[0][0] if len(calls) == 1 else f"a batch of {len(calls)} ({calls[0][0]}, ...)"
            )
            try:
                async with asyncio.timeout(timeout):
                    line = messages[0] if len(messages) == 1 else messages
                    self._writer.write(orjson.dumps(line) + b"\n")
                    await self._writer.drain()
                    return list(await asyncio.gather(*futures))
            except TimeoutError as exc:
                raise errors.SourceTimeout(
                    f"{self.where}: no answer to {what} within {timeout:g}s"
                ) from exc
            except OSError as exc:
                self._fail(errors.SourceTransient(f"{self.where}: connection lost: {exc}"))
                raise errors.SourceTransient(f"{self.where}: connection lost: {exc}") from exc
            finally:
                for request_id, future in zip(ids, futures, strict=True):
                    self._pending.pop(request_id, None)
                    if not future.done():
                        future.cancel()
                    elif not future.cancelled():
                        future.exception()  # retrieved: the first one raised is enough

    def _fail(self, exc: errors.SourceError) -> None:
        """Enter the failed state once: wake every waiter with `exc`, close the socket."""
        if self.failure is not None:
            return
        # A fresh one is kept: `exc`'s traceback reaches the frames that held the line.
        self.failure = _copy(exc)
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(_copy(exc))
        if self._writer is not None:
            self._writer.close()

    async def _read_loop(self) -> None:
        assert self._reader is not None
        reader = self._reader
        try:
            while True:
                line = await self._read_line(reader)
                if line:
                    self._dispatch(line)
                    del line
                    # The request that waited for this answer takes it now, before another
                    # line is parsed: answers do not pile up in memory (see the docstring).
                    await asyncio.sleep(0)
        except errors.SourceError as exc:
            self._fail(exc)
        except OSError as exc:  # ssl.SSLError included
            self._fail(errors.SourceTransient(f"{self.where}: connection lost: {exc}"))

    async def _read_line(self, reader: asyncio.StreamReader) -> bytes:
        """The next line, stripped; on a refused or cut line, fail and drop what was read."""
        failure: errors.SourceError
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            failure = errors.ResponseCorrupted(
                f"{self.where}: a line longer than {self._max_line_bytes:,d} bytes"
            )
        except asyncio.IncompleteReadError:  # its `partial` holds what was read: not kept
            failure = errors.SourceTransient(f"{self.where}: server closed the connection")
        else:
            return line.strip()  # ElectrumX pads with spaces; blank lines carry nothing
        self._fail(failure)  # closes the socket: nothing more is read
        await reader.read(2 * self._max_line_bytes + 2**20)  # what was buffered, dropped now
        raise failure

    def _dispatch(self, line: bytes) -> None:
        if len(line) > DENSE_LINE_BYTES:
            values = line.count(b",") + line.count(b":") + 1
            if values * MIN_BYTES_PER_VALUE > len(line):
                raise errors.ResponseCorrupted(
                    f"{self.where}: a {len(line):,d}-byte line with a JSON value every "
                    f"{len(line) / values:.1f} bytes (no answer we take is that dense)"
                )
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise errors.ResponseCorrupted(f"{self.where}: a line is not JSON") from None
        if isinstance(message, list) and message:  # the answers to a batch
            for item in message:
                self._dispatch_one(item)
            return
        self._dispatch_one(message)

    def _dispatch_one(self, message: Any) -> None:
        if not isinstance(message, dict):
            raise errors.ResponseCorrupted(f"{self.where}: a message is not a JSON object")
        request_id = message.get("id")
        if request_id is None:
            method, params = message.get("method"), message.get("params", [])
            if not isinstance(method, str) or not isinstance(params, list):
                raise errors.ResponseCorrupted(f"{self.where}: malformed notification")
            if self._on_notification is not None:
                self._on_notification(method, params)
            return
        if "method" in message:
            # A client owes a server no answers; Electrum drops servers that ask (D6).
            raise errors.ResponseCorrupted(f"{self.where}: server sent us a request")
        future = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
        if future is not None and future.done():
            return  # its request was cancelled (a sibling request failed first)
        if future is None:
            if isinstance(request_id, int) and 0 < request_id <= self._last_id:
                return  # the answer to a request that already timed out
            raise errors.ResponseCorrupted(f"{self.where}: answer to an id we never sent")
        error = message.get("error")
        if error is not None:
            detail = error if isinstance(error, dict) else {}
            code = detail.get("code")
            text = f"{self.where}: {str(detail.get('message', error))[:200]}"
            backoff = THROTTLE_CODES.get(code) if isinstance(code, int) else None
            if backoff is not None:
                # The server's cost limits (ElectrumX): slow down on it, it is not an answer.
                future.set_exception(
                    errors.SourceTransient(f"{text} (throttled)", retry_after_secs=backoff)
                )
            else:
                future.set_exception(
                    errors.RpcError(text, code=code if isinstance(code, int) else 0)
                )
        elif "result" in message:
            future.set_result(message["result"])
        else:
            future.set_exception(
                errors.ResponseCorrupted(f"{self.where}: answer has neither result nor error")
            )

    async def _ping_loop(self) -> None:
        while self.failure is None:
            await asyncio.sleep(self._ping_interval_secs)
            try:
                await self.request("server.ping")
            except errors.SourceError as exc:
                logger.info(
                    "%s: keep-alive ping failed (%s); reconnecting on next use",
                    self.where,
                    exc,
                    extra={"action": "electrum_ping_failed"},
                )
                self._fail(errors.SourceTransient(f"{self.where}: keep-alive ping failed: {exc}"))
                return
