"""The EVM fast path (msgspec + the C row encoder) against the checked path.

The contract: whatever the fast path accepts, the checked path accepts too and maps to the
same rows; whatever the checked path refuses, the fast path refuses (and the source then
raises the checked path's precise error). The rows are decoded back from PostgreSQL's
binary COPY format here, independently of the encoder.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indexer import _rows, errors, tables
from indexer.chain import evm_encoding, evm_fields, evm_layouts, evm_rows
from indexer.chain.evm import EvmSource
from indexer.chain.evm_rows import decode_full_batch
from indexer.chain.rpc import RpcClient, results_of
from indexer.config import EvmChainConfig
from indexer.models import Block, Rows
from tests.unit.test_evm_source import CORRUPTIONS, block_json, good, h, log_json

CHAIN = 7
PREFIXES = tables.copy_prefixes(CHAIN)
# Decoding, not verification: the blocks here are made up (their hashes recompute to nothing).
CFG = EvmChainConfig(
    name="t", kind="evm", urls=("http://127.0.0.1:1",), chain_id=1, decode_workers=0,
    store="logs", verify="links",
)  # fmt: skip


# -- Reading binary COPY rows back (independent of the encoder)


def _numeric(raw: bytes) -> int:
    ndigits, weight, sign, dscale = struct.unpack(">hhHh", raw[:8])
    assert sign in (0, 0x4000) and dscale == 0  # positive or negative, integers
    digits = struct.unpack(f">{ndigits}H", raw[8 : 8 + 2 * ndigits])
    assert all(d < 10_000 for d in digits)
    assert not ndigits or digits[0], "a leading zero digit"
    assert sign == 0 or ndigits, "negative zero"
    value = 0
    for d in digits:
        value = value * 10_000 + d
    value = int(value * 10_000 ** (weight + 1 - ndigits))
    return -value if sign else value


def _bytea_array(raw: bytes) -> tuple[bytes, ...]:
    ndim, has_null, oid = struct.unpack(">iii", raw[:12])
    assert has_null == 0 and oid == 17
    if ndim == 0:
        assert len(raw) == 12
        return ()
    assert ndim == 1
    size, lower = struct.unpack(">ii", raw[12:20])
    assert lower == 1
    out, pos = [], 20
    for _ in range(size):
        (n,) = struct.unpack(">i", raw[pos : pos + 4])
        out.append(raw[pos + 4 : pos + 4 + n])
        pos += 4 + n
    assert pos == len(raw)
    return tuple(out)


def _timestamptz(raw: bytes) -> datetime:
    (micros,) = struct.unpack(">q", raw)
    return datetime(2000, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


def _jsonb(raw: bytes) -> Any:
    assert raw[0] == 1, "jsonb binary version"
    return orjson.loads(raw[1:])


DECODE: dict[str, Callable[[bytes], Any]] = {
    "timestamptz": _timestamptz,
    "bool": lambda b: {b"\x01": True, b"\x00": False}[b],
    "jsonb": _jsonb,
    "int2": lambda b: struct.unpack(">h", b)[0],
    "int4": lambda b: struct.unpack(">i", b)[0],
    "int8": lambda b: struct.unpack(">q", b)[0],
    "bytea": bytes,
    "numeric": _numeric,
    "bytea[]": _bytea_array,
}
BLOCK_TYPES = tables.BLOCKS.copy_types
TX_TYPES = tables.TRANSACTIONS.copy_types
LOG_TYPES = tables.LOGS.copy_types


def read_rows(data: bytes, types: list[str]) -> list[tuple[Any, ...]]:
    rows, pos = [], 0
    while pos < len(data):
        (fields,) = struct.unpack(">h", data[pos : pos + 2])
        assert fields == len(types)
        pos += 2
        row: list[Any] = []
        for kind in types:
            (n,) = struct.unpack(">i", data[pos : pos + 4])
            pos += 4
            if n == -1:
                row.append(None)
                continue
            row.append(DECODE[kind](data[pos : pos + n]))
            pos += n
        rows.append(tuple(row))
    assert pos == len(data)
    return rows


def _table_rows(rows: Rows | None, types: list[str]) -> list[tuple[Any, ...]]:
    """A table's rows in one form: full tuples (`chain` first), lists as tuples."""
    if rows is None:
        return []
    if rows.encoded:
        assert not rows.values
        found = read_rows(rows.encoded, types)
    else:
        found = [(CHAIN, *row) for row in rows.values]
    assert len(found) == rows.count
    return [tuple(tuple(v) if isinstance(v, list) else v for v in row) for row in found]


