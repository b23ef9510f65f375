"""A replay JSON-RPC node: a deterministic, mainnet-shaped EVM chain served from memory.

The point is a node that is never the bottleneck, so that a benchmark measures the indexer.
Blocks are made lazily from a few pre-built *templates* (about 150 transactions and 300 logs
each, real field sizes; `replay_blocks`) and cached as pre-serialised JSON; per block only the
block-specific bytes (block hash and number, and the header's own fields) are spliced in with
one C-level `bytes.join`, so a full block costs tens of microseconds to produce.

Every commitment is real, so the indexer can verify what it stores: a block hash is
keccak(rlp(header)) and parentHash links to the previous block's; transaction hashes,
transactionsRoot, receiptsRoot, withdrawalsRoot and the logs blooms recompute from the
contents (`evm_proof.verify_block(block, receipts)` passes for every block served, on every
branch). A template's transactions, receipts and withdrawals are the same in every block made
from it, so their hashes and roots are computed once per template (transaction hashes repeat
across blocks); only each header is hashed per block, once, incrementally and in order
(`replay_chain`), when a block at or above it is first asked for (`serve` hashes up to the
head before it listens).

What a block looks like (variant ``full``): every header field of a post-Dencun mainnet block
(16 withdrawals), 150 transactions (type 0/2/3, realistic calldata lengths, ~1% contract
creations with ``to: null``), their receipts (~2% failed, with no logs) and 300 logs (1-4
topics, 0-1 KiB data) spread over the successful transactions that call something. Every
transaction, receipt and log names its block by number and hash, ``logIndex`` is 0..n-1 per
block. Variant ``headers``: the same headers with no transactions, receipts or logs. With
``--events`` (`Shape(events=True)`) most logs are ERC-20 Transfer/Approval and Uniswap V2
Swap, shaped as the real events are (`replay_blocks.EVENT_MIX`); by default their topics
are random.

JSON-RPC served: ``eth_chainId``, ``net_version``, ``web3_clientVersion``,
``eth_blockNumber``, ``eth_getBlockByNumber(n, full)``, ``eth_getBlockReceipts(n)``,
``eth_getTransactionReceipt(hash)`` (see `ReplayChain.transaction_receipts` for which block a
repeated hash is placed in), ``eth_getLogs({fromBlock, toBlock})``, batches; and control
methods for benchmarks: ``replay_reorg(depth, extend)`` (a new branch replaces the top
``depth`` blocks, then ``extend`` more blocks), ``replay_setHead(n)``, ``replay_stats()``
(served counts, header hashes computed and this process's CPU seconds). With
``--no-block-receipts`` the node lacks ``eth_getBlockReceipts`` (-32601, as geth says it), for
the indexer's per-transaction fallback.

Usage::

    python -m benchmarks.replay_node serve --head 1000000 --variant headers [--port 0]
    python -m benchmarks.replay_node bench            # the node's own serving rate
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import orjson
from aiohttp import web

from benchmarks.replay_blocks import VARIANTS, Shape
from benchmarks.replay_chain import ReplayChain, ServeStats

__all__ = [
    "REPO",
    "VARIANTS",
    "ReplayChain",
    "ReplayNode",
    "ReplayServer",
    "ServeStats",
    "Shape",
    "measure_serving",
]

REPO = Path(__file__).resolve().parents[1]
_READY_PREFIX = "replay node listening on "


# -- JSON-RPC over HTTP


class _RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _quantity(value: Any, chain: ReplayChain) -> int:
    if value in ("latest", "safe", "finalized", "pending"):
        return chain.head
    if value == "earliest":
        return 0
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise _RpcError(-32602, f"invalid block number {value!r}")


class ReplayServer:
    """aiohttp application answering JSON-RPC from a `ReplayChain`.

    `block_receipts=False`: a node without eth_getBlockReceipts (-32601 for it).
    """

    def __init__(self, chain: ReplayChain, *, block_receipts: bool = True) -> None:
        self.chain = chain
        self.block_receipts = block_receipts

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/", self.handle)
        return app

    def respond(self, body: bytes) -> list[bytes]:
        """The answer to one request body (a call or a batch), as pieces of JSON text."""
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            payload = None
        if isinstance(payload, list):
            parts = [b"["]
            receipts = self._transaction_receipts(payload)
            for i, item in enumerate(payload):
                if i:
                    parts.append(b",")
                parts += self._answer(item, receipts.get(i))
            parts.append(b"]")
            return parts
        if isinstance(payload, dict):
            return self._answer(payload)
        return [self._error(None, -32700, "parse error")]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        stats = self.chain.stats
        stats.requests += 1
        parts = self.respond(await request.read())
        # Stream the pre-serialised pieces as they are: one big joined body would be copied
        # three or four times on its way to the socket (the node's main cost otherwise).
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = sum(len(p) for p in parts)
        stats.bytes_out += response.content_length
        await response.prepare(request)
        pending: list[bytes] = []
        pending_size = 0
        for part in parts:
            pending.append(part)
            pending_size += len(part)
            if pending_size >= 1 << 16:
                await response.write(pending[0] if len(pending) == 1 else b"".join(pending))
                pending, pending_size = [], 0
        if pending:
            await response.write(b"".join(pending))
        await response.write_eof()
        return response

    @staticmethod
    def _error(ident: Any, code: int, message: str) -> bytes:
        return orjson.dumps(
            {"jsonrpc": "2.0", "id": ident, "error": {"code": code, "message": message}}
        )

    def _transaction_receipts(self, items: list[Any]) -> dict[int, bytes]:
        """The answers to a batch's eth_getTransactionReceipt calls, placed together, by
        position in the batch (see `ReplayChain.transaction_receipts`)."""
        at: list[int] = []
        hashes: list[object] = []
        for i, item in enumerate(items):
            if isinstance(item, dict) and item.get("method") == "eth_getTransactionReceipt":
                params = item.get("params")
                if isinstance(params, list) and len(params) == 1:
                    at.append(i)
                    hashes.append(params[0])
        if not at:
            return {}
        return dict(zip(at, self.chain.transaction_receipts(hashes), strict=True))

    def _answer(self, item: Any, placed: bytes | None = None) -> list[bytes]:
        """One call's answer; `placed`: its result when already made (a batch's receipts)."""
        self.chain.stats.items += 1
        if not isinstance(item, dict) or "method" not in item:
            return [self._error(None, -32600, "invalid request")]
        ident = item.get("id")
        try:
            if placed is not None:
                self.chain.stats.tx_receipts += 1
                result = [placed]
            else:
                result = self._dispatch(str(item["method"]), item.get("params") or [])
        except _RpcError as exc:
            return [self._error(ident, exc.code, exc.message)]
        except (TypeError, ValueError, IndexError, KeyError) as exc:
            return [self._error(ident, -32602, f"invalid params: {exc}")]
        head = b'{"jsonrpc":"2.0","id":' + orjson.dumps(ident) + b',"result":'
        return [head, *result, b"}"]

    def _dispatch(self, method: str, params: list[Any]) -> list[bytes]:
        chain = self.chain
        if method == "eth_getBlockByNumber":
            chain.stats.blocks += 1
            if chain.stats.first_block_at is None:
                chain.stats.first_block_at = time.time()
            return [chain.block_json(_quantity(params[0], chain), bool(params[1]))]
        if method == "eth_getBlockReceipts":
            if not self.block_receipts:
                raise _RpcError(
                    -32601, "the method eth_getBlockReceipts does not exist/is not available"
                )
            chain.stats.block_receipts += 1
            return [chain.receipts_json(_quantity(params[0], chain))]
        if method == "eth_getTransactionReceipt":
            if len(params) != 1:
                raise _RpcError(-32602, "expected one transaction hash")
            chain.stats.tx_receipts += 1
            return chain.transaction_receipts(params)
        if method == "eth_getLogs":
            query = params[0]
            if set(query) - {"fromBlock", "toBlock"}:
                raise _RpcError(-32602, "only fromBlock/toBlock filters are served")
            chain.stats.log_ranges += 1
            low = _quantity(query.get("fromBlock", "latest"), chain)
            high = _quantity(query.get("toBlock", "latest"), chain)
            return chain.logs_range(low, high)
        if method == "eth_blockNumber":
            return [orjson.dumps(hex(chain.head))]
        if method == "eth_chainId":
            return [orjson.dumps(hex(chain.shape.chain_id))]
        if method == "net_version":
            return [orjson.dumps(str(chain.shape.chain_id))]
        if method == "web3_clientVersion":
            return [b'"replay-node/1.0"']
        if method == "replay_reorg":
            fork = chain.reorg(int(params[0]), int(params[1]) if len(params) > 1 else 0)
            return [
                orjson.dumps(
                    {
                        "fork": fork,
                        "head": chain.head,
                        "hash": "0x" + chain.block_hash(chain.head).hex(),
                    }
                )
            ]
        if method == "replay_setHead":
            chain.head = int(params[0])
            return [orjson.dumps(chain.head)]
        if method == "replay_resetStats":
            chain.stats = ServeStats()
            return [b"true"]
        if method == "replay_stats":
            times = os.times()
            return [
                orjson.dumps(
                    {
                        **vars(chain.stats),
                        "cpu_secs": times.user + times.system,
                        "head": chain.head,
                        "txs_per_block": chain.template_of(0).tx_count,
                        "logs_per_block": chain.template_of(0).log_count,
                    }
                )
            ]
        raise _RpcError(-32601, f"method {method} not served")


async def serve(
    shape: Shape, *, head: int, port: int, cache_mb: int, block_receipts: bool = True
) -> None:
    chain = ReplayChain(shape, head=head, cache_bytes=cache_mb << 20)
    chain.extend(head)  # every header hash up to the head, before a benchmark starts timing
    server = ReplayServer(chain, block_receipts=block_receipts)
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=128)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"{_READY_PREFIX}http://127.0.0.1:{bound}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


# -- Running a node in its own process


@dataclass
class ReplayNode:
    """A replay node in a subprocess (own core, own GIL); use as a context manager."""

    shape: Shape = field(default_factory=Shape)
    head: int = 10_000
    cache_mb: int = 512
    block_receipts: bool = True  # False: the node lacks eth_getBlockReceipts
    url: str = ""
    _proc: subprocess.Popen[str] | None = None
    _ids: int = 0

    def __enter__(self) -> ReplayNode:
        s = self.shape
        args = [
            sys.executable,
            "-m",
            "benchmarks.replay_node",
            "serve",
            "--variant",
            s.variant,
            "--head",
            str(self.head),
            "--seed",
            str(s.seed),
            "--txs",
            str(s.txs_per_block),
            "--logs",
            str(s.logs_per_block),
            "--chain-id",
            str(s.chain_id),
            "--cache-mb",
            str(self.cache_mb),
            *([] if self.block_receipts else ["--no-block-receipts"]),
            *(["--events"] if s.events else []),
        ]
        self._proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.startswith(_READY_PREFIX):
            self.__exit__(None, None, None)
            raise RuntimeError(f"replay node did not start: {line!r}")
        self.url = line[len(_READY_PREFIX) :].strip()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def call(self, method: str, params: list[Any] | None = None) -> Any:
        """One JSON-RPC call (blocking, for control and checks)."""
        host_port = self.url.removeprefix("http://")
        conn = http.client.HTTPConnection(host_port, timeout=60)
        self._ids += 1
        body = orjson.dumps(
            {"jsonrpc": "2.0", "id": self._ids, "method": method, "params": params or []}
        )
        try:
            conn.request("POST", "/", body=body, headers={"Content-Type": "application/json"})
            reply = orjson.loads(conn.getresponse().read())
        finally:
            conn.close()
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("replay_stats")
        return result


# -- The node's own serving rate


LogsFrom = Literal["getLogs", "receipts"]


async def _fetch_all(url: str, *, blocks: int, batch: int, concurrency: int, logs: LogsFrom) -> int:
    import aiohttp

    received = 0
    queue = list(range(0, blocks, batch))
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            nonlocal received
            while queue:
                start = queue.pop(0)
                end = min(start + batch, blocks) - 1
                calls = [
                    {
                        "jsonrpc": "2.0",
                        "id": n,
                        "method": "eth_getBlockByNumber",
                        "params": [hex(n), True],
                    }
                    for n in range(start, end + 1)
                ]
                if logs == "receipts":
                    calls += [
                        {
                            "jsonrpc": "2.0",
                            "id": -1 - n,
                            "method": "eth_getBlockReceipts",
                            "params": [hex(n)],
                        }
                        for n in range(start, end + 1)
                    ]
                else:
                    calls.append(
                        {
                            "jsonrpc": "2.0",
                            "id": -1,
                            "method": "eth_getLogs",
                            "params": [{"fromBlock": hex(start), "toBlock": hex(end)}],
                        }
                    )
                async with session.post(url, data=orjson.dumps(calls)) as resp:
                    size = len(await resp.read())
                received += size  # after the await: `+=` would read a stale total

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return received


def measure_serving(
    *,
    blocks: int = 3000,
    batch: int = 100,
    concurrency: int = 4,
    variant: str = "full",
    logs: LogsFrom = "getLogs",
) -> dict[str, Any]:
    """Fetch `blocks` cold (generated on demand) and warm (cached) as raw bytes, no parsing.

    Each batch asks for full blocks and their logs: one eth_getLogs for the range, or
    `logs="receipts"` one eth_getBlockReceipts per block (what `store = "receipts"` asks).
    """
    out: dict[str, Any] = {"variant": variant, "logs": logs, "blocks": blocks, "batch": batch}
    with ReplayNode(Shape(variant=variant), head=blocks, cache_mb=4096) as node:
        for phase in ("cold", "warm"):
            cpu_before = node.stats()["cpu_secs"]
            started = time.perf_counter()
            size = asyncio.run(
                _fetch_all(node.url, blocks=blocks, batch=batch, concurrency=concurrency, logs=logs)
            )
            wall = time.perf_counter() - started
            node_cpu = node.stats()["cpu_secs"] - cpu_before
            out[phase] = {
                "blocks_per_sec": round(blocks / wall),
                "mb_per_sec": round(size / wall / 1e6, 1),
                "node_cpu_secs": round(node_cpu, 3),
                "node_blocks_per_cpu_sec": round(blocks / node_cpu) if node_cpu else None,
                "bytes_per_block": size // blocks,
            }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    srv = sub.add_parser("serve", help="serve a chain until terminated")
    srv.add_argument("--variant", choices=VARIANTS, default="full")
    srv.add_argument("--head", type=int, default=10_000)
    srv.add_argument("--port", type=int, default=0)
    srv.add_argument("--seed", type=int, default=1)
    srv.add_argument("--txs", type=int, default=150)
    srv.add_argument("--logs", type=int, default=300)
    srv.add_argument("--chain-id", type=int, default=1)
    srv.add_argument("--cache-mb", type=int, default=512)
    srv.add_argument(
        "--no-block-receipts",
        dest="block_receipts",
        action="store_false",
        help="lack eth_getBlockReceipts (clients fall back to eth_getTransactionReceipt)",
    )
    srv.add_argument(
        "--events",
        action="store_true",
        help="logs shaped as ERC-20 Transfer/Approval and Uniswap V2 Swap (replay_blocks)",
    )
    bench = sub.add_parser("bench", help="measure the node's own serving rate")
    bench.add_argument("--blocks", type=int, default=3000)
    bench.add_argument("--batch", type=int, default=100)
    args = parser.parse_args(argv)
    if args.command == "serve":
        shape = Shape(
            variant=args.variant,
            txs_per_block=args.txs,
            logs_per_block=args.logs,
            seed=args.seed,
            chain_id=args.chain_id,
            events=args.events,
        )
        try:
            asyncio.run(
                serve(
                    shape,
                    head=args.head,
                    port=args.port,
                    cache_mb=args.cache_mb,
                    block_receipts=args.block_receipts,
                )
            )
        except KeyboardInterrupt:
            pass
        return 0
    runs: list[tuple[str, LogsFrom]] = [
        ("full", "getLogs"), ("full", "receipts"), ("headers", "getLogs")
    ]  # fmt: skip
    for variant, logs in runs:
        blocks = args.blocks if variant == "full" else args.blocks * 20
        result = measure_serving(blocks=blocks, batch=args.batch, variant=variant, logs=logs)
        print(orjson.dumps(result).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
