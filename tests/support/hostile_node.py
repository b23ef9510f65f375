"""A loopback JSON-RPC node that answers block requests with bodies too large to take.

`HostileNode` listens on 127.0.0.1 in front of an honest loopback node (anvil). Requests for
blocks or logs (`eth_getBlockByNumber`, `eth_getLogs`) get, while it is hostile, one of
these answers instead of the node's, chosen at random (seeded):

- `oversized`: `Content-Length` of `body_bytes` (300 MB by default), and that many bytes;
- `chunked`: chunked transfer encoding, no `Content-Length`, `body_bytes` bytes in all;
- `unframed`: neither, the body ends when the connection closes, after `body_bytes`;
- `endless`: chunked, and it never ends (until the client goes away);

or, with the `MUTATIONS` among `kinds`, the node's own answer altered, well-formed:

- `out_of_range`: every block of it says a value no column holds (a `size` of 0xffffffffff,
  a transaction `type` of 0xffff, a `gasUsed` of 2^256 - 1, or a `timestamp` of 2^64 - 1);
- `lie`: its first transaction's `value` is one more than it was (its hash no longer
  recomputes), or its first receipt's `status` is flipped.

Which block requests get one: all of them by default; with `over_blocks = k`, those that ask
for more than k blocks (a node that cannot serve large batches: the indexer's batches shrink
below it, and every time they grow again they meet it again); with `every = n`, every n-th;
with `probability = p`, each with probability p (seeded). The others are answered by the
node, so that sync makes progress between them. Everything else (`eth_chainId`,
`eth_blockNumber`) is always forwarded. `set_hostile(False)` makes it honest. It runs its
own event loop in its own thread, like `faultproxy.FaultProxy`, so a test drives it with a
plain synchronous API while the indexer runs as a subprocess.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import threading
import time
import urllib.parse
from collections.abc import Sequence

import aiohttp
import orjson

KINDS = ("oversized", "chunked", "unframed", "endless")
MUTATIONS = ("out_of_range", "lie")
HOSTILE_METHODS = frozenset({"eth_getBlockByNumber", "eth_getLogs", "eth_getBlockReceipts"})
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_PIECE = b'[{"jsonrpc":"2.0","id":1,"result":"0x' + b"0" * (1024 * 1024 - 37)


class HostileNode:
    """Forward JSON-RPC to a loopback node; answer block requests with huge bodies."""

    def __init__(
        self,
        upstream_url: str,
        *,
        kinds: Sequence[str] = KINDS,
        every: int | None = None,
        over_blocks: int | None = None,
        probability: float | None = None,
        seed: int = 0,
        body_bytes: int = 300 * 1000 * 1000,
    ) -> None:
        host = urllib.parse.urlsplit(upstream_url).hostname
        if host not in _LOOPBACK_HOSTS:
            raise ValueError(f"upstream must be on loopback, got host {host!r}")
        unknown = set(kinds) - set(KINDS) - set(MUTATIONS)
        if unknown or not kinds or (every is not None and every < 1):
            raise ValueError(f"kinds must be some of {KINDS + MUTATIONS}, every >= 1")
        self.upstream_url = upstream_url
        self.kinds = tuple(kinds)
        self.every = every
        self.over_blocks = over_blocks
        self.probability = probability
        self._rng = random.Random(seed)
        self.body_bytes = body_bytes
        self._cond = threading.Condition()
        self._hostile = True
        self._block_requests = 0
        self.hostile_answers = 0  # hostile answers begun
        self.by_kind: dict[str, int] = {}
        self.honest_answers = 0
        self.hostile_bytes_sent = 0
        self.log: list[tuple[float, str, tuple[str, ...]]] = []  # (monotonic, answer, methods)
        self._port = 0
        self._thread: threading.Thread | None = None
        self._started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- Any thread

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hostile-node", daemon=True)
        self._thread.start()
        self._started.result(timeout=10)

    def stop(self) -> None:
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None:
            loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> HostileNode:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def set_hostile(self, hostile: bool) -> None:
        with self._cond:
            self._hostile = hostile

    def wait_hostile_answers(self, count: int, *, timeout_secs: float) -> bool:
        """Block until `count` hostile answers were begun; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.hostile_answers >= count, timeout_secs)

    # -- The server thread

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            if not self._started.done():
                self._started.set_exception(exc)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self._session = session
            server = await asyncio.start_server(self._connection, "127.0.0.1", self._port)
            self._port = server.sockets[0].getsockname()[1]
            self._started.set_result(None)
            async with server:
                await self._stopping.wait()
                server.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._exchange(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection is to be closed."""
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.strip():
            return False
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        body = await reader.readexactly(length)
        kind = self._hostile_kind(body)
        if kind is None or kind in MUTATIONS:
            await self._forward(body, writer, mutate=kind)
            return True
        await self._hostile_answer(kind, writer)
        return False

    def _hostile_kind(self, body: bytes) -> str | None:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        items = payload if isinstance(payload, list) else [payload]
        asked = [str(i.get("method")) for i in items if isinstance(i, dict)]
        methods = tuple(sorted(set(asked)))
        with self._cond:
            kind = None
            if HOSTILE_METHODS.intersection(methods):
                self._block_requests += 1
                if self._hostile and self._picks(asked.count("eth_getBlockByNumber")):
                    kind = self._rng.choice(self.kinds)
                    self.hostile_answers += 1
                    self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
                    self._cond.notify_all()
            self.log.append((time.monotonic(), kind or "forwarded", methods))
            return kind

    def _picks(self, blocks: int) -> bool:
        """Whether this block request (for `blocks` blocks) gets a hostile answer."""
        rules = []
        if self.over_blocks is not None:
            rules.append(blocks > self.over_blocks)
        if self.every is not None:
            rules.append(self._block_requests % self.every == 0)
        if self.probability is not None:
            rules.append(self._rng.random() < self.probability)
        return any(rules) if rules else True

    async def _forward(
        self, body: bytes, writer: asyncio.StreamWriter, *, mutate: str | None = None
    ) -> None:
        assert self._session is not None
        headers = {"Content-Type": "application/json"}
        async with self._session.post(self.upstream_url, data=body, headers=headers) as resp:
            answer = await resp.read()
            status = resp.status
        if mutate is not None and status == 200:
            answer = self._mutated(mutate, answer)
        writer.write(
            f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(answer)}\r\n\r\n".encode()
            + answer
        )
        await writer.drain()
        with self._cond:
            self.honest_answers += 1

    def _mutated(self, kind: str, answer: bytes) -> bytes:
        """The node's `answer` with a well-formed value no column holds, or a lie."""
        payload = orjson.loads(answer)
        items = payload if isinstance(payload, list) else [payload]
        results = [i.get("result") for i in items if isinstance(i, dict)]
        blocks = [r for r in results if isinstance(r, dict) and "parentHash" in r]
        receipts = [r for rs in results if isinstance(rs, list) for r in rs
                    if isinstance(r, dict) and "status" in r]  # fmt: skip
        with self._cond:
            choice = self._rng.randrange(4)
        if kind == "out_of_range":
            for block in blocks:
                txs = [t for t in block.get("transactions", ()) if isinstance(t, dict)]
                if choice == 1 and txs:
                    txs[0]["type"] = "0xffff"
                else:
                    key, value = [("size", "0xffffffffff"), ("size", "0xffffffffff"),
                                  ("gasUsed", hex(2**256 - 1)),
                                  ("timestamp", hex(2**64 - 1))][choice]  # fmt: skip
                    block[key] = value
        else:
            txs = [t for b in blocks for t in b.get("transactions", ()) if isinstance(t, dict)]
            if txs and (choice % 2 == 0 or not receipts):
                txs[0]["value"] = hex(int(txs[0]["value"], 16) + 1)
            elif receipts:
                receipts[0]["status"] = "0x0" if receipts[0]["status"] == "0x1" else "0x1"
        return orjson.dumps(payload)

    async def _hostile_answer(self, kind: str, writer: asyncio.StreamWriter) -> None:
        framing = {
            "oversized": f"Content-Length: {self.body_bytes}\r\n",
            "chunked": "Transfer-Encoding: chunked\r\n",
            "endless": "Transfer-Encoding: chunked\r\n",
            "unframed": "Connection: close\r\n",
        }[kind]
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{framing}\r\n".encode())
        chunked = kind in ("chunked", "endless")
        sent = 0
        while kind == "endless" or sent < self.body_bytes:
            piece = _PIECE[: self.body_bytes - sent] if kind != "endless" else _PIECE
            if chunked:
                writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            else:
                writer.write(piece)
            assert self._stopping is not None
            if self._stopping.is_set():
                return
            async with asyncio.timeout(60):  # a client that stopped reading, yet holds on
                await writer.drain()
            sent += len(piece)
            with self._cond:
                self.hostile_bytes_sent += len(piece)
        if chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()
