"""Pure checks that fetched blocks extend the stored chain; no I/O.

Three outcomes for a batch (STYLE P2): it extends the tip (return), its first block does not
link to the tip (`ReorgDetected`), or it is broken inside (`BrokenBatch`: the node changed
while answering, so refetch; never a reason to roll back).

The very first batch of a chain links to an anchor instead of a stored tip: the all-zero
parent of a genesis block, or the node's own block just below `start_block`.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from indexer import errors
from indexer.models import Block, BlockRef


def check_links(tip: BlockRef, blocks: Sequence[Block]) -> None:
    """Raise unless `blocks` extend `tip` one block at a time."""
    assert blocks, "empty batch"
    first = blocks[0]
    assert first.number == tip.number + 1, "batch must start right above the tip"
    if first.parent_hash != tip.hash:
        raise errors.ReorgDetected(
            f"block {first.number:,d} (parent 0x{first.parent_hash.hex()}) does not link "
            f"to {'the stored tip' if tip.number >= 0 else 'the genesis anchor'} {tip}",
            height=first.number,
        )
    for prev, cur in pairwise(blocks):
        if cur.number != prev.number + 1 or cur.parent_hash != prev.hash:
            raise errors.BrokenBatch(
                f"block {cur.number:,d} does not link to block {prev.number:,d} in the same "
                "batch (the node changed while answering)",
                height=cur.number,
            )
