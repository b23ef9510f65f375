"""Bitcoin chains from Electrum servers: verified block headers as `models.Block` rows.

`ElectrumSource` is the `ChainSource` for chains of kind "electrum". It stores headers only
(`tx_count` 0; version, merkle root, bits and nonce kept). Every header is validated by
`btc_headers` before it leaves this module; what the sync engine still checks is that the
first one links to our stored tip.

`blocks(start, count)` asks ONE server (through `ElectrumServers.run`) for the headers from
`start - 1` to the end, split evenly into requests of at most the server's maximum (2016
unless it says less), all in flight at once on one connection and reassembled in order. The
header at `start - 1` comes along so that the first new header is validated against its
parent, and so that the sync engine's link check (`parent_hash` of `start` equals our stored
tip) also vouches for the context.

Retarget data: difficulty needs one more header, the first of the period that `start - 1` is
in. It is fetched with the rest, in the same round trip, unless the range starts with it;
later periods inside the range take their first header from the range itself. That header is
not linked to anything we hold (its own proof of work is checked, and on mainnet its bits
must equal those of `start - 1`, which the link check vouches for), so a lying server could
move its timestamp and skew one retarget within the clamp (a target at most 4x the previous
period's), still paying real work for every header; regtest needs no such header (it never
retargets).

Answers are untrusted (STYLE P9): a header chunk whose `count` differs from the headers it
carries, or that carries more than asked, is `ResponseCorrupted` (the server is dropped); one
with fewer means the server is behind (`SourceTransient`, failed over); headers that do not
validate raise `errors.InvalidHeader`; two answers of one call that do not link to each
other mean the server changed between them (`BrokenBatch`, refetched).

The head comes from `blockchain.headers.subscribe`: asked as a request (which also
subscribes) when the last known head is older than `head_max_age_secs`, and updated in
between by the server's notifications. Notifications may skip heights or stall, so they only
ever shorten the wait, never replace the polling.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from indexer import errors, redact
from indexer.chain import btc_headers, header_block
from indexer.chain import electrum_connection as ec
from indexer.chain.electrum_servers import ElectrumServers
from indexer.chain.fields import check_height
from indexer.config import ElectrumChainConfig
from indexer.models import Block

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_HEAD_MAX_AGE_SECS = 10.0


def make_servers(
    cfg: ElectrumChainConfig,
    *,
    tls_fingerprints: Mapping[str, str] | None = None,
    protocol_max: str = ec.PROTOCOL_MAX,
) -> ElectrumServers:
    """The server pool for one electrum chain, from its config."""
    return ElectrumServers(
        cfg.urls,
        label=cfg.name,
        timeout_secs=cfg.request_timeout_secs,
        tls_fingerprints=tls_fingerprints,
        protocol_max=protocol_max,
        max_in_flight=cfg.endpoint_concurrency,
    )


# -- Shape checks (raise ResponseCorrupted naming the field)


def require_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise errors.ResponseCorrupted(f"{where}: expected an object, got {type(value).__name__}")
    return value


def require_count(obj: dict[str, Any], key: str, where: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise errors.ResponseCorrupted(f"{where}: field {key!r} is not a non-negative integer")
    return value


def require_hex(value: Any, where: str, *, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise errors.ResponseCorrupted(f"{where}: expected a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise errors.ResponseCorrupted(f"{where}: expected a hex string") from None
    if size is not None and len(raw) != size:
        raise errors.ResponseCorrupted(f"{where}: expected {size} bytes, got {len(raw)}")
    return raw


def split_range(first: int, last: int, max_size: int) -> list[tuple[int, int]]:
    """(start, count) pieces of at most `max_size` covering first..last, as even as possible.

    Even, because ElectrumX holds a reply smaller than 1 KiB for up to a second (padding
    against traffic analysis): 2,017 headers as 2,016 + 1 would wait on the lone header.
    """
    total = last - first + 1
    pieces = -(-total // max_size)
    size, extra = divmod(total, pieces)
    out, start = [], first
    for index in range(pieces):
        count = size + (index < extra)
        out.append((start, count))
        start += count
    return out


async def gather_all(awaitables: Sequence[Awaitable[T]]) -> list[T]:
    """Await all concurrently; on the first failure cancel the rest, then raise it."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


@dataclass(frozen=True, slots=True)
class _Head:
    height: int
    seen_at: float  # monotonic
    url: str


