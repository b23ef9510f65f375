"""Real blocks from public test fixtures (tests/data/evm, origins in ORIGINS.md) through both
decode paths: the fast path takes each, both give the same rows, and every stored column
equals the field of the node's JSON it comes from."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Literal, cast

import orjson
import pytest

from indexer import errors, tables
from indexer.chain import evm_fields, evm_rest, evm_rows, evm_verify
from indexer.chain.evm import EvmSource
from indexer.chain.evm_rows import LogSource
from indexer.chain.fields import FieldTable
from indexer.chain.rpc import RpcClient
from indexer.config import EvmChainConfig
from indexer.models import Block
from tests.support.columns import expected
from tests.unit.test_evm_rows import (
    CHAIN,
    PREFIXES,
    RawRpc,
    _table_rows,
    body_of,
    read_rows,
    rows_of,
)

DATA = Path(__file__).parent.parent / "data" / "evm"
FIXTURES = sorted(
    p.name
    for p in DATA.iterdir()
    if (p / "block.json").exists()
    and isinstance(json.loads((p / "block.json").read_text())["transactions"][0], dict)
)


def load(name: str) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    block = json.loads((DATA / name / "block.json").read_text())
    receipts_path = DATA / name / "receipts.json"
    receipts = json.loads(receipts_path.read_text()) if receipts_path.exists() else None
    return block, receipts


MODES = [
    (name, mode)
    for name in FIXTURES
    for mode in (("none", "getLogs", "receipts") if load(name)[1] is not None else ("none",))
]


def answers(name: str, mode: LogSource) -> list[Any]:
    """The batch answer for the fixture's block: the block, plus its logs or its receipts."""
    block, receipts = load(name)
    if mode == "none":
        return [block]
    assert receipts is not None
    if mode == "receipts":
        return [block, receipts]
    # eth_getLogs answers the logs of the block's listed transactions (a state-sync
    # receipt of polygon-50000000's shape names a transaction the block does not list).
    tx_hashes = {tx["hash"] for tx in block["transactions"]}
    return [block, [lg for r in receipts if r["transactionHash"] in tx_hashes for lg in r["logs"]]]


def rules_of(name: str) -> Any:
    """The consensus rules of a fixture's chain (hive: Ethereum's, on a test chain; BSC:
    Ethereum's encodings)."""
    family = name.split("-")[0]
    return "ethereum" if family in ("hive", "bsc") else family


def test_every_fixture_with_full_transactions_is_here() -> None:
    assert len(FIXTURES) >= 15, FIXTURES


def _check_columns(table: FieldTable, stored: list[Any], items: list[dict[str, Any]]) -> None:
    names = [c.name for c in table.table.columns]
    assert len(stored) == len(items)
    for row, item in zip(stored, items, strict=True):
        got = dict(zip(names, row, strict=True))
        for name, want in expected(table, item).items():
            assert got[name] == want, f"{table.table.name}.{name}"


STORE: dict[LogSource, Literal["transactions", "logs", "receipts"]] = {
    "none": "transactions",
    "getLogs": "logs",
    "receipts": "receipts",
}


@pytest.mark.parametrize(("name", "mode"), MODES)
def test_fixture_is_stored_exactly_by_both_paths(name: str, mode: LogSource) -> None:
    results = answers(name, mode)
    cfg = EvmChainConfig(
        name="t", urls=("http://127.0.0.1:1",), chain_id=1, store=STORE[mode],
        rules=rules_of(name), verify="full",
    )  # fmt: skip
    number = int(results[0]["number"], 16)
    body = body_of(results)
    src = EvmSource(cfg, cast(RpcClient, RawRpc(body)))
    checked: list[Block] = asyncio.run(src.blocks(number, 1))
    fast = evm_rows.decode_full_batch(
        body, list(range(len(results))), start=number, count=1, prefixes=PREFIXES, logs=mode,
    )  # fmt: skip
    assert fast is not None, "the fast path refused a real block"
    assert rows_of(fast) == rows_of(checked)
    heads, txs, logs = rows_of(fast)
    block, receipts = load(name)
    head = heads[0][3]
    assert head[0] == CHAIN
    _check_columns(evm_fields.BLOCKS, [head], [block])
    _check_columns(evm_fields.TRANSACTIONS, txs, block["transactions"])
    if mode == "receipts":
        assert receipts is not None
        stored = _table_rows(fast[0].rows["receipts"], tables.RECEIPTS.copy_types)
        _check_columns(evm_fields.RECEIPTS, stored, receipts)
        all_logs = [lg for r in receipts for lg in r["logs"]]
        _check_columns(evm_fields.LOGS, logs, all_logs)
    withdrawals = fast[0].rows.get("withdrawals")
    assert (withdrawals.count if withdrawals else None) == (
        len(block["withdrawals"]) if "withdrawals" in block else None
    )


