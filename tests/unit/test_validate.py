from __future__ import annotations

import pytest

from indexer import errors
from indexer.chain import header_block
from indexer.models import GENESIS_PARENT, Block, BlockRef
from indexer.sync.validate import check_links


def block(number: int, h: bytes, parent: bytes) -> Block:
    return header_block(
        where="test", number=number, hash=h, parent_hash=parent, timestamp=0, tx_count=0
    )


def chain(start: int, n: int, *, parent: bytes = b"\x00" * 32, salt: int = 0) -> list[Block]:
    out = []
    for number in range(start, start + n):
        h = bytes([salt]) + number.to_bytes(31, "big")
        out.append(block(number, h, parent))
        parent = h
    return out


def test_first_batch_links_to_the_genesis_anchor() -> None:
    check_links(GENESIS_PARENT, chain(0, 3))


def test_genesis_with_a_nonzero_parent_is_rejected() -> None:
    with pytest.raises(errors.ReorgDetected):
        check_links(GENESIS_PARENT, chain(0, 3, parent=b"\x05" * 32))


def test_batch_extending_tip_is_accepted() -> None:
    first = chain(0, 3)
    check_links(first[-1].ref, chain(3, 4, parent=first[-1].hash))


def test_first_block_not_linking_is_a_reorg() -> None:
    tip = BlockRef(2, b"\x01" * 32)
    with pytest.raises(errors.ReorgDetected) as info:
        check_links(tip, chain(3, 2, parent=b"\x02" * 32))
    assert info.value.context["height"] == 3


def test_batch_broken_inside_is_a_broken_batch() -> None:
    blocks = chain(0, 5)
    blocks[3] = block(3, blocks[3].hash, b"\x09" * 32)
    with pytest.raises(errors.BrokenBatch) as info:
        check_links(GENESIS_PARENT, blocks)
    assert info.value.context["height"] == 3


def test_batch_with_skipped_number_is_a_broken_batch() -> None:
    blocks = chain(0, 5)
    skipped = [*blocks[:2], block(3, b"\x07" * 32, blocks[1].hash)]
    with pytest.raises(errors.BrokenBatch):
        check_links(GENESIS_PARENT, skipped)