class ElectrumSource:
    """A Bitcoin chain from one or more equivalent Electrum servers."""

    def __init__(
        self,
        cfg: ElectrumChainConfig,
        servers: ElectrumServers,
        *,
        head_max_age_secs: float = DEFAULT_HEAD_MAX_AGE_SECS,
        network: btc_headers.Network | None = None,
    ) -> None:
        """`network` (default: the one whose genesis the config names) is for tests."""
        genesis = bytes.fromhex(cfg.genesis_hash.removeprefix("0x"))
        network = network or btc_headers.network_for_genesis(genesis)
        if network is None or network.genesis_hash != genesis:
            known = ", ".join(n.name for n in btc_headers.NETWORKS)
            raise errors.ConfigError(
                f"chains[{cfg.name}].genesis_hash: not the genesis block of a Bitcoin network "
                f"whose headers we can validate ({known})"
            )
        self.cfg = cfg
        self.label = cfg.name
        self.network = network
        self.servers = servers
        self._head_max_age_secs = head_max_age_secs
        self._head: _Head | None = None
        servers.verifier = self._verify_server
        servers.listeners.append(self._on_notification)

    # -- Identity

    def bind(self, copy_prefixes: Mapping[str, bytes]) -> None:
        """Headers are written row by row; nothing to encode ahead."""

    def close(self) -> None:
        """Nothing besides the servers, which their own context closes."""

    def decode_counts(self) -> dict[str, int]:
        return {}  # one decode path

    async def check_identity(self) -> None:
        """Check every server's genesis; unreachable ones are skipped if one answers.

        A server on another chain is fatal (`ChainMismatch`), as is a certificate that does
        not match its pin. Every later connection is checked the same way when it opens.
        """
        unreachable: list[errors.SourceError] = []
        for url in self.servers.urls:
            try:
                await self.servers.connect(url)
            except errors.CertificateMismatch as exc:
                raise errors.ConfigError(f"chains[{self.label}].tls_fingerprints: {exc}") from exc
            except errors.SourceError as exc:
                unreachable.append(exc)
                logger.warning(
                    "%s: Electrum server did not answer the genesis check (%s); it is checked "
                    "again when it is next used",
                    self.label,
                    exc,
                    extra={"chain": self.label, "action": "endpoint_unverified"},
                )
        if len(unreachable) == len(self.servers.urls):
            raise unreachable[0]

    async def _verify_server(self, conn: ec.ElectrumConnection) -> None:
        """Refuse a server whose genesis differs from the config (claimed or served)."""
        features, header_hex = await gather_all(
            [conn.request("server.features"), conn.request("blockchain.block.header", [0])]
        )
        where = f"{conn.where} server.features"
        claimed = require_dict(features, where).get("genesis_hash")
        if not isinstance(claimed, str):
            raise errors.ResponseCorrupted(f"{where}: no genesis_hash")
        served = btc_headers.parse_header(
            require_hex(header_hex, f"{conn.where} header 0", size=btc_headers.HEADER_SIZE),
            height=0,
        ).hash.hex()
        wanted = self.network.genesis_hash.hex()
        for what, value in (("says its genesis is", claimed.lower()), ("serves", served)):
            if value != wanted:
                raise errors.ChainMismatch(
                    f"chains[{self.label}].genesis_hash: config says {wanted} ({self.network.name})"
                    f" but {conn.where} {what} {value}; refusing to index"
                )

    # -- Head

    async def head(self) -> int:
        head = self._head
        if head is not None and time.monotonic() - head.seen_at < self._head_max_age_secs:
            return head.height

        async def job(conn: ec.ElectrumConnection) -> _Head:
            reply = await conn.request("blockchain.headers.subscribe")
            height = self._parse_tip(reply, f"{conn.where} blockchain.headers.subscribe")
            return _Head(height, time.monotonic(), conn.url)

        self._head = await self.servers.run(job)
        return self._head.height

    def _on_notification(self, url: str, method: str, params: list[Any]) -> None:
        if method != "blockchain.headers.subscribe" or self._head is None:
            return
        if url != self._head.url:
            return  # only the server we poll moves our idea of the head
        where = f"{redact.redact_url(url)} header notification"
        height = self._parse_tip(params[0] if params else None, where)
        self._head = _Head(height, time.monotonic(), url)

    def _parse_tip(self, reply: Any, where: str) -> int:
        obj = require_dict(reply, where)
        height = check_height(require_count(obj, "height", where), "height", where)
        raw = require_hex(obj.get("hex"), where, size=btc_headers.HEADER_SIZE)
        btc_headers.check_proof_of_work(self.network, btc_headers.parse_header(raw, height=height))
        return height

    # -- Headers

    async def blocks(self, start: int, count: int) -> list[Block]:
        assert start >= 0 and count > 0
        end = start + count - 1
        first = max(start - 1, 0)  # the parent comes along: context and linkage
        period_start = first - first % btc_headers.RETARGET_INTERVAL
        want_period_first = start > 0 and self.network.needs_period_first and period_start < first

        async def job(conn: ec.ElectrumConnection) -> list[Block]:
            pieces = split_range(first, end, self.servers.max_headers(conn.url))
            fetches = [self._fetch(conn, s, n) for s, n in pieces]
            if want_period_first:  # first, so its small reply leaves with the big ones
                fetches.insert(0, self._fetch(conn, period_start, 1))
            chunks = await gather_all(fetches)
            period_first = None
            if want_period_first:
                period_first = btc_headers.parse_header(chunks.pop(0)[0], height=period_start)
            return self._verified(pieces, chunks, start=start, period_first=period_first)

        return await self.servers.run(job)

    def _verified(
        self,
        pieces: list[tuple[int, int]],
        chunks: list[list[bytes]],
        *,
        start: int,
        period_first: btc_headers.Header | None,
    ) -> list[Block]:
        headers: list[btc_headers.Header] = []
        for (piece_start, _), raws in zip(pieces, chunks, strict=True):
            parsed = [
                btc_headers.parse_header(raw, height=piece_start + i) for i, raw in enumerate(raws)
            ]
            if headers and parsed[0].prev_hash != headers[-1].hash:
                raise errors.BrokenBatch(
                    f"{self.label}: header {piece_start:,d} does not link to header "
                    f"{piece_start - 1:,d} of the previous answer (the server changed while "
                    "answering)",
                    height=piece_start,
                )
            headers.extend(parsed)
        prev: btc_headers.Header | None = None
        if start > 0:
            prev, headers = headers[0], headers[1:]
            btc_headers.check_proof_of_work(self.network, prev)
            if self.network.needs_period_first:
                period_first = self._checked_period_first(prev, period_first)
        btc_headers.verify_chain(self.network, headers, prev=prev, period_first=period_first)
        return [_block(h) for h in headers]

    def _checked_period_first(
        self, prev: btc_headers.Header, period_first: btc_headers.Header | None
    ) -> btc_headers.Header:
        if period_first is None:  # `prev` starts its period
            return prev
        btc_headers.check_proof_of_work(self.network, period_first)
        if not self.network.allow_min_difficulty and period_first.bits != prev.bits:
            raise errors.InvalidHeader(
                period_first.height,
                f"bits 0x{period_first.bits:08x} differ from those of header {prev.height:,d} "
                "in the same difficulty period",
            )
        return period_first

    async def _fetch(
        self, conn: ec.ElectrumConnection, start: int, count: int, *, allow_short: bool = False
    ) -> list[bytes]:
        """Raw headers `start` .. `start + count - 1` from `blockchain.block.headers`."""
        where = f"{conn.where} blockchain.block.headers({start:,d}, {count:,d})"
        reply = require_dict(await conn.request("blockchain.block.headers", [start, count]), where)
        got = require_count(reply, "count", where)
        server_max = require_count(reply, "max", where)
        size = btc_headers.HEADER_SIZE
        if conn.protocol >= (1, 6):
            items = reply.get("headers")
            if not isinstance(items, list):
                raise errors.ResponseCorrupted(f"{where}: field 'headers' is not a list")
            raws = [require_hex(item, where, size=size) for item in items]
        else:
            blob = require_hex(reply.get("hex"), where)
            if len(blob) % size:
                raise errors.ResponseCorrupted(f"{where}: 'hex' is not whole headers")
            raws = [blob[i : i + size] for i in range(0, len(blob), size)]
        if len(raws) != got:
            raise errors.ResponseCorrupted(
                f"{where}: count says {got:,d} but {len(raws):,d} headers came"
            )
        if got > count:
            raise errors.ResponseCorrupted(f"{where}: {got:,d} headers, more than asked")
        if got < count and not allow_short:
            if 0 < server_max < count and got == server_max:
                self.servers.lower_max_headers(conn.url, server_max)
                raise errors.SourceTransient(
                    f"{where}: the server serves at most {server_max:,d} headers per request"
                )
            raise errors.SourceTransient(
                f"{where}: the server has only {got:,d} headers from {start:,d} (it is behind)"
            )
        return raws

    async def hashes(
        self, numbers: Sequence[int], *, alternate: bool = False
    ) -> dict[int, bytes | None]:
        wanted = sorted(set(numbers))

        async def one(conn: ec.ElectrumConnection, number: int) -> bytes | None:
            raws = await self._fetch(conn, number, 1, allow_short=True)
            if not raws:
                return None
            header = btc_headers.parse_header(raws[0], height=number)
            btc_headers.check_proof_of_work(self.network, header)
            return header.hash

        async def job(conn: ec.ElectrumConnection) -> dict[int, bytes | None]:
            found = await gather_all([one(conn, n) for n in wanted])
            return dict(zip(wanted, found, strict=True))

        return await self.servers.run(job, alternate=alternate)


def _block(header: btc_headers.Header) -> Block:
    return header_block(
        where=f"header {header.height:,d}",
        number=header.height,
        hash=header.hash,
        parent_hash=header.prev_hash,
        timestamp=header.timestamp,
        tx_count=0,  # headers only
        version=header.version,
        merkle_root=header.merkle_root,
        bits=header.bits,
        nonce=header.nonce,
    )
