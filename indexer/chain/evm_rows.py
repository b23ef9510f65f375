"""The fast path for full EVM batches: response bytes -> checked blocks with binary COPY rows.

`EvmSource` asks one JSON-RPC batch per range: `eth_getBlockByNumber(n, true)` for every
height and, with `store = "logs"`, one `eth_getLogs` over the range. `decode_full_batch`
turns the raw response into `Block`s whose transactions and logs are already encoded as
PostgreSQL binary COPY rows (`CopyRows`), so that the writer only moves bytes.

It is the same contract as the checked path in `indexer.chain.evm`, made cheap:

- msgspec decodes the JSON straight into typed structs that hold only the fields we store
  and check (types and shapes checked in C; every other field skipped unparsed);
- the identity checks (every transaction and log names the block asked for, by number and
  hash; indexes run 0..n-1; a log's transaction hash is its transaction's; the bloom agrees
  with the logs) compare the hex strings as the node sent them, a column at a time;
- `indexer._rows` (C) checks every stored value (0x prefix, hex digits, sizes, quantities
  of at most 256 bits) and writes the rows.

It accepts a subset of what the checked path accepts and produces the same rows. Anything
else (an error item, a null block, a non-canonical quantity, logs out of order, any
malformed field) makes it return None, and the caller runs the checked path on the same
bytes, which either maps the answer or raises the precise `ResponseCorrupted`. A
differential test holds the two paths to that.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from indexer import _rows
from indexer.models import Block, CopyRows

_ZERO_BLOOM = "0x" + "0" * 512


class _Refused(Exception):
    """The fast path does not take this answer (the checked path decides)."""


class _Tx(msgspec.Struct, rename="camel", kw_only=True, gc=False):
    block_hash: str
    block_number: str
    transaction_index: str
    hash: str
    from_: str
    to: str | None = None
    value: str
    nonce: str
    gas: str
    gas_price: str | None = None
    input: str
    type: str | None = None


class _Block(msgspec.Struct, rename="camel", kw_only=True, gc=False):
    number: str
    hash: str
    parent_hash: str
    timestamp: str
    miner: str | None = None
    gas_used: str
    gas_limit: str
    base_fee_per_gas: str | None = None
    size: str | None = None
    logs_bloom: str | None = None
    transactions: list[_Tx]


class _Log(msgspec.Struct, rename="camel", kw_only=True, gc=False):
    block_hash: str
    block_number: str
    transaction_hash: str
    transaction_index: str
    log_index: str
    address: str
    topics: list[str]
    data: str
    removed: bool = False


class _Item(msgspec.Struct):
    id: int
    result: msgspec.Raw = msgspec.Raw()
    error: object = None


_ENVELOPE = msgspec.json.Decoder(list[_Item])
_BLOCK = msgspec.json.Decoder(_Block)
_LOGS = msgspec.json.Decoder(list[_Log])

# Canonical hex quantities (what nodes send) for indexes.
_MAX_INDEX = 1 << 16
_HEXQ = [hex(i) for i in range(_MAX_INDEX)]
_HEX_INDEX = {q: i for i, q in enumerate(_HEXQ)}


def _int(q: str) -> int:
    if len(q) > 66 or not q.startswith("0x"):
        raise _Refused
    return int(q, 16)


def _hash(h: str, size: int) -> bytes:
    if len(h) != 2 + 2 * size or not h.startswith("0x"):
        raise _Refused
    out = bytes.fromhex(h[2:])
    if len(out) != size:  # `fromhex` skipped whitespace
        raise _Refused
    return out


def decode_full_batch(
    body: bytes, ids: Sequence[int], *, start: int, count: int, chain: int, with_logs: bool
) -> list[Block] | None:
    """The batch's blocks with encoded rows, or None when the checked path must decide."""
    try:
        return _decode(body, ids, start=start, count=count, chain=chain, with_logs=with_logs)
    except (_Refused, msgspec.DecodeError, ValueError, KeyError, IndexError, TypeError):
        return None