def rows_of(blocks: Sequence[Block]) -> tuple[list[Any], list[Any], list[Any]]:
    """(block rows, tx rows, log rows) of either path's output, in one form."""
    heads, txs, logs = [], [], []
    for b in blocks:
        (head,) = _table_rows(b.rows["blocks"], BLOCK_TYPES)
        heads.append((b.number, b.hash, b.parent_hash, head))
        assert (head[1], head[2], head[3]) == (b.number, b.hash, b.parent_hash)
        txs += _table_rows(b.rows.get("transactions"), TX_TYPES)
        logs += _table_rows(b.rows.get("logs"), LOG_TYPES)
        if b.rows.get("transactions") is not None:
            assert len(_table_rows(b.rows.get("transactions"), TX_TYPES)) == head[TX_COUNT]
    return heads, txs, logs


TX_COUNT = [c.name for c in tables.BLOCKS.columns].index("tx_count")


def encoded(blocks: Sequence[Block]) -> bool:
    """Every block's rows came encoded (the fast path)."""
    return all(r.encoded or not r.count for b in blocks for r in b.rows.values())


# -- Both paths over one response body


class RawRpc:
    """Serves one response body to `EvmSource`, the way `RpcClient` would."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.urls = ["http://127.0.0.1:1"]

    async def batch_parsed(self, calls: Sequence[tuple[str, Sequence[Any]]], parse: Any) -> Any:
        return parse(results_of(self.body, list(range(len(calls))), calls, "fake"))

    async def batch_decoded(self, calls: Sequence[tuple[str, Sequence[Any]]], decode: Any) -> Any:
        return await decode(self.body, list(range(len(calls))), "fake")

    async def batch_for_endpoint(self, build: Any, decode: Any) -> Any:
        calls = build(self.urls[0])
        return await decode(self.body, list(range(len(calls))), calls, self.urls[0])


def body_of(results: list[Any]) -> bytes:
    return orjson.dumps([{"jsonrpc": "2.0", "id": i, "result": r} for i, r in enumerate(results)])


async def checked(body: bytes, start: int, count: int) -> list[Block] | Exception:
    src = EvmSource(CFG, cast(RpcClient, RawRpc(body)))  # unbound: the checked path only
    try:
        return await src.blocks(start, count)
    except (errors.ResponseCorrupted, errors.RpcError) as exc:
        return exc


def fast(body: bytes, start: int, count: int) -> list[Block] | None:
    return decode_full_batch(
        body, list(range(count + 1)), start=start, count=count, prefixes=PREFIXES, logs="getLogs"
    )


async def test_fast_path_maps_a_batch_like_the_checked_path() -> None:
    body = body_of(good(10, 3))
    got = fast(body, 10, 3)
    want = await checked(body, 10, 3)
    assert got is not None and not isinstance(want, Exception)
    assert rows_of(got) == rows_of(want)
    assert rows_of(got)[1][1][5] is None  # the contract creation has no `to`


async def test_bound_source_takes_the_fast_path_and_counts_it() -> None:
    src = EvmSource(CFG, cast(RpcClient, RawRpc(body_of(good(10, 3)))))
    src.bind(PREFIXES)
    blocks = await src.blocks(10, 3)
    assert encoded(blocks)
    assert (src.fast_batches, src.checked_batches) == (1, 0)


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
async def test_corruptions_are_refused_and_the_checked_error_raised(case: str) -> None:
    results = good(10, 3)
    CORRUPTIONS[case](results)
    body = body_of(results)
    assert fast(body, 10, 3) is None
    src = EvmSource(CFG, cast(RpcClient, RawRpc(body)))
    src.bind(PREFIXES)
    with pytest.raises(errors.ResponseCorrupted):
        await src.blocks(10, 3)
    assert src.checked_batches == 1


async def test_non_canonical_but_valid_answers_go_to_the_checked_path() -> None:
    results = good(10, 3)
    results[0]["transactions"][0]["value"] = "0x0000de0b6b3a7640000"  # leading zeros: fine
    results[1]["transactions"][0]["hash"] = results[1]["transactions"][0]["hash"].upper()
    results[1]["transactions"][0]["hash"] = "0x" + results[1]["transactions"][0]["hash"][2:]
    results[-1][1]["transactionHash"] = results[-1][1]["transactionHash"].lower()
    results[2]["transactions"][1]["transactionIndex"] = "0x01"  # non-canonical quantity
    body = body_of(results)
    src = EvmSource(CFG, cast(RpcClient, RawRpc(body)))
    src.bind(PREFIXES)
    blocks = await src.blocks(10, 3)
    assert src.checked_batches == 1 and not encoded(blocks[2:])
    want = await checked(body, 10, 3)
    assert not isinstance(want, Exception) and rows_of(blocks) == rows_of(want)


@pytest.mark.parametrize(
    "value",
    [0, 1, 9_999, 10_000, 10_001, 99_990_000, 10**8, 10**12 + 7, 10**18, 2**64, 2**256 - 1],
)
async def test_numeric_values_round_trip(value: int) -> None:
    results = good(10, 1)
    results[0]["transactions"][0]["value"] = hex(value)
    results[0]["transactions"][0]["nonce"] = "0x" + "0" * 10 + format(value, "x")[:54]
    body = body_of(results)
    got, want = fast(body, 10, 1), await checked(body, 10, 1)
    assert got is not None and not isinstance(want, Exception)
    assert rows_of(got) == rows_of(want)
    assert rows_of(got)[1][0][6] == value


def test_encoder_names_the_bad_field_and_row() -> None:
    block: Any = msgspec.convert(block_json(10, txs=2), evm_rows._Block)
    log: Any = msgspec.convert(log_json(10), evm_rows._Log)
    hashes = [tx.hash for tx in block.transactions]
    txs_table, logs_table = evm_fields.TRANSACTIONS, evm_fields.LOGS

    def tx_error(**change: Any) -> str:
        txs = [msgspec.structs.replace(block.transactions[0], **change), block.transactions[1]]
        with pytest.raises(ValueError) as info:
            txs_table.encode(PREFIXES["transactions"], txs, block_hash=block.hash,
                             block_number=block.number, number=10)  # fmt: skip
        return str(info.value)

    def log_error(**change: Any) -> str:
        logs = [msgspec.structs.replace(log, **change)]
        with pytest.raises(ValueError) as info:
            logs_table.encode(PREFIXES["logs"], logs, block_hash=block.hash,
                              block_number=block.number, number=10, tx_hashes=hashes)  # fmt: skip
        return str(info.value)

    assert tx_error(input="0xzz") == "input of row 0: not hex"
    assert tx_error(value="0x" + "1" * 65).startswith("value of row 0")
    assert tx_error(hash="0x" + "11" * 31 + " 1") == "hash of row 0: not hex"
    assert tx_error(blockHash=h(11)) == "blockHash of row 0: names another block"
    assert tx_error(transactionIndex="0x00").startswith("transactionIndex of row 0")
    assert tx_error(type="0x8000") == "type of row 0: out of range"
    assert log_error(topics=["0x1"] * 5).startswith("topics of row 0")
    assert log_error(logIndex="0x1").startswith("logIndex of row 0")
    assert log_error(transactionIndex="0x2").startswith("transactionIndex of row 0")
    assert log_error(transactionHash=hashes[1]).startswith("transactionHash of row 0")
    assert log_error(removed=True) == "removed of row 0: not false"


# Hex digits of any case; a damaged one anywhere (the vector decoder takes 32 digits at a
# time, the rest one pair at a time): bytes that are no digit, or neighbours of digits.
_NOT_HEX = st.sampled_from(["g", "G", "/", ":", "@", "`", "x", " ", "\u00e9", "\u0100"])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.booleans(), st.data())
def test_hex_data_is_decoded_or_refused_in_both_encoders(
    raw: bytes, upper: bool, data: st.DataObject
) -> None:
    digits = raw.hex().upper() if upper else raw.hex()
    damage = data.draw(st.none() | st.tuples(st.integers(0, max(0, len(digits) - 1)), _NOT_HEX))
    if damage is not None and digits:
        at, char = damage
        digits = digits[:at] + char + digits[at + 1 :]
    block: Any = msgspec.convert(block_json(10, txs=1), evm_rows._Block)
    tx = msgspec.structs.replace(block.transactions[0], input="0x" + digits)
    layout = evm_layouts.transaction_of(tx)
    if damage is not None and digits:
        with pytest.raises(ValueError, match=r"input of row 0: not (hex|an ASCII string)"):
            evm_fields.TRANSACTIONS.encode(PREFIXES["transactions"], [tx], block_hash=block.hash,
                                           block_number=block.number, number=10)  # fmt: skip
        with pytest.raises(ValueError, match="input"):
            layout.encode(tx)
        return
    encoded = evm_fields.TRANSACTIONS.encode(PREFIXES["transactions"], [tx],
                                             block_hash=block.hash, block_number=block.number,
                                             number=10)  # fmt: skip
    (row,) = read_rows(encoded, TX_TYPES)
    assert row[TX_TYPES_INPUT] == raw
    assert layout.encode(tx) == evm_encoding.transaction_envelope(
        {**msgspec.to_builtins(tx), "input": "0x" + raw.hex()}
    )


TX_TYPES_INPUT = [c.name for c in tables.TRANSACTIONS.columns].index("input")


# -- The differential property: random damage anywhere in a batch


def _leaves(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(obj, dict):
        return [path] + [p for k, v in obj.items() for p in _leaves(v, (*path, k))]
    if isinstance(obj, list):
        return [path] + [p for i, v in enumerate(obj) for p in _leaves(v, (*path, i))]
    return [path]


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        obj = obj[key]
    if value is _DELETE:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value


_DELETE = object()


def _damage(original: Any) -> st.SearchStrategy[Any]:
    if isinstance(original, bool):
        return st.sampled_from([not original, None, _DELETE, "true", 1])
    text = original if isinstance(original, str) else "0x00"
    return st.sampled_from(
        [
            _DELETE, None, True, 0, 1.5, [], {}, "", "0x", "0X" + text[2:], text[2:],
            text.upper(), text + "0", text + "00", text[:-1], text[:-2], text[:2] + " " + text[3:],
            text[:2] + "0" + text[2:], text[:2] + "00" + text[2:], text.replace("a", "g"),
            text[:-2] + "\t0", "-" + text, "0x" + "f" * 65, "0x" + "f" * 64, "0x1_0",
            "0x" + "0" * 512, h(3), hex(11), "0x" + "11" * 20, text[:-1] + "0", text[:-1] + "1",
        ]
    )  # fmt: skip


@st.composite
def damaged_batches(draw: st.DrawFn) -> tuple[bytes, int, int]:
    count = draw(st.integers(1, 4))
    start = draw(st.integers(0, 3))
    results: list[Any] = []
    logs: list[Any] = []
    for n in range(start, start + count):
        txs = draw(st.integers(0, 3))
        results.append(block_json(n, txs=txs))
        if txs:
            k = draw(st.integers(1, 3))
            logs += [log_json(n, tx_index=min(i, txs - 1), log_index=i) for i in range(k)]
    results.append(logs)
    _damage_some(draw, results, keep_lists=True)
    return body_of(results), start, count


def _damage_some(draw: st.DrawFn, results: list[Any], *, keep_lists: bool) -> None:
    """Damage up to 3 random places of `results` (fields, list items, whole answers)."""
    for _ in range(draw(st.integers(0, 3))):
        leaves = _leaves(results)[1:]
        if not leaves:
            break
        path = draw(st.sampled_from(leaves))
        node: Any = results
        for key in path:
            node = node[key]
        if keep_lists and isinstance(path[-1], int) and len(path) > 1 and draw(st.booleans()):
            continue  # keep list shapes sometimes; damage a field instead
        _set(results, path, draw(_damage(node)))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged_batches())
def test_fast_path_never_accepts_what_the_checked_path_refuses(
    case: tuple[bytes, int, int],
) -> None:
    body, start, count = case
    got = fast(body, start, count)
    want = asyncio.run(checked(body, start, count))
    if got is None:
        return
    assert not isinstance(want, Exception), f"fast path accepted what was refused: {want}"
    assert rows_of(got) == rows_of(want)


# -- The same at the byte level: what the fast path skips unread (hostile world, item 11)

_SKIPPED = b"SKIPPED_FIELD_VALUE"


@st.composite
def skipped_bytes(draw: st.DrawFn) -> tuple[bytes, int, int]:
    """A good batch with one field no rule reads (in a block, a transaction or a log), its
    value raw bytes: a string of arbitrary bytes, or arbitrary number-like text."""
    results = good(10, 2)
    where = draw(st.sampled_from(["block", "tx", "log", "envelope"]))
    target = {
        "block": results[0], "tx": results[1]["transactions"][0], "log": results[-1][0],
        "envelope": None,
    }[where]  # fmt: skip
    if target is not None:
        target["unreadField"] = _SKIPPED.decode()
    body = body_of(results)
    if target is None:  # an extra member of the JSON-RPC envelope
        body = body.replace(b'"jsonrpc":"2.0"', b'"x":"' + _SKIPPED + b'","jsonrpc":"2.0"', 1)
    raw = draw(
        st.one_of(
            st.binary(max_size=12).filter(lambda b: b'"' not in b and b"\\" not in b),
            st.text(max_size=6).map(lambda t: t.encode("utf-8", "surrogatepass")),
        )
    )
    number = draw(
        st.from_regex(rb"-?[0-9]{1,400}(\.[0-9]{1,5})?([eE][+-]?[0-9]{1,4})?", fullmatch=True)
    )
    if draw(st.booleans()):
        body = body.replace(b'"' + _SKIPPED + b'"', number, 1)
    else:
        body = body.replace(_SKIPPED, raw, 1)
    return body, 10, 2


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(skipped_bytes())
def test_fast_path_never_accepts_bytes_the_checked_path_refuses(
    case: tuple[bytes, int, int],
) -> None:
    body, start, count = case
    got = fast(body, start, count)
    want = asyncio.run(checked(body, start, count))
    if got is None:
        return
    assert not isinstance(want, Exception), f"fast path accepted what was refused: {want}"
    assert rows_of(got) == rows_of(want)


def test_fast_path_refuses_invalid_utf8_in_a_field_it_skips() -> None:
    results = good(10, 1)
    results[0]["unreadField"] = _SKIPPED.decode()
    body = body_of(results)
    for bad in (b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"):
        damaged = body.replace(_SKIPPED, bad)
        assert fast(damaged, 10, 1) is None, bad
        assert isinstance(asyncio.run(checked(damaged, 10, 1)), errors.ResponseCorrupted)
    assert fast(body.replace(_SKIPPED, "é😀".encode()), 10, 1) is not None


# -- store = "blocks": headers with transaction hashes

BLOCKS_CFG = EvmChainConfig(
    name="t", kind="evm", urls=("http://127.0.0.1:1",), chain_id=1, store="blocks",
    verify="links",
)  # fmt: skip


def hashes_block(n: int, txs: int) -> dict[str, Any]:
    block = block_json(n, txs=txs)
    block["transactions"] = [tx["hash"] for tx in block["transactions"]]
    return block


async def checked_hashes(body: bytes, start: int, count: int) -> list[Block] | Exception:
    src = EvmSource(BLOCKS_CFG, cast(RpcClient, RawRpc(body)))
    try:
        return await src.blocks(start, count)
    except (errors.ResponseCorrupted, errors.RpcError) as exc:
        return exc


async def test_hashes_mode_takes_the_fast_path_when_bound() -> None:
    body = body_of([hashes_block(n, txs=n % 3) for n in range(5, 9)])
    src = EvmSource(BLOCKS_CFG, cast(RpcClient, RawRpc(body)))
    src.bind(PREFIXES)
    got = await src.blocks(5, 4)
    want = await checked_hashes(body, 5, 4)
    assert src.fast_batches == 1 and not isinstance(want, Exception)
    assert rows_of(got) == rows_of(want)
    assert [rows_of([b])[0][0][3][TX_COUNT] for b in got] == [2, 0, 1, 2]


@st.composite
def damaged_hash_batches(draw: st.DrawFn) -> tuple[bytes, int, int]:
    count = draw(st.integers(1, 4))
    start = draw(st.integers(0, 3))
    results: list[Any] = [
        hashes_block(n, draw(st.integers(0, 3))) for n in range(start, start + count)
    ]
    _damage_some(draw, results, keep_lists=False)
    return body_of(results), start, count


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged_hash_batches())
def test_hashes_fast_path_never_accepts_what_the_checked_path_refuses(
    case: tuple[bytes, int, int],
) -> None:
    body, start, count = case
    got = evm_rows.decode_hashes_batch(body, list(range(count)), start=start, prefixes=PREFIXES)
    want = asyncio.run(checked_hashes(body, start, count))
    if got is None:
        return
    assert not isinstance(want, Exception), f"fast path accepted what was refused: {want}"
    assert rows_of(got) == rows_of(want)


# -- Where a batch's results are (`_rows.batch_results`), against a JSON parser

# Runs of plain characters around 32 (skipped 32 bytes at a time where the CPU can) between
# quotes, backslashes and non-ASCII characters.
_LONG_TEXT = st.lists(
    st.sampled_from(
        ["a" * 7, "b" * 31, "0" * 32, "x" * 33, "a" * 64, '"', "\\", "é", "😀", "\x7f"]
    ),
    max_size=8,
).map("".join)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12)
    | st.text(alphabet='ab"\\{}[],: \n0x', max_size=8)
    | _LONG_TEXT,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(alphabet='ab"\\{}', max_size=4), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
_WS = st.sampled_from(["", "", " ", "\n", "\t ", "\r\n"])


@st.composite
def batch_bodies(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A batch answer as a node might spell it (spacing, key order), sometimes damaged or
    with members the fast path leaves to msgspec; and whether it is plain and whole."""
    items, plain = [], True
    for i in range(draw(st.integers(0, 4))):
        members = [f'"id"{draw(_WS)}:{draw(_WS)}{draw(st.integers(0, 10**6)) if i else 7}',
                   f'"result":{draw(_WS)}{orjson.dumps(draw(_JSON)).decode()}']  # fmt: skip
        if draw(st.booleans()):
            members.append('"jsonrpc":"2.0"')
        if draw(st.integers(0, 9)) == 0:
            members.append(draw(st.sampled_from(['"error":{"code":1}', '"id":2', '"x":1'])))
            plain = False
        order = draw(st.permutations(members))
        items.append("{" + f",{draw(_WS)}".join(f"{draw(_WS)}{m}{draw(_WS)}" for m in order) + "}")
    body = (draw(_WS) + "[" + ",".join(items) + "]" + draw(_WS)).encode()
    if body and draw(st.integers(0, 2)) == 0:  # a byte changed, dropped or added
        at = draw(st.integers(0, len(body) - 1))
        new = draw(st.sampled_from([b"", b'"', b"}", b"]", b",", b"\\", b"1", b" "]))
        body = body[:at] + new + body[at + draw(st.integers(0, 1)) :]
        plain = False
    return body, plain


