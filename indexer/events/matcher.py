"""One chain's event tables at work: which logs belong to which table, decoded into rows.

`EventSet.attach(blocks)` runs on validated batches, before they are written (sync and gap
repair): for each block at or above a table's `start_block`, every log whose first topic is
the event's topic0 (and whose contract is one of the table's addresses, if it names any) is
decoded by the event's compiled decoder (`decoder.EventDecoder`) into a row of the table;
the rows ride along in `Block.rows` under the table's name and go to the database through
the table's sink, in the batch's transaction (a table with a factory is not decoded here:
the backfill fills it as far as its factory's table is synced). A log that has the topic but
is not an
instance of the event (an ERC-721 Transfer under an ERC-20 Transfer table) is skipped and
recorded (`Rows.skipped`, stored in `event_undecodable`), never a wrong row. `rows_of_logs`
does the same for stored logs (the backfill). Both read logs in one shape: (block_number,
log_index, tx_index, tx_hash, address, topics, data).

A table whose event has only static value parameters (and indexed ones: Transfer, Approval,
Swap and most events) is decoded in C when the batch's logs are binary COPY rows (the fast
path's): `_rows.event_rows` reads the logs' rows and writes the table's, by the same rules,
with no Python object per log (`EventTable.spec`; a property test holds it to the generated
decoder). Others, and logs held as values (the checked path), go through the decoder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, cast

from psycopg.types.json import Jsonb

from indexer import _rows, tables
from indexer.config import EventConfig
from indexer.events import abi, schema
from indexer.events.decoder import EventDecoder, Undecodable
from indexer.models import Block, Rows

LogRow = tuple[int, int, int, bytes, bytes, Sequence[bytes], bytes]


def _raw_json(text: str) -> str:
    return text


class EventTable:
    """One configured event on one chain: its table, decoder and filter."""

    def __init__(self, entry: EventConfig, *, start_block: int, logs_stored: bool = True) -> None:
        self.entry = entry
        self.table: tables.Table = schema.table_of(entry)
        self.name = entry.table
        event = entry.decl
        self.decode = EventDecoder(event).decode
        self.anonymous = event.anonymous
        self.topic0: bytes | None = None if event.anonymous else event.topic0
        self.topic_count = event.topic_count
        self.addresses = entry.addresses
        # A factory's table and column: this table's contracts are the addresses there.
        self.factory = (
            None if entry.factory is None else (entry.factory.table, entry.factory.column)
        )
        # How it is filled: "live" (decoded from each batch, backfilled from stored logs
        # below), "logs" (from stored logs only, following its factory), "node" (from the
        # node's eth_getLogs only: the chain stores no logs).
        self.fill = "node" if not logs_stored else "live" if self.factory is None else "logs"
        self.start_block = entry.start_block if entry.start_block is not None else start_block
        self.signature = event.declaration
        self._jsonb = tuple(
            i for i, column in enumerate(event.columns) if column.pg_type == "jsonb"
        )
        self.spec = c_spec(event, self.addresses)

    def row(self, log: LogRow) -> tuple[Any, ...] | None:
        """`log` as a row of this table (`chain` left out); None if it does not decode."""
        number, log_index, tx_index, tx_hash, address, topics, data = log
        try:
            values = self.decode(topics, data)
        except Undecodable:
            return None
        if self._jsonb:
            listed: list[Any] = list(values)
            for i in self._jsonb:  # JSON text, sent as it is
                listed[i] = Jsonb(listed[i], dumps=_raw_json)
            return (number, log_index, tx_index, tx_hash, address, *listed)
        return (number, log_index, tx_index, tx_hash, address, *values)

    @property
    def factory_name(self) -> str | None:
        """ "table.column" of its factory (None: no factory)."""
        return None if self.factory is None else ".".join(self.factory)

    def takes(self, log: LogRow) -> bool:
        """Whether `log` is this table's to decode (topic and contract; not its shape)."""
        topics = log[5]
        if self.anonymous:
            if len(topics) != self.topic_count:
                return False
        elif not topics or topics[0] != self.topic0:
            return False
        return self.addresses is None or log[4] in self.addresses

    def rows_of_logs(
        self, logs: Iterable[LogRow]
    ) -> tuple[list[tuple[Any, ...]], list[tuple[int, int]]]:
        """The rows of the logs this table takes, and the (block_number, log_index) of
        those that did not decode."""
        rows: list[tuple[Any, ...]] = []
        skipped: list[tuple[int, int]] = []
        for log in logs:
            if not self.takes(log):
                continue
            row = self.row(log)
            if row is None:
                skipped.append((log[0], log[1]))
            else:
                rows.append(row)
        return rows, skipped