def _stored(block: Block, table: tables.Table) -> list[dict[str, Any]]:
    """A table's rows of the block as Postgres would give them back (jsonb lists as lists)."""
    found = block.rows.get(table.name)
    rows = read_rows(found.encoded, table.copy_types) if found is not None else []
    return [dict(zip([c.name for c in table.columns], row, strict=True)) for row in rows]


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_rows_verify_at_rest(name: str) -> None:
    """What `indexer verify` does with no node: the stored rows, spelled back as answers
    (`evm_rest`), recompute the block's hash and roots at the level its data allows."""
    mode: LogSource = "receipts" if load(name)[1] is not None else "none"
    results = answers(name, mode)
    number = int(results[0]["number"], 16)
    decoded = evm_rows.decode_full_batch(
        body_of(results), list(range(len(results))), start=number, count=1,
        prefixes=PREFIXES, logs=mode,
    )  # fmt: skip
    assert decoded is not None, "the fast path refused a real block"
    (block,) = decoded
    (head,) = _stored(block, tables.BLOCKS)
    receipts = _stored(block, tables.RECEIPTS) if mode == "receipts" else None
    answer, receipt_answers, _ = evm_rest.block_answers(
        head, transactions=_stored(block, tables.TRANSACTIONS), receipts=receipts,
        logs=_stored(block, tables.LOGS),
        withdrawals=_stored(block, tables.WITHDRAWALS)
        if head["withdrawals_root"] is not None else None,
    )  # fmt: skip
    verifier = evm_verify.Verifier(level="full", rules=rules_of(name), label="t")
    verifier.check(answer, receipts=receipt_answers)
    if answer["transactions"]:  # and a changed stored value is found
        first = answer["transactions"][0]
        changed = {**first, "input": first["input"] + "00"}  # in every type's encoding
        answer["transactions"] = [changed, *answer["transactions"][1:]]
        with pytest.raises(errors.ResponseCorrupted):
            verifier.check(answer, receipts=receipt_answers)


def test_the_fixtures_cover_the_transaction_types_and_fields() -> None:
    types: set[str] = set()
    keys: set[str] = set()
    for name in FIXTURES:
        block, _ = load(name)
        for tx in block["transactions"]:
            types.add(tx.get("type", "0x0"))
            keys |= set(tx)
    assert {"0x0", "0x1", "0x2", "0x3", "0x4", "0x7e", "0x6a"} <= types, types
    wanted = {
        "accessList",
        "blobVersionedHashes",
        "authorizationList",
        "sourceHash",
        "mint",
        "yParity",
    }
    assert wanted <= keys


def test_orjson_and_fixtures_agree() -> None:
    # The bodies are built with orjson; the fixtures read with json: same values.
    block, _ = load(FIXTURES[0])
    assert orjson.loads(orjson.dumps(block)) == block


# -- Polygon's state sync: a receipt (and logs) after the block's transactions, in no trie


