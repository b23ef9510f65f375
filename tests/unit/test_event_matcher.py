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

from indexer import _proof, _rows, config, tables
from indexer.events.matcher import EventSet
from indexer.models import Block
from tests.unit.test_evm_rows import body_of, checked, fast, read_rows
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
    chosen = EventSet(cfg.events_of("dev"), start_block=0)
    _DECLARED.update((t.name, t.table) for t in chosen.tables)
    return chosen


def both_paths(body: bytes, count: int) -> tuple[list[Block], list[Block]]:
    got = fast(body, 10, count)
    want = asyncio.run(checked(body, 10, count))
    assert got is not None and not isinstance(want, Exception), want
    return got, want


def event_rows(blocks: list[Block], table: str) -> list[tuple[Any, ...]]:
    """The table's rows in the blocks, as values (`chain` left out), however they came:
    as values (the decoder) or binary COPY rows (`_rows.event_rows`), read back here."""
    out: list[tuple[Any, ...]] = []
    for block in blocks:
        rows = block.rows.get(table)
        if rows is None:
            continue
        out += list(rows.values)
        if rows.encoded:
            declared = _DECLARED[table]
            out += [row[1:] for row in read_rows(rows.encoded, declared.copy_types)]
    return out


_DECLARED: dict[str, tables.Table] = {}  # the tables `events` made, by name


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


# -- The C decoder of static events (`_rows.event_rows`) against the generated one


_STATIC_TYPES = st.one_of(
    st.just("address"),
    st.just("bool"),
    st.sampled_from([8, 16, 24, 64, 128, 160, 248, 256]).map(lambda n: f"uint{n}"),
    st.sampled_from([8, 16, 32, 64, 128, 200, 256]).map(lambda n: f"int{n}"),
    st.sampled_from([1, 4, 20, 31, 32]).map(lambda n: f"bytes{n}"),
    st.just("function"),
    st.sampled_from(["string", "bytes", "uint8[]"]),  # indexed only: their keccak topic
)


def _value(kind: str, draw: st.DrawFn) -> Any:
    """A valid value of `kind` for eth-abi."""
    if kind == "address":
        return "0x" + draw(st.binary(min_size=20, max_size=20)).hex()
    if kind == "bool":
        return draw(st.booleans())
    if kind.startswith("uint"):
        return draw(st.integers(0, 2 ** int(kind[4:]) - 1))
    if kind.startswith("int"):
        bits = int(kind[3:])
        return draw(st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1))
    size = 24 if kind == "function" else int(kind[5:])
    return draw(st.binary(min_size=size, max_size=size))


@st.composite
def static_events(draw: st.DrawFn) -> tuple[str, list[tuple[str, bool]], bool]:
    params = draw(st.lists(st.tuples(_STATIC_TYPES, st.booleans()), max_size=6))
    anonymous = draw(st.booleans())
    indexed_limit = 4 if anonymous else 3
    fixed: list[tuple[str, bool]] = []
    for kind, indexed in params:
        dynamic = kind in ("string", "bytes", "uint8[]")
        indexed = (indexed or dynamic) and sum(i for _, i in fixed) < indexed_limit
        if dynamic and not indexed:
            continue
        fixed.append((kind, indexed))
    declared = ", ".join(f"{k}{' indexed' if i else ''} p{n}" for n, (k, i) in enumerate(fixed))
    return f"Ev({declared})" + (" anonymous" if anonymous else ""), fixed, anonymous


@st.composite
def logs_of(
    draw: st.DrawFn, event: tuple[str, list[tuple[str, bool]], bool]
) -> list[dict[str, Any]]:
    _, params, anonymous = event
    canonical = "Ev(" + ",".join(k for k, _ in params) + ")"
    topic0 = "0x" + _proof.keccak256(canonical.encode()).hex()
    logs = []
    for i in range(draw(st.integers(1, 6))):
        topics = [] if anonymous else [topic0]
        data_types, data_values = [], []
        for kind, indexed in params:
            if indexed and kind in ("string", "bytes", "uint8[]"):
                topics.append("0x" + draw(st.binary(min_size=32, max_size=32)).hex())
            elif indexed:
                topics.append("0x" + eth_abi.encode([kind], [_value(kind, draw)]).hex())
            else:
                data_types.append(kind)
                data_values.append(_value(kind, draw))
        data = eth_abi.encode(data_types, data_values)
        damage = draw(st.sampled_from(["none", "none", "word", "length", "topics", "address"]))
        if damage == "word" and data:  # dirty padding or a flipped bit anywhere
            at = draw(st.integers(0, len(data) - 1))
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
        elif damage == "word" and len(topics) > (0 if anonymous else 1):
            k = draw(st.integers(0 if anonymous else 1, len(topics) - 1))
            raw = bytearray.fromhex(topics[k][2:])
            raw[draw(st.integers(0, 31))] ^= 0x80
            topics[k] = "0x" + raw.hex()
        elif damage == "length":
            data = (
                data + b"\x00" * draw(st.sampled_from([1, 32]))
                if draw(st.booleans())
                else data[:-1]
            )
        elif damage == "topics" and topics:
            longer = len(topics) < 4 and draw(st.booleans())  # a log has at most 4
            topics = [*topics, topics[-1]] if longer else topics[:-1]
        log = log_json(10, tx_index=0, log_index=i)
        log["topics"] = topics
        log["data"] = "0x" + data.hex()
        log["address"] = OTHER if damage == "address" else TOKEN
        logs.append(log)
    return logs


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_the_c_decoder_equals_the_generated_one(data: st.DataObject) -> None:
    event = data.draw(static_events())
    logs = data.draw(logs_of(event))
    fast_blocks = fast(body_of([block_json(10, txs=1), logs]), 10, 1)
    assert fast_blocks is not None
    in_c = events({"table": "ev", "signature": event[0], "address": TOKEN})
    (table,) = in_c.tables
    assert table.spec is not None, "every static event is read in C"
    generated = events({"table": "ev", "signature": event[0], "address": TOKEN})
    generated.tables[0].spec = None  # the generated decoder, on the same rows
    a, b = in_c.attach(fast_blocks), generated.attach(fast_blocks)
    assert "ev" not in a[0].rows or a[0].rows["ev"].encoded or not a[0].rows["ev"].count
    assert event_rows(a, "ev") == event_rows(b, "ev")
    assert skipped(a, "ev") == skipped(b, "ev")


def test_events_with_dynamic_data_are_left_to_the_generated_decoder() -> None:
    chosen = events(
        {"table": "named", "signature": "Named(address indexed who, string name)"},
        {"table": "pairs", "signature": "Pairs(uint256[2] pair)"},
        {"table": "plain", "signature": TRANSFER},
    )
    assert [t.spec is None for t in chosen.tables] == [True, True, False]
