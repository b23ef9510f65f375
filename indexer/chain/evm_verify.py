"""Verify EVM answers against the commitments the chain links by, before anything is kept.

`verify` per chain: "links" (the parent links and the answers' consistency, checked
elsewhere), "headers" (plus every block hash recomputed as keccak of its RLP header, with
the field set of its fork), "full" (plus every transaction hash, the transactions,
receipts and withdrawals roots, every receipt's bloom and the block's logs bloom from the
logs). What "full" can check depends on what the chain stores: without receipts, the
receipts root cannot be recomputed, and the block bloom is checked against `eth_getLogs`.

A commitment that does not recompute is a lie: `ResponseCorrupted`, so the answer is
refused and another endpoint asked; nothing of the batch is stored. The same checks serve
both decode paths: they read the answer's objects by key (dicts of the checked path,
msgspec structs of the fast path) through the C layouts of `evm_layouts`;
`evm_encoding`/`evm_proof` state the same rules in Python as the test oracle.

Chains whose rules differ are named by `rules` (from the chain id when the config does not
say): their quirks (`evm_proof.QUIRKS`) switch checks off or on, e.g. Polygon's state-sync
receipt is left out of the roots and the bloom, OP Stack's Isthmus withdrawalsRoot is not a
withdrawals trie.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from indexer import _proof, errors
from indexer.chain import evm_layouts

# Rules by chain id: the chains whose rules we know. Others get "links" unless the config
# names the rules (and so the verification) to apply.
RULES_BY_CHAIN_ID: Final = {
    1: "ethereum",
    11155111: "ethereum",  # Sepolia
    17000: "ethereum",  # Holesky
    560048: "ethereum",  # Hoodi
    31337: "ethereum",  # anvil, hardhat
    1337: "ethereum",  # geth --dev
    10: "optimism",
    8453: "base",
    42161: "arbitrum",
    421614: "arbitrum",  # Arbitrum Sepolia
    137: "polygon",
    100: "gnosis",
}
RULES: Final = ("ethereum", "optimism", "base", "arbitrum", "polygon", "gnosis")
_OP_STACK: Final = frozenset({"optimism", "base"})


def rules_for(chain_id: int, configured: str | None) -> str | None:
    """The rules to verify a chain by (None: not known, so "links" is the default)."""
    return configured or RULES_BY_CHAIN_ID.get(chain_id)


def default_level(rules: str | None) -> str:
    return "full" if rules is not None else "links"


def lists_system_tx(txs: Sequence[Any], system: str | None) -> bool:
    """Whether a block's transaction list ends with its system transaction: Bor lists its
    state-sync transaction last (from and to zero, no signature). It is in no trie and no
    commitment covers its fields: the node's word is all there is, like its receipt's."""
    if system is None or not txs:
        return False
    last = txs[-1]
    tx_hash = last if isinstance(last, str) else _get(last, "hash")
    return isinstance(tx_hash, str) and tx_hash.lower() == system


def has_pip74_state_sync(txs: Sequence[Any]) -> bool:
    """Whether a block holds a PIP-74 state-sync transaction (type 0x7f, Polygon)."""
    return any(not isinstance(tx, str) and _get(tx, "type") == "0x7f" for tx in txs)


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def _hex(value: Any) -> str:
    """A hash as the answer spells it, lowercase without 0x (for comparing with digests)."""
    return value[2:].lower() if isinstance(value, str) and value[:2] == "0x" else ""


def system_tx_hash(rules: str | None, number: Any, block_hash: Any) -> str | None:
    """The hash of a block's system transaction, where the chain's rules have one: Polygon's
    state sync, keccak("matic-bor-receipt-" || uint64 number || block hash). Its receipt and
    logs follow the block's transactions (at index len(transactions)), in no trie."""
    if rules != "polygon":
        return None
    try:
        key = b"matic-bor-receipt-" + int(number, 16).to_bytes(8, "big")
        key += bytes.fromhex(block_hash[2:])
    except (TypeError, ValueError, OverflowError):
        return None  # malformed: the answer's other checks refuse it
    return "0x" + _proof.keccak256(key).hex()


