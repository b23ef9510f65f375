"""A real ElectrumX indexes the bitcoind simulator's chain and follows its reorgs.

Everything ElectrumX serves is compared byte for byte with what the simulator holds, through
the minimal Electrum client below (newline-delimited JSON-RPC over TCP; deliberately not the
indexer's own client, which these tests are meant to back later).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest

from tests.electrum import electrumx_proc, regtest
from tests.electrum.bitcoind_sim import BitcoindSim
from tests.electrum.electrumx_proc import ElectrumXProc

STREAM_LIMIT_BYTES = 16 * 1024 * 1024  # a 2016-header reply is one ~330 kB line
INSTALL_SCRIPT = Path(__file__).resolve().parents[2] / "scripts/install-electrumx.sh"


class ElectrumServerError(Exception):
    """The Electrum server answered with a JSON-RPC error."""

    def __init__(self, error: Any) -> None:
        super().__init__(f"Electrum server error: {error}")
        self.error = error


class ElectrumClient:
    """One Electrum protocol connection: requests by id, notifications queued by method."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._notifications: asyncio.Queue[tuple[str, list[Any]]] = asyncio.Queue()
        self._read_task = asyncio.create_task(self._read_loop(), name="electrum-client-read")

    @classmethod
    async def connect(cls, url: str) -> ElectrumClient:
        parts = urlsplit(url)
        assert parts.scheme == "tcp" and parts.hostname and parts.port, url
        reader, writer = await asyncio.open_connection(
            parts.hostname, parts.port, limit=STREAM_LIMIT_BYTES
        )
        return cls(reader, writer)

    async def call(self, method: str, *params: Any, timeout_secs: float = 10.0) -> Any:
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        request = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        self._writer.write(orjson.dumps(request) + b"\n")
        await self._writer.drain()
        try:
            async with asyncio.timeout(timeout_secs):
                return await future
        finally:
            self._pending.pop(request_id, None)

    async def notification(self, method: str, *, timeout_secs: float = 10.0) -> list[Any]:
        """Return the params of the next `method` notification (others are dropped)."""
        async with asyncio.timeout(timeout_secs):
            while True:
                name, params = await self._notifications.get()
                if name == method:
                    return params

    async def close(self) -> None:
        self._read_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._read_task
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()

    async def _read_loop(self) -> None:
        try:
            while line := await self._reader.readline():
                message = orjson.loads(line)
                future = self._pending.get(message.get("id"))
                if future is not None and not future.done():
                    if message.get("error") is not None:
                        future.set_exception(ElectrumServerError(message["error"]))
                    else:
                        future.set_result(message.get("result"))
                elif "method" in message:
                    self._notifications.put_nowait((message["method"], message.get("params", [])))
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("Electrum server closed the connection"))


Connect = Callable[..., Awaitable[ElectrumClient]]


@pytest.fixture
async def connect(electrumx: ElectrumXProc) -> AsyncIterator[Connect]:
    """Open clients to `electrumx` that negotiated `protocol`; all are closed afterwards."""
    clients: list[ElectrumClient] = []

    async def _connect(protocol: str | list[str] = "1.4") -> ElectrumClient:
        client = await ElectrumClient.connect(electrumx.tcp_url)
        clients.append(client)
        await client.call("server.version", "indexer-tests", protocol)
        return client

    yield _connect
    for client in clients:
        await client.close()


def sim_headers_hex(sim: BitcoindSim, start: int, count: int) -> str:
    return b"".join(sim.header(height) for height in range(start, start + count)).hex()


async def wait_synced(electrumx: ElectrumXProc, sim: BitcoindSim) -> None:
    tip = sim.tip()
    await asyncio.to_thread(electrumx.wait_synced, tip.height, hash_hex=tip.hash_hex)


async def headers_hex(client: ElectrumClient, start: int, count: int) -> str:
    reply = await client.call("blockchain.block.headers", start, count)
    assert isinstance(reply["hex"], str)
    return reply["hex"]


# -- Protocol handshake


