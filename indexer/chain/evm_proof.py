"""Recompute an EVM block's commitments from its JSON-RPC answers: the reference verifier.

A node's `eth_getBlockByNumber(n, true)` and `eth_getBlockReceipts(n)` answers are untrusted.
Everything in them that a block hash commits to can be recomputed here: the header hash, each
transaction hash, the transactions, receipts and withdrawals tries and the logs bloom. If the
recomputed hash equals the hash the chain links by, the data is the chain's data.

Inputs are JSON-RPC objects exactly as `json.loads` gives them (camelCase keys, hex strings).
Malformed input raises `ProofError` naming the field; a commitment that does not recompute
raises `ProofMismatch` (a `ProofError`: either way the answer must not be stored).

This module is pure Python (`mpt`: keccak, RLP, trie; `evm_encoding`: the consensus
encodings) on purpose: it is the test oracle for the C
implementation and the checked path's verifier, so it must stay readable before it is fast.
Chain differences are data (`QUIRKS`, the transaction-type table), not branches in the rules.
Sources of every rule: shared/research/next_capabilities.md sections 3.1-3.3.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from indexer.chain.evm_encoding import (
    TX_TYPES,
    JsonObject,
    ProofError,
    TxType,
    _Fields,
    _where_receipt,
    _where_tx,
    header_fields,
    header_hash,
    logs_bloom,
    receipt_envelope,
    receipts_root,
    state_sync_tx_hash,
    transaction_envelope,
    transaction_hash,
    transactions_root,
    withdrawals_root,
)
from indexer.chain.mpt import EMPTY_TRIE_ROOT, keccak256, ordered_trie_root, rlp_encode, trie_root

__all__ = [
    "EMPTY_TRIE_ROOT",
    "TX_TYPES",
    "ProofError",
    "TxType",
    "header_fields",
    "header_hash",
    "keccak256",
    "logs_bloom",
    "ordered_trie_root",
    "receipt_envelope",
    "receipts_root",
    "rlp_encode",
    "state_sync_tx_hash",
    "transaction_envelope",
    "transaction_hash",
    "transactions_root",
    "trie_root",
    "withdrawals_root",
]


class ProofMismatch(ProofError):
    """A commitment recomputed from the data differs from the one the node sent."""

    def __init__(self, check: Check, *, where: str, expected: bytes, computed: bytes) -> None:
        self.check = check
        self.where = where
        self.expected = expected
        self.computed = computed
        super().__init__(
            f"{where}: {check.value} mismatch: node says 0x{expected.hex()}, "
            f"data gives 0x{computed.hex()}"
        )


# -- Checks and chain quirks --------------------------------------------------------------


class Check(enum.Enum):
    """One commitment a block's JSON-RPC data can be verified against."""

    HEADER_HASH = "header hash"
    TRANSACTION_HASHES = "transaction hash"
    TRANSACTIONS_ROOT = "transactionsRoot"
    RECEIPTS_ROOT = "receiptsRoot"
    LOGS_BLOOM = "logsBloom"
    RECEIPT_BLOOMS = "receipt logsBloom"
    WITHDRAWALS_ROOT = "withdrawalsRoot"
    ARBITRUM_HEADER_INFO = "Arbitrum header info"


STANDARD_CHECKS: tuple[Check, ...] = (
    Check.HEADER_HASH,
    Check.TRANSACTION_HASHES,
    Check.TRANSACTIONS_ROOT,
    Check.RECEIPTS_ROOT,
    Check.LOGS_BLOOM,
    Check.RECEIPT_BLOOMS,
    Check.WITHDRAWALS_ROOT,
)


def _always(block: JsonObject) -> bool:
    return True


def _has_field(*keys: str) -> Callable[[JsonObject], bool]:
    def applies(block: JsonObject) -> bool:
        return any(block.get(key) is not None for key in keys)

    return applies


def _has_tx_type(tx_type: str) -> Callable[[JsonObject], bool]:
    def applies(block: JsonObject) -> bool:
        txs = block.get("transactions") or []
        return any(isinstance(tx, Mapping) and tx.get("type") == tx_type for tx in txs)

    return applies


def _is_state_sync_receipt(block: JsonObject, receipt: JsonObject) -> bool:
    tx_hash = receipt.get("transactionHash")
    return isinstance(tx_hash, str) and tx_hash.lower() == "0x" + state_sync_tx_hash(block).hex()


def _is_listed_state_sync_tx(block: JsonObject, txs: Sequence[object], index: int) -> bool:
    tx = txs[index]
    tx_hash = tx.get("hash") if isinstance(tx, Mapping) else tx
    return (
        index == len(txs) - 1
        and isinstance(tx_hash, str)
        and tx_hash.lower() == "0x" + state_sync_tx_hash(block).hex()
    )


