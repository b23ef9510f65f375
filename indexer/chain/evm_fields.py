"""The EVM decoding rules: which JSON-RPC field fills which declared column, and how.

One rule per column (`indexer.tables` declares the columns, their types and sizes); the
checks tie each transaction and log to the block it came with. Both decode paths are
compiled from these tables (`indexer.chain.fields`), so a new column is its declaration,
its migration and one line here.
"""

from __future__ import annotations

from indexer import tables
from indexer.chain import fields as f

# A block's header fields (`eth_getBlockByNumber`); the Bitcoin columns stay null.
BLOCKS = f.FieldTable(
    tables.BLOCKS,
    {
        "number": f.block_number(),
        "hash": f.hex_data("hash"),
        "parent_hash": f.hex_data("parentHash"),
        "timestamp": f.timestamp("timestamp"),
        "tx_count": f.count("transactions"),
        "miner": f.hex_data("miner"),
        "gas_used": f.quantity("gasUsed"),
        "gas_limit": f.quantity("gasLimit"),
        "base_fee_per_gas": f.quantity("baseFeePerGas"),
        "size": f.quantity("size"),
    },
)

TRANSACTIONS = f.FieldTable(
    tables.TRANSACTIONS,
    {
        "block_number": f.block_number(),
        "tx_index": f.position(),
        "hash": f.hex_data("hash"),
        "from_address": f.hex_data("from"),
        "to_address": f.hex_data("to"),
        "value": f.quantity("value"),
        "nonce": f.quantity("nonce"),
        "gas": f.quantity("gas"),
        "gas_price": f.quantity("gasPrice"),
        "input": f.hex_data("input"),
        "type": f.quantity("type", default_zero=True),  # legacy nodes send no type
        "max_fee_per_gas": f.quantity("maxFeePerGas"),
    },
    checks=(
        f.same_block_hash("blockHash"),
        f.same_block_number("blockNumber"),
        f.is_position("transactionIndex"),
    ),
)

LOGS = f.FieldTable(
    tables.LOGS,
    {
        "block_number": f.block_number(),
        "log_index": f.position(),
        "tx_index": f.tx_index("transactionIndex"),
        "tx_hash": f.tx_hash("transactionHash"),
        "address": f.hex_data("address"),
        "topics": f.hex_list("topics", max_items=4),
        "data": f.hex_data("data"),
    },
    checks=(
        f.same_block_hash("blockHash"),
        f.same_block_number("blockNumber"),
        f.is_position("logIndex"),
        f.is_false("removed"),
    ),
)