@settings(max_examples=1500, deadline=None)
@given(batch_bodies())
def test_batch_results_finds_exactly_what_a_json_parser_finds(case: tuple[bytes, bool]) -> None:
    """It finds every plain answer's results; and whenever it answers and each result it
    locates is JSON, the whole body is a JSON array of {id, result} objects and those are
    their results (else it says None, and msgspec decides)."""
    body, plain = case
    spans = _rows.batch_results(body)
    assert spans is not None or not plain
    assert spans is not False or not plain, "an undamaged body is plain JSON"
    if spans is None or spans is False:
        return  # msgspec decides, or the checked path (not plain JSON)
    try:
        located = {i: orjson.loads(body[start:end]) for i, start, end in spans}
    except orjson.JSONDecodeError:
        return  # msgspec refuses that result: the checked path decides
    items = orjson.loads(body)  # raises if it took something that is not JSON
    assert isinstance(items, list) and len(items) == len(spans)
    assert all(set(item) <= {"id", "result", "jsonrpc"} for item in items)
    assert {item["id"]: item["result"] for item in items} == located


# -- Whether a body is plain JSON (`_rows.plain_json`): long strings, skipped 32 bytes at a
# time where the CPU can, checked to the byte


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(_LONG_TEXT, min_size=1, max_size=4),
    st.data(),
)
def test_plain_json_finds_any_bad_byte_in_a_long_string(
    texts: list[str], data: st.DataObject
) -> None:
    body = orjson.dumps(texts)
    assert _rows.plain_json(body)
    bad = data.draw(st.sampled_from([b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\xc0\xaf", b"\x80"]))
    at = data.draw(st.integers(2, len(body) - 2))  # inside the array
    damaged = body[:at] + bad + body[at:]
    if body[at - 1 : at] == b"\\":  # an escape's second byte: msgspec checks escapes
        return
    assert not _rows.plain_json(damaged)


@settings(max_examples=1500, deadline=None)
@given(batch_bodies(), st.data())
def test_batch_results_says_what_plain_json_says(
    case: tuple[bytes, bool], data: st.DataObject
) -> None:
    """Where it locates the results it has read every byte: False exactly when `plain_json`
    refuses the body (so the fast path needs one pass, not two)."""
    body, _ = case
    if body and data.draw(st.booleans()):
        at = data.draw(st.integers(0, len(body) - 1))
        odd = data.draw(
            st.sampled_from(
                [b"\xff", b"\xc3(", b"\xed\xa0\x80", "é".encode(), "😀".encode(), b"1e5", b"2E-3",
                 b"1" * 21, b"-" + b"9" * 20, b"1.5"]
            )
        )  # fmt: skip
        body = body[:at] + odd + body[at:]
    spans = _rows.batch_results(body)
    if spans is None:
        return  # not the shape it reads: plain_json decides alone
    assert (spans is not False) == _rows.plain_json(body)