@dataclass(frozen=True)
class Quirk:
    """A chain rule that departs from Ethereum's, stated as which checks it changes."""

    name: str
    chains: frozenset[str]
    rule: str
    source: str
    applies: Callable[[JsonObject], bool] = _always
    disables: frozenset[Check] = frozenset()
    enables: frozenset[Check] = frozenset()
    # Receipts the node sends that are not consensus receipts: kept out of roots and bloom.
    drops_receipt: Callable[[JsonObject, JsonObject], bool] | None = None
    # Transactions the node lists that are in no trie: (block, transactions, index).
    drops_transaction: Callable[[JsonObject, Sequence[object], int], bool] | None = None


_OP_STACK = frozenset({"optimism", "base", "op-stack"})

QUIRKS: tuple[Quirk, ...] = (
    Quirk(
        name="polygon-state-sync",
        chains=frozenset({"polygon"}),
        rule="Bor returns a state-sync receipt (hash keccak('matic-bor-receipt-' || number || "
        "hash)) after the block's transactions, and lists the state-sync transaction (same "
        "hash) last in the block's transactions; both are in no trie and not in logsBloom",
        source="squid-sdk evm/evm-rpc/src/chain-utils.ts; bor#369, bor#1654; "
        "polygon-63481232 fixture",
        drops_receipt=_is_state_sync_receipt,
        drops_transaction=_is_listed_state_sync_tx,
    ),
    Quirk(
        name="polygon-pip74-state-sync-tx",
        chains=frozenset({"polygon"}),
        rule="type 0x7f state-sync transactions (PIP-74) have no public JSON encoding; the "
        "tries and bloom of such a block cannot be recomputed from RPC (no fixture either)",
        source="research next_capabilities.md 3.3",
        applies=_has_tx_type("0x7f"),
        disables=frozenset(
            {
                Check.TRANSACTION_HASHES,
                Check.TRANSACTIONS_ROOT,
                Check.RECEIPTS_ROOT,
                Check.LOGS_BLOOM,
            }
        ),
    ),
    Quirk(
        name="op-isthmus-withdrawals-root",
        chains=_OP_STACK,
        rule="from Isthmus (header has requestsHash) withdrawalsRoot is the "
        "L2ToL1MessagePasser storage root, not the root of the (empty) withdrawals list",
        source="ethereum-optimism/specs#676; optimism#12848",
        applies=_has_field("requestsHash"),
        disables=frozenset({Check.WITHDRAWALS_ROOT}),
    ),
    Quirk(
        name="arbitrum-header-info",
        chains=frozenset({"arbitrum"}),
        rule="Nitro reuses header fields: extraData = sendRoot, mixHash = sendCount || "
        "l1BlockNumber || ArbOS version (8 bytes each); the hash commits to them as usual, "
        "and they must agree with the JSON's sendRoot/sendCount/l1BlockNumber",
        source="OffchainLabs/go-ethereum core/types/arb_types.go HeaderInfo",
        enables=frozenset({Check.ARBITRUM_HEADER_INFO}),
    ),
    Quirk(
        name="gnosis-aura-seal",
        chains=frozenset({"gnosis"}),
        rule="before the merge the header seal is (step, signature) in place of "
        "(mixHash, nonce); header_fields picks it by the presence of auraStep/step. The "
        "mixHash and nonce the node still sends are placeholders no hash commits to",
        source="gnosis-20000000 fixture (erigon auraStep/auraSeal fields)",
        applies=_has_field("auraStep", "step"),
    ),
)
"""Every departure from Ethereum's rules this verifier knows. A chain not named here gets
Ethereum's rules; a check a quirk disables is reported as skipped, with the quirk's name."""


def _transactions_are_hashes(txs: Sequence[object]) -> bool:
    # eth_getBlockByNumber(n, false) sends hashes; a list mixing both forms is malformed.
    hashes = [isinstance(tx, str) for tx in txs]
    if any(hashes) and not all(hashes):
        i = hashes.index(not hashes[0])
        raise ProofError(f"block.transactions[{i}]: hashes and objects mixed")
    return bool(hashes) and hashes[0]


@dataclass(frozen=True)
class CheckPlan:
    """The checks that apply to one block, and why each other check does not."""

    run: tuple[Check, ...]
    skipped: Mapping[Check, str]
    quirks: tuple[str, ...]


def plan_checks(
    block: JsonObject, receipts: Sequence[JsonObject] | None, *, chain: str
) -> CheckPlan:
    """Return which checks apply to `block` on `chain` given the data at hand."""
    active = [q for q in QUIRKS if chain in q.chains and q.applies(block)]
    wanted = list(STANDARD_CHECKS)
    wanted += sorted({c for q in active for c in q.enables}, key=lambda c: c.value)
    skipped: dict[Check, str] = {}
    if _transactions_are_hashes(_Fields(block, "block").array("transactions")):
        for check in (Check.TRANSACTION_HASHES, Check.TRANSACTIONS_ROOT):
            skipped[check] = "block has transaction hashes, not full transactions"
    if receipts is None:
        for check in (Check.RECEIPTS_ROOT, Check.LOGS_BLOOM, Check.RECEIPT_BLOOMS):
            skipped[check] = "no receipts given"
    if block.get("withdrawalsRoot") is None:
        skipped[Check.WITHDRAWALS_ROOT] = "header has no withdrawalsRoot (before Shanghai)"
    elif block.get("withdrawals") is None:
        skipped[Check.WITHDRAWALS_ROOT] = "block has no withdrawals list"
    for quirk in active:
        for check in quirk.disables:
            skipped.setdefault(check, f"quirk {quirk.name}")
    run = tuple(check for check in wanted if check not in skipped)
    return CheckPlan(run=run, skipped=skipped, quirks=tuple(q.name for q in active))


