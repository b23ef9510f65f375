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
from typing import Any, Literal, NamedTuple

import msgspec

from indexer import _rows, errors, tables
from indexer.chain import evm_fields
from indexer.chain.evm_checked import TX_HASH
from indexer.chain.evm_verify import (
    Verifier,
    has_pip74_state_sync,
    lists_system_tx,
    system_tx_hash,
)
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


_Receipt = msgspec.defstruct(
    "_Receipt",
    [("logs", list[_Log])],  # type: ignore[valid-type]
    bases=(evm_fields.RECEIPTS.struct,),
    kw_only=True,
    gc=False,
)

_ENVELOPE = msgspec.json.Decoder(list[_Item])
# The structs are built from the rules at import: their fields are not known to mypy.
_BLOCK: msgspec.json.Decoder[Any] = msgspec.json.Decoder(_Block)
_HASHES_BLOCK: msgspec.json.Decoder[Any] = msgspec.json.Decoder(_HashesBlock)
_LOGS: msgspec.json.Decoder[Any] = msgspec.json.Decoder(list[_Log])  # type: ignore[valid-type]
_RECEIPTS: msgspec.json.Decoder[Any] = msgspec.json.Decoder(list[_Receipt])  # type: ignore[valid-type]
_NO_CHECKS = Verifier(level="links", rules=None, label="")
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
    body: bytes | bytearray,
    ids: Sequence[int],
    *,
    start: int,
    prefixes: Mapping[str, bytes],
    verifier: Verifier | None = None,
) -> list[Block] | None:
    """`store = "blocks"`: headers, transactions as hashes (checked, counted, not kept)."""
    prefix = prefixes[tables.BLOCKS.name]
    try:
        blocks = []
        for offset, result in enumerate(_answers(body, ids, len(ids))):
            raw = _HASHES_BLOCK.decode(result)
            hashes = raw.transactions
            if hashes and (
                not all(map(TX_HASH.match, hashes))
                or len(set(map(str.lower, hashes))) != len(hashes)
            ):
                return None
            (verifier or _NO_CHECKS).check_header(raw)
            blocks.append(_block(raw, _header(raw, start + offset, prefix)))
        return blocks
    except (*_REFUSED, errors.ResponseCorrupted):
        return None


def _answers(body: bytes | bytearray, ids: Sequence[int], expected: int) -> list[Any]:
    """The batch's results in request order, as raw JSON (each a result: no error, no gap).

    Found with the GIL released by `_rows.batch_results` when the answer has the plain shape
    nodes send (each result then decoded, and so checked, on its own); else by msgspec.
    Either way the answer must be plain JSON (`plain_json`: what msgspec would skip
    unchecked, see _rows.c), which `batch_results` checks in the same pass."""
    if len(ids) != expected:
        raise _Refused
    spans = _rows.batch_results(body)
    if spans is False or (spans is None and not _rows.plain_json(body)):
        raise _Refused
    if spans is not None:
        by_span = {i: (start, end) for i, start, end in spans}
        if len(spans) != len(ids) or len(by_span) != len(spans):
            raise _Refused
        view = memoryview(body)
        return [view[slice(*by_span[i])] for i in ids]  # KeyError: an id not answered
    items = _ENVELOPE.decode(body)
    if len(items) != len(ids):
        raise _Refused
    by_id = {item.id: item for item in items}
    if len(by_id) != len(items):
        raise _Refused
    answers = [by_id[i] for i in ids]  # KeyError: an id not answered
    for item in answers:
        if item.error is not None or not len(item.result):
            raise _Refused
    return [item.result for item in answers]


LogSource = Literal["none", "getLogs", "receipts"]


