"""The checked path of EVM answers: parsed JSON -> blocks with rows of Python values.

Strict and precise: every answer is checked for shape, every block must be the one asked
for, every transaction, receipt and log must name that block, and every value is read by
the same decoding rules as the fast path (`evm_fields`, in Python) and checked against its
column. Anything off raises `ResponseCorrupted` naming the field, and nothing of the batch
is returned. It takes everything the fast path (`evm_rows`) takes, and more (non-canonical
spellings), and maps it to the same rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from indexer import errors, tables
from indexer.chain import evm_fields
from indexer.chain.evm_verify import lists_system_tx, system_tx_hash
from indexer.chain.fields import Context, read_hex, read_quantity
from indexer.models import Block, Rows

_ZERO_BLOOM = "0x" + "0" * 512


# -- Shape checks (raise ResponseCorrupted naming the field)


def require_int(obj: dict[str, Any], key: str, where: str) -> int:
    return read_quantity(obj.get(key), key, where)


def require_bytes(obj: dict[str, Any], key: str, where: str, size: int | None = None) -> bytes:
    return read_hex(obj.get(key), key, where, size)


def require_list(obj: dict[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key)
    if not isinstance(value, list):
        raise errors.ResponseCorrupted(f"{where}: field {key!r} is not a list")
    return value


def require_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise errors.ResponseCorrupted(f"{where}: expected an object, got {type(value).__name__}")
    return value


# -- Mapping (the checked path): the rules of `evm_fields`, in Python

_TX = evm_fields.TRANSACTIONS
_LOG = evm_fields.LOGS
_WITHDRAWAL = evm_fields.WITHDRAWALS
_TX_HASH = tables.TRANSACTIONS.index("hash")
_LOG_INDEX = tables.LOGS.index("log_index")
_LOG_TX_INDEX = tables.LOGS.index("tx_index")
_BLOCK_HASH = tables.BLOCKS.index("hash")
_PARENT_HASH = tables.BLOCKS.index("parent_hash")


TX_HASH = re.compile(r"0x[0-9a-fA-F]{64}\Z")  # a transaction hash as a hashes-only block lists it


def _check_tx_hashes(raw_txs: list[Any], where: str) -> None:
    """Blocks-only mode: the node sent transaction hashes; check them without decoding."""
    if not all(type(t) is str and TX_HASH.match(t) for t in raw_txs):
        raise errors.ResponseCorrupted(f"{where}: transactions are not all 32-byte hashes")
    _check_unique([bytes.fromhex(t[2:]) for t in raw_txs], where)


def _check_unique(tx_hashes: list[bytes], where: str) -> None:
    """No transaction twice in one block (whatever `verify` says: no chain allows it)."""
    seen: set[bytes] = set()
    for tx_hash in tx_hashes:
        if tx_hash in seen:
            raise errors.ResponseCorrupted(f"{where}: transaction 0x{tx_hash.hex()} appears twice")
        seen.add(tx_hash)


@dataclass(frozen=True, slots=True)
class Mapped:
    """One block of the checked path before its logs are attached."""

    block: Block
    tx_hashes: list[bytes]
    bloom_says_logs: bool
    system: bytes | None = None  # the hash of the block's system transaction (Polygon)

    @property
    def named_hashes(self) -> list[bytes]:
        """The transactions receipts and logs may name: the block's, then its system one."""
        return [*self.tx_hashes, self.system] if self.system else self.tx_hashes


def map_block(raw: Any, *, number: int, where: str, full: bool, rules: str | None = None) -> Mapped:
    """Map one block: its header row and, with `full`, its transactions' rows.

    `full`: the answer holds transaction objects (mapped); otherwise transaction hashes
    (checked, counted, not kept).
    """
    if raw is None:
        raise errors.ResponseCorrupted(f"{where}: node returned no block at {number:,d}")
    obj = require_dict(raw, where)
    got = require_int(obj, "number", where)
    if got != number:
        raise errors.ResponseCorrupted(f"{where}: asked for block {number:,d}, got {got:,d}")
    row = evm_fields.BLOCKS.values(obj, context=Context(number, b""), position=0, where=where)
    block_hash = row[_BLOCK_HASH]
    raw_txs = require_list(obj, "transactions", where)
    children: dict[str, Rows] = {"blocks": Rows.of((row,))}
    tx_hashes: list[bytes] = []
    if full:
        context = Context(number, block_hash)
        txs = tuple(
            _TX.values(t, context=context, position=i, where=f"{where} transaction {i}")
            for i, t in enumerate(raw_txs)
        )
        children[_TX.table.name] = Rows.of(txs)
        tx_hashes = [t[_TX_HASH] for t in txs]
        _check_unique(tx_hashes, where)
        raw_withdrawals = obj.get("withdrawals")
        if raw_withdrawals is not None:
            if not isinstance(raw_withdrawals, list):
                raise errors.ResponseCorrupted(f"{where}: field 'withdrawals' is not a list")
            context = Context(number, block_hash)
            children[_WITHDRAWAL.table.name] = Rows.of(
                tuple(
                    _WITHDRAWAL.values(
                        w, context=context, position=i, where=f"{where} withdrawal {i}"
                    )
                    for i, w in enumerate(raw_withdrawals)
                )
            )
    else:
        _check_tx_hashes(raw_txs, where)
    bloom = obj.get("logsBloom")
    system = system_tx_hash(rules, hex(number), "0x" + block_hash.hex())
    if full and lists_system_tx(raw_txs, system):
        # Bor's state-sync transaction: stored with the others, named as the block's system
        # transaction (after them), in no trie.
        tx_hashes = tx_hashes[:-1]
    return Mapped(
        Block(number, block_hash, row[_PARENT_HASH], children),
        tx_hashes,
        isinstance(bloom, str) and bloom != _ZERO_BLOOM,
        None if system is None else bytes.fromhex(system[2:]),
    )


