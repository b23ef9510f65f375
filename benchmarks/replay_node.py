"""A replay JSON-RPC node: a deterministic, mainnet-shaped EVM chain served from memory.

The point is a node that is never the bottleneck, so that a benchmark measures the indexer.
Blocks are generated lazily from a few pre-built *templates* (about 150 transactions and 300
logs each, real field sizes) and cached as pre-serialised JSON; per block only the
block-specific bytes (block hash, number, transaction-hash prefix) are spliced in with one
C-level `bytes.join`, so a full block costs tens of microseconds to produce.

What a block looks like (variant ``full``): every header field of a post-Dencun mainnet block
(16 withdrawals, a logs bloom that is non-zero exactly when the block has logs), 150
transactions (type 0/2/3, realistic calldata lengths, ~1% contract creations with
``to: null``) and 300 logs (1-4 topics, 0-1 KiB data) spread over the transactions that have
calldata. Hashes link (``parentHash`` is the previous block's hash; block 0's parent is zero),
every transaction and log names its block by number and hash, ``logIndex`` is 0..n-1 per
block. Variant ``headers``: the same headers with no transactions and no logs.

JSON-RPC served: ``eth_chainId``, ``net_version``, ``web3_clientVersion``,
``eth_blockNumber``, ``eth_getBlockByNumber(n, full)``, ``eth_getLogs({fromBlock, toBlock})``,
batches; and control methods for benchmarks: ``replay_reorg(depth, extend)`` (a new branch
replaces the top ``depth`` blocks, then ``extend`` more blocks), ``replay_setHead(n)``,
``replay_stats()`` (served counts and this process's CPU seconds).

Usage::

    python -m benchmarks.replay_node serve --head 1000000 --variant headers [--port 0]
    python -m benchmarks.replay_node bench            # the node's own serving rate
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import hashlib
import http.client
import os
import random
import re
import subprocess
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("full", "headers")
GENESIS_TIMESTAMP = 1_700_000_000
ZERO_HASH = "0x" + "00" * 32
ZERO_BLOOM = "0x" + "00" * 256
EMPTY_UNCLES = "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347"
_READY_PREFIX = "replay node listening on "

# Calldata length (bytes) distribution of mainnet transactions, roughly: plain transfers,
# ERC-20 transfer/approve (4 + 2 x 32), swaps, aggregator/multicall, large calls.
_INPUT_BUCKETS: list[tuple[float, int, int]] = [
    (0.25, 0, 0),
    (0.35, 68, 68),
    (0.20, 100, 600),
    (0.15, 600, 2500),
    (0.04, 2500, 8000),
]
_TOPIC_COUNTS = [(0.10, 1), (0.12, 2), (0.68, 3), (0.10, 4)]
_DATA_LENGTHS = [(0.10, 0), (0.45, 32), (0.15, 64), (0.25, -1), (0.05, -2)]


@dataclass(frozen=True, slots=True)
class Shape:
    """What chain to serve: variant, sizes, seed."""

    variant: str = "full"
    txs_per_block: int = 150
    logs_per_block: int = 300
    templates: int = 16
    seed: int = 1
    chain_id: int = 1

    def __post_init__(self) -> None:
        assert self.variant in VARIANTS, self.variant


@dataclass(frozen=True, slots=True)
class _Template:
    """One block body, pre-serialised, cut where the block-specific bytes go.

    `txs_full` joined by `<block hash hex>","blockNumber":"<hex>","hash":"0x<prefix>` is the
    JSON array of full transactions; `tx_hashes` joined by `<prefix>` the array of their
    hashes; `logs` joined by the log separator the logs as comma-separated objects.
    """

    txs_full: list[bytes]
    tx_hashes: list[bytes]
    logs: list[bytes]
    tx_count: int
    log_count: int
    header: list[bytes]  # text, field name, text, ...: see `_header_pieces`


def _pick(rng: random.Random, table: list[tuple[float, int]]) -> int:
    return rng.choices([v for _, v in table], weights=[w for w, _ in table])[0]


def _hex(rng: random.Random, size: int) -> str:
    return "0x" + rng.randbytes(size).hex()


def _build_template(shape: Shape, index: int) -> _Template:
    rng = random.Random(shape.seed * 1_000_003 + index)
    if shape.variant == "headers":
        header = _header_pieces(rng, bloom=ZERO_BLOOM, gas_used=0, size=620)
        return _Template([b"[]"], [b"[]"], [b""], 0, 0, header)
    contracts = [rng.randbytes(20) for _ in range(60)]
    events = [rng.randbytes(32) for _ in range(24)]
    txs: list[dict[str, Any]] = []
    hash_rests: list[str] = []
    size = 620
    for i in range(shape.txs_per_block):
        bucket = rng.choices(_INPUT_BUCKETS, weights=[b[0] for b in _INPUT_BUCKETS])[0]
        input_len = rng.randint(bucket[1], bucket[2])
        creation = rng.random() < 0.01
        if creation:
            input_len = rng.randint(3000, 15000)
        kind = rng.choices([0, 2, 3], weights=[0.15, 0.83, 0.02])[0]
        tx: dict[str, Any] = {
            "from": _hex(rng, 20),
            "gas": hex(rng.randint(21_000, 1_500_000)),
            "gasPrice": hex(rng.randint(5, 80) * 10**9),
        }
        if kind >= 2:
            tx["maxFeePerGas"] = hex(rng.randint(20, 200) * 10**9)
            tx["maxPriorityFeePerGas"] = hex(rng.randint(0, 3 * 10**9))
        tx["input"] = _hex(rng, input_len)
        tx["nonce"] = hex(rng.randint(0, 200_000))
        tx["to"] = None if creation else "0x" + rng.choice([*contracts, rng.randbytes(20)]).hex()
        tx["transactionIndex"] = hex(i)
        tx["value"] = hex(rng.randint(0, 10**19) if input_len == 0 else rng.choice([0, 0, 10**16]))
        tx["type"] = hex(kind)
        if kind >= 2:
            tx["accessList"] = []
        tx["chainId"] = hex(shape.chain_id)
        if kind == 3:
            tx["maxFeePerBlobGas"] = hex(rng.randint(1, 10) * 10**9)
            tx["blobVersionedHashes"] = ["0x01" + rng.randbytes(31).hex() for _ in range(3)]
        tx["v"] = hex(37 + rng.randint(0, 1)) if kind == 0 else hex(rng.randint(0, 1))
        tx["r"] = _hex(rng, 32)
        tx["s"] = _hex(rng, 32)
        if kind >= 2:
            tx["yParity"] = tx["v"]
        txs.append(tx)
        hash_rests.append(rng.randbytes(24).hex())
        size += input_len + 110
    # Logs go to transactions that call something; logIndex runs over the whole block.
    callers = [i for i, tx in enumerate(txs) if tx["input"] != "0x" and tx["to"] is not None]
    owners = sorted(rng.choices(callers, k=shape.logs_per_block)) if callers else []
    logs: list[tuple[int, dict[str, Any]]] = []
    bloom = bytearray(256)
    for log_index, owner in enumerate(owners):
        address = rng.choice(contracts)
        topics = [rng.choice(events)] + [
            bytes(12) + rng.randbytes(20) for _ in range(_pick(rng, _TOPIC_COUNTS) - 1)
        ]
        data_len = _pick(rng, _DATA_LENGTHS)
        if data_len == -1:
            data_len = 32 * rng.randint(3, 10)
        elif data_len == -2:
            data_len = 32 * rng.randint(16, 32)
        for item in [address, *topics]:
            digest = hashlib.blake2b(item, digest_size=6).digest()
            for k in range(3):
                bit = int.from_bytes(digest[2 * k : 2 * k + 2], "big") & 2047
                bloom[255 - bit // 8] |= 1 << (bit % 8)
        logs.append(
            (
                owner,
                {
                    "address": "0x" + address.hex(),
                    "topics": ["0x" + t.hex() for t in topics],
                    "data": _hex(rng, data_len),
                    "logIndex": hex(log_index),
                    "transactionIndex": hex(owner),
                    "removed": False,
                },
            )
        )
    tx_pieces = [b'[{"blockHash":"0x']
    hash_pieces = [b'["0x']
    for i, (tx, rest) in enumerate(zip(txs, hash_rests, strict=True)):
        tail = b',{"blockHash":"0x' if i + 1 < len(txs) else b"]"
        tx_pieces.append(rest.encode() + b'",' + orjson.dumps(tx)[1:] + tail)
        hash_pieces.append(rest.encode() + (b'","0x' if i + 1 < len(txs) else b'"]'))
    log_pieces = [b'{"blockHash":"0x'] if logs else [b""]
    for j, (owner, obj) in enumerate(logs):
        tail = b',{"blockHash":"0x' if j + 1 < len(logs) else b""
        log_pieces.append(hash_rests[owner].encode() + b'",' + orjson.dumps(obj)[1:] + tail)
    gas_used = sum(min(int(tx["gas"], 16), 21_000 + 16 * len(tx["input"])) for tx in txs)
    return _Template(
        txs_full=tx_pieces if txs else [b"[]"],
        tx_hashes=hash_pieces if txs else [b"[]"],
        logs=log_pieces,
        tx_count=len(txs),
        log_count=len(logs),
        header=_header_pieces(
            rng, bloom="0x" + bloom.hex() if logs else ZERO_BLOOM, gas_used=gas_used, size=size
        ),
    )


_MARK = re.compile(rb"@@(\w+)@@")


def _header_pieces(rng: random.Random, *, bloom: str, gas_used: int, size: int) -> list[bytes]:
    """A block header as JSON cut at its per-block fields (`@@name@@` marks one)."""
    header = {
        "baseFeePerGas": "@@baseFee@@",
        "blobGasUsed": "@@blobGas@@",
        "difficulty": "0x0",
        "excessBlobGas": "@@excessBlobGas@@",
        "extraData": "0x6275696c64657230783639",
        "gasLimit": hex(30_000_000),
        "gasUsed": hex(gas_used),
        "hash": "0x@@hash@@",
        "logsBloom": bloom,
        "miner": "0x@@miner@@",
        "mixHash": "0x@@mixHash@@",
        "nonce": "0x0000000000000000",
        "number": "@@number@@",
        "parentBeaconBlockRoot": "0x@@beaconRoot@@",
        "parentHash": "0x@@parentHash@@",
        "receiptsRoot": "0x@@receiptsRoot@@",
        "sha3Uncles": EMPTY_UNCLES,
        "size": hex(size),
        "stateRoot": "0x@@stateRoot@@",
        "timestamp": "@@timestamp@@",
        "totalDifficulty": "0xc70d815d562d3cfa955",
        "transactions": "@@transactions@@",
        "transactionsRoot": "0x@@transactionsRoot@@",
        "uncles": [],
        "withdrawals": [
            {
                "index": hex(rng.randint(40_000_000, 90_000_000)),
                "validatorIndex": hex(rng.randint(0, 1_500_000)),
                "address": _hex(rng, 20),
                "amount": hex(rng.randint(17_000_000, 18_000_000)),
            }
            for _ in range(16)
        ],
        "withdrawalsRoot": "0x@@withdrawalsRoot@@",
    }
    text = orjson.dumps(header).replace(b'"@@transactions@@"', b"@@transactions@@")
    return _MARK.split(text)


@dataclass
class ServeStats:
    requests: int = 0
    items: int = 0
    blocks: int = 0
    log_ranges: int = 0
    bytes_out: int = 0
    generated: int = 0
    generate_secs: float = 0.0
    first_block_at: float | None = None  # unix time of the first eth_getBlockByNumber


class ReplayChain:
    """The chain itself: hashes, branches, and per-block JSON (LRU-cached by size)."""

    def __init__(self, shape: Shape, *, head: int, cache_bytes: int = 512 << 20) -> None:
        self.shape = shape
        self.head = head
        self._seed = shape.seed.to_bytes(8, "big")
        self._templates = [_build_template(shape, i) for i in range(shape.templates)]
        # Branch segments: heights >= starts[i] (up to the next start) use salts[i].
        self._starts: list[int] = [0]
        self._salts: list[int] = [0]
        self._cache: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = cache_bytes
        self.stats = ServeStats()

    # -- Identity

    def _salt(self, number: int) -> int:
        return self._salts[bisect.bisect_right(self._starts, number) - 1]

    def block_hash(self, number: int) -> bytes:
        if number < 0:
            return bytes(32)
        key = self._seed + self._salt(number).to_bytes(4, "big") + number.to_bytes(8, "big")
        return hashlib.blake2b(key, digest_size=32).digest()

    def template_of(self, number: int) -> _Template:
        return self._templates[self.block_hash(number)[0] % len(self._templates)]

    def reorg(self, depth: int, extend: int = 0) -> int:
        """Replace the top `depth` blocks with a new branch, then add `extend`; the fork point."""
        fork = max(self.head - depth, -1)
        keep = bisect.bisect_right(self._starts, fork)
        self._starts = [*self._starts[:keep], fork + 1]
        self._salts = [*self._salts[:keep], max(self._salts) + 1]
        self.head += extend
        return fork

    # -- Serialised answers

    def _cached(self, key: tuple[str, int, int], make: Any) -> bytes:
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        started = time.perf_counter()
        value: bytes = make()
        self.stats.generate_secs += time.perf_counter() - started
        self.stats.generated += 1
        self._cache[key] = value
        self._cache_bytes += len(value)
        while self._cache_bytes > self._cache_limit and self._cache:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= len(old)
        return value

    def block_json(self, number: int, full: bool) -> bytes:
        if number < 0 or number > self.head:
            return b"null"
        key = ("full" if full else "hashes", number, self._salt(number))
        return self._cached(key, lambda: self._make_block(number, full))

    def logs_json(self, number: int) -> bytes:
        """The block's logs as comma-separated JSON objects (no brackets; b"" when none)."""
        key = ("logs", number, self._salt(number))
        return self._cached(key, lambda: self._make_logs(number))

    def _separators(self, number: int, block_hash: bytes) -> tuple[bytes, bytes, bytes]:
        bh = block_hash.hex().encode()
        prefix = bh[48:]
        num = hex(number).encode()
        tx_sep = bh + b'","blockNumber":"' + num + b'","hash":"0x' + prefix
        log_sep = bh + b'","blockNumber":"' + num + b'","transactionHash":"0x' + prefix
        return tx_sep, prefix, log_sep

    def _make_logs(self, number: int) -> bytes:
        block_hash = self.block_hash(number)
        _, _, log_sep = self._separators(number, block_hash)
        return log_sep.join(self.template_of(number).logs)

    def _make_block(self, number: int, full: bool) -> bytes:
        block_hash = self.block_hash(number)
        template = self.template_of(number)
        tx_sep, prefix, _ = self._separators(number, block_hash)
        roots = hashlib.blake2b(block_hash, digest_size=64).hexdigest().encode()
        values = {
            b"baseFee": hex(7 * 10**9 + (number * 7919) % 10**10).encode(),
            b"blobGas": hex(131072 * (number % 7)).encode(),
            b"excessBlobGas": hex((number * 131) % 10**6).encode(),
            b"hash": block_hash.hex().encode(),
            b"miner": roots[80:120],
            b"mixHash": roots[0:64],
            b"number": hex(number).encode(),
            b"beaconRoot": roots[16:80],
            b"parentHash": self.block_hash(number - 1).hex().encode(),
            b"receiptsRoot": roots[32:96],
            b"stateRoot": roots[48:112],
            b"timestamp": hex(GENESIS_TIMESTAMP + 12 * number).encode(),
            b"transactions": (
                tx_sep.join(template.txs_full) if full else prefix.join(template.tx_hashes)
            ),
            b"transactionsRoot": roots[64:128],
            b"withdrawalsRoot": roots[24:88],
        }
        pieces = template.header
        parts = [pieces[0]]
        for i in range(1, len(pieces), 2):
            parts.append(values[pieces[i]])
            parts.append(pieces[i + 1])
        return b"".join(parts)

    def logs_range(self, low: int, high: int) -> list[bytes]:
        """The logs of blocks low..high as the pieces of one JSON array."""
        parts = [b"["]
        for number in range(max(low, 0), min(high, self.head) + 1):
            logs = self.logs_json(number)
            if logs:
                if len(parts) > 1:
                    parts.append(b",")
                parts.append(logs)
        parts.append(b"]")
        return parts


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
    """aiohttp application answering JSON-RPC from a `ReplayChain`."""

    def __init__(self, chain: ReplayChain) -> None:
        self.chain = chain

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        stats = self.chain.stats
        stats.requests += 1
        try:
            payload = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            payload = None
        if isinstance(payload, list):
            parts = [b"["]
            for i, item in enumerate(payload):
                if i:
                    parts.append(b",")
                parts += self._answer(item)
            parts.append(b"]")
        elif isinstance(payload, dict):
            parts = self._answer(payload)
        else:
            parts = [self._error(None, -32700, "parse error")]
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

    def _answer(self, item: Any) -> list[bytes]:
        self.chain.stats.items += 1
        if not isinstance(item, dict) or "method" not in item:
            return [self._error(None, -32600, "invalid request")]
        ident = item.get("id")
        try:
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


