"""The fast path for EVM batches: response bytes -> checked blocks with binary COPY rows.

`EvmSource` asks one JSON-RPC batch per range: `eth_getBlockByNumber(n, full)` for every
height and, with `store = "logs"`, one `eth_getLogs` over the range. `decode_full_batch`
turns the raw response into `Block`s whose transactions and logs are already encoded as
PostgreSQL binary COPY rows (`Rows.encoded`), so that the writer only moves bytes.

It is the same contract as the checked path in `indexer.chain.evm`, made cheap. Both come
from one place, the decoding rules of `indexer.chain.evm_fields` compiled with the tables'
declarations (`indexer.chain.fields`):

- msgspec decodes the JSON straight into structs built from those rules, holding only the
  fields we store and check (types and shapes checked in C; every other field skipped);
- the C field tables walk each block's transactions and logs once: the identity checks
  (every transaction and log names the block asked for, by number and hash, as the block
  answer spells them; indexes are the positions 0..n-1; a log's transaction hash is its
  transaction's; no log is `removed`), then every stored value against its column;
- the same holds for each block's own row (the header);
- what is left in Python is per block: its number, and that the bloom agrees with whether
  logs came.

It accepts a subset of what the checked path accepts and produces the same rows. Anything
else (an error item, a null block, a non-canonical quantity, logs out of order, any
malformed field) makes it return None, and the caller runs the checked path on the same
bytes, which either maps the answer or raises the precise `ResponseCorrupted`. A
differential test holds the two paths to that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import repeat
from typing import Any

import msgspec

from indexer import tables
from indexer.chain import evm_fields
from indexer.models import Block, Rows

_ZERO_BLOOM = "0x" + "0" * 512

_Tx = evm_fields.TRANSACTIONS.struct
_Log = evm_fields.LOGS.struct
_Withdrawal = evm_fields.WITHDRAWALS.struct
# A block asked with full transactions, and one asked with transaction hashes only.
_Block = msgspec.defstruct(
    "_Block",
    [
        ("number", str),
        ("transactions", list[_Tx]),  # type: ignore[valid-type]
        ("withdrawals", list[_Withdrawal] | None, None),  # type: ignore[valid-type]
    ],
    bases=(evm_fields.BLOCKS.struct,),
    kw_only=True,
    gc=False,
)
_HashesBlock = msgspec.defstruct(
    "_HashesBlock",
    [("number", str), ("transactions", list[str])],
    bases=(evm_fields.BLOCKS.struct,),
    kw_only=True,
    gc=False,
)


class _Refused(Exception):
    """The fast path does not take this answer (the checked path decides)."""


class _Item(msgspec.Struct):
    id: int
    result: msgspec.Raw = msgspec.Raw()
    error: object = None


_ENVELOPE = msgspec.json.Decoder(list[_Item])
# The structs are built from the rules at import: their fields are not known to mypy.
_BLOCK: msgspec.json.Decoder[Any] = msgspec.json.Decoder(_Block)
_HASHES_BLOCK: msgspec.json.Decoder[Any] = msgspec.json.Decoder(_HashesBlock)
_LOGS: msgspec.json.Decoder[Any] = msgspec.json.Decoder(list[_Log])  # type: ignore[valid-type]
_REFUSED = (_Refused, msgspec.DecodeError, ValueError, KeyError, IndexError, TypeError)


def _header(raw: Any, number: int, prefix: bytes) -> dict[str, Rows]:
    """The block's own row, encoded (ValueError or _Refused when refused)."""
    if raw.number != hex(number):
        raise _Refused
    encoded = evm_fields.BLOCKS.encode(
        prefix, [raw], block_hash="", block_number=raw.number, number=number
    )
    return {"blocks": Rows(1, encoded=encoded)}


def _block(raw: Any, rows: dict[str, Rows]) -> Block:
    """A block whose header row was encoded (so its hashes are 32 bytes of hex)."""
    return Block(int(raw.number, 16), bytes.fromhex(raw.hash[2:]),
                 bytes.fromhex(raw.parentHash[2:]), rows)  # fmt: skip


