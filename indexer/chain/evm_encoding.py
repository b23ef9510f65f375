"""Ethereum's consensus encodings of JSON-RPC answers: headers, transactions, receipts, logs.

What a block hash and its roots commit to, recomputed from the node's JSON (camelCase keys,
hex strings): the RLP header, each transaction's envelope (every type we know, chain types
as data in `TX_TYPES`), each receipt's envelope, the logs bloom, the withdrawals. Malformed
input raises `ProofError` naming the field. `evm_proof` runs the checks built on these.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from indexer.chain.mpt import RlpError, RlpItem, keccak256, ordered_trie_root, rlp_encode

JsonObject: TypeAlias = Mapping[str, Any]


class ProofError(RlpError):
    """JSON-RPC data is malformed: a field is missing or not of its declared form."""


# -- Reading JSON-RPC fields --------------------------------------------------------------

_QUANTITY = re.compile(r"0x[0-9a-fA-F]+")
_DATA = re.compile(r"0x(?:[0-9a-fA-F]{2})*")


class _Fields:
    """A JSON-RPC object read field by field; every error names `where` and the field."""

    def __init__(self, obj: object, where: str) -> None:
        if not isinstance(obj, Mapping):
            raise ProofError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        self.obj: JsonObject = obj
        self.where = where

    def has(self, key: str) -> bool:
        return self.obj.get(key) is not None

    def raw(self, key: str) -> Any:
        value = self.obj.get(key)
        if value is None:
            raise ProofError(f"{self.where}.{key}: missing")
        return value

    def quantity(self, key: str) -> int:
        return _parse_quantity(self.raw(key), f"{self.where}.{key}")

    def data(self, key: str, size: int | None = None) -> bytes:
        return _parse_data(self.raw(key), f"{self.where}.{key}", size)

    def address_or_empty(self, key: str) -> bytes:
        # Contract creation: `to` is null (or absent) and encodes as the empty string.
        return self.data(key, 20) if self.has(key) else b""

    def array(self, key: str) -> list[Any]:
        value = self.raw(key)
        if not isinstance(value, list):
            raise ProofError(f"{self.where}.{key}: expected an array, got {type(value).__name__}")
        return value

    def y_parity(self) -> int:
        # Typed signatures carry yParity; older nodes send only v, which equals it there.
        return self.quantity("yParity") if self.has("yParity") else self.quantity("v")


def _parse_quantity(value: object, where: str) -> int:
    if not isinstance(value, str) or not _QUANTITY.fullmatch(value):
        raise ProofError(f"{where}: not a hex quantity: {value!r:.80}")
    return int(value, 16)


def _parse_data(value: object, where: str, size: int | None = None) -> bytes:
    if not isinstance(value, str) or not _DATA.fullmatch(value):
        raise ProofError(f"{where}: not hex data: {value!r:.80}")
    data = bytes.fromhex(value[2:])
    if size is not None and len(data) != size:
        raise ProofError(f"{where}: expected {size} bytes, got {len(data)}")
    return data


# -- Header -------------------------------------------------------------------------------

_Reader: TypeAlias = Callable[[_Fields, str], RlpItem]


def _quantity(f: _Fields, key: str) -> RlpItem:
    return f.quantity(key)


def _hash32(f: _Fields, key: str) -> RlpItem:
    return f.data(key, 32)


def _data(f: _Fields, key: str) -> RlpItem:
    return f.data(key)


_HEADER_BASE: tuple[tuple[str, _Reader], ...] = (
    ("parentHash", _hash32),
    ("sha3Uncles", _hash32),
    ("miner", lambda f, key: f.data(key, 20)),
    ("stateRoot", _hash32),
    ("transactionsRoot", _hash32),
    ("receiptsRoot", _hash32),
    ("logsBloom", lambda f, key: f.data(key, 256)),
    ("difficulty", _quantity),
    ("number", _quantity),
    ("gasLimit", _quantity),
    ("gasUsed", _quantity),
    ("timestamp", _quantity),
    ("extraData", _data),
)
_HEADER_SEAL: tuple[tuple[str, _Reader], ...] = (
    ("mixHash", _hash32),
    ("nonce", lambda f, key: f.data(key, 8)),
)
# Gnosis before the merge (AuRa): the seal is (step, signature) in place of (mixHash, nonce).
# Erigon names them auraStep/auraSeal, Nethermind step/signature.
_AURA_SEALS: tuple[tuple[tuple[str, _Reader], ...], ...] = (
    (("auraStep", _quantity), ("auraSeal", lambda f, key: f.data(key, 65))),
    (("step", _quantity), ("signature", lambda f, key: f.data(key, 65))),
)
# Fields appended by later forks, in order; each group is all present or all absent, and a
# group may only be present if every earlier one is (a header only ever grows at the end).
_HEADER_FORKS: tuple[tuple[str, tuple[tuple[str, _Reader], ...]], ...] = (
    ("London", (("baseFeePerGas", _quantity),)),
    ("Shanghai", (("withdrawalsRoot", _hash32),)),
    ("Cancun", (("blobGasUsed", _quantity), ("excessBlobGas", _quantity))),
    ("Cancun", (("parentBeaconBlockRoot", _hash32),)),
    ("Prague", (("requestsHash", _hash32),)),
)


def header_fields(block: JsonObject) -> list[RlpItem]:
    """Return the header's RLP fields in consensus order, the fork set chosen by presence."""
    f = _Fields(block, "block")
    fields: list[RlpItem] = [read(f, key) for key, read in _HEADER_BASE]
    seal = next((s for s in _AURA_SEALS if f.has(s[0][0])), _HEADER_SEAL)
    fields.extend(read(f, key) for key, read in seal)
    missing_fork: str | None = None
    for fork, group in _HEADER_FORKS:
        present = [key for key, _ in group if f.has(key)]
        if not present:
            missing_fork = missing_fork or group[0][0]
            continue
        if len(present) != len(group):
            absent = next(key for key, _ in group if not f.has(key))
            raise ProofError(f"block.{absent}: missing ({fork} field {present[0]} is present)")
        if missing_fork is not None:
            raise ProofError(f"block.{present[0]}: present without earlier field {missing_fork}")
        fields.extend(read(f, key) for key, read in group)
    return fields


