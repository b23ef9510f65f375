"""The consensus encodings of EVM objects, as data: which JSON fields, in which order, how.

Each layout compiles to an `indexer._proof.Layout` that encodes an object straight from a
JSON-RPC answer (dict or msgspec struct) in C. The rules are Ethereum's (and the chains'
in `evm_proof.QUIRKS`); `indexer.chain.evm_encoding` states the same rules in plain Python,
and tests hold the two to equal encodings on real blocks and random ones.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Final

from indexer import _proof

# Op kinds, as indexer/_proof.c numbers them.
QTY, DATA, ADDR_OR_EMPTY, ACCESS_LIST, AUTH_LIST, HEX_LIST = 1, 2, 3, 4, 5, 6
QTY_OR_ZERO, BOOL_INT, QTY_OR_ALT, DATA_OR_EMPTY, LOGS, STATUS_OR_ROOT = 7, 8, 9, 10, 11, 12

Op = tuple[int, str, str | None, int]


def _q(key: str) -> Op:
    return (QTY, key, None, -1)


def _d(key: str, size: int = -1) -> Op:
    return (DATA, key, None, size)


HEADER_BASE: Final[tuple[Op, ...]] = (
    _d("parentHash", 32),
    _d("sha3Uncles", 32),
    _d("miner", 20),
    _d("stateRoot", 32),
    _d("transactionsRoot", 32),
    _d("receiptsRoot", 32),
    _d("logsBloom", 256),
    _q("difficulty"),
    _q("number"),
    _q("gasLimit"),
    _q("gasUsed"),
    _q("timestamp"),
    _d("extraData"),
)
HEADER_SEAL: Final[tuple[Op, ...]] = (_d("mixHash", 32), _d("nonce", 8))
AURA_SEAL: Final[tuple[Op, ...]] = (_q("auraStep"), _d("auraSeal", 65))
# Fields later forks append, in order; each group is all present or all absent, and only
# after every earlier group (a header only grows at the end).
HEADER_FORKS: Final[tuple[tuple[Op, ...], ...]] = (
    (_q("baseFeePerGas"),),  # London
    (_d("withdrawalsRoot", 32),),  # Shanghai
    (_q("blobGasUsed"), _q("excessBlobGas")),  # Cancun
    (_d("parentBeaconBlockRoot", 32),),  # Cancun
    (_d("requestsHash", 32),),  # Prague
)


@functools.cache
def header(forks: int, *, aura: bool) -> _proof.Layout:
    """The header layout with the first `forks` fork groups (and the AuRa seal if `aura`)."""
    ops = [*HEADER_BASE, *(AURA_SEAL if aura else HEADER_SEAL)]
    for group in HEADER_FORKS[:forks]:
        ops.extend(group)
    return _proof.Layout(ops)


_Y_PARITY: Final = (QTY_OR_ALT, "yParity", "v", -1)  # older answers send only v
_SIGNATURE: Final = (_Y_PARITY, _q("r"), _q("s"))
_TO: Final = (ADDR_OR_EMPTY, "to", None, -1)
_ACCESS: Final = (ACCESS_LIST, "accessList", None, -1)
_FEE_HEAD: Final = (
    _q("chainId"), _q("nonce"), _q("maxPriorityFeePerGas"), _q("maxFeePerGas"), _q("gas"),
)  # fmt: skip
_ARB_FEE_CAP: Final = (QTY_OR_ALT, "maxFeePerGas", "gasPrice", -1)

TRANSACTIONS: Final[dict[int, Sequence[Op]]] = {
    0x00: (_q("nonce"), _q("gasPrice"), _q("gas"), _TO, _q("value"), _d("input"),
           _q("v"), _q("r"), _q("s")),
    0x01: (_q("chainId"), _q("nonce"), _q("gasPrice"), _q("gas"), _TO, _q("value"),
           _d("input"), _ACCESS, *_SIGNATURE),
    0x02: (*_FEE_HEAD, _TO, _q("value"), _d("input"), _ACCESS, *_SIGNATURE),
    0x03: (*_FEE_HEAD, _d("to", 20), _q("value"), _d("input"), _ACCESS,
           _q("maxFeePerBlobGas"), (HEX_LIST, "blobVersionedHashes", None, -1), *_SIGNATURE),
    0x04: (*_FEE_HEAD, _d("to", 20), _q("value"), _d("input"), _ACCESS,
           (AUTH_LIST, "authorizationList", None, -1), *_SIGNATURE),
    0x7E: (_d("sourceHash", 32), _d("from", 20), _TO, (QTY_OR_ZERO, "mint", None, -1),
           _q("value"), _q("gas"), (BOOL_INT, "isSystemTx", None, -1), _d("input")),
    0x64: (_q("chainId"), _d("requestId", 32), _d("from", 20), _d("to", 20), _q("value")),
    0x65: (_q("chainId"), _d("from", 20), _q("nonce"), _ARB_FEE_CAP, _q("gas"), _TO,
           _q("value"), _d("input")),
    0x66: (_q("chainId"), _d("requestId", 32), _d("from", 20), _ARB_FEE_CAP, _q("gas"), _TO,
           _q("value"), _d("input")),
    0x68: (_q("chainId"), _q("nonce"), _d("from", 20), _ARB_FEE_CAP, _q("gas"), _TO,
           _q("value"), _d("input"), _d("ticketId", 32), _d("refundTo", 20), _q("maxRefund"),
           _q("submissionFeeRefund")),
    0x69: (_q("chainId"), _d("requestId", 32), _d("from", 20), _q("l1BaseFee"),
           _q("depositValue"), _ARB_FEE_CAP, _q("gas"), (ADDR_OR_EMPTY, "retryTo", None, -1),
           _q("retryValue"), _d("beneficiary", 20), _q("maxSubmissionFee"),
           _d("refundTo", 20), (DATA_OR_EMPTY, "retryData", None, -1)),
    0x6A: (_q("chainId"), _d("input")),
}  # fmt: skip
"""Transaction payloads by type: legacy is bare RLP, every other `type || rlp(payload)`."""

TX_LAYOUTS: Final[dict[int, _proof.Layout]] = {
    t: _proof.Layout(ops, type_byte=-1 if t == 0 else t) for t, ops in TRANSACTIONS.items()
}

_RECEIPT: Final = (
    (STATUS_OR_ROOT, "status", "root", -1), _q("cumulativeGasUsed"), _d("logsBloom", 256),
    (LOGS, "logs", None, -1),
)  # fmt: skip


@functools.cache
def receipt(tx_type: int, *, deposit_nonce: bool, deposit_version: bool) -> _proof.Layout:
    """A receipt's layout; OP Stack deposit receipts add depositNonce and its version."""
    ops = list(_RECEIPT)
    if tx_type == 0x7E and deposit_nonce:
        ops.append(_q("depositNonce"))
        if deposit_version:
            ops.append(_q("depositReceiptVersion"))
    return _proof.Layout(ops, type_byte=-1 if tx_type == 0 else tx_type)


