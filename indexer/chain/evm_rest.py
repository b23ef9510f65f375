"""Stored EVM rows as the answers they came from: what `indexer verify` checks at rest.

Each column goes back to the JSON field its decoding rule read it from (`evm_fields`), as
the node would spell it (hex quantities, hex data, lists, booleans), so the same verifier
that checked the node's answers (`evm_verify`) recomputes every block hash, transaction
hash, root and bloom from the tables alone, with no node. A row that no longer recomputes
was changed after it was written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from indexer import tables
from indexer.chain import evm_fields
from indexer.chain.fields import FieldTable

_NOT_FIELDS = {"chain", "block_number", "tx_index", "log_index", "position", "tx_count"}


def _spell(value: Any, column: tables.Column) -> Any:
    if value is None:
        return None
    if column.type == tables.TIMESTAMPTZ:
        assert isinstance(value, datetime)
        return hex(int(value.timestamp()))
    if column.type in (tables.NUMERIC, tables.BIGINT, tables.INTEGER, tables.SMALLINT):
        return hex(int(value) if isinstance(value, Decimal) else value)
    if column.type == tables.BYTEA:
        return "0x" + bytes(value).hex()
    if column.type == tables.BYTEA_ARRAY:
        return ["0x" + bytes(v).hex() for v in value]
    return value  # boolean, jsonb (lists of objects of hex strings, as the node sent them)


def answer(table: FieldTable, row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row as the JSON object its fields came from (null fields left out)."""
    out: dict[str, Any] = {}
    for column, rule in table._rules:
        if rule.key is None or column.name in _NOT_FIELDS:
            continue
        spelled = _spell(row[column.name], column)
        if spelled is not None:
            out[rule.key] = spelled
    return out


def block_answers(
    block: Mapping[str, Any],
    *,
    transactions: Sequence[Mapping[str, Any]] | None,
    receipts: Sequence[Mapping[str, Any]] | None,
    logs: Sequence[Mapping[str, Any]],
    withdrawals: Sequence[Mapping[str, Any]] | None,
) -> tuple[dict[str, Any], list[dict[str, Any]] | None, list[dict[str, Any]]]:
    """(block, receipts, logs) as `eth_getBlockByNumber(n, true)`, `eth_getBlockReceipts(n)`
    and `eth_getLogs` would answer them, from one block's stored rows. `None` for what the
    chain does not store (so that no check that needs it runs)."""
    out = answer(evm_fields.BLOCKS, block)
    out["number"] = hex(block["number"])
    if transactions is not None:
        out["transactions"] = [answer(evm_fields.TRANSACTIONS, tx) for tx in transactions]
    if withdrawals is not None:
        out["withdrawals"] = [answer(evm_fields.WITHDRAWALS, w) for w in withdrawals]
    log_answers = [answer(evm_fields.LOGS, lg) for lg in logs]
    receipt_answers = None
    if receipts is not None:
        per_tx: dict[int, list[dict[str, Any]]] = {}
        for row, spelled in zip(logs, log_answers, strict=True):
            per_tx.setdefault(row["tx_index"], []).append(spelled)
        receipt_answers = []
        for row in receipts:
            spelled = answer(evm_fields.RECEIPTS, row)
            spelled["logs"] = per_tx.get(row["tx_index"], [])
            receipt_answers.append(spelled)
    return out, receipt_answers, log_answers