def decode_full_batch(
    body: bytes | bytearray,
    ids: Sequence[int],
    *,
    start: int,
    count: int,
    prefixes: Mapping[str, bytes],
    logs: LogSource,
    receipts: Sequence[bytes] | None = None,
    verifier: Verifier | None = None,
) -> list[Block] | None:
    """The batch's blocks with encoded rows, or None when the checked path must decide.

    `prefixes` are the store's COPY row prefixes per table (`Table.copy_prefix`). Logs come
    from nowhere, from the batch's last answer (`eth_getLogs`), or from the receipts: the
    answers after the blocks (`eth_getBlockReceipts`, one per block), or `receipts`, one
    JSON array per block gathered from per-transaction answers.
    """
    try:
        return _decode(
            body, ids, start=start, count=count, prefixes=prefixes, logs=logs,
            receipts=receipts, verifier=verifier or _NO_CHECKS,
        )  # fmt: skip
    except _REFUSED:
        return None
    except errors.ResponseCorrupted:
        return None  # a commitment that does not recompute: the checked path names it


class _Spelled(NamedTuple):
    """A block's hash, number and bloom as the answer spells them, its transactions'
    hashes, and whether its bloom announces logs."""

    hash: str
    number: str
    tx_hashes: list[str]
    bloom_says_logs: bool
    bloom: str | None = None
    system: str | None = None  # the hash of the block's system transaction (Polygon)
    unverifiable_bloom: bool = False  # Polygon's PIP-74 state sync: see evm_verify

    @property
    def named_hashes(self) -> list[str]:
        """The transactions receipts and logs may name: the block's, then its system one."""
        return [*self.tx_hashes, self.system] if self.system else self.tx_hashes


def _decode(
    body: bytes | bytearray,
    ids: Sequence[int],
    *,
    start: int,
    count: int,
    prefixes: Mapping[str, bytes],
    logs: LogSource,
    receipts: Sequence[bytes] | None,
    verifier: Verifier,
) -> list[Block]:
    in_body = {"none": 0, "getLogs": 1, "receipts": count if receipts is None else 0}[logs]
    answers = _answers(body, ids, count + in_body)
    if logs == "receipts":
        if receipts is None:
            receipts = answers[count:]
        elif not all(map(_rows.plain_json, receipts)):
            raise _Refused
        if len(receipts) != count:
            raise _Refused
    tx_table = evm_fields.TRANSACTIONS
    tx_prefix = prefixes[tx_table.table.name]
    block_prefix = prefixes[tables.BLOCKS.name]
    withdrawal_table = evm_fields.WITHDRAWALS
    withdrawal_prefix = prefixes[withdrawal_table.table.name]

    # One block at a time: its structs are dropped once its rows are written.
    blocks: list[Block] = []
    block_rows: list[dict[str, Rows]] = []
    spelled: list[_Spelled] = []
    for offset, item in enumerate(answers[:count]):
        number = start + offset
        raw = _BLOCK.decode(item)
        rows = _header(raw, number, block_prefix)
        if raw.withdrawals is not None:
            rows[withdrawal_table.table.name] = Rows(
                len(raw.withdrawals),
                encoded=withdrawal_table.encode(
                    withdrawal_prefix, raw.withdrawals, block_hash=raw.hash,
                    block_number=raw.number, number=number,
                ),
            )  # fmt: skip
        txs = raw.transactions
        encoded = tx_table.encode(
            tx_prefix, txs, block_hash=raw.hash, block_number=raw.number, number=number
        )
        rows[tx_table.table.name] = Rows(len(txs), encoded=encoded)
        bloom = raw.logsBloom
        system = system_tx_hash(verifier.rules, raw.number, raw.hash)
        tx_hashes = [tx.hash for tx in txs]
        if len(set(map(str.lower, tx_hashes))) != len(tx_hashes):
            raise _Refused  # a transaction twice: the checked path names it
        if lists_system_tx(tx_hashes, system):
            del tx_hashes[-1]  # stored with the others; named as the system one (after them)
        spelling = _Spelled(raw.hash, raw.number, tx_hashes,
                            bloom is not None and bloom != _ZERO_BLOOM, bloom, system,
                            verifier.rules == "polygon" and has_pip74_state_sync(txs))  # fmt: skip
        if logs == "receipts":
            assert receipts is not None
            block_receipts = _RECEIPTS.decode(receipts[offset])
            verifier.check(raw, receipts=block_receipts)
            rows.update(_receipts_of_block(spelling, block_receipts, number=number,
                                           prefixes=prefixes))  # fmt: skip
        else:
            verifier.check(raw)  # the bloom, with getLogs, once the logs are grouped
        spelled.append(spelling)
        blocks.append(_block(raw, rows))
        block_rows.append(rows)  # the block's own dict: getLogs logs are added below
        del raw, txs

    if logs == "getLogs":
        _logs_of_range(block_rows, spelled, answers[-1], start=start, prefixes=prefixes,
                       verifier=verifier)  # fmt: skip
    return blocks