# The layouts by the `type` string as nodes spell it (canonical hex; no type: legacy), for
# `_proof.encoded_root`; any other spelling goes through `transaction_of`/`receipt_of`. An
# OP Stack deposit's receipt layout depends on more than its type: never in the dict.
TX_BY_TYPE: Final[dict[str | None, _proof.Layout]] = {
    None: TX_LAYOUTS[0],
    **{hex(t): layout for t, layout in TX_LAYOUTS.items()},
}
RECEIPT_BY_TYPE: Final[dict[str | None, _proof.Layout]] = {
    None: receipt(0, deposit_nonce=False, deposit_version=False),
    **{
        hex(t): receipt(t, deposit_nonce=False, deposit_version=False)
        for t in TX_LAYOUTS
        if t != 0x7E
    },
}

WITHDRAWAL: Final = _proof.Layout(
    (_q("index"), _q("validatorIndex"), _d("address", 20), _q("amount"))
)


def _get(obj: object, key: str) -> object:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def header_of(block: object) -> _proof.Layout:
    """The header layout of `block`, its fork chosen by which fields it has."""
    forks = 0
    for group in HEADER_FORKS:
        if _get(block, group[0][1]) is None:
            break
        forks += 1
    return header(forks, aura=_get(block, "auraStep") is not None)


def transaction_of(tx: object) -> _proof.Layout:
    """The layout of the transaction's type; ValueError for a type we cannot encode."""
    tx_type = _get(tx, "type")
    number = 0 if tx_type is None else _type_number(tx_type)
    layout = TX_LAYOUTS.get(number)
    if layout is None:
        raise ValueError(f"type: transaction type 0x{number:x} has no known encoding")
    return layout


def receipt_of(item: object) -> _proof.Layout:
    tx_type = _get(item, "type")
    return receipt(
        0 if tx_type is None else _type_number(tx_type),
        deposit_nonce=_get(item, "depositNonce") is not None,
        deposit_version=_get(item, "depositReceiptVersion") is not None,
    )


def _type_number(value: object) -> int:
    if not isinstance(value, str) or not value.startswith("0x") or not 3 <= len(value) <= 4:
        raise ValueError(f"type: {value!r:.20} is not a transaction type")
    return int(value, 16)