class Verifier:
    """The checks of one chain (see the module docstring)."""

    def __init__(self, *, level: str, rules: str | None, label: str) -> None:
        assert level in ("links", "headers", "full")
        self.level = level
        self.rules = rules
        self.label = label

    def check(
        self,
        block: Any,
        *,
        receipts: Sequence[Any] | None = None,
        logs: Sequence[Any] | None = None,
    ) -> None:
        """Raise `ResponseCorrupted` unless `block` (and its receipts, or its logs from
        eth_getLogs) recompute to the commitments of its header."""
        if self.level == "links":
            return
        where = f"{self.label} block {_get(block, 'number')}"
        try:
            self._check(block, receipts, logs, where)
        except ValueError as exc:  # a field the encoding needs is missing or malformed
            raise errors.ResponseCorrupted(f"{where}: cannot verify: {exc}") from None

    def _check(
        self, block: Any, receipts: Sequence[Any] | None, logs: Sequence[Any] | None, where: str
    ) -> None:
        digest = evm_layouts.header_of(block).hash(block)
        _expect(where, "block hash", _get(block, "hash"), digest)
        if self.level != "full":
            return
        txs = _get(block, "transactions") or []
        if lists_system_tx(
            txs, system_tx_hash(self.rules, _get(block, "number"), _get(block, "hash"))
        ):
            txs = txs[:-1]  # Bor's state-sync transaction: in no trie
        if self.rules == "polygon" and has_pip74_state_sync(txs):
            # PIP-74's type 0x7f state-sync transaction has no public encoding: its block's
            # transactions and receipts roots and bloom cannot be recomputed from RPC (the
            # reference's quirk polygon-pip74-state-sync-tx). The header hash was checked;
            # each receipt's own bloom still is.
            if receipts is not None:
                _receipt_blooms(receipts, where)
            return
        full_txs = bool(txs) and not isinstance(txs[0], str)
        if full_txs:
            # In C: every envelope, its hash against the transaction's, the trie root.
            root, bad = _proof.encoded_root(
                txs, evm_layouts.TX_BY_TYPE, evm_layouts.transaction_of, "hash"
            )
            if bad >= 0:
                tx = txs[bad]
                envelope = evm_layouts.transaction_of(tx).encode(tx)
                _expect(where, "transaction hash", _get(tx, "hash"), _proof.keccak256(envelope))
            _expect(where, "transactionsRoot", _get(block, "transactionsRoot"), root)
        elif not txs:
            _expect(
                where,
                "transactionsRoot",
                _get(block, "transactionsRoot"),
                _proof.ordered_trie_root([]),
            )
        self._check_withdrawals(block, where)
        if receipts is not None:
            self._check_receipts(block, receipts, where)
        elif logs is not None:
            self.check_logs_bloom(block, logs)
        if self.rules == "arbitrum":
            _check_arbitrum_header_info(block, where)

    def check_header(self, block: Any) -> None:
        """The block hash alone (blocks asked with transaction hashes only)."""
        if self.level == "links":
            return
        where = f"{self.label} block {_get(block, 'number')}"
        try:
            digest = evm_layouts.header_of(block).hash(block)
        except ValueError as exc:
            raise errors.ResponseCorrupted(f"{where}: cannot verify: {exc}") from None
        _expect(where, "block hash", _get(block, "hash"), digest)

    def check_logs_bloom(self, block: Any, logs: Sequence[Any]) -> None:
        """Raise `ResponseCorrupted` unless the block's bloom is the bloom of `logs` (its
        logs from eth_getLogs: a dropped or altered log changes it)."""
        if self.level != "full":
            return
        where = f"{self.label} block {_get(block, 'number')}"
        system = system_tx_hash(self.rules, _get(block, "number"), _get(block, "hash"))
        if system is not None:  # the state sync's logs are in no bloom either
            logs = [lg for lg in logs if _hex(_get(lg, "transactionHash")) != system[2:]]
        try:
            bloom = _bloom_of(logs)
        except ValueError as exc:
            raise errors.ResponseCorrupted(f"{where}: cannot verify: {exc}") from None
        _expect(where, "logsBloom", _get(block, "logsBloom"), bloom)

    def _check_withdrawals(self, block: Any, where: str) -> None:
        expected = _get(block, "withdrawalsRoot")
        withdrawals = _get(block, "withdrawals")
        if expected is None:
            if withdrawals:
                raise errors.ResponseCorrupted(f"{where}: withdrawals but no withdrawalsRoot")
            return
        if self.rules in _OP_STACK and _get(block, "requestsHash") is not None:
            return  # Isthmus: the L2ToL1MessagePasser storage root, not a withdrawals trie
        if withdrawals is None:
            raise errors.ResponseCorrupted(f"{where}: withdrawalsRoot but no withdrawals list")
        root, _ = _proof.encoded_root(withdrawals, evm_layouts.WITHDRAWAL)
        _expect(where, "withdrawalsRoot", expected, root)

    def _check_receipts(self, block: Any, receipts: Sequence[Any], where: str) -> None:
        system = system_tx_hash(self.rules, _get(block, "number"), _get(block, "hash"))
        if system is not None and receipts:
            # Bor's state-sync receipt follows the block's transactions and is in no trie.
            if _hex(_get(receipts[-1], "transactionHash")) == system[2:]:
                receipts = receipts[:-1]
        # In C: each receipt's bloom from its logs (each address or topic hashed once per
        # block) against its logsBloom, and the block's, their union; then the receipts root.
        block_bloom = _receipt_blooms(receipts, where)
        root, _ = _proof.encoded_root(receipts, evm_layouts.RECEIPT_BY_TYPE, evm_layouts.receipt_of)
        _expect(where, "receiptsRoot", _get(block, "receiptsRoot"), root)
        _expect(where, "logsBloom", _get(block, "logsBloom"), block_bloom)


