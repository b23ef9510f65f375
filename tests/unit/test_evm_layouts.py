"""The C layouts (`evm_layouts`, `_proof.Layout`) encode real blocks exactly as the pure-Python
reference (`evm_encoding`) does: headers hash to the block hash, transactions to their
hashes, receipts and withdrawals to the envelopes whose tries are the header's roots; from
the JSON dicts (the checked path) and from the fast path's msgspec structs alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer import _proof
from indexer.chain import evm_encoding, evm_layouts, evm_rows, evm_verify

DATA = Path(__file__).parent.parent / "data" / "evm"
NAMES = sorted(p.name for p in DATA.iterdir() if (p / "block.json").exists())


def _load(name: str, file: str) -> Any:
    path = DATA / name / file
    return json.loads(path.read_text()) if path.exists() else None


@pytest.mark.parametrize("name", NAMES)
def test_headers_hash_to_the_block_hash(name: str) -> None:
    block = _load(name, "block.json")
    digest = evm_layouts.header_of(block).hash(block)
    assert digest == evm_encoding.header_hash(block)
    assert digest.hex() == block["hash"][2:]


def _trie_transactions(name: str, block: dict[str, Any]) -> list[dict[str, Any]]:
    """The block's full transactions less Bor's state-sync transaction (Polygon: listed last,
    its hash the state-sync formula's), which has no envelope and is in no trie."""
    txs = [tx for tx in block["transactions"] if isinstance(tx, dict)]
    system = evm_verify.system_tx_hash("polygon", block["number"], block["hash"])
    return (
        txs[:-1] if name.startswith("polygon-") and evm_verify.lists_system_tx(txs, system) else txs
    )


@pytest.mark.parametrize("name", NAMES)
def test_transactions_encode_as_the_reference_does(name: str) -> None:
    block = _load(name, "block.json")
    txs = _trie_transactions(name, block)
    decoded: Any = msgspec.convert(block, evm_rows._Block) if txs else None
    structs = decoded.transactions[: len(txs)] if txs else []
    envelopes = []
    for tx, struct in zip(txs, structs, strict=True):
        want = evm_encoding.transaction_envelope(tx)
        layout = evm_layouts.transaction_of(tx)
        assert layout.encode(tx) == want
        assert layout.encode(struct) == want
        assert layout.hash(struct).hex() == tx["hash"][2:]
        envelopes.append(want)
    if txs:
        assert _proof.ordered_trie_root(envelopes).hex() == block["transactionsRoot"][2:]


@pytest.mark.parametrize("name", NAMES)
def test_receipts_and_withdrawals_encode_as_the_reference_does(name: str) -> None:
    block = _load(name, "block.json")
    receipts = _load(name, "receipts.json")
    for receipt in receipts or []:
        layout = evm_layouts.receipt_of(receipt)
        assert layout.encode(receipt) == evm_encoding.receipt_envelope(receipt)
        struct = msgspec.convert(receipt, evm_rows._Receipt)
        assert layout.encode(struct) == evm_encoding.receipt_envelope(receipt)
    withdrawals = block.get("withdrawals")
    if withdrawals is not None:
        items = [evm_layouts.WITHDRAWAL.encode(w) for w in withdrawals]
        assert _proof.ordered_trie_root(items) == evm_encoding.withdrawals_root(withdrawals)


def test_a_changed_field_changes_the_hash() -> None:
    block = _load("ethereum-19900000", "block.json")
    tx = next(t for t in block["transactions"] if t["type"] == "0x3")
    layout = evm_layouts.transaction_of(tx)
    for key in ("value", "maxFeePerBlobGas", "input", "nonce"):
        changed = {**tx, key: "0x" + "1" * 2}
        assert layout.hash(changed).hex() != tx["hash"][2:], key
    with pytest.raises(ValueError, match="blobVersionedHashes: missing"):
        layout.encode({k: v for k, v in tx.items() if k != "blobVersionedHashes"})
    with pytest.raises(ValueError, match="to: wrong length"):
        layout.encode({**tx, "to": "0x12"})


# -- Random objects of every shape: the C layouts and the Python reference agree


def _qty() -> st.SearchStrategy[str]:
    return st.integers(0, 2**256 - 1).map(hex)


def _data(size: int | None = None) -> st.SearchStrategy[str]:
    sizes = st.just(size) if size is not None and size >= 0 else st.integers(0, 70)
    return sizes.flatmap(lambda n: st.binary(min_size=n, max_size=n)).map(lambda b: "0x" + b.hex())


_ACCESS = st.lists(
    st.fixed_dictionaries({"address": _data(20), "storageKeys": st.lists(_data(32), max_size=3)}),
    max_size=3,
)
_AUTH = st.lists(
    st.fixed_dictionaries(
        {"chainId": _qty(), "address": _data(20), "nonce": _qty(),
         "yParity": st.sampled_from(["0x0", "0x1"]), "r": _qty(), "s": _qty()}
    ),
    max_size=2,
)  # fmt: skip
_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "nonce": _qty(), "gasPrice": _qty(), "gas": _qty(), "to": st.one_of(st.none(), _data(20)),
    "value": _qty(), "input": _data(), "v": _qty(), "r": _qty(), "s": _qty(), "chainId": _qty(),
    "yParity": st.sampled_from(["0x0", "0x1"]), "maxPriorityFeePerGas": _qty(),
    "maxFeePerGas": _qty(), "maxFeePerBlobGas": _qty(), "accessList": _ACCESS,
    "authorizationList": _AUTH, "blobVersionedHashes": st.lists(_data(32), max_size=3),
    "sourceHash": _data(32), "from": _data(20), "mint": st.one_of(st.none(), _qty()),
    "isSystemTx": st.one_of(st.none(), st.booleans()), "requestId": _data(32),
    "ticketId": _data(32), "refundTo": _data(20), "maxRefund": _qty(),
    "submissionFeeRefund": _qty(), "l1BaseFee": _qty(), "depositValue": _qty(),
    "retryTo": st.one_of(st.none(), _data(20)), "retryValue": _qty(),
    "retryData": _data(), "beneficiary": _data(20), "maxSubmissionFee": _qty(),
}  # fmt: skip