def header_hash(block: JsonObject) -> bytes:
    """Return keccak256(rlp(header)): the block hash the chain links by."""
    return keccak256(rlp_encode(header_fields(block)))


# -- Transactions -------------------------------------------------------------------------


def _access_list(f: _Fields) -> list[RlpItem]:
    entries: list[RlpItem] = []
    for i, raw in enumerate(f.array("accessList")):
        entry = _Fields(raw, f"{f.where}.accessList[{i}]")
        keys = [
            _parse_data(key, f"{entry.where}.storageKeys[{j}]", 32)
            for j, key in enumerate(entry.array("storageKeys"))
        ]
        entries.append([entry.data("address", 20), keys])
    return entries


def _authorization_list(f: _Fields) -> list[RlpItem]:
    entries: list[RlpItem] = []
    for i, raw in enumerate(f.array("authorizationList")):
        auth = _Fields(raw, f"{f.where}.authorizationList[{i}]")
        entries.append(
            [
                auth.quantity("chainId"),
                auth.data("address", 20),
                auth.quantity("nonce"),
                auth.y_parity(),
                auth.quantity("r"),
                auth.quantity("s"),
            ]
        )
    return entries


def _signature(f: _Fields) -> list[RlpItem]:
    return [f.y_parity(), f.quantity("r"), f.quantity("s")]


def _legacy(f: _Fields) -> list[RlpItem]:
    # v carries the chain id since EIP-155 (v = 2 * chainId + 35 + parity); it is sent as is.
    return [
        f.quantity("nonce"),
        f.quantity("gasPrice"),
        f.quantity("gas"),
        f.address_or_empty("to"),
        f.quantity("value"),
        f.data("input"),
        f.quantity("v"),
        f.quantity("r"),
        f.quantity("s"),
    ]


