"""Several equivalent Electrum servers: one live connection each, behind the shared pool.

`run(job)` gives `job` one verified connection to one server, so everything a job asks comes
from the same server (a chunk of headers and its context are consistent). Which server, how
often and when not is the policy of the endpoint pool every transport shares
(`indexer.chain.endpoints`), with these numbers: a server that fails (transport trouble or a
timeout) backs off at once, 0.5 s doubling with jitter up to `max_backoff_secs`, and the job
is run again on the next server at once, or after the shortest backoff when every server is
backing off; one that sends invalid data (`ResponseCorrupted`, including a header that fails
validation raised by the job's own parsing) is dropped for `bad_server_cooldown_secs` and
logged; one on another chain or with another certificate than pinned (`ChainMismatch`,
`CertificateMismatch`, found by the handshake on every new connection) is banned for good.
A JSON-RPC error object (`RpcError`) goes to the caller as it is (a semantic answer).

What is Electrum's own: the connection per server (opened on first use, closed when it
fails, so the next job reconnects), the `verifier` (the genesis check) that every new
connection passes before it takes any job, and each server's header limit per request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from indexer import errors
from indexer.chain import electrum_connection as ec
from indexer.chain.endpoints import Endpoint, EndpointPool, EndpointStats, Policy

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_HEADERS = 2016  # per blockchain.block.headers request, until a server says less

Verifier = Callable[[ec.ElectrumConnection], Awaitable[None]]
Notify = Callable[[str, str, list[Any]], None]  # (url, method, params)


@dataclass(eq=False)
class _Server:
    """Electrum's own state of one server (the pool keeps its policy state)."""

    url: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    conn: ec.ElectrumConnection | None = None
    max_headers: int = DEFAULT_MAX_HEADERS


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
        self.label = label
        self.pool = EndpointPool(
            urls,
            label=label,
            policy=Policy(
                max_attempts=max_attempts or len(urls) + 2,
                concurrency=max_in_flight,
                failures_to_open=1,
                cooldown_secs=0.5,
                cooldown_growth=2.0,
                max_cooldown_secs=max_backoff_secs,
                corrupt_cooldown_secs=bad_server_cooldown_secs,
                retry_base_secs=0.0,  # another server is asked at once
            ),
        )
        self._servers = {url: _Server(url) for url in urls}
        self._timeout_secs = timeout_secs
        self._fingerprints = dict(tls_fingerprints or {})
        self._protocol_max = protocol_max
        self._ping_interval_secs = ping_interval_secs
        self._max_in_flight = max_in_flight
        self.verifier: Verifier | None = None
        self.listeners: list[Notify] = []  # told every notification (headers, wallets)

    async def __aenter__(self) -> ElectrumServers:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        for server in self._servers.values():
            conn, server.conn = server.conn, None
            if conn is not None:
                await conn.close()

    @property
    def urls(self) -> list[str]:
        return self.pool.urls

    @property
    def endpoints(self) -> list[EndpointStats]:
        """Per-server counters, as `RpcClient.endpoints` gives them, for /metrics."""
        return self.pool.stats

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
        for listener in self.listeners:
            listener(url, method, params)

    def connection_of(self, url: str) -> ec.ElectrumConnection | None:
        """The live connection to `url`, if any (subscriptions live as long as it does)."""
        conn = self._server(url).conn
        return None if conn is None or conn.closed else conn

    def usable_urls(self) -> list[str]:
        """The servers that may take a request now, the current one first."""
        return self.pool.usable_urls()

    def refuse(self, url: str, exc: errors.ResponseCorrupted) -> None:
        """`url` answered something found false after the fact (a history that omits a
        proven transaction): dropped like any server that sends wrong data."""
        self.pool.report(url, exc)

    # -- Jobs with failover

    async def run(
        self,
        job: Callable[[ec.ElectrumConnection], Awaitable[T]],
        *,
        url: str | None = None,
        alternate: bool = False,
        attempts: int | None = None,
    ) -> T:
        """Run `job` on one server's connection; on failure, again on the next server.

        With `url`, only that server is tried. With `alternate`, another server than the
        current one is preferred (a second opinion before deleting anything).
        """

        async def attempt(endpoint: Endpoint) -> T:
            server = self._servers[endpoint.url]
            conn = await self.connect(endpoint.url)
            try:
                return await job(conn)
            except (errors.SourceTransient, errors.ResponseCorrupted):
                # The next job on this server reconnects (once, however many jobs failed).
                if server.conn is conn:
                    server.conn = None
                    await conn.close()
                raise

        return await self.pool.run(attempt, url=url, alternate=alternate, attempts=attempts)

    def _server(self, url: str) -> _Server:
        return self._servers[url]