@st.composite
def transactions(draw: st.DrawFn) -> dict[str, Any]:
    tx_type = draw(st.sampled_from(sorted(evm_layouts.TRANSACTIONS)))
    tx = {key: draw(strategy) for key, strategy in _FIELDS.items()}
    if tx_type in (3, 4, 0x64):
        tx["to"] = draw(_data(20))  # these types cannot create a contract
    tx = {k: v for k, v in tx.items() if v is not None}
    tx["type"] = hex(tx_type)
    return tx


@settings(max_examples=600, deadline=None)
@given(transactions())
def test_random_transactions_encode_as_the_reference_does(tx: dict[str, Any]) -> None:
    assert evm_layouts.transaction_of(tx).encode(tx) == evm_encoding.transaction_envelope(tx)


_LOG = st.fixed_dictionaries(
    {"address": _data(20), "topics": st.lists(_data(32), max_size=4), "data": _data()}
)


@st.composite
def receipts(draw: st.DrawFn) -> dict[str, Any]:
    receipt: dict[str, Any] = {
        "type": hex(draw(st.sampled_from([0, 1, 2, 3, 4, 0x7E, 0x6A]))),
        "cumulativeGasUsed": draw(_qty()),
        "logsBloom": draw(_data(256)),
        "logs": draw(st.lists(_LOG, max_size=4)),
    }
    if draw(st.booleans()):
        receipt["status"] = draw(st.sampled_from(["0x0", "0x1"]))
    else:
        receipt["root"] = draw(_data(32))
    if receipt["type"] == "0x7e" and draw(st.booleans()):
        receipt["depositNonce"] = draw(_qty())
        if draw(st.booleans()):
            receipt["depositReceiptVersion"] = "0x1"
    return receipt


