"""Circuit breakers and rate limits per endpoint, against a small real HTTP server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from indexer import errors
from indexer.chain.endpoints import CIRCUIT_CLOSED, CIRCUIT_OPEN
from indexer.chain.rpc import RpcClient


class Node:
    """A JSON-RPC server whose health a test switches: 'ok', 'down' (503) or 'limited' (429)."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.hits = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.mode == "down":
            return web.Response(status=503, text="down")
        if self.mode == "limited":
            return web.Response(status=429, headers={"Retry-After": "1"})
        body = orjson.loads(await request.read())
        return web.Response(
            body=orjson.dumps([{"jsonrpc": "2.0", "id": r["id"], "result": "0x1"} for r in body]),
            content_type="application/json",
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/"

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[Node, Node]]:
    a, b = Node(), Node()
    await a.start()
    await b.start()
    yield a, b
    await a.stop()
    await b.stop()


def client(*urls: str, **kw: Any) -> RpcClient:
    kw.setdefault("timeout_secs", 2)
    kw.setdefault("failures_to_open", 2)
    kw.setdefault("cooldown_secs", 0.5)
    kw.setdefault("max_attempts", 4)
    return RpcClient(urls, **kw)


async def test_fails_over_and_opens_the_circuit(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    a.mode = "down"
    async with client(a.url, b.url) as rpc:
        for _ in range(5):
            assert await rpc.call("eth_blockNumber") == "0x1"
        states = {e.url: e.circuit for e in rpc.endpoints}
        assert a.hits == 1  # failed once, then every request went to b
        a.mode = "ok"
        # Force traffic back to a: make b fail until a's circuit must be probed.
        b.mode = "down"
        await asyncio.sleep(0.6)  # a's cool-down passes
        assert await rpc.call("eth_blockNumber") == "0x1"
        assert rpc.endpoints[0].circuit == CIRCUIT_CLOSED
    assert states[rpc.endpoints[0].url] in (CIRCUIT_CLOSED, CIRCUIT_OPEN)


async def test_all_endpoints_down_waits_instead_of_spinning(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    a.mode = b.mode = "down"
    async with client(a.url, b.url, max_attempts=5) as rpc:
        started = asyncio.get_running_loop().time()
        with pytest.raises(errors.SourceTransient):
            await rpc.call("eth_blockNumber")
        elapsed = asyncio.get_running_loop().time() - started
        assert [e.circuit for e in rpc.endpoints] == [CIRCUIT_OPEN, CIRCUIT_OPEN]
    # Two failures each open both circuits; the remaining attempts wait for the cool-down and
    # then send one probe per endpoint instead of hammering them.
    assert a.hits + b.hits <= 6
    assert elapsed >= 0.4


async def test_429_honours_retry_after(nodes: tuple[Node, Node]) -> None:
    a, _ = nodes
    a.mode = "limited"
    async with client(a.url, failures_to_open=100) as rpc:

        async def recover() -> None:
            await asyncio.sleep(0.3)
            a.mode = "ok"

        task = asyncio.create_task(recover())
        started = asyncio.get_running_loop().time()
        assert await rpc.call("eth_blockNumber") == "0x1"
        assert asyncio.get_running_loop().time() - started >= 0.9  # Retry-After: 1
        await task
        assert rpc.endpoints[0].rate_limited >= 1
    assert a.hits == 2
