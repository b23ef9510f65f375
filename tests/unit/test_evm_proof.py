"""The EVM verification rules (`indexer.chain.evm_proof`) against real chain data.

Fixtures are real JSON-RPC answers from public repositories: tests/data/evm/<chain>-<number>/
(ORIGINS.md says where each file comes from). `LEVELS` states, per fixture, exactly which
checks it verifies; a check a fixture cannot verify is either absent data (no receipts, hashes
instead of full transactions, no withdrawals before Shanghai) or a quirk in
`evm_proof.QUIRKS`, and `test_fixture_verifies_at_its_documented_level` fails if either
changes. Nothing here is skipped.

Independent oracles: the `rlp` package for RLP, `eth_utils.keccak` and a naive trie written
from the Yellow Paper definition below for the trie, and the roots, hashes and blooms the
chains themselves committed to.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import rlp  # type: ignore[import-untyped]
from eth_utils.crypto import keccak as eth_keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.chain import evm_proof
from indexer.chain.evm_proof import Check, ProofError, ProofMismatch
from indexer.chain.mpt import RlpError

DATA = Path(__file__).resolve().parent.parent / "data" / "evm"

BLOCK_ONLY = frozenset({Check.HEADER_HASH, Check.TRANSACTION_HASHES, Check.TRANSACTIONS_ROOT})
RECEIPT_CHECKS = frozenset({Check.RECEIPTS_ROOT, Check.LOGS_BLOOM, Check.RECEIPT_BLOOMS})
FULL = BLOCK_ONLY | RECEIPT_CHECKS
WITHDRAWALS = frozenset({Check.WITHDRAWALS_ROOT})
ARBITRUM = frozenset({Check.ARBITRUM_HEADER_INFO})

# fixture -> (chain rules, the checks it verifies). Why a check is missing is in the comment
# and, for quirks, in evm_proof.QUIRKS; test_fixture_verifies_at_its_documented_level holds
# the verifier to it.
LEVELS: dict[str, tuple[str, frozenset[Check]]] = {
    # Frontier-era block; receipts commit to the post-state root.
    "ethereum-1000000": ("ethereum", FULL),
    # Last block before Byzantium: receipts still commit to `root`.
    "ethereum-4369999": ("ethereum", FULL),
    # Byzantium era (after 4,370,000, before Constantinople): receipts with `status` (three
    # failed, two creations) and one uncle; the source has transaction hashes only.
    "ethereum-6008149": ("ethereum", frozenset({Check.HEADER_HASH}) | RECEIPT_CHECKS),
    # Paris, two weeks after the merge: 0x1 transactions and two contract creations.
    "ethereum-15573637": ("ethereum", FULL),
    # London, before Shanghai; no receipts were found for it.
    "ethereum-16000000": ("ethereum", BLOCK_ONLY),
    # Paris (after the merge, before Shanghai), with its receipts.
    "ethereum-17000000": ("ethereum", FULL),
    # Shanghai: withdrawals.
    "ethereum-18000000": ("ethereum", FULL | WITHDRAWALS),
    "ethereum-18500000": ("ethereum", FULL | WITHDRAWALS),
    # Cancun with type-1 and type-3 (blob) transactions; no receipts were found for it.
    "ethereum-19900000": ("ethereum", BLOCK_ONLY | WITHDRAWALS),
    # Cancun, a week after Dencun, with their receipts: type-0x1 transactions (19433902) and
    # three type-0x3 blob transactions whose receipts carry blobGasUsed/blobGasPrice (19433903).
    "ethereum-19433902": ("ethereum", FULL | WITHDRAWALS),
    "ethereum-19433903": ("ethereum", FULL | WITHDRAWALS),
    # Prague on mainnet, as Tenderly's node answers it: 0x3 (blob) and 0x4 (set-code, no
    # yParity beside v) transactions among 0x0/0x2; no receipts were found for it.
    "ethereum-22431088": ("ethereum", BLOCK_ONLY | WITHDRAWALS),
    # Cancun; the source has transaction hashes only, with full receipts.
    "ethereum-21925176": (
        "ethereum",
        frozenset({Check.HEADER_HASH}) | RECEIPT_CHECKS | WITHDRAWALS,
    ),
    # Gnosis before the merge: AuRa seal (quirk gnosis-aura-seal); no receipts found.
    "gnosis-20000000": ("gnosis", BLOCK_ONLY),
    # Gnosis after the merge, before and after Shapella, and with Prague's requestsHash.
    "gnosis-29000000": ("gnosis", BLOCK_ONLY),
    "gnosis-35000000": ("gnosis", BLOCK_ONLY | WITHDRAWALS),
    "gnosis-40000000": ("gnosis", BLOCK_ONLY | WITHDRAWALS),
    # Hive test chain (execution-apis), not mainnet: Cancun and Prague fork blocks, headers
    # with tx hashes; their blob and set-code transactions are checked one by one below.
    "hive-42": ("ethereum", frozenset({Check.HEADER_HASH}) | WITHDRAWALS),
    "hive-45": ("ethereum", frozenset({Check.HEADER_HASH}) | WITHDRAWALS),
    # Hive test chain head: Prague header (requestsHash) with full body and receipts.
    "hive-54": ("ethereum", FULL | WITHDRAWALS),
    # Another hive chain (erigon rpc-tests), Prague: a full block with a type-0x4 (set-code)
    # transaction among 0x0/0x1/0x2; no receipts were found for it.
    "hive-rpctests-45": ("ethereum", BLOCK_ONLY | WITHDRAWALS),
    # OP Mainnet after Isthmus with a deposit: withdrawalsRoot is off (op-isthmus quirk).
    "optimism-154497277": ("optimism", FULL),
    # Arbitrum Nitro (One and Sepolia) with internal (0x6a) transactions.
    "arbitrum-150000000": ("arbitrum", FULL | ARBITRUM),
    "arbitrum-sepolia-185232421": ("arbitrum", FULL | ARBITRUM),
    # Polygon PoS; this block carries no state-sync receipt (see the synthetic test below).
    "polygon-50000000": ("polygon", FULL),
    # Polygon PoS before its London fork (no baseFeePerGas); per-transaction receipts.
    "polygon-9013760": ("polygon", FULL),
    # Polygon PoS with a state sync, as Bor serves it: the state-sync transaction appended
    # last to `transactions` (in no trie); its receipt alone was found, not the others'.
    "polygon-63481232": ("polygon", BLOCK_ONLY),
    # BSC mainnet (Parlia): Ethereum's encodings. Before Shanghai (legacy transactions only),
    # and after Maxwell (requestsHash, empty withdrawals, a blob transaction); no receipts.
    "bsc-31300324": ("ethereum", BLOCK_ONLY),
    "bsc-58054314": ("ethereum", BLOCK_ONLY | WITHDRAWALS),
}


@cache
def _load(path: str) -> Any:
    return json.loads((DATA / path).read_text())


def block(name: str) -> dict[str, Any]:
    # A deep copy: tests mutate what they get.
    return copy.deepcopy(_load(f"{name}/block.json"))


def receipts(name: str) -> list[dict[str, Any]] | None:
    if not (DATA / name / "receipts.json").exists():
        return None
    loaded: list[dict[str, Any]] = copy.deepcopy(_load(f"{name}/receipts.json"))
    return loaded


def has_full_transactions(name: str) -> bool:
    return all(isinstance(tx, dict) for tx in block(name)["transactions"])


def trie_transactions(name: str) -> list[dict[str, Any]]:
    """The transactions the block's transactionsRoot commits to: on Polygon, all but Bor's
    state-sync transaction, which Bor lists last (its hash is the state-sync formula's)."""
    b = block(name)
    txs: list[dict[str, Any]] = b["transactions"]
    if LEVELS[name][0] == "polygon" and txs:
        if txs[-1]["hash"] == h(evm_proof.state_sync_tx_hash(b)):
            return txs[:-1]
    return txs


FIXTURES = sorted(LEVELS)
WITH_RECEIPTS = [n for n in FIXTURES if (DATA / n / "receipts.json").exists()]
WITH_FULL_TXS = [n for n in FIXTURES if has_full_transactions(n)]
WITH_WITHDRAWALS = [n for n in FIXTURES if block(n).get("withdrawals") is not None]


def h(data: bytes) -> str:
    return "0x" + data.hex()


def consensus(name: str) -> list[Mapping[str, Any]]:
    got = receipts(name)
    assert got is not None
    return evm_proof.consensus_receipts(block(name), got, chain=LEVELS[name][0])


# -- every fixture, every rule ------------------------------------------------------------


def test_every_fixture_directory_is_classified():
    on_disk = {p.parent.name for p in DATA.glob("*/block.json")}
    assert on_disk == set(LEVELS)


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_verifies_at_its_documented_level(name):
    chain, level = LEVELS[name]
    plan = evm_proof.verify_block(block(name), receipts(name), chain=chain)
    assert set(plan.run) == level
    quirk_names = {q.name for q in evm_proof.QUIRKS}
    for check, reason in plan.skipped.items():
        assert check not in level
        # Every check not run is explained: missing data, or a quirk from the table.
        if reason.startswith("quirk "):
            assert reason.removeprefix("quirk ") in quirk_names


@pytest.mark.parametrize("name", FIXTURES)
def test_header_hash(name):
    b = block(name)
    assert h(evm_proof.header_hash(b)) == b["hash"]


@pytest.mark.parametrize("name", WITH_FULL_TXS)
def test_transaction_hashes(name):
    txs = trie_transactions(name)
    assert [h(evm_proof.transaction_hash(tx)) for tx in txs] == [tx["hash"] for tx in txs]


@pytest.mark.parametrize("name", WITH_FULL_TXS)
def test_transactions_root(name):
    b = block(name)
    assert h(evm_proof.transactions_root(trie_transactions(name))) == b["transactionsRoot"]


@pytest.mark.parametrize("name", WITH_RECEIPTS)
def test_receipts_root(name):
    assert h(evm_proof.receipts_root(consensus(name))) == block(name)["receiptsRoot"]


@pytest.mark.parametrize("name", WITH_RECEIPTS)
def test_block_logs_bloom_is_the_bloom_of_all_receipts_logs(name):
    logs = [log for r in consensus(name) for log in r["logs"]]
    assert h(evm_proof.logs_bloom(logs)) == block(name)["logsBloom"]


@pytest.mark.parametrize("name", WITH_RECEIPTS)
def test_each_receipts_bloom_is_the_bloom_of_its_logs(name):
    for r in consensus(name):
        assert h(evm_proof.logs_bloom(r["logs"])) == r["logsBloom"]


@pytest.mark.parametrize("name", WITH_RECEIPTS)
def test_receipts_follow_the_blocks_transactions(name):
    # The receipts the roots are computed over are the block's transactions' receipts.
    b = block(name)
    hashes = [tx if isinstance(tx, str) else tx["hash"] for tx in b["transactions"]]
    assert [r["transactionHash"] for r in consensus(name)] == hashes


@pytest.mark.parametrize("name", WITH_WITHDRAWALS)
def test_withdrawals_root(name):
    b = block(name)
    chain = LEVELS[name][0]
    computed = h(evm_proof.withdrawals_root(b["withdrawals"]))
    plan = evm_proof.plan_checks(b, None, chain=chain)
    if Check.WITHDRAWALS_ROOT in plan.run:
        assert computed == b["withdrawalsRoot"]
    else:
        # The documented exception: on OP Stack after Isthmus the header field is a storage
        # root, so the list's root (the empty root here) must NOT match it.
        assert plan.skipped[Check.WITHDRAWALS_ROOT] == "quirk op-isthmus-withdrawals-root"
        assert b["withdrawals"] == []
        assert computed == h(evm_proof.EMPTY_TRIE_ROOT) != b["withdrawalsRoot"]


# -- single transactions of types no full fixture carries (hive test chain) ------------------


@pytest.mark.parametrize(
    ("name", "kind", "tx_type"), [("hive-42", "blob", 0x03), ("hive-45", "setcode", 0x04)]
)
def test_hive_single_transaction_and_receipt(name, kind, tx_type):
    tx = _load(f"{name}/transaction-{kind}.json")
    receipt = _load(f"{name}/receipt-{kind}.json")
    b = block(name)
    envelope = evm_proof.transaction_envelope(tx)
    assert envelope[0] == tx_type
    assert h(evm_proof.transaction_hash(tx)) == tx["hash"]
    assert tx["hash"] in b["transactions"]
    assert tx["blockHash"] == receipt["blockHash"] == b["hash"]
    assert evm_proof.receipt_envelope(receipt)[0] == tx_type
    assert h(evm_proof.logs_bloom(receipt["logs"])) == receipt["logsBloom"]


def test_a_full_block_verifies_its_set_code_transaction():
    # hive-rpctests-45 has full transactions: the type-0x4 one is in the roots it verifies.
    b = block("hive-rpctests-45")
    setcode = [tx for tx in b["transactions"] if tx["type"] == "0x4"]
    assert len(setcode) == 1 and setcode[0]["authorizationList"]
    assert evm_proof.transaction_envelope(setcode[0])[0] == 0x04
    plan = evm_proof.verify_block(b, chain="ethereum")
    assert {Check.TRANSACTION_HASHES, Check.TRANSACTIONS_ROOT} <= set(plan.run)


def test_every_transaction_type_claimed_verified_is_in_its_fixture():
    for tx_type, kind in evm_proof.TX_TYPES.items():
        if not kind.verified_by:
            continue
        name = kind.verified_by
        txs = [tx for tx in block(name)["transactions"] if isinstance(tx, dict)]
        for path in (DATA / name).glob("transaction-*.json"):
            txs.append(_load(f"{name}/{path.name}"))
        typed = [tx for tx in txs if int(tx.get("type", "0x0"), 16) == tx_type]
        assert typed, f"{name} has no transaction of type 0x{tx_type:x}"
        assert all(h(evm_proof.transaction_hash(tx)) == tx["hash"] for tx in typed)


# -- quirks -------------------------------------------------------------------------------


def test_polygon_state_sync_hash_matches_a_real_state_sync_receipt():
    receipt = _load("polygon-67836608/receipt-state-sync.json")
    header = {"number": receipt["blockNumber"], "hash": receipt["blockHash"]}
    assert h(evm_proof.state_sync_tx_hash(header)) == receipt["transactionHash"]
    assert evm_proof.consensus_receipts(header, [receipt], chain="polygon") == []
    assert evm_proof.consensus_receipts(header, [receipt], chain="ethereum") == [receipt]
    assert h(evm_proof.logs_bloom(receipt["logs"])) == receipt["logsBloom"]


def test_polygon_block_lists_its_state_sync_transaction_in_no_trie():
    # Real: Bor's eth_getBlockByNumber(n, true) appends the state-sync transaction, and its
    # eth_getTransactionReceipt answers the state-sync receipt, of the same block.
    b = block("polygon-63481232")
    receipt = _load("polygon-63481232/receipt-state-sync.json")
    txs = b["transactions"]
    sync = txs[-1]
    zero = "0x" + "00" * 20
    assert sync["hash"] == h(evm_proof.state_sync_tx_hash(b)) == receipt["transactionHash"]
    assert (sync["from"], sync["to"], sync["gas"], sync["input"]) == (zero, zero, "0x0", "0x")
    assert sync["transactionIndex"] == receipt["transactionIndex"] == hex(len(txs) - 1)
    assert receipt["blockHash"] == b["hash"] and receipt["blockNumber"] == b["number"]
    # Its fields do not hash to its hash, and the root is that of the other transactions.
    assert h(evm_proof.transaction_hash(sync)) != sync["hash"]
    assert h(evm_proof.transactions_root(txs[:-1])) == b["transactionsRoot"]
    assert h(evm_proof.transactions_root(txs)) != b["transactionsRoot"]
    # Its receipt: logs of two state syncs (StateCommitted from the StateReceiver), a bloom of
    # its own, bits of which the block's logsBloom lacks.
    assert h(evm_proof.logs_bloom(receipt["logs"])) == receipt["logsBloom"]
    committed = [lg for lg in receipt["logs"] if lg["address"] == "0x" + "00" * 18 + "1001"]
    assert len(committed) == 2
    block_bloom = bytes.fromhex(b["logsBloom"][2:])
    own = bytes.fromhex(receipt["logsBloom"][2:])
    assert any(bit & ~held for bit, held in zip(own, block_bloom, strict=True))
    assert evm_proof.consensus_receipts(b, [receipt], chain="polygon") == []
    # Without it the block verifies at its documented level.
    plan = evm_proof.verify_block({**b, "transactions": txs[:-1]}, chain="polygon")
    assert set(plan.run) == LEVELS["polygon-63481232"][1]


def test_polygon_state_sync_receipt_is_kept_out_of_roots_and_bloom():
    # Synthetic: polygon-50000000 has no state sync, so one is appended the way Bor serves it.
    b = block("polygon-50000000")
    got = receipts("polygon-50000000")
    assert got is not None
    real = _load("polygon-67836608/receipt-state-sync.json")
    extra = dict(real, blockHash=b["hash"], blockNumber=b["number"])
    extra["transactionHash"] = h(evm_proof.state_sync_tx_hash(b))
    extra["transactionIndex"] = hex(len(b["transactions"]))
    with_sync = [*got, extra]
    plan = evm_proof.verify_block(b, with_sync, chain="polygon")
    assert Check.RECEIPTS_ROOT in plan.run and Check.LOGS_BLOOM in plan.run
    with pytest.raises(ProofMismatch) as raised:
        evm_proof.verify_block(b, with_sync, chain="ethereum")
    assert raised.value.check is Check.RECEIPTS_ROOT


def test_op_isthmus_withdrawals_root_fails_under_ethereum_rules():
    b = block("optimism-154497277")
    with pytest.raises(ProofMismatch) as raised:
        evm_proof.verify_block(b, receipts("optimism-154497277"), chain="ethereum")
    assert raised.value.check is Check.WITHDRAWALS_ROOT


def test_arbitrum_header_info_must_agree_with_the_json_fields():
    for key, value in (
        ("sendCount", "0x1"),
        ("l1BlockNumber", "0x1"),
        ("sendRoot", "0x" + "11" * 32),
    ):
        b = block("arbitrum-150000000")
        b[key] = value  # not a header field: the hash still recomputes
        assert h(evm_proof.header_hash(b)) == b["hash"]
        with pytest.raises(ProofMismatch) as raised:
            evm_proof.verify_block(b, chain="arbitrum")
        assert raised.value.check is Check.ARBITRUM_HEADER_INFO
        assert key in str(raised.value)


def test_pre_merge_gnosis_hash_needs_the_aura_seal():
    b = block("gnosis-20000000")
    without_seal = {k: v for k, v in b.items() if k not in ("auraStep", "auraSeal")}
    assert h(evm_proof.header_hash(without_seal)) != b["hash"]


def test_quirks_table_is_complete_data():
    names = [q.name for q in evm_proof.QUIRKS]
    assert len(names) == len(set(names))
    for quirk in evm_proof.QUIRKS:
        assert quirk.chains and quirk.rule and quirk.source
        assert not (quirk.disables & quirk.enables)


# -- negative: one changed value fails its check --------------------------------------------

HEADER_KEYS = [
    "parentHash",
    "sha3Uncles",
    "miner",
    "stateRoot",
    "transactionsRoot",
    "receiptsRoot",
    "logsBloom",
    "difficulty",
    "number",
    "gasLimit",
    "gasUsed",
    "timestamp",
    "extraData",
    "mixHash",
    "nonce",
    "auraStep",
    "auraSeal",
    "baseFeePerGas",
    "withdrawalsRoot",
    "blobGasUsed",
    "excessBlobGas",
    "parentBeaconBlockRoot",
    "requestsHash",
]
QUANTITY_KEYS = {
    "difficulty",
    "number",
    "gasLimit",
    "gasUsed",
    "timestamp",
    "auraStep",
    "baseFeePerGas",
    "blobGasUsed",
    "excessBlobGas",
}
# Pre-merge Gnosis headers seal with (auraStep, auraSeal); the node still sends zero mixHash
# and nonce, which no hash commits to (quirk gnosis-aura-seal; see the test below).
AURA_PLACEHOLDERS = {("gnosis-20000000", "mixHash"), ("gnosis-20000000", "nonce")}
HEADER_CASES = [
    (name, key)
    for name in (
        "ethereum-4369999",
        "ethereum-16000000",
        "ethereum-19900000",
        "hive-54",
        "gnosis-20000000",
        "arbitrum-150000000",
    )
    for key in HEADER_KEYS
    if key in _load(f"{name}/block.json") and (name, key) not in AURA_PLACEHOLDERS
]


def changed(key: str, value: str) -> str:
    if key in QUANTITY_KEYS:
        return hex(int(value, 16) + 1)
    if value == "0x":
        return "0x00"
    last = int(value[-1], 16) ^ 1
    return value[:-1] + f"{last:x}"


@pytest.mark.parametrize(("name", "key"), HEADER_CASES)
def test_changing_any_header_field_breaks_the_header_hash(name, key):
    b = block(name)
    b[key] = changed(key, b[key])
    assert h(evm_proof.header_hash(b)) != b["hash"]
    with pytest.raises(ProofMismatch) as raised:
        evm_proof.verify_block(b, chain=LEVELS[name][0])
    assert raised.value.check is Check.HEADER_HASH


@pytest.mark.parametrize(("name", "key"), sorted(AURA_PLACEHOLDERS))
def test_aura_placeholders_are_not_committed(name, key):
    b = block(name)
    b[key] = changed(key, b[key])
    assert h(evm_proof.header_hash(b)) == b["hash"]
    assert "gnosis-aura-seal" in evm_proof.plan_checks(b, None, chain="gnosis").quirks


def test_every_header_field_is_covered_by_a_negative_case():
    assert {key for _, key in HEADER_CASES} == set(HEADER_KEYS)


@pytest.mark.parametrize("name", WITH_FULL_TXS)
def test_changing_a_transaction_value_breaks_its_hash_then_the_root(name):
    b = block(name)
    chain = LEVELS[name][0]
    txs = b["transactions"]
    # Arbitrum internal transactions commit to chainId and input only.
    index = next(i for i, tx in enumerate(txs) if tx.get("type") != "0x6a")
    txs[index]["value"] = hex(int(txs[index]["value"], 16) + 1)
    with pytest.raises(ProofMismatch) as raised:
        evm_proof.verify_block(b, chain=chain)
    assert raised.value.check is Check.TRANSACTION_HASHES
    assert f"transactions[{index}]" in str(raised.value)
    # A node that also rewrites the hash is still caught, by the root.
    txs[index]["hash"] = h(evm_proof.transaction_hash(txs[index]))
    with pytest.raises(ProofMismatch) as raised:
        evm_proof.verify_block(b, chain=chain)
    assert raised.value.check is Check.TRANSACTIONS_ROOT


def test_reordering_transactions_breaks_the_root():
    b = block("ethereum-18000000")
    txs = b["transactions"]
    txs[0], txs[1] = txs[1], txs[0]
    assert h(evm_proof.transactions_root(txs)) != b["transactionsRoot"]


@pytest.mark.parametrize("name", WITH_RECEIPTS)
def test_changing_a_receipt_status_breaks_the_receipts_root(name):
    b = block(name)
    got = receipts(name)
    assert got is not None
    receipt = got[len(got) // 2]
    if "status" in receipt:
        receipt["status"] = "0x0" if receipt["status"] == "0x1" else "0x1"
    else:  # before Byzantium the receipt commits to the state root instead
        receipt["root"] = changed("root", receipt["root"])
    with pytest.raises(ProofMismatch) as raised:
        evm_proof.verify_block(b, got, chain=LEVELS[name][0])
    assert raised.value.check is Check.RECEIPTS_ROOT


@pytest.mark.parametrize("name", WITH_RECEIPTS)
def test_dropping_a_log_breaks_the_blooms_and_the_receipts_root(name):
    b = block(name)
    got = receipts(name)
    assert got is not None
    block_bloom = b["logsBloom"]
    all_logs = [(i, j) for i, r in enumerate(got) for j in range(len(r["logs"]))]
    # A log whose bits no other log sets: removing it must change the block's bloom.
    for i, j in all_logs:
        rest = [
            log for k, r in enumerate(got) for m, log in enumerate(r["logs"]) if (k, m) != (i, j)
        ]
        if h(evm_proof.logs_bloom(rest)) != block_bloom:
            break
    else:
        pytest.fail(f"{name}: no log with bits of its own")
    receipt = got[i]
    del receipt["logs"][j]
    assert h(evm_proof.logs_bloom(receipt["logs"])) != receipt["logsBloom"]
    with pytest.raises(ProofMismatch) as raised:
        evm_proof.verify_block(b, got, chain=LEVELS[name][0])
    assert raised.value.check is Check.RECEIPTS_ROOT


def test_a_missing_receipt_breaks_the_receipts_root():
    got = receipts("ethereum-18000000")
    assert got is not None
    with pytest.raises(ProofMismatch) as raised:
        evm_proof.verify_block(block("ethereum-18000000"), got[:-1])
    assert raised.value.check is Check.RECEIPTS_ROOT


def test_a_changed_receipt_bloom_is_caught_on_its_own():
    # The bloom is part of the receipt's encoding, so the root fails first ...
    got = receipts("ethereum-18000000")
    assert got is not None
    assert got[4]["logs"]
    got[4]["logsBloom"] = "0x" + "00" * 256
    with pytest.raises(ProofMismatch) as raised:
        evm_proof.verify_block(block("ethereum-18000000"), got)
    assert raised.value.check is Check.RECEIPTS_ROOT
    # ... and the per-receipt rule alone sees it too.
    assert h(evm_proof.logs_bloom(got[4]["logs"])) != got[4]["logsBloom"]


def test_changing_a_withdrawal_breaks_the_withdrawals_root():
    b = block("ethereum-18000000")
    b["withdrawals"][0]["amount"] = hex(int(b["withdrawals"][0]["amount"], 16) + 1)
    with pytest.raises(ProofMismatch) as raised:
        evm_proof.verify_block(b)
    assert raised.value.check is Check.WITHDRAWALS_ROOT


# -- malformed input: ProofError naming the field, never a mismatch -------------------------


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(obj: dict[str, Any]) -> None:
        target: Any = obj
        for step in path[:-1]:
            target = target[step]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return mutate


_DELETE = object()

MALFORMED_BLOCKS = [
    ("ethereum-18000000", ("gasUsed",), _DELETE, "block.gasUsed: missing"),
    ("ethereum-18000000", ("stateRoot",), "0xzz", "block.stateRoot: not hex data"),
    ("ethereum-18000000", ("stateRoot",), "0x123", "block.stateRoot: not hex data"),
    ("ethereum-18000000", ("miner",), "0x" + "00" * 19, "block.miner: expected 20 bytes"),
    ("ethereum-18000000", ("number",), "0x", "block.number: not a hex quantity"),
    ("ethereum-18000000", ("number",), 18000000, "block.number: not a hex quantity"),
    ("ethereum-18000000", ("number",), "0x1_0", "block.number: not a hex quantity"),
    ("ethereum-19900000", ("excessBlobGas",), _DELETE, "block.excessBlobGas: missing"),
    ("ethereum-18000000", ("baseFeePerGas",), _DELETE, "without earlier field baseFeePerGas"),
    ("ethereum-18000000", ("transactions", 3, "r"), _DELETE, ".r: missing"),
    ("ethereum-18000000", ("transactions", 3, "type"), "0x99", "unknown transaction type 0x99"),
    ("ethereum-18000000", ("transactions", 3, "to"), "0xabc", ".to: not hex data"),
    ("ethereum-19900000", ("transactions", 47, "blobVersionedHashes"), "0x", "expected an array"),
    ("ethereum-18000000", ("withdrawals", 0, "amount"), _DELETE, "withdrawals[0].amount: missing"),
    ("ethereum-18000000", ("transactions", 3), "0x1234", "hashes and objects mixed"),
    ("ethereum-18000000", ("transactions",), "0x", "block.transactions: expected an array"),
]


@pytest.mark.parametrize(("name", "path", "value", "message"), MALFORMED_BLOCKS)
def test_malformed_block_raises_proof_error_naming_the_field(name, path, value, message):
    b = block(name)
    _set(path, value)(b)
    with pytest.raises(ProofError) as raised:
        evm_proof.verify_block(b, chain=LEVELS[name][0])
    assert not isinstance(raised.value, ProofMismatch)
    assert message in str(raised.value)
    if path[0] == "transactions" and len(path) > 1:
        assert f"transactions[{path[1]}]" in str(raised.value)


MALFORMED_RECEIPTS = [
    ((4, "cumulativeGasUsed"), _DELETE, "receipts[4] 0x"),
    ((4, "cumulativeGasUsed"), _DELETE, ".cumulativeGasUsed: missing"),
    ((4, "status"), _DELETE, ".status: missing"),
    ((4, "logs", 0, "topics", 0), "0x00", "logs[0].topics[0]: expected 32 bytes"),
    ((4, "logs", 0, "address"), _DELETE, "logs[0].address: missing"),
    ((4, "logsBloom"), "0x00", ".logsBloom: expected 256 bytes"),
]


@pytest.mark.parametrize(("path", "value", "message"), MALFORMED_RECEIPTS)
def test_malformed_receipt_raises_proof_error_naming_the_field(path, value, message):
    got = receipts("ethereum-18000000")
    assert got is not None
    assert got[4]["logs"], "the case needs a receipt with logs"
    _set(path, value)(got)  # type: ignore[arg-type]
    with pytest.raises(ProofError) as raised:
        evm_proof.verify_block(block("ethereum-18000000"), got)
    assert not isinstance(raised.value, ProofMismatch)
    assert message in str(raised.value)


def test_non_object_block_is_a_proof_error():
    with pytest.raises(ProofError, match="expected a JSON object"):
        evm_proof.header_hash([])  # type: ignore[arg-type]


@pytest.mark.parametrize("item", [True, -1, "text", 1.5, None])
def test_rlp_refuses_what_is_not_an_rlp_item(item):
    with pytest.raises(RlpError):
        evm_proof.rlp_encode(item)


def test_trie_refuses_empty_values():
    with pytest.raises(RlpError):
        evm_proof.trie_root({b"k": b""})


# -- RLP against the rlp package ------------------------------------------------------------

rlp_items = st.recursive(
    st.binary(max_size=70) | st.integers(min_value=0, max_value=2**256),
    lambda children: st.lists(children, max_size=6),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(rlp_items)
def test_rlp_encode_equals_the_rlp_package(item):
    assert evm_proof.rlp_encode(item) == rlp.encode(item)


@pytest.mark.parametrize(
    ("item", "encoded"),
    [
        (b"", "80"),
        (b"\x00", "00"),
        (b"\x7f", "7f"),
        (b"\x80", "8180"),
        (b"dog", "83646f67"),
        (0, "80"),
        (15, "0f"),
        (1024, "820400"),
        ([], "c0"),
        ([b"cat", b"dog"], "c88363617483646f67"),
        ([[], [[]], [[], [[]]]], "c7c0c1c0c3c0c1c0"),
        (
            b"Lorem ipsum dolor sit amet, consectetur adipisicing elit",
            "b838" + b"Lorem ipsum dolor sit amet, consectetur adipisicing elit".hex(),
        ),
    ],
)
def test_rlp_known_vectors(item, encoded):
    assert evm_proof.rlp_encode(item).hex() == encoded


# -- the trie against a naive Yellow Paper trie ---------------------------------------------


def naive_trie_root(entries: dict[bytes, bytes]) -> bytes:
    """Yellow Paper appendix D, literally: build the node structure, let `rlp` encode it."""
    items = {tuple(int(c, 16) for c in key.hex()): value for key, value in entries.items()}
    if not items:
        return eth_keccak(rlp.encode(b""))
    return eth_keccak(rlp.encode(_naive_node(items, 0)))


def _naive_compact(nibbles: tuple[int, ...], leaf: bool) -> bytes:
    hex_digits = "".join(f"{n:x}" for n in nibbles)
    flag = (2 if leaf else 0) + len(nibbles) % 2
    return bytes.fromhex(f"{flag:x}" + ("" if len(nibbles) % 2 else "0") + hex_digits)


def _naive_ref(node: Any) -> Any:
    encoded = rlp.encode(node)
    return node if len(encoded) < 32 else eth_keccak(encoded)


def _naive_node(items: dict[tuple[int, ...], bytes], depth: int) -> Any:
    if len(items) == 1:
        ((key, value),) = items.items()
        return [_naive_compact(key[depth:], True), value]
    keys = list(items)
    end = depth
    while all(len(k) > end for k in keys) and len({k[end] for k in keys}) == 1:
        end += 1
    if end > depth:
        return [_naive_compact(keys[0][depth:end], False), _naive_ref(_naive_node(items, end))]
    branch: list[Any] = []
    for nibble in range(16):
        below = {k: v for k, v in items.items() if len(k) > depth and k[depth] == nibble}
        branch.append(_naive_ref(_naive_node(below, depth + 1)) if below else b"")
    branch.append(next((v for k, v in items.items() if len(k) == depth), b""))
    return branch


trie_keys = st.lists(st.sampled_from([0x00, 0x01, 0x10, 0x11, 0x80, 0xFF]), max_size=5).map(bytes)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(trie_keys, st.binary(min_size=1, max_size=40), max_size=12))
def test_trie_root_equals_the_naive_trie(entries):
    assert evm_proof.trie_root(entries) == naive_trie_root(entries)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=40), max_size=300))
def test_ordered_trie_root_equals_the_naive_trie(items):
    keyed = {rlp.encode(i): item for i, item in enumerate(items)}
    assert evm_proof.ordered_trie_root(items) == naive_trie_root(keyed)


def test_trie_known_roots():
    assert evm_proof.EMPTY_TRIE_ROOT.hex() == (
        "56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421"
    )
    assert evm_proof.ordered_trie_root([]) == evm_proof.EMPTY_TRIE_ROOT
    doe = {b"doe": b"reindeer", b"dog": b"puppy", b"dogglesworth": b"cat"}
    assert evm_proof.trie_root(doe).hex() == (
        "8aad789dff2f538bca5d8ea56e8abe10f4c7ba3a5dea95fea4cd6e7c3a1168d3"
    )
    horse = {b"do": b"verb", b"dog": b"puppy", b"doge": b"coin", b"horse": b"stallion"}
    assert evm_proof.trie_root(horse).hex() == (
        "5991bb8c6514148a29db676a14ac506cd2cd5775ace63c30a4fe457715e9ac84"
    )
