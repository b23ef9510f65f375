"""Several equivalent Electrum servers: one live connection each, failover, backoff, drops.

`run(job)` gives `job` one verified connection to one server, so everything a job asks comes
from the same server (a chunk of headers and its context are consistent). When the job fails:
- transport trouble or a timeout (`SourceTransient`): the connection is closed, the server
  backs off exponentially (0.5 s doubling, with jitter, up to `max_backoff_secs`), and the job
  is run again on the next server at once, or after the shortest backoff when every server
  is backing off;
- invalid data (`ResponseCorrupted`, including a header that fails validation raised by the
  job's own parsing): the server is dropped for `bad_server_cooldown_secs` and logged;
- a server on another chain or with another certificate than pinned (`ChainMismatch`,
  `CertificateMismatch`, found by the handshake on every new connection): dropped for good
  and logged as an error; when every server is in that state, the mismatch is raised;
- a JSON-RPC error object (`RpcError`) goes to the caller as it is (a semantic answer).
Each new connection runs `verifier` (the genesis check) before it takes any job.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from indexer import errors, redact
from indexer.chain import electrum_connection as ec
from indexer.chain.rpc import CIRCUIT_CLOSED, CIRCUIT_OPEN, EndpointStats

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_HEADERS = 2016  # per blockchain.block.headers request, until a server says less
_ERROR_LOG_INTERVAL_SECS = 60.0

Verifier = Callable[[ec.ElectrumConnection], Awaitable[None]]
Notify = Callable[[str, str, list[Any]], None]  # (url, method, params)


@dataclass(eq=False)
class _Server:
    url: str
    stats: EndpointStats = field(init=False)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    conn: ec.ElectrumConnection | None = None
    failures: int = 0
    retry_at: float = 0.0
    banned: errors.IndexerError | None = None  # wrong chain or certificate: never again
    max_headers: int = DEFAULT_MAX_HEADERS

    def __post_init__(self) -> None:
        self.stats = EndpointStats(redact.redact_url(self.url))

    def available(self, now: float) -> bool:
        return self.banned is None and self.retry_at <= now


class ElectrumServers:
    """A pool of Electrum servers for one chain (see the module docstring)."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        label: str,
        timeout_secs: float,
        tls_fingerprints: Mapping[str, str] | None = None,
        protocol_max: str = ec.PROTOCOL_MAX,
        ping_interval_secs: float = ec.DEFAULT_PING_INTERVAL_SECS,
        max_in_flight: int = ec.DEFAULT_MAX_IN_FLIGHT,
        max_attempts: int | None = None,
        bad_server_cooldown_secs: float = 300.0,
        max_backoff_secs: float = 30.0,
    ) -> None:
        assert urls, "at least one URL"
        self.label = label
        self._servers = [_Server(url) for url in urls]
        self._current = 0
        self._timeout_secs = timeout_secs
        self._fingerprints = dict(tls_fingerprints or {})
        self._protocol_max = protocol_max
        self._ping_interval_secs = ping_interval_secs
        self._max_in_flight = max_in_flight
        self._max_attempts = max_attempts or len(urls) + 2
        self._bad_cooldown_secs = bad_server_cooldown_secs
        self._max_backoff_secs = max_backoff_secs
        self.verifier: Verifier | None = None
        self.on_notification: Notify | None = None
        self._failing = False
        self._last_error_log = 0.0

    async def __aenter__(self) -> ElectrumServers:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        for server in self._servers:
            conn, server.conn = server.conn, None
            if conn is not None:
                await conn.close()

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self._servers]

    @property
    def endpoints(self) -> list[EndpointStats]:
        """Per-server counters, shaped like `RpcClient.endpoints` for /metrics."""
        now = time.monotonic()
        for server in self._servers:
            server.stats.circuit = CIRCUIT_CLOSED if server.available(now) else CIRCUIT_OPEN
        return [s.stats for s in self._servers]

    def max_headers(self, url: str) -> int:
        return self._server(url).max_headers

    def lower_max_headers(self, url: str, max_headers: int) -> None:
        """Remember that `url` serves at most `max_headers` headers per request."""
        server = self._server(url)
        server.max_headers = max(1, min(server.max_headers, max_headers))

    # -- Connections

    async def connect(self, url: str) -> ec.ElectrumConnection:
        """The verified connection to `url`, opened if needed (no retry, no failover)."""
        server = self._server(url)
        async with server.lock:
            if server.conn is not None and not server.conn.closed:
                return server.conn
            server.conn = None
            conn = ec.ElectrumConnection(
                url,
                timeout_secs=self._timeout_secs,
                tls_fingerprint=self._fingerprints.get(url),
                protocol_max=self._protocol_max,
                ping_interval_secs=self._ping_interval_secs,
                max_in_flight=self._max_in_flight,
                on_notification=lambda method, params: self._notify(url, method, params),
            )
            await conn.open()
            try:
                if self.verifier is not None:
                    await self.verifier(conn)
            except errors.RpcError as exc:  # it cannot answer what every server must
                await conn.close()
                raise errors.ResponseCorrupted(f"{conn.where}: handshake failed: {exc}") from exc
            except BaseException:
                await conn.close()
                raise
            server.conn = conn
            return conn

    def _notify(self, url: str, method: str, params: list[Any]) -> None:
        if self.on_notification is not None:
            self.on_notification(url, method, params)

    # -- Jobs with failover

    async def run(
        self,
        job: Callable[[ec.ElectrumConnection], Awaitable[T]],
        *,
        url: str | None = None,
        alternate: bool = False,
    ) -> T:
        """Run `job` on one server's connection; on failure, again on the next server.

        With `url`, only that server is tried. With `alternate`, another server than the
        current one is preferred (a second opinion before deleting anything).
        """
        for attempt in range(1, self._max_attempts + 1):
            server: _Server | None = None
            conn: ec.ElectrumConnection | None = None
            try:
                server = self._pick(url, alternate=alternate)
                conn = await self.connect(server.url)
                server.stats.requests += 1
                started = time.monotonic()
                try:
                    result = await job(conn)
                finally:
                    server.stats.latency_secs_total += time.monotonic() - started
            except (errors.ChainMismatch, errors.CertificateMismatch) as exc:
                assert server is not None
                self._ban(server, exc)
                if url is not None:
                    raise
                if attempt == self._max_attempts:
                    raise errors.SourceTransient(
                        f"{self.label}: no usable Electrum server answered"
                    ) from exc
            except (errors.SourceTransient, errors.ResponseCorrupted) as exc:
                if server is not None:
                    await self._failed(server, conn, exc)
                if attempt == self._max_attempts:
                    raise
                self._log_retry(exc, attempt)
                await asyncio.sleep(self._delay(exc))
            else:
                assert server is not None
                server.failures = 0
                if self._failing:
                    self._failing = False
                    logger.info(
                        "%s: Electrum connection restored",
                        self.label,
                        extra={"chain": self.label, "action": "electrum_restored"},
                    )
                return result
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _server(self, url: str) -> _Server:
        return next(s for s in self._servers if s.url == url)

    def _pick(self, url: str | None, *, alternate: bool) -> _Server:
        """The server to ask; raise `SourceTransient` (with how long to wait) if none may."""
        if url is not None:
            return self._server(url)
        now = time.monotonic()
        count = len(self._servers)
        order = [(self._current + offset) % count for offset in range(count)]
        if alternate and count > 1:
            order = order[1:] + order[:1]
        for index in order:
            if self._servers[index].available(now):
                if not alternate:
                    self._current = index
                return self._servers[index]
        live = [s for s in self._servers if s.banned is None]
        if not live:
            banned = self._servers[0].banned
            assert banned is not None
            raise banned
        wait = max(0.05, min(s.retry_at for s in live) - now)
        raise errors.SourceTransient(
            f"{self.label}: no Electrum server available for another {wait:.1f}s",
            retry_after_secs=wait,
        )

    def _delay(self, exc: errors.SourceError) -> float:
        """No wait when another server may be asked now; else until the first one may."""
        now = time.monotonic()
        live = [s.retry_at for s in self._servers if s.banned is None]
        wait = (min(live) - now) if live else 0.0
        hinted = exc.context.get("retry_after_secs")
        if isinstance(hinted, int | float):
            wait = max(wait, float(hinted))
        return min(max(wait, 0.0), self._max_backoff_secs)

    async def _failed(
        self, server: _Server, conn: ec.ElectrumConnection | None, exc: errors.SourceError
    ) -> None:
        server.stats.errors += 1
        server.stats.last_error = str(exc)
        if conn is not None and server.conn is not conn:
            return  # another job already counted the failure of this connection
        server.conn = None
        if conn is not None:
            await conn.close()
        self._current = (self._servers.index(server) + 1) % len(self._servers)
        now = time.monotonic()
        if isinstance(exc, errors.ResponseCorrupted):
            server.retry_at = now + self._bad_cooldown_secs
            logger.warning(
                "%s: dropping Electrum server %s for %gs: %s",
                self.label,
                server.stats.url,
                self._bad_cooldown_secs,
                exc,
                extra={"chain": self.label, "action": "electrum_server_dropped"},
            )
            return
        server.failures += 1
        backoff = min(self._max_backoff_secs, 0.5 * 2.0 ** (server.failures - 1))
        server.retry_at = now + backoff * random.uniform(0.8, 1.2)

    def _ban(self, server: _Server, exc: errors.IndexerError) -> None:
        server.banned = exc
        server.stats.errors += 1
        server.stats.last_error = str(exc)
        logger.error(
            "%s: %s; this server takes no more requests",
            self.label,
            exc,
            extra={"chain": self.label, "action": "electrum_server_banned"},
        )

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
                extra={"chain": self.label, "action": "electrum_retry"},
            )