def decode_hashes_batch(
    body: bytes, ids: Sequence[int], *, start: int, prefixes: Mapping[str, bytes]
) -> list[Block] | None:
    """`store = "blocks"`: headers, transactions as hashes (checked, counted, not kept)."""
    prefix = prefixes[tables.BLOCKS.name]
    try:
        blocks = []
        for offset, item in enumerate(_answers(body, ids, len(ids))):
            raw = _HASHES_BLOCK.decode(item.result)
            hashes = raw.transactions
            if hashes and (
                set(map(len, hashes)) != {66} or not all(map(str.startswith, hashes, repeat("0x")))
            ):
                return None
            blocks.append(_block(raw, _header(raw, start + offset, prefix)))
        return blocks
    except _REFUSED:
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
    body: bytes,
    ids: Sequence[int],
    *,
    start: int,
    count: int,
    prefixes: Mapping[str, bytes],
    with_logs: bool,
) -> list[Block] | None:
    """The batch's blocks with encoded rows, or None when the checked path must decide.

    `prefixes` are the store's COPY row prefixes per table (`Table.copy_prefix`).
    """
    try:
        return _decode(body, ids, start=start, count=count, prefixes=prefixes, with_logs=with_logs)
    except _REFUSED:
        return None


def _decode(
    body: bytes,
    ids: Sequence[int],
    *,
    start: int,
    count: int,
    prefixes: Mapping[str, bytes],
    with_logs: bool,
) -> list[Block]:
    answers = _answers(body, ids, count + with_logs)
    tx_table, log_table = evm_fields.TRANSACTIONS, evm_fields.LOGS
    tx_prefix, log_prefix = prefixes[tx_table.table.name], prefixes[log_table.table.name]
    block_prefix = prefixes[tables.BLOCKS.name]
    withdrawal_table = evm_fields.WITHDRAWALS
    withdrawal_prefix = prefixes[withdrawal_table.table.name]

    # One block at a time: its structs are dropped once its rows are written.
    heads: list[Block] = []
    tx_data: list[bytes] = []
    tx_hashes: list[list[str]] = []
    spelled: list[tuple[str, str, bool]] = []  # hash, number as sent; bloom announces logs
    for offset, item in enumerate(answers[:count]):
        number = start + offset
        raw = _BLOCK.decode(item.result)
        rows = _header(raw, number, block_prefix)
        if raw.withdrawals is not None:
            rows[withdrawal_table.table.name] = Rows(
                len(raw.withdrawals),
                encoded=withdrawal_table.encode(
                    withdrawal_prefix, raw.withdrawals, block_hash=raw.hash,
                    block_number=raw.number, number=number,
                ),
            )  # fmt: skip
        heads.append(_block(raw, rows))
        txs = raw.transactions
        tx_data.append(
            tx_table.encode(
                tx_prefix, txs, block_hash=raw.hash, block_number=raw.number, number=number
            )
        )
        tx_hashes.append([tx.hash for tx in txs])
        bloom = raw.logsBloom
        spelled.append((raw.hash, raw.number, bloom is not None and bloom != _ZERO_BLOOM))
        del raw, txs

    log_rows = [Rows(0)] * count
    if with_logs:
        groups: list[list[Any]] = [[] for _ in range(count)]
        by_number = {number: offset for offset, (_, number, _) in enumerate(spelled)}
        for lg in _LOGS.decode(answers[-1].result):
            groups[by_number[lg.blockNumber]].append(lg)
        for offset, ((block_hash, block_number, bloom_says), logs) in enumerate(
            zip(spelled, groups, strict=True)
        ):
            if bloom_says != bool(logs):
                raise _Refused  # the bloom and the logs disagree: the checked path says how
            if logs:
                encoded = log_table.encode(
                    log_prefix,
                    logs,
                    block_hash=block_hash,
                    block_number=block_number,
                    number=start + offset,
                    tx_hashes=tx_hashes[offset],
                )
                log_rows[offset] = Rows(len(logs), encoded=encoded)

    for i, head in enumerate(heads):
        rows = dict(head.rows)
        rows[tx_table.table.name] = Rows(len(tx_hashes[i]), encoded=tx_data[i])
        if with_logs:
            rows[log_table.table.name] = log_rows[i]
        heads[i] = Block(head.number, head.hash, head.parent_hash, rows)
    return heads