def consensus_receipts(
    block: JsonObject, receipts: Sequence[JsonObject], *, chain: str
) -> list[JsonObject]:
    """Return the receipts the block commits to: the node's list less chain pseudo-receipts."""
    drops = [q.drops_receipt for q in QUIRKS if chain in q.chains and q.drops_receipt]
    return [r for r in receipts if not any(drop(block, r) for drop in drops)]


def consensus_transactions(
    block: JsonObject, txs: Sequence[JsonObject], *, chain: str
) -> list[JsonObject]:
    """Return the transactions the block commits to: its list less chain pseudo-transactions."""
    drops = [q.drops_transaction for q in QUIRKS if chain in q.chains and q.drops_transaction]
    return [tx for i, tx in enumerate(txs) if not any(drop(block, txs, i) for drop in drops)]


def _expect(check: Check, where: str, expected: bytes, computed: bytes) -> None:
    if expected != computed:
        raise ProofMismatch(check, where=where, expected=expected, computed=computed)


def _check_arbitrum_header_info(f: _Fields) -> None:
    mix = f.data("mixHash", 32)
    pairs = (
        ("sendCount", mix[0:8], f.quantity("sendCount").to_bytes(8, "big")),
        ("l1BlockNumber", mix[8:16], f.quantity("l1BlockNumber").to_bytes(8, "big")),
        ("sendRoot", f.data("extraData"), f.data("sendRoot", 32)),
    )
    for key, in_header, sent in pairs:
        _expect(Check.ARBITRUM_HEADER_INFO, f"block.{key}", in_header, sent)


def verify_block(
    block: JsonObject, receipts: Sequence[JsonObject] | None = None, *, chain: str = "ethereum"
) -> CheckPlan:
    """Verify every applicable commitment of `block` (and its receipts); return the plan run.

    Raises ProofError on malformed data and ProofMismatch on the first commitment that does
    not recompute. `receipts` is the `eth_getBlockReceipts` answer, in block order.
    """
    plan = plan_checks(block, receipts, chain=chain)
    f = _Fields(block, "block")
    run = set(plan.run)
    if Check.HEADER_HASH in run:
        _expect(Check.HEADER_HASH, "block.hash", f.data("hash", 32), header_hash(block))
    if Check.ARBITRUM_HEADER_INFO in run:
        _check_arbitrum_header_info(f)
    txs = consensus_transactions(block, f.array("transactions"), chain=chain)
    if Check.TRANSACTION_HASHES in run:
        for i, tx in enumerate(txs):
            tx_fields = _Fields(tx, _where_tx(tx, i))
            computed = keccak256(transaction_envelope(tx, index=i))
            _expect(Check.TRANSACTION_HASHES, tx_fields.where, tx_fields.data("hash", 32), computed)
    if Check.TRANSACTIONS_ROOT in run:
        expected = f.data("transactionsRoot", 32)
        _expect(Check.TRANSACTIONS_ROOT, "block.transactionsRoot", expected, transactions_root(txs))
    if Check.WITHDRAWALS_ROOT in run:
        computed = withdrawals_root(f.array("withdrawals"))
        _expect(
            Check.WITHDRAWALS_ROOT, "block.withdrawalsRoot", f.data("withdrawalsRoot", 32), computed
        )
    if receipts is not None:
        _verify_receipts(f, consensus_receipts(block, receipts, chain=chain), run)
    return plan


def _verify_receipts(block: _Fields, receipts: Sequence[JsonObject], run: set[Check]) -> None:
    if Check.RECEIPTS_ROOT in run:
        expected = block.data("receiptsRoot", 32)
        _expect(Check.RECEIPTS_ROOT, "block.receiptsRoot", expected, receipts_root(receipts))
    if Check.RECEIPT_BLOOMS in run:
        for i, receipt in enumerate(receipts):
            r = _Fields(receipt, _where_receipt(receipt, i))
            computed = logs_bloom(r.array("logs"))
            _expect(
                Check.RECEIPT_BLOOMS, f"{r.where}.logsBloom", r.data("logsBloom", 256), computed
            )
    if Check.LOGS_BLOOM in run:
        logs = [log for receipt in receipts for log in _Fields(receipt, "receipt").array("logs")]
        _expect(Check.LOGS_BLOOM, "block.logsBloom", block.data("logsBloom", 256), logs_bloom(logs))