@settings(max_examples=600, deadline=None)
@given(receipts())
def test_random_receipts_encode_as_the_reference_does(receipt: dict[str, Any]) -> None:
    assert evm_layouts.receipt_of(receipt).encode(receipt) == evm_encoding.receipt_envelope(receipt)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 5), st.booleans(), st.data())
def test_random_headers_hash_as_the_reference_does(
    forks: int, aura: bool, data: st.DataObject
) -> None:
    header = {key: data.draw(_data(size)) if kind == evm_layouts.DATA else data.draw(_qty())
              for kind, key, _, size in evm_layouts.HEADER_BASE}  # fmt: skip
    seal = evm_layouts.AURA_SEAL if aura else evm_layouts.HEADER_SEAL
    for group in (seal, *evm_layouts.HEADER_FORKS[:forks]):
        for kind, key, _, size in group:
            header[key] = data.draw(_data(size)) if kind == evm_layouts.DATA else data.draw(_qty())
    assert evm_layouts.header_of(header).hash(header) == evm_encoding.header_hash(header)


# -- A block's lists in one C call (`_proof.encoded_root`, `_proof.receipts_bloom`), as the
# verifier makes them, against the reference: the same roots, the same first wrong item.


@settings(max_examples=300, deadline=None)
@given(st.lists(transactions(), max_size=40), st.data())
def test_a_blocks_transactions_root_and_hashes_equal_the_reference(
    txs: list[dict[str, Any]], data: st.DataObject
) -> None:
    for tx in txs:
        tx["hash"] = "0x" + evm_encoding.transaction_hash(tx).hex()
        if data.draw(st.booleans()):
            tx["hash"] = tx["hash"].upper().replace("0X", "0x")  # case does not matter
    wrong = data.draw(st.sets(st.integers(0, max(len(txs) - 1, 0))) if txs else st.just(set()))
    for index in wrong:
        txs[index]["hash"] = data.draw(st.sampled_from([None, "0x" + "00" * 32, "0xzz", 7]))
    root, bad = _proof.encoded_root(txs, evm_layouts.TX_BY_TYPE, evm_layouts.transaction_of, "hash")
    assert root == evm_encoding.transactions_root(txs)
    assert bad == (min(wrong) if wrong else -1)


@settings(max_examples=300, deadline=None)
@given(st.lists(receipts(), max_size=30), st.data())
def test_a_blocks_receipts_root_and_blooms_equal_the_reference(
    items: list[dict[str, Any]], data: st.DataObject
) -> None:
    block = bytearray(256)
    for receipt in items:
        bloom = evm_encoding.logs_bloom(receipt["logs"])
        receipt["logsBloom"] = "0x" + bloom.hex()
        block = bytearray(a | b for a, b in zip(block, bloom, strict=True))
    wrong = data.draw(st.sets(st.integers(0, max(len(items) - 1, 0))) if items else st.just(set()))
    for index in wrong:
        items[index]["logsBloom"] = "0x" + "ff" * 256
    root, _ = _proof.encoded_root(items, evm_layouts.RECEIPT_BY_TYPE, evm_layouts.receipt_of)
    assert root == evm_encoding.receipts_root(items)
    union, bad = _proof.receipts_bloom(items)
    assert bad == (min(wrong) if wrong else -1)
    if not wrong:
        assert union == bytes(block)


def test_encoded_root_names_what_it_cannot_encode() -> None:
    tx = {"type": "0x99", "hash": "0x" + "00" * 32}
    with pytest.raises(ValueError, match="0x99"):
        _proof.encoded_root([tx], evm_layouts.TX_BY_TYPE, evm_layouts.transaction_of, "hash")
    with pytest.raises(ValueError, match="type"):  # an unhashable type: layout_of says
        _proof.encoded_root([{"type": []}], evm_layouts.TX_BY_TYPE, evm_layouts.transaction_of)
    with pytest.raises(TypeError, match="Layout"):
        _proof.encoded_root([{}], {None: "not a layout"})  # type: ignore[dict-item]
    assert _proof.encoded_root([], evm_layouts.WITHDRAWAL) == (_proof.ordered_trie_root([]), -1)