def _access_list_tx(f: _Fields) -> list[RlpItem]:
    return [
        f.quantity("chainId"),
        f.quantity("nonce"),
        f.quantity("gasPrice"),
        f.quantity("gas"),
        f.address_or_empty("to"),
        f.quantity("value"),
        f.data("input"),
        _access_list(f),
        *_signature(f),
    ]


def _fee_market_head(f: _Fields) -> list[RlpItem]:
    return [
        f.quantity("chainId"),
        f.quantity("nonce"),
        f.quantity("maxPriorityFeePerGas"),
        f.quantity("maxFeePerGas"),
        f.quantity("gas"),
    ]


def _dynamic_fee_tx(f: _Fields) -> list[RlpItem]:
    return [
        *_fee_market_head(f),
        f.address_or_empty("to"),
        f.quantity("value"),
        f.data("input"),
        _access_list(f),
        *_signature(f),
    ]


def _blob_tx(f: _Fields) -> list[RlpItem]:
    hashes = [
        _parse_data(h, f"{f.where}.blobVersionedHashes[{i}]", 32)
        for i, h in enumerate(f.array("blobVersionedHashes"))
    ]
    return [
        *_fee_market_head(f),
        f.data("to", 20),  # a blob transaction cannot create a contract
        f.quantity("value"),
        f.data("input"),
        _access_list(f),
        f.quantity("maxFeePerBlobGas"),
        hashes,
        *_signature(f),
    ]


def _set_code_tx(f: _Fields) -> list[RlpItem]:
    return [
        *_fee_market_head(f),
        f.data("to", 20),  # EIP-7702: no contract creation either
        f.quantity("value"),
        f.data("input"),
        _access_list(f),
        _authorization_list(f),
        *_signature(f),
    ]


def _op_deposit_tx(f: _Fields) -> list[RlpItem]:
    # Deposits are unsigned; v/r/s/nonce in the JSON are not part of the encoding.
    # op-geth omits `mint` when there is none and `isSystemTx` unless it is true.
    mint = f.quantity("mint") if f.has("mint") else 0
    is_system = f.raw("isSystemTx") if f.has("isSystemTx") else False
    if not isinstance(is_system, bool):
        raise ProofError(f"{f.where}.isSystemTx: expected a boolean")
    return [
        f.data("sourceHash", 32),
        f.data("from", 20),
        f.address_or_empty("to"),
        mint,
        f.quantity("value"),
        f.quantity("gas"),
        1 if is_system else 0,
        f.data("input"),
    ]


def _arbitrum_fee_cap(f: _Fields) -> int:
    # Nitro's fee cap is sent as maxFeePerGas where present, else as gasPrice.
    return f.quantity("maxFeePerGas") if f.has("maxFeePerGas") else f.quantity("gasPrice")


def _arbitrum_deposit_tx(f: _Fields) -> list[RlpItem]:
    return [
        f.quantity("chainId"),
        f.data("requestId", 32),
        f.data("from", 20),
        f.data("to", 20),
        f.quantity("value"),
    ]


def _arbitrum_unsigned_tx(f: _Fields) -> list[RlpItem]:
    return [
        f.quantity("chainId"),
        f.data("from", 20),
        f.quantity("nonce"),
        _arbitrum_fee_cap(f),
        f.quantity("gas"),
        f.address_or_empty("to"),
        f.quantity("value"),
        f.data("input"),
    ]


def _arbitrum_contract_tx(f: _Fields) -> list[RlpItem]:
    return [
        f.quantity("chainId"),
        f.data("requestId", 32),
        f.data("from", 20),
        _arbitrum_fee_cap(f),
        f.quantity("gas"),
        f.address_or_empty("to"),
        f.quantity("value"),
        f.data("input"),
    ]


def _arbitrum_retry_tx(f: _Fields) -> list[RlpItem]:
    return [
        f.quantity("chainId"),
        f.quantity("nonce"),
        f.data("from", 20),
        _arbitrum_fee_cap(f),
        f.quantity("gas"),
        f.address_or_empty("to"),
        f.quantity("value"),
        f.data("input"),
        f.data("ticketId", 32),
        f.data("refundTo", 20),
        f.quantity("maxRefund"),
        f.quantity("submissionFeeRefund"),
    ]