async def test_server_version_negotiates_1_4_and_the_newest_protocol(
    electrumx: ElectrumXProc,
) -> None:
    server_version = f"ElectrumX {electrumx_proc.ELECTRUMX_VERSION}"
    oldest = await ElectrumClient.connect(electrumx.tcp_url)
    newest = await ElectrumClient.connect(electrumx.tcp_url)
    too_old = await ElectrumClient.connect(electrumx.tcp_url)
    try:
        assert await oldest.call("server.version", "t", "1.4") == [server_version, "1.4"]
        features = await oldest.call("server.features")
        protocol_max = features["protocol_max"]
        assert features["protocol_min"] == "1.4"
        assert await newest.call("server.version", "t", ["1.4", "99.0"]) == [
            server_version,
            protocol_max,
        ]
        with pytest.raises(ElectrumServerError, match="unsupported protocol version"):
            await too_old.call("server.version", "t", "1.3")
    finally:
        for client in (oldest, newest, too_old):
            await client.close()


async def test_server_features_report_the_regtest_genesis(
    connect: Connect, bitcoind_sim: BitcoindSim
) -> None:
    client = await connect()
    features = await client.call("server.features")
    assert features["genesis_hash"] == regtest.GENESIS_HASH_HEX == bitcoind_sim.block_hash(0)
    assert features["server_version"] == f"ElectrumX {electrumx_proc.ELECTRUMX_VERSION}"
    assert await client.call("blockchain.block.header", 0) == bitcoind_sim.header(0).hex()


def test_install_script_pins_the_version_the_tests_expect() -> None:
    pinned = re.search(r'^EX_VERSION="([^"]+)"$', INSTALL_SCRIPT.read_text(), re.MULTILINE)
    assert pinned is not None and pinned.group(1) == electrumx_proc.ELECTRUMX_VERSION


# -- Indexing


async def test_2000_blocks_are_indexed_byte_for_byte(
    connect: Connect, electrumx: ElectrumXProc, bitcoind_sim: BitcoindSim
) -> None:
    bitcoind_sim.generate(2000)
    await wait_synced(electrumx, bitcoind_sim)
    v14 = await connect("1.4")
    reply = await v14.call("blockchain.block.headers", 0, 2016)
    assert (reply["count"], reply["max"]) == (2001, 2016)
    assert reply["hex"] == sim_headers_hex(bitcoind_sim, 0, 2001)
    # Protocol 1.6+ returns the same headers as an array.
    newest = await connect(["1.4", "99.0"])
    reply = await newest.call("blockchain.block.headers", 1000, 2016)
    assert reply["count"] == 1001
    assert reply["headers"] == [bitcoind_sim.header(h).hex() for h in range(1000, 2001)]
    tip = await v14.call("blockchain.headers.subscribe")
    assert tip == {"height": 2000, "hex": bitcoind_sim.header(2000).hex()}


@pytest.mark.parametrize("depth", [1, 4, 10])
async def test_reorg_is_followed(
    depth: int, connect: Connect, electrumx: ElectrumXProc, bitcoind_sim: BitcoindSim
) -> None:
    bitcoind_sim.generate(30)
    await wait_synced(electrumx, bitcoind_sim)
    client = await connect()
    await client.call("blockchain.headers.subscribe")
    fork_height = 30 - depth + 1  # first replaced height
    old = await headers_hex(client, 0, 31)
    assert old == sim_headers_hex(bitcoind_sim, 0, 31)

    new_hashes = bitcoind_sim.reorg(depth, depth + 1)  # the new branch is longer by one
    assert len(new_hashes) == depth + 1 and bitcoind_sim.height == 31
    while True:  # ElectrumX may announce intermediate tips; wait for the new branch's
        (tip,) = await client.notification("blockchain.headers.subscribe", timeout_secs=30)
        if tip["height"] == 31:
            break
    assert tip["hex"] == bitcoind_sim.header(31).hex()

    new = await headers_hex(client, 0, 32)
    assert new == sim_headers_hex(bitcoind_sim, 0, 32)
    assert new[: fork_height * 160] == old[: fork_height * 160]  # below the fork: untouched
    for height in range(fork_height, 31):  # every replaced header changed
        assert new[height * 160 : (height + 1) * 160] != old[height * 160 : (height + 1) * 160]
    assert [bitcoind_sim.block_hash(h) for h in range(fork_height, 32)] == new_hashes


