"""Pure checks that fetched blocks extend the stored chain; no I/O.

Three outcomes for a batch (STYLE P2): it extends the tip (return), its first block does not
link to the tip (`ReorgDetected`), or it is broken inside (`BrokenBatch`: the node changed
while answering, so refetch; never a reason to roll back).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from indexer import errors
from indexer.models import Block, BlockRef


def check_links(tip: BlockRef | None, blocks: Sequence[Block], *, start_block: int) -> None:
    """Raise unless `blocks` extend `tip` (or begin the chain at `start_block`) one by one."""
    assert blocks, "empty batch"
    first = blocks[0]
    if tip is None:
        assert first.number == start_block, "first batch must start at start_block"
    else:
        assert first.number == tip.number + 1, "batch must start right above the tip"
        if first.parent_hash != tip.hash:
            raise errors.ReorgDetected(
                f"block {first.number:,d} (parent 0x{first.parent_hash.hex()}) does not link "
                f"to the stored tip {tip}",
                height=first.number,
            )
    for prev, cur in pairwise(blocks):
        if cur.number != prev.number + 1 or cur.parent_hash != prev.hash:
            raise errors.BrokenBatch(
                f"block {cur.number:,d} does not link to block {prev.number:,d} in the same "
                "batch (the node changed while answering)",
                height=cur.number,
            )
