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

from indexer import _proof
from indexer.chain import evm_encoding, evm_layouts, evm_rows

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


@pytest.mark.parametrize("name", NAMES)
def test_transactions_encode_as_the_reference_does(name: str) -> None:
    block = _load(name, "block.json")
    txs = [tx for tx in block["transactions"] if isinstance(tx, dict)]
    decoded: Any = msgspec.convert(block, evm_rows._Block) if txs else None
    structs = decoded.transactions if txs else []
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