def attach_logs(mapped: list[Mapped], raw_logs: Any, *, where: str) -> list[Block]:
    """Give each block its logs; every log must name one of these blocks by number AND hash."""
    if not isinstance(raw_logs, list):
        raise errors.ResponseCorrupted(f"{where}: eth_getLogs result is not a list")
    start = mapped[0].block.number
    per_block: list[list[tuple[Any, ...]]] = [[] for _ in mapped]
    for i, raw in enumerate(raw_logs):
        log_where = f"{where} log {i}"
        obj = require_dict(raw, log_where)
        number = require_int(obj, "blockNumber", log_where)
        offset = number - start
        if not 0 <= offset < len(mapped):
            raise errors.ResponseCorrupted(f"{where}: log for block {number:,d} outside the range")
        m = mapped[offset]
        context = Context(number, m.block.hash, m.named_hashes)
        log_index = require_int(obj, "logIndex", log_where)
        per_block[offset].append(
            _LOG.values(obj, context=context, position=log_index, where=log_where)
        )
    out = []
    for m, logs in zip(mapped, per_block, strict=True):
        logs.sort(key=lambda row: int(row[_LOG_INDEX]))
        number = m.block.number
        if [row[_LOG_INDEX] for row in logs] != list(range(len(logs))):
            # logIndex is the position in the block: a gap or a repeat means logs are missing.
            raise errors.ResponseCorrupted(f"{where}: block {number:,d} log indexes are not 0..n-1")
        in_bloom = [row for row in logs if row[_LOG_TX_INDEX] < len(m.tx_hashes)]
        if m.bloom_says_logs and not in_bloom:
            # A load-balanced backend that lags answers eth_getLogs with [] for blocks it has
            # not seen yet; the bloom proves the block has logs.
            raise errors.ResponseCorrupted(
                f"{where}: block {number:,d} has a logs bloom but no logs were returned"
            )
        if in_bloom and not m.bloom_says_logs:
            raise errors.ResponseCorrupted(f"{where}: block {number:,d} logs contradict its bloom")
        block = m.block
        rows = {**block.rows, _LOG.table.name: Rows.of(tuple(logs))}
        out.append(Block(block.number, block.hash, block.parent_hash, rows))
    return out


_RECEIPT = evm_fields.RECEIPTS


def attach_receipts(mapped: list[Mapped], raw_receipts: list[Any], *, where: str) -> list[Block]:
    """Give each block its receipts and, from them, its logs (one receipt per transaction,
    in order, naming the block and the transaction; logs numbered across the block)."""
    out = []
    for m, receipts in zip(mapped, raw_receipts, strict=True):
        block = m.block
        block_where = f"{where} block {block.number:,d} receipts"
        if not isinstance(receipts, list):
            raise errors.ResponseCorrupted(f"{block_where}: not a list")
        if len(receipts) not in (len(m.tx_hashes), len(m.named_hashes)):
            raise errors.ResponseCorrupted(
                f"{block_where}: {len(receipts):,d} receipts for {len(m.tx_hashes):,d} transactions"
            )
        context = Context(block.number, block.hash, m.named_hashes)
        receipt_rows = []
        log_rows: list[tuple[Any, ...]] = []
        for i, receipt in enumerate(receipts):
            receipt_where = f"{block_where} {i}"
            receipt_rows.append(
                _RECEIPT.values(receipt, context=context, position=i, where=receipt_where)
            )
            logs = require_list(receipt, "logs", receipt_where)
            for j, raw_log in enumerate(logs):
                log_where = f"{receipt_where} log {j}"
                row = _LOG.values(raw_log, context=context, position=len(log_rows), where=log_where)
                if row[_LOG_TX_INDEX] != i:
                    raise errors.ResponseCorrupted(
                        f"{log_where}: names transaction {row[_LOG_TX_INDEX]}, not its receipt's"
                    )
                log_rows.append(row)
        in_bloom = [row for row in log_rows if row[_LOG_TX_INDEX] < len(m.tx_hashes)]
        if m.bloom_says_logs != bool(in_bloom):
            raise errors.ResponseCorrupted(
                f"{block_where}: the block's logs bloom and its receipts' logs disagree"
            )
        rows = {
            **block.rows,
            _RECEIPT.table.name: Rows.of(tuple(receipt_rows)),
            _LOG.table.name: Rows.of(tuple(log_rows)),
        }
        out.append(Block(block.number, block.hash, block.parent_hash, rows))
    return out
