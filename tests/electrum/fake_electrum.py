"""A scripted fake Electrum server for the client tests, and helpers to build chains for it.

`FakeElectrum` speaks just enough of the Electrum protocol (newline-delimited JSON-RPC over
asyncio TCP, optionally TLS) to serve a list of raw headers, and injects the `Faults` a test
sets: bad proof of work, a header that does not link, a lying `count`, another genesis,
silence mid-request, padding and notifications, requests from the server, answers that
change between chunks, replies to ids never sent, a flood of notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from indexer.chain import btc_headers as bh
from indexer.chain.electrum import ElectrumSource
from indexer.chain.electrum_servers import ElectrumServers
from indexer.config import ElectrumChainConfig
from tests.electrum import regtest

LOOPBACK = "127.0.0.1"
NOTIFICATION = (
    b'{"jsonrpc":"2.0","method":"blockchain.scripthash.subscribe","params":["00",null]}\n'
)
PERIOD_BITS = 0x203FFFFF  # a quarter of hashes meet it: cheap to mine, harder than the limit


def mine(prev: bytes | None, *, height: int, timestamp: int, bits: int, tag: int = 0) -> bytes:
    """A raw header on `prev` (raw) whose hash meets its own `bits`."""
    prev_internal = bh.double_sha256(prev) if prev is not None else bytes(32)
    merkle_root = bh.double_sha256(struct.pack("<II", height, tag))  # any 32 bytes will do
    prefix = struct.pack("<i", 0x20000000) + prev_internal + merkle_root
    prefix += struct.pack("<II", timestamp, bits)
    target = bh.bits_to_target(bh.REGTEST, bits, height=height)
    for nonce in range(1 << 20):
        raw = prefix + struct.pack("<I", nonce)
        if int.from_bytes(bh.double_sha256(raw)[::-1], "big") <= target:
            return raw
    raise AssertionError("no nonce")


def regtest_chain(
    length: int, *, fork_at: int | None = None, base: list[bytes] | None = None
) -> list[bytes]:
    """Raw regtest headers 0..length-1 (from `base` below `fork_at`, a new branch above)."""
    chain = [regtest.genesis_block().header.serialize()] if base is None else base[:fork_at]
    while len(chain) < length:
        height = len(chain)
        timestamp = 1_700_000_000 + height
        tag = 1 if base is not None else 0
        chain.append(mine(chain[-1], height=height, timestamp=timestamp, bits=0x207FFFFF, tag=tag))
    return chain


REGTEST_CHAIN = regtest_chain(300)
FORKED_CHAIN = regtest_chain(300, fork_at=150, base=REGTEST_CHAIN)


def hashes_of(chain: list[bytes]) -> list[bytes]:
    return [bh.double_sha256(raw)[::-1] for raw in chain]


@dataclass
class Faults:
    pad: bool = False  # spaces inside replies and blank lines between them (as ElectrumX)
    notify: bool = False  # an unsolicited notification before every reply
    silent: set[str] = field(default_factory=set)  # methods never answered
    half_line: set[str] = field(default_factory=set)  # answered with half a line, then nothing
    count_delta: int = 0
    override: dict[int, bytes] = field(default_factory=dict)  # in header chunks
    single_override: dict[int, bytes] = field(default_factory=dict)  # in 1-header requests
    max_headers: int = 2016
    tip: int | None = None  # serve nothing above
    claim_genesis: str | None = None
    send_request: bool = False
    switch_to: list[bytes] | None = None  # serve this chain after the first chunk
    reply_delay_secs: float = 0.0
    bogus_id: bool = False  # answer with an id that was never sent
    # Notifications sent before every header chunk: the tip header (blockchain.headers.
    # subscribe) and methods the client never asked for, alternately (D6).
    flood: int = 0


class FakeElectrum:
    """A scripted Electrum server on a free loopback port."""

    def __init__(
        self,
        chain: list[bytes],
        *,
        protocol: str = "1.4",
        faults: Faults | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.chain = chain
        self.protocol = protocol
        self.faults = faults or Faults()
        self.tls = tls
        self.requests: list[tuple[str, list[Any]]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections = 0
        self.flooded = 0  # notifications sent by `Faults.flood`, and their bytes
        self.flooded_bytes = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sessions: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"{'ssl' if self.tls else 'tcp'}://{LOOPBACK}:{port}"

    async def __aenter__(self) -> FakeElectrum:
        self._server = await asyncio.start_server(self._serve, LOOPBACK, 0, ssl=self.tls)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for writer in list(self._writers):
            writer.close()
        await asyncio.gather(*self._tasks, *self._sessions, return_exceptions=True)
        await self._server.wait_closed()

    def calls(self, method: str) -> list[list[Any]]:
        return [params for name, params in self.requests if name == method]

    async def notify(self, method: str, params: list[Any]) -> None:
        line = orjson.dumps({"jsonrpc": "2.0", "method": method, "params": params}) + b"\n"
        for writer in self._writers:
            writer.write(line)
            await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        session = asyncio.current_task()
        assert session is not None
        self._sessions.add(session)
        try:
            while line := await reader.readline():
                task = asyncio.create_task(self._answer(orjson.loads(line), writer))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            self._writers.discard(writer)
            self._sessions.discard(session)
            writer.close()

    async def _answer(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        method, params = request["method"], request.get("params", [])
        self.requests.append((method, params))
        if method in self.faults.silent:
            return
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.faults.reply_delay_secs)
            reply_id = request["id"] + 1000 if self.faults.bogus_id else request["id"]
            reply: dict[str, Any] = {"jsonrpc": "2.0", "id": reply_id}
            reply.update(self._result(method, params))
        finally:
            self.in_flight -= 1
        data = orjson.dumps(reply)
        if self.faults.pad:
            data = data[:-1] + b" " * 700 + b"}\n  \n\n" + b" " * 50
        if self.faults.notify:
            writer.write(NOTIFICATION)
        if self.faults.send_request:
            writer.write(b'{"jsonrpc":"2.0","id":99,"method":"client.exploit","params":[]}\n')
        if self.faults.flood and method == "blockchain.block.headers":
            await self._flood(writer)
        if method in self.faults.half_line:
            writer.write(data[: len(data) // 2])
        else:
            writer.write(data + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    async def _flood(self, writer: asyncio.StreamWriter) -> None:
        """`Faults.flood` notifications, a thousand at a time, each once the transport took the
        last (this server's buffer stays small: what piles up is the client's to bound)."""
        tip = len(self.chain) - 1 if self.faults.tip is None else self.faults.tip
        header = {"height": tip, "hex": self.chain[tip].hex()}
        head, unknown = (
            orjson.dumps({"jsonrpc": "2.0", "method": method, "params": params}) + b"\n"
            for method, params in (
                ("blockchain.headers.subscribe", [header]),
                ("blockchain.flood.unknown", ["never asked for"]),
            )
        )
        left = self.faults.flood
        while left > 0 and not writer.is_closing():
            count = min(1000, left)
            lines = (head + unknown) * (count // 2) + head * (count % 2)
            writer.write(lines)
            left -= count
            self.flooded += count
            self.flooded_bytes += len(lines)
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    def _result(self, method: str, params: list[Any]) -> dict[str, Any]:
        chain = self.chain
        tip = len(chain) - 1 if self.faults.tip is None else self.faults.tip
        if method == "server.version":
            return {"result": ["FakeElectrum 0.1", self.protocol]}
        if method == "server.features":
            genesis = self.faults.claim_genesis or hashes_of(chain[:1])[0].hex()
            return {"result": {"genesis_hash": genesis, "protocol_min": "1.4"}}
        if method == "server.ping":
            return {"result": None}
        if method == "blockchain.block.header":
            return {"result": chain[params[0]].hex()}
        if method == "blockchain.headers.subscribe":
            return {"result": {"height": tip, "hex": chain[tip].hex()}}
        if method == "blockchain.block.headers":
            start, count = params
            if self.faults.switch_to is not None and self.calls(method)[:1] != [params]:
                chain = self.faults.switch_to
            count = min(count, self.faults.max_headers, max(0, tip + 1 - start))
            overrides = self.faults.single_override if count == 1 else self.faults.override
            raws = [overrides.get(h, chain[h]) for h in range(start, start + count)]
            answer: dict[str, Any] = {"count": count + self.faults.count_delta}
            answer["max"] = self.faults.max_headers
            if tuple(int(p) for p in self.protocol.split(".")) >= (1, 6):
                answer["headers"] = [raw.hex() for raw in raws]
            else:
                answer["hex"] = b"".join(raws).hex()
            return {"result": answer}
        return {"error": {"code": -32601, "message": f"unknown method {method}"}}


@contextlib.asynccontextmanager
async def source_for(
    *fakes: FakeElectrum, network: bh.Network = bh.REGTEST, **pool_args: Any
) -> AsyncIterator[ElectrumSource]:
    urls = tuple(fake.url for fake in fakes)
    cfg = ElectrumChainConfig(
        name="btc", kind="electrum", urls=urls, genesis_hash=network.genesis_hash.hex()
    )
    pool_args = {
        "timeout_secs": 0.5,
        "max_backoff_secs": 0.05,
        "ping_interval_secs": 0,
        **pool_args,
    }
    async with ElectrumServers(urls, label="btc", **pool_args) as servers:
        yield ElectrumSource(cfg, servers, network=network)


def assert_regtest_blocks(
    blocks: list[Any], start: int, chain: list[bytes] = REGTEST_CHAIN
) -> None:
    want = hashes_of(chain)
    assert [b.number for b in blocks] == list(range(start, start + len(blocks)))
    assert [b.hash for b in blocks] == want[start : start + len(blocks)]
    heights = range(start, start + len(blocks))
    assert [b.parent_hash for b in blocks] == [want[h - 1] if h else bytes(32) for h in heights]
