"""The fast path for full EVM batches: response bytes -> checked blocks with binary COPY rows.

`EvmSource` asks one JSON-RPC batch per range: `eth_getBlockByNumber(n, true)` for every
height and, with `store = "logs"`, one `eth_getLogs` over the range. `decode_full_batch`
turns the raw response into `Block`s whose transactions and logs are already encoded as
PostgreSQL binary COPY rows (`CopyRows`), so that the writer only moves bytes.

It is the same contract as the checked path in `indexer.chain.evm`, made cheap:

- msgspec decodes the JSON straight into typed structs that hold only the fields we store
  and check (types and shapes checked in C; every other field skipped unparsed);
- `indexer._rows` (C) walks each block's transactions and logs once: the identity checks
  (every transaction and log names the block asked for, by number and hash, as the block
  answer spells them; indexes are the positions 0..n-1; a log's transaction hash is its
  transaction's; no log is `removed`), then every stored value (0x prefix, hex digits,
  sizes, quantities of at most 256 bits), written as rows;
- what is left in Python is per block: its number, header fields, and that the bloom
  agrees with whether logs came.

It accepts a subset of what the checked path accepts and produces the same rows. Anything
else (an error item, a null block, a non-canonical quantity, logs out of order, any
malformed field) makes it return None, and the caller runs the checked path on the same
bytes, which either maps the answer or raises the precise `ResponseCorrupted`. A
differential test holds the two paths to that.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import Any

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


class _Header(msgspec.Struct, rename="camel", kw_only=True, gc=False):
    number: str
    hash: str
    parent_hash: str
    timestamp: str
    miner: str | None = None
    gas_used: str
    gas_limit: str
    base_fee_per_gas: str | None = None
    size: str | None = None


class _Block(_Header, kw_only=True, gc=False):
    """A block asked with full transactions."""

    logs_bloom: str | None = None
    transactions: list[_Tx]


class _HashesBlock(_Header, kw_only=True, gc=False):
    """A block asked with transaction hashes only (`store = "blocks"`)."""

    transactions: list[str]


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
_HASHES_BLOCK = msgspec.json.Decoder(_HashesBlock)
_LOGS = msgspec.json.Decoder(list[_Log])


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


def _head(raw: _Block | _HashesBlock, number: int) -> dict[str, Any]:
    """A `Block`'s header fields (`number` already checked against the answer)."""
    base_fee, size, miner = raw.base_fee_per_gas, raw.size, raw.miner
    return {
        "number": number,
        "hash": _hash(raw.hash, 32),
        "parent_hash": _hash(raw.parent_hash, 32),
        "timestamp": _int(raw.timestamp),
        "tx_count": len(raw.transactions),
        "miner": None if miner is None else _hash(miner, 20),
        "gas_used": _int(raw.gas_used),
        "gas_limit": _int(raw.gas_limit),
        "base_fee_per_gas": None if base_fee is None else _int(base_fee),
        "size": None if size is None else _int(size),
    }


def decode_hashes_batch(body: bytes, ids: Sequence[int], *, start: int) -> list[Block] | None:
    """`store = "blocks"`: headers, transactions as hashes (checked, counted, not kept)."""
    try:
        blocks = []
        for offset, item in enumerate(_answers(body, ids, len(ids))):
            raw = _HASHES_BLOCK.decode(item.result)
            hashes = raw.transactions
            if raw.number != hex(start + offset) or (
                hashes
                and (
                    set(map(len, hashes)) != {66}
                    or not all(map(str.startswith, hashes, repeat("0x")))
                )
            ):
                return None
            blocks.append(Block(**_head(raw, start + offset)))
        return blocks
    except (_Refused, msgspec.DecodeError, ValueError, KeyError, IndexError, TypeError):
        return None


def _answers(body: bytes, ids: Sequence[int], expected: int) -> list[_Item]:
    """The batch's items in request order; each a result (no error, no gap)."""
    items = _ENVELOPE.decode(body)
    if len(items) != len(ids) or len(ids) != expected:
        raise _Refused
    by_id = {item.id: item for item in items}
    if len(by_id) != len(items):
        raise _Refused
    answers = [by_id[i] for i in ids]  # KeyError: an id not answered
    for item in answers:
        if item.error is not None or not len(item.result):
            raise _Refused
    return answers


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
    answers = _answers(body, ids, count + with_logs)
    chain_field = b"\x00\x00\x00\x02" + chain.to_bytes(2, "big")
    prefixes = [chain_field + b"\x00\x00\x00\x08" + n.to_bytes(8, "big")
                for n in range(start, start + count)]  # fmt: skip

    # One block at a time: its structs are dropped once its rows are written.
    heads: list[dict[str, Any]] = []
    tx_data: list[bytes] = []
    tx_hashes: list[list[str]] = []
    spelled: list[tuple[str, str, bool]] = []  # hash, number as sent; bloom announces logs
    for offset, item in enumerate(answers[:count]):
        raw = _BLOCK.decode(item.result)
        if raw.number != hex(start + offset):
            raise _Refused
        txs = raw.transactions
        tx_data.append(_rows.tx_rows(b"\x00\x0c" + prefixes[offset], txs, raw.hash, raw.number))
        tx_hashes.append([tx.hash for tx in txs])
        bloom = raw.logs_bloom
        spelled.append((raw.hash, raw.number, bloom is not None and bloom != _ZERO_BLOOM))
        heads.append(_head(raw, start + offset))
        del raw, txs

    log_data = [b""] * count
    log_count = [0] * count
    if with_logs:
        groups: list[list[_Log]] = [[] for _ in range(count)]
        by_number = {number: offset for offset, (_, number, _) in enumerate(spelled)}
        for lg in _LOGS.decode(answers[-1].result):
            groups[by_number[lg.block_number]].append(lg)
        for offset, ((block_hash, _, bloom_says), logs) in enumerate(
            zip(spelled, groups, strict=True)
        ):
            if bloom_says != bool(logs):
                raise _Refused  # the bloom and the logs disagree: the checked path says how
            if logs:
                log_count[offset] = len(logs)
                log_data[offset] = _rows.log_rows(
                    b"\x00\x08" + prefixes[offset], logs, block_hash, tx_hashes[offset]
                )

    return [
        Block(
            **head,
            rows=CopyRows(chain, tx_data[i], log_count[i], log_data[i]),
        )
        for i, head in enumerate(heads)
    ]
