"""Event tables' rows from a batch's logs: the same from the fast path's binary COPY rows and
the checked path's values, filtered by topic, contract and start block, undecodable logs set
apart; and `_rows.log_rows` reads back exactly what the encoder wrote."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from eth_abi import abi as eth_abi
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer import _rows, config
from indexer.events.matcher import EventSet
from indexer.models import Block
from tests.unit.test_evm_rows import body_of, checked, fast
from tests.unit.test_evm_source import block_json, h, log_json

TRANSFER = "Transfer(address indexed from, address indexed to, uint256 value)"
TOPIC = (
    "0x"
    + __import__("indexer._proof", fromlist=["x"])
    .keccak256(b"Transfer(address,address,uint256)")
    .hex()
)
TOKEN = "0x" + "44" * 20  # log_json's contract
OTHER = "0x" + "55" * 20


def transfer_log(n: int, *, tx_index: int, log_index: int, value: int, address: str = TOKEN,
                 extra_topic: bool = False) -> dict[str, Any]:  # fmt: skip
    log = log_json(n, tx_index=tx_index, log_index=log_index)
    topics = [TOPIC, "0x" + "00" * 12 + "11" * 20, "0x" + "00" * 12 + "22" * 20]
    if extra_topic:  # an ERC-721 Transfer: the value is a topic, the data empty
        topics.append("0x" + value.to_bytes(32, "big").hex())
    log["topics"] = topics
    log["data"] = "0x" if extra_topic else "0x" + eth_abi.encode(["uint256"], [value]).hex()
    log["address"] = address
    return log


def batch(logs_per_block: list[list[dict[str, Any]]], start: int = 10) -> bytes:
    blocks = [block_json(start + i, txs=2) for i in range(len(logs_per_block))]
    return body_of([*blocks, [lg for logs in logs_per_block for lg in logs]])


def events(*entries: dict[str, Any]) -> EventSet:
    cfg = config.build(
        {
            "database": {"url": "postgresql://127.0.0.1/x"},
            "chains": [
                {
                    "name": "dev",
                    "kind": "evm",
                    "urls": ["http://127.0.0.1:1"],
                    "chain_id": 1,
                    "store": "logs",
                }
            ],
            "events": [{"chain": "dev", **e} for e in entries],
        },
        {},
    )
    return EventSet(cfg.events_of("dev"), start_block=0)


def both_paths(body: bytes, count: int) -> tuple[list[Block], list[Block]]:
    got = fast(body, 10, count)
    want = asyncio.run(checked(body, 10, count))
    assert got is not None and not isinstance(want, Exception), want
    return got, want


def event_rows(blocks: list[Block], table: str) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for block in blocks:
        rows = block.rows.get(table)
        if rows is not None:
            out += list(rows.values)
    return out


def skipped(blocks: list[Block], table: str) -> list[tuple[int, int]]:
    return [
        (b.number, i) for b in blocks for i in (b.rows[table].skipped if table in b.rows else ())
    ]


def test_both_paths_give_the_same_rows_and_skip_the_same_logs() -> None:
    body = batch([
        [transfer_log(10, tx_index=0, log_index=0, value=5),
         transfer_log(10, tx_index=1, log_index=1, value=7, extra_topic=True)],  # ERC-721
        [transfer_log(11, tx_index=0, log_index=0, value=2**256 - 1)],
    ])  # fmt: skip
    fast_blocks, checked_blocks = both_paths(body, 2)
    chosen = events({"table": "transfers", "signature": TRANSFER})
    a, b = chosen.attach(fast_blocks), chosen.attach(checked_blocks)
    assert event_rows(a, "transfers") == event_rows(b, "transfers")
    assert [r[5:] for r in event_rows(a, "transfers")] == [
        (b"\x11" * 20, b"\x22" * 20, 5), (b"\x11" * 20, b"\x22" * 20, 2**256 - 1),
    ]  # fmt: skip
    assert [r[:3] for r in event_rows(a, "transfers")] == [(10, 0, 0), (11, 0, 0)]
    assert event_rows(a, "transfers")[0][3] == bytes.fromhex(h(1000, salt=7)[2:])  # tx hash
    assert skipped(a, "transfers") == skipped(b, "transfers") == [(10, 1)]


def test_contracts_and_start_block_filter() -> None:
    body = batch([
        [transfer_log(10, tx_index=0, log_index=0, value=1, address=OTHER)],
        [transfer_log(11, tx_index=0, log_index=0, value=2)],
        [transfer_log(12, tx_index=0, log_index=0, value=3, address=OTHER)],
    ])  # fmt: skip
    fast_blocks, _ = both_paths(body, 3)
    chosen = events(
        {"table": "of_token", "signature": TRANSFER, "address": TOKEN},
        {"table": "late", "signature": TRANSFER, "start_block": 12},
        {"table": "any", "signature": TRANSFER},
    )
    blocks = chosen.attach(fast_blocks)
    assert [r[-1] for r in event_rows(blocks, "of_token")] == [2]
    assert [r[-1] for r in event_rows(blocks, "late")] == [3]
    assert [r[-1] for r in event_rows(blocks, "any")] == [1, 2, 3]


def test_an_anonymous_event_matches_by_topic_count() -> None:
    body = batch([[transfer_log(10, tx_index=0, log_index=0, value=9)]])
    fast_blocks, checked_blocks = both_paths(body, 1)
    moved = "Moved(bytes32 indexed kind, address indexed from, address indexed to, uint256 v)"
    chosen = events({"table": "anon", "signature": moved + " anonymous"})
    a, b = chosen.attach(fast_blocks), chosen.attach(checked_blocks)
    assert event_rows(a, "anon") == event_rows(b, "anon")
    assert [r[5:] for r in event_rows(a, "anon")] == [
        (bytes.fromhex(TOPIC[2:]), b"\x11" * 20, b"\x22" * 20, 9)
    ]


def test_no_event_tables_leave_blocks_alone() -> None:
    fast_blocks, _ = both_paths(batch([[transfer_log(10, tx_index=0, log_index=0, value=1)]]), 1)
    assert EventSet((), start_block=0).attach(fast_blocks) == fast_blocks


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 4), st.binary(max_size=70), st.booleans()),
        min_size=1, max_size=8,
    )
)  # fmt: skip
def test_log_rows_reads_back_what_the_encoder_wrote(logs: list[tuple[int, bytes, bool]]) -> None:
    specs = []
    for i, (topics, data, other) in enumerate(logs):
        log = log_json(10, tx_index=0, log_index=i)
        log["topics"] = [h(i * 10 + k, salt=9) for k in range(topics)]
        log["data"] = "0x" + data.hex()
        log["address"] = OTHER if other else TOKEN
        specs.append(log)
    body = body_of([block_json(10, txs=1), specs])
    got = fast(body, 10, 1)
    want = asyncio.run(checked(body, 10, 1))
    assert got is not None and not isinstance(want, Exception)
    encoded = got[0].rows["logs"].encoded
    values = [(*row[:5], tuple(row[5]), row[6]) for row in want[0].rows["logs"].values]
    assert _rows.log_rows(encoded, None) == values
    firsts = {v[5][0] for v in values if v[5]}
    picked = {next(iter(firsts))} if firsts else set()
    assert _rows.log_rows(encoded, picked) == [v for v in values if v[5] and v[5][0] in picked]


def test_log_rows_refuses_what_is_not_log_rows() -> None:
    body = batch([[transfer_log(10, tx_index=0, log_index=0, value=1)]])
    fast_blocks, _ = both_paths(body, 1)
    encoded = fast_blocks[0].rows["logs"].encoded
    for damaged in (encoded[:-1], encoded + b"\x00", b"\x00\x07" + encoded[2:]):
        with pytest.raises(ValueError, match="not binary COPY rows"):
            _rows.log_rows(damaged, None)
    with pytest.raises(TypeError):
        _rows.log_rows(encoded, [b"x"])  # type: ignore[arg-type]