def _arbitrum_submit_retryable_tx(f: _Fields) -> list[RlpItem]:
    return [
        f.quantity("chainId"),
        f.data("requestId", 32),
        f.data("from", 20),
        f.quantity("l1BaseFee"),
        f.quantity("depositValue"),
        _arbitrum_fee_cap(f),
        f.quantity("gas"),
        f.address_or_empty("retryTo"),
        f.quantity("retryValue"),
        f.data("beneficiary", 20),
        f.quantity("maxSubmissionFee"),
        f.data("refundTo", 20),
        f.data("retryData") if f.has("retryData") else b"",
    ]


def _arbitrum_internal_tx(f: _Fields) -> list[RlpItem]:
    return [f.quantity("chainId"), f.data("input")]


@dataclass(frozen=True)
class TxType:
    """How one transaction type is encoded, and whether real chain data has confirmed it."""

    name: str
    payload: Callable[[_Fields], list[RlpItem]]
    verified_by: str  # a fixture under tests/data/evm, or "" when no real data was at hand


TX_TYPES: Mapping[int, TxType] = {
    0x00: TxType("legacy (EIP-155 v)", _legacy, "ethereum-1000000"),
    0x01: TxType("EIP-2930 access list", _access_list_tx, "ethereum-19900000"),
    0x02: TxType("EIP-1559 dynamic fee", _dynamic_fee_tx, "ethereum-18000000"),
    0x03: TxType("EIP-4844 blob", _blob_tx, "ethereum-19900000"),
    0x04: TxType("EIP-7702 set code", _set_code_tx, "hive-45"),
    0x64: TxType("Arbitrum deposit", _arbitrum_deposit_tx, ""),
    0x65: TxType("Arbitrum unsigned", _arbitrum_unsigned_tx, ""),
    0x66: TxType("Arbitrum contract", _arbitrum_contract_tx, ""),
    0x68: TxType("Arbitrum retry", _arbitrum_retry_tx, ""),
    0x69: TxType("Arbitrum submit retryable", _arbitrum_submit_retryable_tx, ""),
    0x6A: TxType("Arbitrum internal", _arbitrum_internal_tx, "arbitrum-150000000"),
    0x7E: TxType("OP Stack deposit", _op_deposit_tx, "optimism-154497277"),
}
"""Transaction types by type byte: legacy is bare RLP, every other is `type || rlp(payload)`."""


def _type_of(f: _Fields) -> int:
    # Nodes from before EIP-2718 send no `type`; such a transaction can only be legacy.
    return f.quantity("type") if f.has("type") else 0


def _where_tx(tx: object, index: int | None) -> str:
    label = "transaction" if index is None else f"transactions[{index}]"
    if isinstance(tx, Mapping) and isinstance(tx.get("hash"), str):
        label += f" {tx['hash']}"
    return label


def transaction_envelope(tx: JsonObject, *, index: int | None = None) -> bytes:
    """Return the transaction's consensus encoding: what its hash and the tx trie commit to."""
    f = _Fields(tx, _where_tx(tx, index))
    tx_type = _type_of(f)
    kind = TX_TYPES.get(tx_type)
    if kind is None:
        raise ProofError(f"{f.where}.type: unknown transaction type 0x{tx_type:x}")
    payload = rlp_encode(kind.payload(f))
    return payload if tx_type == 0 else bytes([tx_type]) + payload


def transaction_hash(tx: JsonObject) -> bytes:
    """Return keccak256 of the transaction's envelope: its hash."""
    return keccak256(transaction_envelope(tx))


def transactions_root(transactions: Sequence[JsonObject]) -> bytes:
    """Return the root of the trie of the transactions' envelopes in block order."""
    return ordered_trie_root(
        [transaction_envelope(tx, index=i) for i, tx in enumerate(transactions)]
    )


