"""`store = "receipts"` against a real anvil: receipts equal the node's, a reverted
transaction has status 0, a contract creation names its contract, and the logs come from
the receipts."""

from __future__ import annotations

from typing import Any

import psycopg

from indexer.devnet.traffic import fill_blocks
from tests.integration.helpers import make_config, sync_to
from tests.support.faultproxy import FaultProxy
from tests.support.oracle import assert_equals_node, check_invariants

# Init code that deploys a contract whose code is the single INVALID opcode (0xfe): every
# call to it reverts, using all its gas.
REVERTING_CONTRACT = "0x60fe60005360016000f3"


async def test_receipts_equal_the_nodes_with_a_revert_and_a_creation(
    db_url: str, anvil: Any
) -> None:
    sender = anvil.accounts()[0]
    anvil.set_automine(False)
    created = anvil.rpc("eth_sendTransaction", [{"from": sender, "data": REVERTING_CONTRACT}])
    anvil.mine(1)
    contract = anvil.rpc("eth_getTransactionReceipt", [created])["contractAddress"]
    reverted = anvil.rpc(
        "eth_sendTransaction", [{"from": sender, "to": contract, "gas": hex(60_000)}]
    )
    anvil.mine(1)
    fill_blocks(anvil, 20, txs_per_block=(1, 4), seed=31)
    head = anvil.block_number()
    assert await sync_to(make_config(db_url, anvil.url), head) == 0
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url, receipts=True)
    with psycopg.connect(db_url) as conn:
        rows = {
            bytes(h).hex(): (status, None if address is None else bytes(address).hex())
            for h, status, address in conn.execute(
                "SELECT tx_hash, status, contract_address FROM receipts"
            )
        }
        logs_without_receipt = conn.execute(
            """SELECT count(*) FROM logs l LEFT JOIN receipts r
               ON r.chain = l.chain AND r.block_number = l.block_number AND r.tx_index = l.tx_index
               WHERE r.tx_hash IS NULL OR r.tx_hash <> l.tx_hash"""
        ).fetchone()
    assert rows[reverted[2:]] == (0, None)
    assert rows[created[2:]] == (1, contract[2:].lower())
    assert logs_without_receipt == (0,)


async def test_a_node_without_block_receipts_is_asked_per_transaction(
    db_url: str, anvil: Any
) -> None:
    fill_blocks(anvil, 15, txs_per_block=(1, 4), seed=32)
    head = anvil.block_number()
    with FaultProxy(anvil.url) as proxy:
        proxy.add_fault(
            "rpc_error", method="eth_getBlockReceipts", times=1000, code=-32601,
            message="the method eth_getBlockReceipts does not exist/is not available",
        )  # fmt: skip
        assert await sync_to(make_config(db_url, proxy.url, batch_size=5), head) == 0
        methods = {m for served in proxy.served for m in served.methods}
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url, receipts=True)
    assert "eth_getTransactionReceipt" in methods