async def test_headers_subscribe_delivers_notifications(
    connect: Connect, bitcoind_sim: BitcoindSim
) -> None:
    client = await connect()
    assert await client.call("blockchain.headers.subscribe") == {
        "height": 0,
        "hex": bitcoind_sim.header(0).hex(),
    }
    bitcoind_sim.generate(1)
    (tip,) = await client.notification("blockchain.headers.subscribe")
    assert tip == {"height": 1, "hex": bitcoind_sim.header(1).hex()}
    bitcoind_sim.generate(3)  # ElectrumX may coalesce these into one notification
    while tip["height"] < 4:
        (tip,) = await client.notification("blockchain.headers.subscribe")
    assert tip == {"height": 4, "hex": bitcoind_sim.header(4).hex()}


async def test_mempool_and_mined_transactions_are_served(
    connect: Connect, electrumx: ElectrumXProc, bitcoind_sim: BitcoindSim
) -> None:
    bitcoind_sim.generate(1)
    await wait_synced(electrumx, bitcoind_sim)
    coinbase = bitcoind_sim.block(1).txs[0]
    payee_script = bytes([regtest.OP_TRUE, regtest.OP_TRUE])  # a script of its own
    spend = regtest.spend_tx(
        prev_txid_bytes=coinbase.txid_bytes,
        prev_index=0,
        outputs=[regtest.TxOut(coinbase.outputs[0].value_sats - 1000, payee_script)],
    )
    scripthash = hashlib.sha256(payee_script).digest()[::-1].hex()
    client = await connect()

    assert await client.call("blockchain.scripthash.subscribe", scripthash) is None  # no history

    bitcoind_sim.add_to_mempool(spend)  # ElectrumX polls the mempool every 100 ms
    hashed, status = await client.notification("blockchain.scripthash.subscribe")
    assert hashed == scripthash and status is not None
    mempool = await client.call("blockchain.scripthash.get_mempool", scripthash)
    assert [entry["tx_hash"] for entry in mempool] == [spend.txid_hex]
    assert mempool[0]["fee"] == 1000  # ElectrumX priced the input from its own UTXO set
    raw = await client.call("blockchain.transaction.get", spend.txid_hex)
    assert raw == spend.serialize().hex()

    bitcoind_sim.generate(1)
    await wait_synced(electrumx, bitcoind_sim)
    history = await client.call("blockchain.scripthash.get_history", scripthash)
    assert history == [{"tx_hash": spend.txid_hex, "height": 2}]
    assert await client.call("blockchain.transaction.id_from_pos", 2, 1) == spend.txid_hex


async def test_fee_rpcs_reach_the_simulator(
    connect: Connect, electrumx: ElectrumXProc, bitcoind_sim: BitcoindSim
) -> None:
    client = await connect("1.4")
    assert await client.call("blockchain.estimatefee", 2) == -1  # regtest: no estimate yet
    assert await client.call("blockchain.relayfee") == 0.00001
    bitcoind_sim.feerate_btc_per_kvb = 0.0002
    bitcoind_sim.generate(1)  # ElectrumX caches estimates per tip
    await wait_synced(electrumx, bitcoind_sim)
    assert await client.call("blockchain.estimatefee", 2) == 0.0002
    newest = await connect(["1.4", "99.0"])
    info = await newest.call("mempool.get_info")
    assert info == {
        "mempoolminfee": 0.00001,
        "minrelaytxfee": 0.00001,
        "incrementalrelayfee": 0.00001,
    }


# -- The simulator's JSON-RPC surface, as a bitcoind client sees it


def basic_auth(sim: BitcoindSim) -> dict[str, str]:
    credentials = base64.b64encode(f"{sim.user}:{sim.password}".encode()).decode()
    return {"Authorization": f"Basic {credentials}"}


async def sim_rpc(
    session: aiohttp.ClientSession, sim: BitcoindSim, method: str, *params: Any
) -> Any:
    """Call `method` JSON-RPC 2.0 style; return the whole reply object."""
    request = {"jsonrpc": "2.0", "method": method, "params": params, "id": 1}
    url = f"http://127.0.0.1:{sim.port}/"
    async with session.post(url, json=request, headers=basic_auth(sim)) as resp:
        assert resp.status == 200
        return await resp.json()