# -- Receipts, logs, withdrawals ----------------------------------------------------------


def _log_item(log: object, where: str) -> list[RlpItem]:
    f = _Fields(log, where)
    topics: list[RlpItem] = [
        _parse_data(topic, f"{where}.topics[{i}]", 32) for i, topic in enumerate(f.array("topics"))
    ]
    return [f.data("address", 20), topics, f.data("data")]


def logs_bloom(logs: Sequence[JsonObject]) -> bytes:
    """Return the 2048-bit bloom of the logs' addresses and topics (3 bits per entry)."""
    bloom = bytearray(256)
    for i, log in enumerate(logs):
        f = _Fields(log, f"logs[{i}]")
        entries = [f.data("address", 20)]
        entries.extend(
            _parse_data(topic, f"{f.where}.topics[{j}]", 32)
            for j, topic in enumerate(f.array("topics"))
        )
        for entry in entries:
            digest = keccak256(entry)
            for pair in (0, 2, 4):
                bit = ((digest[pair] << 8) | digest[pair + 1]) & 2047
                # Bit 0 is the lowest bit of the LAST byte: the bloom is one big-endian number.
                bloom[255 - bit // 8] |= 1 << (bit % 8)
    return bytes(bloom)


def _where_receipt(receipt: object, index: int | None) -> str:
    label = "receipt" if index is None else f"receipts[{index}]"
    if isinstance(receipt, Mapping) and isinstance(receipt.get("transactionHash"), str):
        label += f" {receipt['transactionHash']}"
    return label


def receipt_envelope(receipt: JsonObject, *, index: int | None = None) -> bytes:
    """Return the receipt's consensus encoding: what the receipts trie commits to.

    Before Byzantium a receipt commits to the post-transaction state `root`, after it to the
    `status`. OP Stack deposit receipts add `depositNonce` (Regolith) and
    `depositReceiptVersion` (Canyon) when the node sends them.
    """
    f = _Fields(receipt, _where_receipt(receipt, index))
    tx_type = _type_of(f)
    if not f.has("status") and not f.has("root"):
        raise ProofError(f"{f.where}.status: missing (and no pre-Byzantium root)")
    outcome: RlpItem = f.quantity("status") if f.has("status") else f.data("root", 32)
    logs: list[RlpItem] = [
        _log_item(log, f"{f.where}.logs[{i}]") for i, log in enumerate(f.array("logs"))
    ]
    fields: list[RlpItem] = [outcome, f.quantity("cumulativeGasUsed"), f.data("logsBloom", 256)]
    fields.append(logs)
    if tx_type == 0x7E and f.has("depositNonce"):
        fields.append(f.quantity("depositNonce"))
        if f.has("depositReceiptVersion"):
            fields.append(f.quantity("depositReceiptVersion"))
    payload = rlp_encode(fields)
    return payload if tx_type == 0 else bytes([tx_type]) + payload


def receipts_root(receipts: Sequence[JsonObject]) -> bytes:
    """Return the root of the trie of the receipts' envelopes in block order."""
    return ordered_trie_root([receipt_envelope(r, index=i) for i, r in enumerate(receipts)])


def withdrawals_root(withdrawals: Sequence[JsonObject]) -> bytes:
    """Return the root of the trie of rlp([index, validatorIndex, address, amount])."""
    items = []
    for i, raw in enumerate(withdrawals):
        f = _Fields(raw, f"withdrawals[{i}]")
        item: list[RlpItem] = [f.quantity("index"), f.quantity("validatorIndex")]
        item += [f.data("address", 20), f.quantity("amount")]
        items.append(rlp_encode(item))
    return ordered_trie_root(items)


def state_sync_tx_hash(block: JsonObject) -> bytes:
    """Return the hash Bor gives a block's state-sync pseudo-transaction.

    keccak256("matic-bor-receipt-" || uint64 big-endian number || block hash).
    """
    f = _Fields(block, "block")
    key = b"matic-bor-receipt-" + f.quantity("number").to_bytes(8, "big") + f.data("hash", 32)
    return keccak256(key)