async def serve(shape: Shape, *, head: int, port: int, cache_mb: int) -> None:
    chain = ReplayChain(shape, head=head, cache_bytes=cache_mb << 20)
    runner = web.AppRunner(ReplayServer(chain).app(), access_log=None)
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


async def _fetch_all(url: str, *, blocks: int, batch: int, concurrency: int) -> int:
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
    *, blocks: int = 3000, batch: int = 100, concurrency: int = 4, variant: str = "full"
) -> dict[str, Any]:
    """Fetch `blocks` cold (generated on demand) and warm (cached) as raw bytes, no parsing."""
    out: dict[str, Any] = {"variant": variant, "blocks": blocks, "batch": batch}
    with ReplayNode(Shape(variant=variant), head=blocks, cache_mb=4096) as node:
        for phase in ("cold", "warm"):
            cpu_before = node.stats()["cpu_secs"]
            started = time.perf_counter()
            size = asyncio.run(
                _fetch_all(node.url, blocks=blocks, batch=batch, concurrency=concurrency)
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
        )
        try:
            asyncio.run(serve(shape, head=args.head, port=args.port, cache_mb=args.cache_mb))
        except KeyboardInterrupt:
            pass
        return 0
    for variant in VARIANTS:
        blocks = args.blocks if variant == "full" else args.blocks * 20
        print(
            orjson.dumps(measure_serving(blocks=blocks, batch=args.batch, variant=variant)).decode()
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
