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
        "sha3_uncles": f.hex_data("sha3Uncles"),
        "state_root": f.hex_data("stateRoot"),
        "transactions_root": f.hex_data("transactionsRoot"),
        "receipts_root": f.hex_data("receiptsRoot"),
        "logs_bloom": f.hex_data("logsBloom"),
        "difficulty": f.quantity("difficulty"),
        "extra_data": f.hex_data("extraData"),
        "mix_hash": f.hex_data("mixHash"),
        "header_nonce": f.hex_data("nonce"),
        "withdrawals_root": f.hex_data("withdrawalsRoot"),
        "blob_gas_used": f.quantity("blobGasUsed"),
        "excess_blob_gas": f.quantity("excessBlobGas"),
        "parent_beacon_block_root": f.hex_data("parentBeaconBlockRoot"),
        "requests_hash": f.hex_data("requestsHash"),
        "aura_step": f.quantity("auraStep"),  # Erigon's names for the AuRa seal
        "aura_seal": f.hex_data("auraSeal"),
        "l1_block_number": f.quantity("l1BlockNumber"),
        "send_count": f.quantity("sendCount"),
        "send_root": f.hex_data("sendRoot"),
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
        "max_priority_fee_per_gas": f.quantity("maxPriorityFeePerGas"),
        "max_fee_per_blob_gas": f.quantity("maxFeePerBlobGas"),
        "blob_versioned_hashes": f.hex_list("blobVersionedHashes", max_items=64),
        "chain_id": f.quantity("chainId"),
        "access_list": f.hex_json("accessList"),
        "authorization_list": f.hex_json("authorizationList"),
        "v": f.quantity("v"),
        "r": f.quantity("r"),
        "s": f.quantity("s"),
        "y_parity": f.quantity("yParity"),
        "source_hash": f.hex_data("sourceHash"),
        "mint": f.quantity("mint"),
        "is_system_tx": f.boolean("isSystemTx"),
        "request_id": f.hex_data("requestId"),
        "ticket_id": f.hex_data("ticketId"),
        "refund_to": f.hex_data("refundTo"),
        "max_refund": f.quantity("maxRefund"),
        "submission_fee_refund": f.quantity("submissionFeeRefund"),
        "l1_base_fee": f.quantity("l1BaseFee"),
        "deposit_value": f.quantity("depositValue"),
        "retry_to": f.hex_data("retryTo"),
        "retry_value": f.quantity("retryValue"),
        "retry_data": f.hex_data("retryData"),
        "beneficiary": f.hex_data("beneficiary"),
        "max_submission_fee": f.quantity("maxSubmissionFee"),
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

WITHDRAWALS = f.FieldTable(
    tables.WITHDRAWALS,
    {
        "block_number": f.block_number(),
        "position": f.position(),
        "index": f.quantity("index"),
        "validator_index": f.quantity("validatorIndex"),
        "address": f.hex_data("address"),
        "amount": f.quantity("amount"),
    },
)

# `eth_getBlockReceipts` (or `eth_getTransactionReceipt` per transaction): one receipt per
# transaction, in block order; its logs are the block's logs.
RECEIPTS = f.FieldTable(
    tables.RECEIPTS,
    {
        "block_number": f.block_number(),
        "tx_index": f.position(),
        "tx_hash": f.tx_hash("transactionHash"),
        "type": f.quantity("type", default_zero=True),  # receipts before Berlin have none
        "status": f.quantity("status"),
        "root": f.hex_data("root"),
        "gas_used": f.quantity("gasUsed"),
        "cumulative_gas_used": f.quantity("cumulativeGasUsed"),
        "effective_gas_price": f.quantity("effectiveGasPrice"),
        "contract_address": f.hex_data("contractAddress"),
        "logs_bloom": f.hex_data("logsBloom"),
        "blob_gas_used": f.quantity("blobGasUsed"),
        "blob_gas_price": f.quantity("blobGasPrice"),
        "deposit_nonce": f.quantity("depositNonce"),
        "deposit_receipt_version": f.quantity("depositReceiptVersion"),
        "l1_fee": f.quantity("l1Fee"),
        "l1_gas_used": f.quantity("l1GasUsed"),
        "l1_gas_price": f.quantity("l1GasPrice"),
        "gas_used_for_l1": f.quantity("gasUsedForL1"),
        "l1_block_number": f.quantity("l1BlockNumber"),
    },
    checks=(
        f.same_block_hash("blockHash"),
        f.same_block_number("blockNumber"),
        f.is_position("transactionIndex"),
    ),
)
