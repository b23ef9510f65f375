"""The fork-point search finds the exact fork in O(log depth) round trips."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from indexer import errors
from indexer.models import BlockRef
from indexer.sync.reorg import FANOUT, find_fork_point
from tests.support.fakechain import FakeChain


def snapshot(chain: FakeChain) -> dict[int, bytes]:
    return dict(enumerate(chain.canonical))


@pytest.mark.parametrize("depth", [1, 2, 3, 7, 16, 17, 63, 64, 100, 1000, 5000])
async def test_finds_exact_fork_in_logarithmic_round_trips(depth: int) -> None:
    chain = FakeChain(6000)
    ours = snapshot(chain)
    tip = BlockRef(chain.tip, ours[chain.tip])
    chain.reorg(depth, depth + 1)

    async def stored(numbers: Sequence[int]) -> dict[int, bytes]:
        return {n: ours[n] for n in numbers if n in ours}

    chain.requests = 0
    fork = await find_fork_point(tip=tip, start_block=0, source=chain, stored=stored)
    assert fork.number == tip.number - depth
    assert fork.block == BlockRef(fork.number, ours[fork.number])
    bound = 1 + math.ceil(math.log(depth + 1, FANOUT + 1)) + 1
    assert fork.round_trips == chain.requests
    assert chain.requests <= bound, (depth, chain.requests, bound)


async def test_nothing_in_common_gives_start_block_minus_one() -> None:
    chain = FakeChain(50)
    ours = snapshot(chain)
    chain.reorg(50, 60)  # even block 0 differs

    async def stored(numbers: Sequence[int]) -> dict[int, bytes]:
        return {n: ours[n] for n in numbers if n in ours}

    fork = await find_fork_point(
        tip=BlockRef(49, ours[49]), start_block=0, source=chain, stored=stored
    )
    assert fork.number == -1 and fork.block is None


async def test_node_agreeing_again_is_not_confirmed() -> None:
    chain = FakeChain(20)
    ours = snapshot(chain)

    async def stored(numbers: Sequence[int]) -> dict[int, bytes]:
        return {n: ours[n] for n in numbers if n in ours}

    with pytest.raises(errors.ReorgNotConfirmed):
        await find_fork_point(tip=BlockRef(19, ours[19]), start_block=0, source=chain,
                              stored=stored)  # fmt: skip