def _logs_of_range(
    block_rows: list[dict[str, Rows]],
    spelled: list[_Spelled],
    raw_logs: bytes,
    *,
    start: int,
    prefixes: Mapping[str, bytes],
    verifier: Verifier,
) -> None:
    log_table = evm_fields.LOGS
    groups: list[list[Any]] = [[] for _ in block_rows]
    by_number = {s.number: offset for offset, s in enumerate(spelled)}
    for lg in _LOGS.decode(raw_logs):
        groups[by_number[lg.blockNumber]].append(lg)
    for offset, (rows, spelling, logs) in enumerate(zip(block_rows, spelled, groups, strict=True)):
        in_bloom = logs
        if spelling.system is not None:  # the state sync's logs are in no bloom
            in_bloom = [lg for lg in logs if lg.transactionHash != spelling.system]
        if spelling.bloom_says_logs != bool(in_bloom):
            raise _Refused  # the bloom and the logs disagree: the checked path says how
        if not spelling.unverifiable_bloom:
            verifier.check_logs_bloom(
                {"number": spelling.number, "hash": spelling.hash, "logsBloom": spelling.bloom},
                logs,
            )
        encoded = b""
        if logs:
            encoded = log_table.encode(
                prefixes[log_table.table.name],
                logs,
                block_hash=spelling.hash,
                block_number=spelling.number,
                number=start + offset,
                tx_hashes=spelling.named_hashes,
            )
        rows[log_table.table.name] = Rows(len(logs), encoded=encoded)


def _receipts_of_block(
    spelling: _Spelled,
    receipts: list[Any],
    *,
    number: int,
    prefixes: Mapping[str, bytes],
) -> dict[str, Rows]:
    """The block's receipts, and its logs from them, in order (one receipt per transaction)."""
    receipt_table, log_table = evm_fields.RECEIPTS, evm_fields.LOGS
    if len(receipts) not in (len(spelling.tx_hashes), len(spelling.named_hashes)):
        raise _Refused  # one per transaction (and the system one's, where there is one)
    block_hash, block_number, tx_hashes = spelling.hash, spelling.number, spelling.named_hashes
    encoded = receipt_table.encode(
        prefixes[receipt_table.table.name], receipts, block_hash=block_hash,
        block_number=block_number, number=number, tx_hashes=tx_hashes,
    )  # fmt: skip
    # Every receipt's logs, numbered on through the block, each naming its receipt's
    # transaction; in the bloom: the logs of the block's own transactions' receipts (not the
    # system one's).
    logs, position, in_bloom = log_table.c_table.nested_rows(
        prefixes[log_table.table.name], receipts, "logs", block_hash, block_number, number,
        tx_hashes, len(spelling.tx_hashes),
    )  # fmt: skip
    if spelling.bloom_says_logs != bool(in_bloom):
        raise _Refused
    return {
        receipt_table.table.name: Rows(len(receipts), encoded=encoded),
        log_table.table.name: Rows(position, encoded=logs),
    }
