"""Find where the node's chain and ours part, and decide whether we may roll back.

The fork point is the highest height at which our stored hash equals the node's. Hashes
commit to the whole history below them, so heights match below the fork point and differ
above it; the search exploits that monotony:

1. one round trip probes the heights tip, tip-1, tip-3, tip-7, ... (distance doubling) down
   to the start block, which brackets the fork point between a match and a mismatch;
2. each further round trip probes up to `FANOUT` evenly spaced heights inside the bracket.

A depth-d reorg therefore costs 1 + ceil(log_(FANOUT+1) d) batched round trips, never d
single-block calls. `resolve` is the whole unit (find, confirm, enforce the depth limit,
roll back through the writer); nothing is deleted unless `confirm` agreed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from indexer import errors
from indexer.chain import ChainSource
from indexer.config import ChainConfig
from indexer.models import BlockRef
from indexer.store.writer import ChainWriter

logger = logging.getLogger(__name__)

FANOUT = 16

StoredHashes = Callable[[Sequence[int]], Awaitable[dict[int, bytes]]]


@dataclass(frozen=True, slots=True)
class ForkPoint:
    number: int  # highest common height; start_block - 1 when nothing in common
    block: BlockRef | None  # our stored block there (None below the start block)
    round_trips: int


def _probe_heights(tip: int, start_block: int) -> list[int]:
    heights, distance = [], 0
    while tip - distance >= start_block:
        heights.append(tip - distance)
        distance = 2 * distance + 1  # 0, 1, 3, 7, 15, ...
    if heights[-1] != start_block:
        heights.append(start_block)
    return heights


async def _compare(
    heights: Sequence[int], *, source: ChainSource, stored: StoredHashes
) -> dict[int, bool]:
    """Per height: does our stored hash equal the node's?"""
    node = await source.hashes(heights)
    ours = await stored(heights)
    out = {}
    for h in heights:
        if node.get(h) is None:
            # The node has no block where we have one: it is behind or changing under us.
            raise errors.ResponseCorrupted(
                f"{source.label}: node has no block at {h:,d} during the fork-point search"
            )
        out[h] = ours.get(h) == node[h]
    return out


async def find_fork_point(
    *, tip: BlockRef, start_block: int, source: ChainSource, stored: StoredHashes
) -> ForkPoint:
    """Return the highest height where the node's hash equals ours (see module docstring)."""
    heights = _probe_heights(tip.number, start_block)
    same = await _compare(heights, source=source, stored=stored)
    round_trips = 1
    matches = [h for h in heights if same[h]]
    lo = max(matches) if matches else start_block - 1  # highest known match
    hi = min((h for h in heights if h > lo and not same[h]), default=None)
    if hi is None:
        # Every probe matches, our tip included: the node agrees with us after all.
        raise errors.ReorgNotConfirmed(f"{source.label}: node now agrees with our tip {tip}")
    while hi - lo > 1:
        step = max(1, (hi - lo) // (FANOUT + 1))
        inner = list(range(lo + step, hi, step))[:FANOUT]
        same = await _compare(inner, source=source, stored=stored)
        round_trips += 1
        new_lo = max((h for h in inner if same[h]), default=lo)
        hi = min((h for h in inner if h > new_lo and not same[h]), default=hi)
        lo = new_lo
    block = None
    if lo >= start_block:
        ours = await stored([lo])
        block = BlockRef(lo, ours[lo])
    return ForkPoint(number=lo, block=block, round_trips=round_trips)


async def confirm(
    fork: ForkPoint, *, tip: BlockRef, source: ChainSource, stored: StoredHashes
) -> bytes:
    """Re-read the fork point, the block above it and the head; return the new head's hash.

    Asks another endpoint when there are several. Raises `ReorgNotConfirmed` unless the node
    still shares our block at the fork point and still differs right above it.
    """
    head = await source.head()
    if head < tip.number:
        # A node below our tip is lagging, not reorging: height alone never rolls back.
        raise errors.ReorgNotConfirmed(
            f"{source.label}: node head {head:,d} is below our tip {tip.number:,d}; waiting"
        )
    above = fork.number + 1
    heights = sorted({h for h in (fork.number, above, head) if h >= 0})
    node = await source.hashes(heights, alternate=True)
    ours = await stored([h for h in (fork.number, above) if h >= 0])
    if fork.block is not None and node.get(fork.number) != fork.block.hash:
        raise errors.ReorgNotConfirmed(
            f"{source.label}: node no longer has our block at the fork point {fork.block}"
        )
    if node.get(above) is None or node.get(above) == ours.get(above):
        raise errors.ReorgNotConfirmed(
            f"{source.label}: node no longer differs from us at {above:,d}"
        )
    new_tip = node.get(head)
    if new_tip is None:
        raise errors.ReorgNotConfirmed(f"{source.label}: node has no block at its own head")
    return new_tip


@dataclass(frozen=True, slots=True)
class Rollback:
    """A reorg resolved: where the chains part, and how many blocks were rolled back."""

    fork: ForkPoint
    depth: int


async def resolve(
    *, tip: BlockRef, chain: ChainConfig, source: ChainSource, writer: ChainWriter
) -> Rollback:
    """Find the fork point below `tip`, confirm it, and roll back to it (one transaction).

    The unit that sync and gap repair share. Raises `ReorgNotConfirmed` when the node no
    longer says what made us look (nothing deleted), and `ReorgTooDeep` when the fork is
    deeper than `max_reorg_depth` (nothing deleted; the chain halts).
    """
    fork = await find_fork_point(
        tip=tip, start_block=chain.start_block, source=source, stored=writer.stored_hashes
    )
    new_tip_hash = await confirm(fork, tip=tip, source=source, stored=writer.stored_hashes)
    depth = tip.number - fork.number
    if depth > chain.max_reorg_depth:
        raise errors.ReorgTooDeep(
            f"chain {chain.name}: reorg of depth {depth:,d} (our tip {tip}, last common block "
            f"{fork.number:,d}) exceeds max_reorg_depth {chain.max_reorg_depth:,d}; nothing "
            f"was deleted. If the node's chain is the right one, recover with: indexer rewind "
            f"--chain {chain.name} --to {fork.number}",
            depth=depth,
        )
    await writer.roll_back(
        expected=tip,
        fork=fork.block,
        fork_number=fork.number,
        kind="reorg",
        new_tip_hash=new_tip_hash,
    )
    return Rollback(fork, depth)
