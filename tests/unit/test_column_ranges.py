"""Hostile world, item 1 and 2: every number a node sends is checked against the column it goes
into, on both decode paths, before anything is written.

For every quantity and timestamp column of every EVM table, a real block (ethereum-18500000,
with its receipts and withdrawals) is sent with that one field set just past what its column
(or its field's range) holds, and at exactly the most it holds. Past it: the fast path refuses
the batch and the checked path raises `ResponseCorrupted` naming the field - the answer is
refused, never stored changed and never an uncaught exception. At the most: both paths store
the value unchanged. Verification is off ("links") so that the column check alone is tested.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any, cast

import pytest

from indexer import errors, tables
from indexer.chain import evm_fields, evm_rows
from indexer.chain.evm import EvmSource
from indexer.chain.fields import FieldTable
from indexer.chain.rpc import RpcClient
from indexer.config import EvmChainConfig
from indexer.models import Block
from tests.unit.test_evm_fixtures import load
from tests.unit.test_evm_rows import PREFIXES, RawRpc, _table_rows, body_of

FIXTURE = "ethereum-18500000"
CFG = EvmChainConfig(
    name="t", urls=("http://127.0.0.1:1",), chain_id=1, store="receipts", verify="links",
)  # fmt: skip
MAX_NUMERIC = 2**256 - 1  # a quantity holds at most 256 bits (64 hex digits)


def _limits(column: tables.Column) -> tuple[int, int]:
    """(the most the column holds, the least that does not fit)."""
    if column.type == tables.TIMESTAMPTZ:
        return tables.MAX_TIMESTAMP_SECS, tables.MAX_TIMESTAMP_SECS + 1
    if column.type == tables.NUMERIC:
        return MAX_NUMERIC, MAX_NUMERIC + 1
    high = tables.INT_RANGES[column.type][1]
    return high, high + 1


def _item(table: FieldTable, block: dict[str, Any], receipts: list[Any]) -> dict[str, Any]:
    """The first item of the answer whose fields fill `table`'s rows."""
    if table is evm_fields.BLOCKS:
        return block
    if table is evm_fields.TRANSACTIONS:
        return cast(dict[str, Any], block["transactions"][0])
    if table is evm_fields.WITHDRAWALS:
        return cast(dict[str, Any], block["withdrawals"][0])
    assert table is evm_fields.RECEIPTS
    return cast(dict[str, Any], receipts[0])


CASES = [
    pytest.param(table, column, rule.key, id=f"{table.table.name}.{column.name}")
    for table in (
        evm_fields.BLOCKS, evm_fields.TRANSACTIONS, evm_fields.RECEIPTS, evm_fields.WITHDRAWALS
    )
    for column, rule in table.rules
    if rule.reads_number
]  # fmt: skip


def test_every_numeric_column_of_every_evm_table_is_here() -> None:
    names = {c.id for c in CASES}
    # A sample of the examples and of each table, so that a rule change that drops
    # them from CASES fails here.
    assert {
        "blocks.size", "blocks.gas_used", "blocks.timestamp", "transactions.type",
        "transactions.value", "receipts.status", "receipts.gas_used", "withdrawals.amount",
    } <= names, names  # fmt: skip
    assert len(CASES) >= 30


def _answer(key: str, table: FieldTable, value: int) -> tuple[bytes, int]:
    block, receipts = load(FIXTURE)
    assert receipts is not None
    block, receipts = copy.deepcopy(block), copy.deepcopy(receipts)
    _item(table, block, receipts)[key] = hex(value)
    return body_of([block, receipts]), int(block["number"], 16)


def _both(body: bytes, number: int) -> tuple[list[Block] | None, list[Block] | Exception]:
    fast = evm_rows.decode_full_batch(
        body, [0, 1], start=number, count=1, prefixes=PREFIXES, logs="receipts"
    )
    src = EvmSource(CFG, cast(RpcClient, RawRpc(body)))  # unbound: the checked path only
    checked: list[Block] | Exception
    try:
        checked = asyncio.run(src.blocks(number, 1))
    except errors.ResponseCorrupted as exc:
        checked = exc
    return fast, checked


@pytest.mark.parametrize(("table", "column", "key"), CASES)
def test_a_value_past_its_column_is_refused_by_both_paths(
    table: FieldTable, column: tables.Column, key: str
) -> None:
    _, too_big = _limits(column)
    body, number = _answer(key, table, too_big)
    fast, checked = _both(body, number)
    assert fast is None, "the fast path took a value its column cannot hold"
    assert isinstance(checked, errors.ResponseCorrupted), "the checked path took it"
    assert key in str(checked) or f"{table.table.name}.{column.name}" in str(checked), checked


@pytest.mark.parametrize(("table", "column", "key"), CASES)
def test_the_most_a_column_holds_is_stored_unchanged_by_both_paths(
    table: FieldTable, column: tables.Column, key: str
) -> None:
    most, _ = _limits(column)
    body, number = _answer(key, table, most)
    fast, checked = _both(body, number)
    assert fast is not None and not isinstance(checked, Exception), checked
    at = [c.name for c in table.table.columns].index(column.name)
    for blocks in (fast, checked):
        rows = _table_rows(blocks[0].rows[table.table.name], table.table.copy_types)
        value = rows[0][at]
        if column.type == tables.TIMESTAMPTZ:
            value = int(value.timestamp())
        assert value == most
