"""Hostile world, items 1 and 2, through the daemon: a node that sends numbers no column (or
no chain) holds, beside an honest one. Each answer is refused as corrupt and failed over; the
daemon neither crashes nor stores a changed value, and the stored chain equals the honest
node's. Verification is off ("links") so that nothing but the range checks can refuse them.
"""

from __future__ import annotations

from typing import Any

import pytest

from indexer import errors
from indexer.devnet.traffic import fill_blocks
from tests.integration.helpers import make_config, sync_to
from tests.support.faultproxy import FaultProxy
from tests.support.oracle import assert_equals_node, check_invariants

BLOCK, RECEIPTS, HEAD = "eth_getBlockByNumber", "eth_getBlockReceipts", "eth_blockNumber"
VALUES = [
    # (method, field, value): the examples, and one per kind of item
    (BLOCK, "block.size", "0xffffffffff"),  # an integer column
    (BLOCK, "tx.type", "0xffff"),  # a smallint column
    (BLOCK, "block.gasUsed", hex(2**256 - 1)),  # a bigint column
    (BLOCK, "block.timestamp", hex(2**64 - 1)),  # past what a timestamp holds
    (BLOCK, "tx.value", "0x1" + "0" * 64),  # more than 256 bits
    (RECEIPTS, "receipt.cumulativeGasUsed", hex(2**63)),
    (HEAD, "head", hex(2**63)),  # a height no chain reaches
]


@pytest.mark.parametrize(("method", "field", "value"), [pytest.param(*v, id=v[1]) for v in VALUES])
async def test_an_out_of_range_value_is_refused_and_the_honest_endpoint_answers(
    db_url: str, anvil: Any, method: str, field: str, value: str
) -> None:
    fill_blocks(anvil, 12, txs_per_block=(1, 3), seed=43)
    head = anvil.block_number()
    with FaultProxy(anvil.url) as liar:
        fault = liar.add_fault(
            "set_field", method=method, times=1_000_000, field=field, value=value
        )
        cfg = make_config(db_url, [liar.url, anvil.url], verify="links", batch_size=4)
        assert await sync_to(cfg, head) == errors.EXIT_OK
    assert fault.applied >= 1, fault
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url, receipts=True)