async def test_simulator_speaks_bitcoind_json_rpc(bitcoind_sim: BitcoindSim) -> None:
    url = f"http://127.0.0.1:{bitcoind_sim.port}/"
    auth = basic_auth(bitcoind_sim)
    hashes = bitcoind_sim.generate(3)
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"method": "getblockcount", "id": 1}) as resp:
            assert resp.status == 401
        # JSON-RPC 1.0 style, as ElectrumX sends: no "jsonrpc" member, HTTP errors on errors.
        legacy = {"method": "getblockcount", "id": 1}
        async with session.post(url, json=legacy, headers=auth) as resp:
            assert resp.headers["Content-Type"] == "application/json"  # exactly, no charset
            assert await resp.json() == {"result": 3, "error": None, "id": 1}
        async with session.post(url, json={"method": "nosuch", "id": 2}, headers=auth) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == -32601
        batch = [{"method": "getblockhash", "params": [h], "id": h} for h in range(5)]
        async with session.post(url, json=batch, headers=auth) as resp:
            replies = await resp.json()
        assert [r["result"] for r in replies[1:4]] == hashes
        assert replies[4]["error"] == {"code": -8, "message": "Block height out of range"}

        raw = await sim_rpc(session, bitcoind_sim, "getblock", hashes[2], 0)
        assert raw["result"] == bitcoind_sim.block(3).serialize().hex()
        info = (await sim_rpc(session, bitcoind_sim, "getblockchaininfo"))["result"]
        assert (info["chain"], info["blocks"], info["bestblockhash"]) == ("regtest", 3, hashes[2])

        # A reorg leaves the old branch's blocks retrievable, but off the active chain.
        bitcoind_sim.reorg(2, 3)
        stale = (await sim_rpc(session, bitcoind_sim, "getblock", hashes[2], 1))["result"]
        assert (stale["height"], stale["confirmations"]) == (3, -1)
        assert bitcoind_sim.block_hash(3) != hashes[2]

        bitcoind_sim.warming_up = True
        reply = await sim_rpc(session, bitcoind_sim, "getblockcount")
        assert reply["error"]["code"] == -28


async def test_simulator_disconnected_transactions_return_to_the_mempool(
    bitcoind_sim: BitcoindSim,
) -> None:
    bitcoind_sim.generate(1)
    coinbase = bitcoind_sim.block(1).txs[0]
    spend = regtest.spend_tx(
        prev_txid_bytes=coinbase.txid_bytes,
        prev_index=0,
        outputs=[regtest.TxOut(1000, regtest.OP_TRUE_SCRIPT)],
    )
    bitcoind_sim.add_to_mempool(spend)
    (mined,) = bitcoind_sim.generate(1)
    assert bitcoind_sim.block(2).txs[1] == spend
    async with aiohttp.ClientSession() as session:
        assert (await sim_rpc(session, bitcoind_sim, "getrawmempool"))["result"] == []
        verbose = await sim_rpc(session, bitcoind_sim, "getrawtransaction", spend.txid_hex, 1)
        assert (verbose["result"]["blockhash"], verbose["result"]["confirmations"]) == (mined, 1)

        tip = bitcoind_sim.invalidate(mined)  # as `invalidateblock`: the chain gets shorter
        assert (tip.height, bitcoind_sim.height) == (1, 1)
        mempool = (await sim_rpc(session, bitcoind_sim, "getrawmempool"))["result"]
        assert mempool == [spend.txid_hex]
        raw = await sim_rpc(session, bitcoind_sim, "getrawtransaction", spend.txid_hex, 0)
        assert raw["result"] == spend.serialize().hex()
        still_mined = await sim_rpc(session, bitcoind_sim, "getrawtransaction", coinbase.txid_hex)
        assert still_mined["result"] == coinbase.serialize().hex()  # block 1 is still active
        gone = await sim_rpc(session, bitcoind_sim, "getblockhash", 2)
        assert gone["error"]["code"] == -8