class EventSet:
    """The event tables of one chain (possibly none)."""

    def __init__(
        self, entries: Sequence[EventConfig], *, start_block: int, logs_stored: bool = True
    ) -> None:
        self.tables = tuple(
            EventTable(e, start_block=start_block, logs_stored=logs_stored) for e in entries
        )
        self._topic0s = frozenset(t.topic0 for t in self.tables if t.topic0 is not None)
        self._any_anonymous = any(t.anonymous for t in self.tables)

    def __bool__(self) -> bool:
        return bool(self.tables)

    def attach(self, blocks: Sequence[Block]) -> list[Block]:
        """`blocks` with the rows of every event table added (see the module docstring)."""
        if not self.tables:
            return list(blocks)
        out = []
        for block in blocks:
            stored = block.rows.get(tables.LOGS.name)
            encoded = stored.encoded if stored is not None else b""
            logs: list[LogRow] | None = None  # as values, once a table needs them
            added: dict[str, Rows] = {}
            for table in self.tables:
                if block.number < table.start_block or table.fill != "live":
                    continue  # filled by the backfill, following
                if encoded and table.spec is not None:
                    data, count, left_out, _ = _rows.event_rows(encoded, table.spec)
                    if count or left_out:
                        added[table.name] = Rows(
                            count, encoded=data, skipped=tuple(i for _, i in left_out)
                        )
                    continue
                if logs is None:
                    logs = _logs_of(block, None if self._any_anonymous else self._topic0s)
                rows, skipped = table.rows_of_logs(logs)
                if rows or skipped:
                    added[table.name] = Rows(
                        len(rows), values=tuple(rows), skipped=tuple(i for _, i in skipped)
                    )
            out.append(dataclasses.replace(block, rows={**block.rows, **added}) if added else block)
        return out


def _logs_of(block: Block, topic0s: frozenset[bytes] | None) -> list[LogRow]:
    """The block's logs (only those whose first topic is in `topic0s`, unless None)."""
    rows = block.rows.get(tables.LOGS.name)
    if rows is None or not rows.count:
        return []
    if rows.encoded:
        return cast(list[LogRow], _rows.log_rows(rows.encoded, topic0s))
    found: list[LogRow] = []
    for number, log_index, tx_index, tx_hash, address, topics, data in rows.values:
        if topic0s is None or (topics and topics[0] in topic0s):
            found.append((number, log_index, tx_index, tx_hash, address, topics, data))
    return found


# `_rows.event_rows` parameter kinds (indexer/_rows.c) by ABI base type.
_C_KINDS = {"address": 1, "uint": 2, "int": 3, "bool": 4, "bytes": 5, "function": 5}
_C_RAW = 6  # an indexed reference type: its topic as it is


def c_spec(event: abi.Event, addresses: frozenset[bytes] | None) -> _rows.EventSpec | None:
    """What `_rows.event_rows` needs to decode `event`'s logs (None: a parameter it cannot
    read, a dynamic or composite one in the data, so the generated decoder does)."""
    params: list[tuple[int, int, int, int]] = []
    topic = 0 if event.anonymous else 1
    at = 0  # the data's head: one word per static value
    for param in event.params:
        kind = param.type
        if param.hashed:
            params.append((_C_RAW, topic, 0, 32))
            topic += 1
            continue
        if not isinstance(kind, abi.Elementary) or kind.dynamic:
            return None
        size = 24 if kind.base == "function" else kind.size or 0
        if param.indexed:
            params.append((_C_KINDS[kind.base], topic, 0, size))
            topic += 1
        else:
            params.append((_C_KINDS[kind.base], -1, at, size))
            at += 32
    listed = None if addresses is None else b"".join(sorted(addresses))
    topic0 = None if event.anonymous else event.topic0
    return (topic0, event.topic_count, listed, at, tuple(params))