def _decode(
    body: bytes, ids: Sequence[int], *, start: int, count: int, chain: int, with_logs: bool
) -> list[Block]:
    items = _ENVELOPE.decode(body)
    if len(items) != len(ids) or len(ids) != count + with_logs:
        raise _Refused
    by_id = {item.id: item for item in items}
    if len(by_id) != len(items):
        raise _Refused
    answers = [by_id[i] for i in ids]  # KeyError: an id not answered
    for item in answers:
        if item.error is not None or not len(item.result):
            raise _Refused
    raw_blocks = [_BLOCK.decode(item.result) for item in answers[:count]]
    chain_field = b"\x00\x00\x00\x02" + chain.to_bytes(2, "big")
    prefixes = [chain_field + b"\x00\x00\x00\x08" + n.to_bytes(8, "big")
                for n in range(start, start + count)]  # fmt: skip

    tx_data: list[bytes] = []
    tx_hashes: list[list[str]] = []
    for offset, raw in enumerate(raw_blocks):
        if raw.number != hex(start + offset):
            raise _Refused
        txs = raw.transactions
        hashes = [tx.hash for tx in txs]
        if txs and (
            set([tx.block_hash for tx in txs]) != {raw.hash}
            or set([tx.block_number for tx in txs]) != {raw.number}
            or [tx.transaction_index for tx in txs] != _HEXQ[: len(txs)]
        ):
            raise _Refused
        tx_hashes.append(hashes)
        tx_data.append(
            _rows.tx_rows(
                b"\x00\x0c" + prefixes[offset],
                hashes,
                [tx.from_ for tx in txs],
                [tx.to for tx in txs],
                [tx.value for tx in txs],
                [tx.nonce for tx in txs],
                [tx.gas for tx in txs],
                [tx.gas_price for tx in txs],
                [tx.input for tx in txs],
                [tx.type for tx in txs],
            )
        )

    log_data = [b""] * count
    log_count = [0] * count
    if with_logs:
        groups: list[list[_Log]] = [[] for _ in range(count)]
        by_number = {raw.number: offset for offset, raw in enumerate(raw_blocks)}
        for lg in _LOGS.decode(answers[-1].result):
            groups[by_number[lg.block_number]].append(lg)
        for offset, (raw, logs) in enumerate(zip(raw_blocks, groups, strict=True)):
            bloom = raw.logs_bloom
            if (bloom is not None and bloom != _ZERO_BLOOM) != bool(logs):
                raise _Refused  # the bloom and the logs disagree: the checked path says how
            if not logs:
                continue
            tx_indexes = list(map(_HEX_INDEX.__getitem__, [lg.transaction_index for lg in logs]))
            tx_of_log = [lg.transaction_hash for lg in logs]
            hashes = tx_hashes[offset]
            if (
                [lg.log_index for lg in logs] != _HEXQ[: len(logs)]
                or set([lg.block_hash for lg in logs]) != {raw.hash}
                or [hashes[i] for i in tx_indexes] != tx_of_log
                or any([lg.removed for lg in logs])
            ):
                raise _Refused
            log_count[offset] = len(logs)
            log_data[offset] = _rows.log_rows(
                b"\x00\x08" + prefixes[offset],
                tx_indexes,
                tx_of_log,
                [lg.address for lg in logs],
                [lg.topics for lg in logs],
                [lg.data for lg in logs],
            )

    out = []
    for offset, raw in enumerate(raw_blocks):
        base_fee, size, miner = raw.base_fee_per_gas, raw.size, raw.miner
        rows = CopyRows(
            chain, len(raw.transactions), tx_data[offset], log_count[offset], log_data[offset]
        )
        out.append(
            Block(
                number=start + offset,
                hash=_hash(raw.hash, 32),
                parent_hash=_hash(raw.parent_hash, 32),
                timestamp=_int(raw.timestamp),
                tx_count=len(raw.transactions),
                miner=None if miner is None else _hash(miner, 20),
                gas_used=_int(raw.gas_used),
                gas_limit=_int(raw.gas_limit),
                base_fee_per_gas=None if base_fee is None else _int(base_fee),
                size=None if size is None else _int(size),
                rows=rows,
            )
        )
    return out
