"""The prefetcher hands out batches in order, bounded, and restarts cleanly."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from indexer import errors
from indexer.chain import header_block
from indexer.models import Block
from indexer.sync.fetcher import Prefetcher


class FakeSource:
    label = "fake"

    def __init__(self) -> None:
        self.asked: list[tuple[int, int]] = []
        self.fail_at: set[int] = set()
        self.gate = asyncio.Event()
        self.gate.set()

    def bind(self, copy_prefixes: Mapping[str, bytes]) -> None:
        pass

    def decode_counts(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass

    async def check_identity(self) -> None:
        return None

    async def head(self) -> int:
        return 1000

    async def hashes(
        self, numbers: Sequence[int], *, alternate: bool = False
    ) -> dict[int, bytes | None]:
        return {n: n.to_bytes(32, "big") for n in numbers}

    async def blocks(self, start: int, count: int) -> list[Block]:
        self.asked.append((start, count))
        await self.gate.wait()
        if start in self.fail_at:
            self.fail_at.discard(start)
            raise errors.SourceTransient("boom")
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


async def test_batches_come_in_order_and_never_above_limit() -> None:
    src = FakeSource()
    f = Prefetcher(src, batch_size=10, depth=3)
    f.reset(0)
    f.set_limit(44)
    got: list[int] = []
    while len(got) < 45:
        got.extend(b.number for b in await f.next_batch())
    assert got == list(range(45))
    assert max(s + c - 1 for s, c in src.asked) == 44
    await f.close()


async def test_lookahead_is_bounded_by_depth() -> None:
    src = FakeSource()
    f = Prefetcher(src, batch_size=5, depth=2)
    f.reset(0)
    f.set_limit(1000)
    # One fetch until a first batch came (it shows what a batch costs), then `depth`.
    assert [b.number for b in await f.next_batch()] == [0, 1, 2, 3, 4]
    src.gate.clear()
    waiter = asyncio.create_task(f.next_batch())
    await asyncio.sleep(0.01)
    assert src.asked == [(0, 5), (5, 5), (10, 5)]
    src.gate.set()
    assert [b.number for b in await waiter] == [5, 6, 7, 8, 9]
    await f.close()


async def test_failed_batch_restarts_from_its_start() -> None:
    src = FakeSource()
    src.fail_at = {10}
    f = Prefetcher(src, batch_size=10, depth=3)
    f.reset(0)
    f.set_limit(29)
    assert (await f.next_batch())[0].number == 0
    try:
        await f.next_batch()
    except errors.SourceTransient:
        pass
    else:
        raise AssertionError("expected the failure")
    assert (await f.next_batch())[0].number == 10
    assert (await f.next_batch())[0].number == 20
    await f.close()


async def test_lowering_limit_refetches_within_it() -> None:
    src = FakeSource()
    src.gate.clear()
    f = Prefetcher(src, batch_size=10, depth=3)
    f.reset(0)
    f.set_limit(100)
    f._fill()
    f.set_limit(14)
    src.gate.set()
    got: list[int] = []
    while len(got) < 15:
        got.extend(b.number for b in await f.next_batch())
    assert got == list(range(15))
    await f.close()