def polygon_with_state_sync(*, listed: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """polygon-50000000 (real, verifiable) with a state-sync receipt appended the way Bor
    appends one: the real state-sync receipt of polygon-67836608, moved to this block (its
    hash by the state-sync formula, its index after the transactions, its logs numbered
    after the block's). Bor leaves it out of the receipts root and the bloom, so the block
    still verifies. `listed`: the block also lists the state-sync transaction last, as Bor
    does (the real one of polygon-63481232, moved the same way): in no trie either."""
    block, receipts = load("polygon-50000000")
    assert receipts is not None
    sync = json.loads((DATA / "polygon-67836608" / "receipt-state-sync.json").read_text())
    system = evm_verify.system_tx_hash("polygon", block["number"], block["hash"])
    index = hex(len(block["transactions"]))
    if listed:
        real, _ = load("polygon-63481232")
        tx = {**real["transactions"][-1], "blockHash": block["hash"], "hash": system,
              "blockNumber": block["number"], "transactionIndex": index}  # fmt: skip
        block = {**block, "transactions": [*block["transactions"], tx]}
    first_log = sum(len(r["logs"]) for r in receipts)
    moved = {**sync, "blockHash": block["hash"], "blockNumber": block["number"],
             "transactionHash": system, "transactionIndex": index}  # fmt: skip
    moved["logs"] = [
        {**lg, "blockHash": block["hash"], "blockNumber": block["number"],
         "transactionHash": system, "transactionIndex": index, "logIndex": hex(first_log + i)}
        for i, lg in enumerate(sync["logs"])
    ]  # fmt: skip
    return block, [*receipts, moved]


def polygon_answers(
    block: dict[str, Any], receipts: list[dict[str, Any]], mode: LogSource
) -> tuple[bytes, int]:
    """The batch answer for `block` with its receipts, or with their logs (getLogs)."""
    if mode == "receipts":
        results: list[Any] = [block, receipts]
    else:
        results = [block, [lg for r in receipts for lg in r["logs"]]]
    return body_of(results), int(block["number"], 16)


def polygon_source(body: bytes, mode: LogSource, rules: Any) -> EvmSource:
    cfg = EvmChainConfig(name="t", urls=("http://127.0.0.1:1",), chain_id=137,
                         store=STORE[mode], rules=rules, verify="full")  # fmt: skip
    return EvmSource(cfg, cast(RpcClient, RawRpc(body)))


def stored_by_both_paths_as_polygon(body: bytes, number: int, mode: LogSource) -> list[Block]:
    """The block as both paths store it with Polygon's rules (Ethereum's refuse it)."""
    with pytest.raises(errors.ResponseCorrupted):
        asyncio.run(polygon_source(body, mode, "ethereum").blocks(number, 1))
    src = polygon_source(body, mode, "polygon")
    src.bind(PREFIXES)
    fast = asyncio.run(src.blocks(number, 1))
    assert src.fast_batches == 1, "the fast path refused the state sync"
    checked = asyncio.run(polygon_source(body, mode, "polygon").blocks(number, 1))
    assert rows_of(fast) == rows_of(checked)
    return fast


@pytest.mark.parametrize("listed", [False, True], ids=["receipt", "listed"])
@pytest.mark.parametrize("mode", ["receipts", "getLogs"])
def test_polygon_state_sync_is_stored_and_the_block_verifies(mode: LogSource, listed: bool) -> None:
    block, receipts = polygon_with_state_sync(listed=listed)
    own = len(block["transactions"]) - listed  # the transactions in the trie
    fast = stored_by_both_paths_as_polygon(*polygon_answers(block, receipts, mode), mode)
    _, txs, logs = rows_of(fast)
    synced = [row for row in logs if row[3] == own]
    assert len(synced) == 2  # the state sync's logs, kept
    if mode == "receipts":
        assert fast[0].rows_in("receipts") == own + 1
    # A listed state-sync transaction is stored as the node lists it, at its index.
    assert len(txs) == len(block["transactions"])
    _check_columns(evm_fields.TRANSACTIONS, txs, block["transactions"])


def polygon_with_pip74_state_sync() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """polygon-50000000 with a PIP-74 state-sync transaction (type 0x7f: from and to zero, no
    gas, no data; its own hash) appended with its receipt, the way PIP-74 specifies them
    (forum.polygon.technology PIP-74; no real one was found: the transaction and receipt
    are the real state sync of polygon-63481232 and of polygon-67836608 retyped). Its
    encoding is not public, so the block's roots cannot be recomputed; its header hash can."""
    block, receipts = polygon_with_state_sync(listed=True)
    tx_hash = "0x" + "7f" * 32
    tx = {**block["transactions"][-1], "type": "0x7f", "hash": tx_hash}
    receipt = {**receipts[-1], "type": "0x7f", "transactionHash": tx_hash}
    receipt["logs"] = [{**lg, "transactionHash": tx_hash} for lg in receipt["logs"]]
    return {**block, "transactions": [*block["transactions"][:-1], tx]}, [*receipts[:-1], receipt]


@pytest.mark.parametrize("mode", ["receipts", "getLogs"])
def test_polygon_pip74_state_sync_block_is_stored_with_its_header_verified(
    mode: LogSource,
) -> None:
    block, receipts = polygon_with_pip74_state_sync()
    body, number = polygon_answers(block, receipts, mode)
    fast = stored_by_both_paths_as_polygon(body, number, mode)  # Ethereum's: no type 0x7f
    _, txs, logs = rows_of(fast)
    assert len(txs) == len(block["transactions"])
    assert len(logs) == sum(len(r["logs"]) for r in receipts)
    # The header is still checked: a changed header field is refused.
    changed = {**block, "gasUsed": hex(int(block["gasUsed"], 16) + 1)}
    body, _ = polygon_answers(changed, receipts, mode)
    with pytest.raises(errors.ResponseCorrupted, match="block hash"):
        asyncio.run(polygon_source(body, mode, "polygon").blocks(number, 1))
