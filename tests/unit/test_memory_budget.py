"""Memory is budgeted in bytes: charged while read and held, refused beyond, given back at once.

The accounting (`indexer.chain.budget`), the prefetcher that holds a batch's charge until the
writer is done with it, the JSON-RPC read path against a real HTTP server on loopback that
answers oversized, chunked and endless bodies, and the Electrum line reader.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager

import orjson
import pytest
from aiohttp import web

from indexer import _rows, errors
from indexer.chain import budget, header_block
from indexer.chain import electrum_connection as ec
from indexer.chain.rpc import RpcClient
from indexer.models import Block
from indexer.sync.fetcher import Prefetcher
from indexer.sync.pipeline import REGROW_AFTER_BATCHES, LinkedBatches

MIB = 1024 * 1024

# -- The accounting


def test_charges_are_all_or_nothing_and_given_back_once() -> None:
    spent = budget.ByteBudget(1000)
    assert spent.max_answer_bytes == 250
    a, b = spent.charge(), spent.charge()
    assert a.resize(600)
    assert not b.resize(500)  # 1,100 > 1,000: refused, nothing taken
    assert (b.bytes, spent.in_use_bytes, spent.available_bytes) == (0, 600, 400)
    assert b.resize(400)
    assert spent.available_bytes == 0
    assert a.resize(100)  # shrinking always works
    assert spent.in_use_bytes == 500
    a.release()
    a.release()  # once is enough; again is harmless
    b.release()
    assert (spent.in_use_bytes, spent.peak_bytes) == (0, 1000)


def test_a_hold_releases_every_charge_it_keeps() -> None:
    spent = budget.ByteBudget(1000)
    assert budget.Hold().budget is None
    hold = budget.Hold()
    for size in (100, 200):
        charge = spent.charge()
        assert charge.resize(size)
        hold.keep(charge)
    assert hold.budget is spent
    assert (hold.bytes, spent.in_use_bytes) == (300, 300)
    hold.release()
    assert (hold.bytes, spent.in_use_bytes) == (0, 0)


async def test_the_hold_is_the_fetch_tasks_own() -> None:
    hold = budget.Hold()
    seen: list[budget.Hold | None] = []

    async def fetch() -> None:
        seen.append(budget.current_hold())

    await asyncio.create_task(fetch(), context=budget.context_holding(hold))
    await asyncio.create_task(fetch())
    assert seen == [hold, None]
    assert budget.current_hold() is None


def test_forget_frames_lets_an_answer_go_while_its_exception_is_kept() -> None:
    def parse(raw: bytes) -> None:
        raise ValueError("not JSON")

    def read() -> None:
        raw = b"x" * (8 * MIB)
        try:
            parse(raw)
        except ValueError as exc:
            raise errors.ResponseCorrupted("bad answer") from exc

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        try:
            read()
        except errors.ResponseCorrupted as caught:
            kept = caught
        held = tracemalloc.get_traced_memory()[0] - base
        budget.forget_frames(kept)
        left = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert held > 8 * MIB  # the frames of `kept` held the answer ...
    assert left < MIB  # ... and no longer do
    assert "bad answer" in str(kept)


# -- The prefetcher holds a batch's charge until the writer is done with it


class ChargingSource:
    """A source whose every batch is an answer of `bytes_per_block` per block, charged the
    way the transport charges it: to `spent`, kept in the fetch's hold."""

    label = "fake"

    def __init__(self, spent: budget.ByteBudget, *, bytes_per_block: int) -> None:
        self.spent = spent
        self.bytes_per_block = bytes_per_block
        self.gate = asyncio.Event()
        self.gate.set()
        self.asked: list[tuple[int, int]] = []
        self.fail_at: set[int] = set()

    def bind(self, copy_prefixes: Mapping[str, bytes]) -> None:
        pass

    def decode_counts(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass

    async def check_identity(self) -> None:
        return None

    async def head(self) -> int:
        return 10_000

    async def hashes(
        self, numbers: Sequence[int], *, alternate: bool = False
    ) -> dict[int, bytes | None]:
        return {}

    async def blocks(self, start: int, count: int) -> list[Block]:
        self.asked.append((start, count))
        charge = self.spent.charge()
        if not charge.resize(count * self.bytes_per_block):
            raise errors.BatchTooLarge("no room")
        try:
            await self.gate.wait()
            if start in self.fail_at:
                raise errors.SourceTransient("boom")
        except BaseException:
            charge.release()
            raise
        hold = budget.current_hold()
        assert hold is not None, "a prefetched fetch runs with a hold"
        hold.keep(charge)
        return [
            header_block(
                where="test",
                number=n,
                hash=n.to_bytes(32, "big"),
                parent_hash=bytes(32),
                timestamp=0,
                tx_count=0,
            )
            for n in range(start, start + count)
        ]


async def test_a_batch_stays_charged_until_the_next_one_is_asked_for() -> None:
    spent = budget.ByteBudget(100 * MIB)
    source = ChargingSource(spent, bytes_per_block=MIB)
    fetcher = Prefetcher(source, batch_size=2, depth=3)
    fetcher.reset(0)
    fetcher.set_limit(99)
    first = await fetcher.next_batch()
    await asyncio.sleep(0)
    # The batch handed out (the writer has it) and the three fetched ahead are all charged.
    assert [b.number for b in first] == [0, 1]
    assert spent.in_use_bytes == fetcher.held_bytes == 4 * 2 * MIB
    await fetcher.next_batch()  # the writer is done with the first: its bytes are back
    await asyncio.sleep(0)
    assert spent.in_use_bytes == 4 * 2 * MIB
    fetcher.reset(4)
    assert spent.in_use_bytes == 0
    await fetcher.next_batch()
    await fetcher.close()
    assert spent.in_use_bytes == 0


async def test_failed_and_dropped_fetches_give_their_bytes_back() -> None:
    spent = budget.ByteBudget(100 * MIB)
    source = ChargingSource(spent, bytes_per_block=MIB)
    source.fail_at = {4}
    fetcher = Prefetcher(source, batch_size=2, depth=4)
    fetcher.reset(0)
    fetcher.set_limit(99)
    await fetcher.next_batch()
    await fetcher.next_batch()
    with pytest.raises(errors.SourceTransient):
        await fetcher.next_batch()
    await asyncio.sleep(0)
    assert spent.in_use_bytes == 0  # the failure reset everything, the batch out included
    source.gate.clear()  # fetches in flight, still reading, when they are dropped
    fetcher.reset(10)
    fetcher.set_limit(99)
    waiter = asyncio.create_task(fetcher.next_batch())
    await asyncio.sleep(0.01)
    assert spent.in_use_bytes == 4 * 2 * MIB
    fetcher.set_limit(13)  # lower: those reaching above it are dropped
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.sleep(0.01)
    assert spent.in_use_bytes == 0
    source.gate.set()
    await fetcher.close()
    assert spent.in_use_bytes == 0


async def test_the_look_ahead_shrinks_when_the_budget_runs_low() -> None:
    spent = budget.ByteBudget(20 * MIB)
    source = ChargingSource(spent, bytes_per_block=MIB)
    fetcher = Prefetcher(source, batch_size=4, depth=16)
    fetcher.reset(0)
    fetcher.set_limit(999)
    got: list[int] = []
    for _ in range(20):
        got.extend(b.number for b in await fetcher.next_batch())
        await asyncio.sleep(0)
        assert spent.in_use_bytes <= spent.capacity_bytes
        # 4 MiB batches in 20 MiB: the batch out plus at most four ahead, never sixteen.
        assert len(fetcher._inflight) <= 4
    assert got == list(range(80))
    await fetcher.close()
    assert spent.in_use_bytes == 0


class SizeLimitedSource(ChargingSource):
    """Linked blocks; a batch of more than `most` blocks is refused as too large."""

    most = 2

    async def blocks(self, start: int, count: int) -> list[Block]:
        self.asked.append((start, count))
        if count > self.most:
            raise errors.BatchTooLarge(f"{count} blocks: answer refused")
        return [
            header_block(
                where="test",
                number=n,
                hash=(n + 1).to_bytes(32, "big"),
                parent_hash=n.to_bytes(32, "big"),
                timestamp=0,
                tx_count=0,
            )
            for n in range(start, start + count)
        ]


async def test_batches_halve_on_a_refusal_and_grow_back_after_enough_whole_ones() -> None:
    source = SizeLimitedSource(budget.ByteBudget(), bytes_per_block=0)
    batches = LinkedBatches(source, start_block=0, batch_size=8, depth=2)
    batches.reset(None)
    batches.set_limit(10_000)
    got: list[int] = []
    for _ in range(REGROW_AFTER_BATCHES - 1):
        got.extend(b.number for b in await batches.next())
    assert batches.batch_size == 2  # 8 and 4 were refused
    assert [count for _, count in source.asked[:3]] == [8, 4, 2]
    got.extend(b.number for b in await batches.next())
    assert batches.batch_size == 4  # 16 whole ones in a row: twice as large again ...
    for _ in range(4):
        got.extend(b.number for b in await batches.next())
    assert batches.batch_size == 2  # ... refused again, halved again
    assert [count for _, count in source.asked].count(4) == 2
    source.most = 8  # the node takes large batches again: back to 8, in two steps
    for _ in range(3 * REGROW_AFTER_BATCHES):
        got.extend(b.number for b in await batches.next())
    assert batches.batch_size == 8
    assert got == list(range(len(got)))  # in order, nothing lost or repeated on the way
    await batches.close()


# -- The JSON-RPC read path against a real server


class HugeNode:
    """A loopback JSON-RPC server whose answer a test picks: 'ok' (a batch of `size` bytes),
    'ok_chunked' (the same without a Content-Length), 'oversized' (a Content-Length over the
    cap), 'chunked' (no Content-Length, 3x the cap), 'endless' (chunked, never ends)."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.size = 1000
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        calls = orjson.loads(await request.read())
        if self.mode.startswith("ok"):
            pad = "0" * max(0, self.size // len(calls) - 60)
            body = [{"jsonrpc": "2.0", "id": c["id"], "result": "0x" + pad} for c in calls]
            if self.mode == "ok":
                return web.Response(body=orjson.dumps(body), content_type="application/json")
            answer = web.StreamResponse()
            answer.enable_chunked_encoding()
            await answer.prepare(request)
            raw = orjson.dumps(body)
            for start in range(0, len(raw), 100_000):
                await answer.write(raw[start : start + 100_000])
            await answer.write_eof()
            return answer
        response = web.StreamResponse()
        piece = b"0" * (256 * 1024)
        total = 3 * self.cap
        if self.mode == "oversized":
            response.content_length = total
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        sent = 0
        while self.mode == "endless" or sent < total:
            await response.write(piece)
            sent += len(piece)
        await response.write_eof()
        return response

    cap = 4 * MIB


@asynccontextmanager
async def huge_node() -> AsyncIterator[HugeNode]:
    node = HugeNode()
    app = web.Application()
    app.router.add_post("/", node.handle)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    node.url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    try:
        yield node
    finally:
        await runner.cleanup()


class Traced:
    """Memory allocated since it was made, by the code under test (the servers of this file
    run in the same process: what they allocate here is left out)."""

    def __init__(self) -> None:
        self.base = self._now()
        tracemalloc.reset_peak()

    @staticmethod
    def _now() -> int:
        gc.collect()
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(inclusive=False, filename_pattern=__file__)]
        )
        return sum(stat.size for stat in snapshot.statistics("filename"))

    def grown(self) -> int:
        return self._now() - self.base

    def peak(self) -> int:
        """The peak of everything traced (servers included)."""
        return tracemalloc.get_traced_memory()[1] - self.base


@contextmanager
def traced() -> Iterator[Traced]:
    tracemalloc.start()
    try:
        yield Traced()
    finally:
        tracemalloc.stop()


def client(node: HugeNode) -> RpcClient:
    return RpcClient([node.url], timeout_secs=10, max_attempts=1, max_bytes_in_flight=16 * MIB)


@pytest.mark.parametrize("mode", ["oversized", "chunked", "endless"])
async def test_an_answer_over_the_cap_is_refused_and_its_memory_is_back_at_once(mode: str) -> None:
    async with huge_node() as node, client(node) as rpc:
        assert rpc.budget.max_answer_bytes == node.cap == 4 * MIB
        node.mode = mode
        with traced() as memory:
            for _ in range(3):
                with pytest.raises(errors.BatchTooLarge, match="answer refused") as info:
                    await rpc.batch_parsed([("eth_getBlockByNumber", ["0x1", True])] * 2, list)
                # Read no further than the cap, and nothing of it is kept, though the
                # exception (and its traceback) is.
                assert memory.peak() < 3 * node.cap
                assert memory.grown() < MIB, f"{memory.grown():,d} bytes kept after {mode}"
                assert rpc.budget.in_use_bytes == 0
        assert "answer may take 4,194,304 bytes" in str(info.value)
        assert rpc.budget.refused == 3
        node.mode = "ok"  # the connection was dropped; the next answer is read whole
        assert await rpc.call("eth_blockNumber") == "0x" + "0" * 940


@pytest.mark.parametrize("mode", ["ok", "ok_chunked"])
async def test_an_answer_within_the_cap_is_read_whole_and_given_back(mode: str) -> None:
    async with huge_node() as node, client(node) as rpc:
        node.mode, node.size = mode, 3 * MIB
        results = await rpc.batch_parsed([("eth_getBlockByNumber", ["0x1", True])] * 3, list)
        assert [len(r) for r in results] == [MIB - 58] * 3
        assert rpc.budget.in_use_bytes == 0
        # The answer once (its read buffer is what the decoder gets: no copy), plus the room
        # a chunked answer grows by.
        assert 2.9 * MIB < rpc.budget.peak_bytes < 3.5 * MIB


async def test_an_answer_that_fits_the_cap_but_not_what_is_left_is_refused() -> None:
    async with huge_node() as node, client(node) as rpc:
        taken = rpc.budget.charge()
        assert taken.resize(14 * MIB)  # others (batches waiting for the writer) hold most
        node.size = 3 * MIB
        with pytest.raises(errors.BatchTooLarge, match="2,097,152 of this chain's"):
            await rpc.batch_parsed([("eth_getBlockByNumber", ["0x1", True])] * 2, list)
        assert rpc.budget.in_use_bytes == 14 * MIB
        taken.release()
        assert len(await rpc.batch_parsed([("eth_getBlockByNumber", ["0x1", True])] * 2, list)) == 2
        assert rpc.budget.in_use_bytes == 0


async def test_a_prefetched_answer_stays_charged_at_its_size_until_released() -> None:
    async with huge_node() as node, client(node) as rpc:
        node.size = MIB
        hold = budget.Hold()

        async def fetch() -> list[object]:
            return await rpc.batch_parsed([("eth_getBlockByNumber", ["0x1", True])], list)

        await asyncio.create_task(fetch(), context=budget.context_holding(hold))
        assert MIB - 100 < hold.bytes == rpc.budget.in_use_bytes < MIB + 100
        hold.release()
        await fetch()  # outside a prefetch: given back once decoded
        assert rpc.budget.in_use_bytes == 0


async def test_an_answer_that_fails_to_decode_is_given_back_at_once() -> None:
    async with huge_node() as node, client(node) as rpc:
        node.size = 8 * 1000 * 1000 // 3

        def reject(results: list[object]) -> None:
            raise errors.ResponseCorrupted("wrong block")

        with traced() as memory:
            with pytest.raises(errors.ResponseCorrupted, match="wrong block"):
                await rpc.batch_parsed([("eth_getBlockByNumber", ["0x1", True])] * 3, reject)
            assert memory.grown() < MIB
        assert rpc.budget.in_use_bytes == 0


# -- Electrum: the line limit bounds what a server can make us hold


async def test_an_endless_electrum_line_fails_the_connection_and_is_dropped_at_once() -> None:
    limit = 2 * MIB

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = orjson.loads(await reader.readline())
        answer = {"jsonrpc": "2.0", "id": request["id"], "result": ["fake", "1.4"]}
        writer.write(orjson.dumps(answer) + b"\n")
        await reader.readline()  # the next request gets a line that never ends
        writer.write(b'{"jsonrpc": "2.0", "id": 2, "result": "')
        try:
            while True:
                writer.write(b"0" * (256 * 1024))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        conn = ec.ElectrumConnection(
            f"tcp://127.0.0.1:{port}", timeout_secs=10, ping_interval_secs=0, max_line_bytes=limit
        )
        with traced() as memory:
            await conn.open()
            with pytest.raises(errors.ResponseCorrupted, match="longer than 2,097,152 bytes"):
                await conn.request("server.ping")
            assert memory.peak() < 3 * limit + MIB  # reading stopped at twice the limit
            assert conn.closed
            # The connection is still referenced (a pool keeps it until it is replaced): it
            # holds none of the line, nor does the failure it keeps.
            assert memory.grown() < MIB, f"{memory.grown():,d} bytes kept"
            assert conn.failure is not None and conn.failure.__traceback__ is None
        await conn.close()


async def test_a_dense_electrum_line_is_refused_before_it_is_parsed() -> None:
    dense = b"[" + b"{}," * (MIB // 3) + b"{}]"  # 1 MiB that would parse into ~20 times that

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = orjson.loads(await reader.readline())
        answer = {"jsonrpc": "2.0", "id": request["id"], "result": ["fake", "1.4"]}
        writer.write(orjson.dumps(answer) + b"\n")
        await reader.readline()
        writer.write(b'{"jsonrpc": "2.0", "id": 2, "result": ' + dense + b"}\n")
        await writer.drain()
        await reader.read()  # until the client hangs up
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        conn = ec.ElectrumConnection(
            f"tcp://127.0.0.1:{port}", timeout_secs=10, ping_interval_secs=0
        )
        with traced() as memory:
            await conn.open()
            with pytest.raises(errors.ResponseCorrupted, match=r"a JSON value every 3\.0 bytes"):
                await conn.request("blockchain.block.headers", [0, 2016])
            assert memory.peak() < 8 * MIB  # parsed, it would have taken ~25 MB
        await conn.close()


@pytest.mark.parametrize(("protocol", "pad"), [("1.4", True), ("1.6", True), ("1.6", False)])
async def test_full_header_chunks_are_not_too_dense(protocol: str, pad: bool) -> None:
    from tests.electrum.fake_electrum import (
        FakeElectrum,
        Faults,
        assert_regtest_blocks,
        regtest_chain,
        source_for,
    )

    chain = regtest_chain(2100)
    faults = Faults(pad=pad)
    async with (
        FakeElectrum(chain, protocol=protocol, faults=faults) as fake,
        source_for(fake) as source,
    ):
        blocks = await source.blocks(0, 2016)  # one answer of 2,016 headers: over 64 KiB
        assert_regtest_blocks(blocks, 0, chain)
        assert fake.calls("blockchain.block.headers")[-1] == [0, 2016]


def test_an_answer_is_copied_into_its_buffer_only_where_it_fits() -> None:
    """`_read_body`'s buffer helpers: a chunk lands at its offset; one that would run past
    the buffer (or start before it) is refused, and nothing is written."""
    buffer = _rows.new_buffer(8)
    assert isinstance(buffer, bytearray) and len(buffer) == 8
    _rows.copy_into(buffer, 0, b"abcd")
    _rows.copy_into(buffer, 4, b"efgh")
    assert buffer == b"abcdefgh"
    for offset, chunk in ((5, b"xyzw"), (-1, b"x"), (9, b"")):
        with pytest.raises(ValueError, match="does not fit"):
            _rows.copy_into(buffer, offset, chunk)
    assert buffer == b"abcdefgh"
    with pytest.raises(ValueError, match="negative"):
        _rows.new_buffer(-1)


def test_a_read_buffer_is_kept_for_the_next_answer_only_when_nothing_else_holds_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from indexer.chain import rpc

    buffers = rpc._Buffers()
    first = buffers.take(4 * MIB)
    assert len(first) == 4 * MIB and first.__alloc__() > 4 * MIB  # room to grow a little
    held = memoryview(first)  # something still reads it: not kept
    buffers.give(first)
    assert buffers.take(4 * MIB) is not first
    held.release()
    buffers.give(first)
    again = buffers.take(4 * MIB + 100)  # about the same size: the same pages
    assert again is first and len(again) == 4 * MIB + 100
    buffers.give(again)
    assert buffers.take(MIB) is not first  # far smaller: a buffer of its own
    assert buffers.take(64) is not first and len(buffers.take(64)) == 64
    # Kept at most IDLE_SECS unused.
    clock = [1000.0]
    monkeypatch.setattr("indexer.chain.rpc.time.monotonic", lambda: clock[0])
    buffers = rpc._Buffers()
    kept = buffers.take(2 * MIB)
    buffers.give(kept)
    clock[0] += rpc._Buffers.IDLE_SECS + 1
    assert buffers.take(2 * MIB) is not kept


async def test_a_decoded_answers_buffer_is_read_into_again_by_the_next_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client hands each decoded answer's buffer back (nothing else refers to it once
    the results are parsed), and reads the next answer of about its size into it: no new
    buffer is made for it."""
    made: list[int] = []
    new_buffer = _rows.new_buffer

    def counted(size: int) -> bytearray:
        made.append(size)
        return new_buffer(size)

    monkeypatch.setattr(_rows, "new_buffer", counted)
    async with huge_node() as node, client(node) as rpc:
        node.mode, node.size = "ok", 3 * MIB
        calls = [("eth_getBlockByNumber", ["0x1", True])] * 3
        first = await rpc.batch_parsed(calls, list)
        assert len(made) == 1 and len(rpc._buffers._kept) == 1
        second = await rpc.batch_parsed(calls, list)
        assert len(made) == 1, "a new buffer was made for the second answer"
        assert len(rpc._buffers._kept) == 1  # and given back again
        assert first == second and rpc.budget.in_use_bytes == 0