def _receipt_blooms(receipts: Sequence[Any], where: str) -> bytes:
    """Each receipt's logsBloom checked against its logs; the block's bloom (their union)."""
    block_bloom, bad = _proof.receipts_bloom(receipts)
    if bad >= 0:
        receipt = receipts[bad]
        bloom = _proof.logs_bloom(_get(receipt, "logs") or [])
        _expect(where, "receipt logsBloom", _get(receipt, "logsBloom"), bloom)
    return block_bloom


def _bloom_of(logs: Sequence[Any]) -> bytes:
    return _proof.logs_bloom(logs)  # each address or topic hashed once


def _expect(where: str, what: str, sent: Any, computed: bytes) -> None:
    if _hex(sent) != computed.hex():
        raise errors.ResponseCorrupted(
            f"{where}: {what} does not recompute: the node says {sent!s:.70}, the data gives "
            f"0x{computed.hex()}",
            lie=what,
        )


def _check_arbitrum_header_info(block: Any, where: str) -> None:
    """Nitro's header carries sendRoot in extraData and sendCount, l1BlockNumber in mixHash:
    the JSON's own fields must agree with what the hash commits to."""
    extra, mix = _hex(_get(block, "extraData")), _hex(_get(block, "mixHash"))
    fields = {
        "sendRoot": _get(block, "sendRoot"),
        "sendCount": _get(block, "sendCount"),
        "l1BlockNumber": _get(block, "l1BlockNumber"),
    }
    if all(v is None for v in fields.values()):
        return
    if len(mix) != 64 or _hex(fields["sendRoot"]) != extra:
        raise errors.ResponseCorrupted(f"{where}: sendRoot is not the header's extraData")
    for key, lo in (("sendCount", 0), ("l1BlockNumber", 16)):
        value = fields[key]
        if not isinstance(value, str) or int(value, 16) != int(mix[lo : lo + 16], 16):
            raise errors.ResponseCorrupted(f"{where}: {key} is not the one in the header")
