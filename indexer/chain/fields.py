"""Decoding rules: how a JSON-RPC answer's fields become a declared table's columns.

A source declares, per stored table, one `Rule` per column it fills (the field of the answer
and how to read it: hex data, a quantity, a position...) and the `Check`s that tie an item
to the block it came with. `compile_table` joins them with the table's declaration
(`indexer.tables`) into a `FieldTable`, which serves both decode paths from that one place:

- the fast path: a msgspec struct type holding exactly the fields the rules read (built from
  the rules), and the C encoder's field table (`indexer._rows.FieldTable`), which writes
  binary COPY rows in table order with every value checked against its column;
- the checked path: `values`, the same rules in Python over parsed JSON, returning rows of
  Python values (checked by `Table.row`) or raising `ResponseCorrupted` naming the field.

The two must agree: whatever the C encoder takes, `values` takes and maps to the same row
(the differential tests in tests/unit/test_evm_rows.py hold them to it). `values` may take
more (non-canonical spellings), never less.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from indexer import _rows, errors, tables
from indexer.models import MAX_HEIGHT

# Op kinds, as indexer/_rows.c numbers them.
_CHECK_BLOCK_HASH, _CHECK_BLOCK_NUMBER, _CHECK_POSITION, _CHECK_FALSE = 1, 2, 3, 4
_BLOCK_NUMBER, _POSITION, _HEX, _QUANTITY, _HEX_LIST, _TX_INDEX, _TX_HASH = range(10, 17)
_TIMESTAMP, _COUNT, _NULL, _BOOL, _HEX_JSON = 17, 18, 19, 20, 21
_PG = {
    tables.SMALLINT: 1,
    tables.INTEGER: 2,
    tables.BIGINT: 3,
    tables.NUMERIC: 4,
    tables.BYTEA: 5,
    tables.BYTEA_ARRAY: 6,
    tables.TIMESTAMPTZ: 7,
    tables.BOOLEAN: 8,
    tables.JSONB: 9,
}
_HEX_QUANTITY = re.compile(r"0x[0-9a-fA-F]{1,64}\Z")


@dataclass(frozen=True, slots=True)
class Rule:
    """How one column is read from an item of the answer."""

    kind: int
    key: str | None = None  # the item's field (JSON name); None for context values
    default_zero: bool = False  # a missing quantity reads as 0
    max_items: int = 0  # lists: at most this many

    @property
    def reads_number(self) -> bool:
        """Whether the column is filled from a hex quantity of the item."""
        return self.kind in (_QUANTITY, _TIMESTAMP)


def block_number() -> Rule:
    """The number of the block the item belongs to."""
    return Rule(_BLOCK_NUMBER)


def position() -> Rule:
    """The item's position in its block (transaction index, log index)."""
    return Rule(_POSITION)


def hex_data(key: str) -> Rule:
    """Hex data ("0x" + whole bytes); its size is the column's."""
    return Rule(_HEX, key)


def quantity(key: str, *, default_zero: bool = False) -> Rule:
    """A hex quantity of at most 256 bits that fits the column."""
    return Rule(_QUANTITY, key, default_zero=default_zero)


def timestamp(key: str) -> Rule:
    """A hex quantity of unix seconds (a `timestamptz` column)."""
    return Rule(_TIMESTAMP, key)


def boolean(key: str) -> Rule:
    """A JSON boolean."""
    return Rule(_BOOL, key)


def hex_json(key: str) -> Rule:
    """A list of objects whose values are hex strings or lists of them (an access list, an
    authorization list), kept as jsonb: keys as sent, hex lowercase."""
    return Rule(_HEX_JSON, key)


def hex_list(key: str, *, max_items: int) -> Rule:
    """A list of at most `max_items` hex data items of the column's element size."""
    return Rule(_HEX_LIST, key, max_items=max_items)


def count(key: str) -> Rule:
    """The number of items of a list (the list itself is not stored here)."""
    return Rule(_COUNT, key)


def tx_index(key: str) -> Rule:
    """An index of one of the block's transactions."""
    return Rule(_TX_INDEX, key)


def tx_hash(key: str) -> Rule:
    """The hash of the transaction the item's `tx_index` names (its own position if none)."""
    return Rule(_TX_HASH, key)


@dataclass(frozen=True, slots=True)
class Check:
    """A field that must agree with the block or the position; it stores nothing."""

    kind: int
    key: str


def same_block_hash(key: str) -> Check:
    return Check(_CHECK_BLOCK_HASH, key)


def same_block_number(key: str) -> Check:
    return Check(_CHECK_BLOCK_NUMBER, key)


def is_position(key: str) -> Check:
    return Check(_CHECK_POSITION, key)


def is_false(key: str) -> Check:
    return Check(_CHECK_FALSE, key)


@dataclass(frozen=True, slots=True)
class Context:
    """The block the items of one call belong to, as the checked path knows it."""

    number: int
    hash: bytes
    tx_hashes: Sequence[bytes] | None = None


# -- Reading values (the checked path): strict, naming the field


def read_hex(value: Any, key: str, where: str, size: int | None = None) -> bytes:
    if type(value) is str and value[:2] == "0x":
        try:
            raw = bytes.fromhex(value[2:])
        except ValueError:
            pass
        else:
            # fromhex skips whitespace: every character must have been a digit.
            if 2 * len(raw) + 2 == len(value):
                if size is not None and len(raw) != size:
                    raise errors.ResponseCorrupted(f"{where}: field {key!r} is not {size} bytes")
                return raw
    raise errors.ResponseCorrupted(f"{where}: field {key!r} is not hex data")


def read_quantity(value: Any, key: str, where: str) -> int:
    if type(value) is not str or not _HEX_QUANTITY.match(value):
        raise errors.ResponseCorrupted(f"{where}: field {key!r} is not a hex quantity")
    return int(value, 16)


def check_height(height: int, key: str, where: str) -> int:
    """`height` if a chain could reach it (a head, a tip); else the answer is corrupt."""
    if height > MAX_HEIGHT:
        raise errors.ResponseCorrupted(
            f"{where}: field {key!r} says height {height:,d}, beyond any chain's "
            f"(at most {MAX_HEIGHT:,d})"
        )
    return height


_KEY = re.compile(r"[A-Za-z]{1,64}\Z")
_HEX_STRING = re.compile(r"0x[0-9a-fA-F]*\Z")


def read_hex_json(value: Any, key: str, where: str) -> list[dict[str, Any]]:
    """A list of objects of hex strings (or lists of them), hex lowercased (see `hex_json`)."""

    def hex_string(item: Any) -> str:
        if type(item) is not str or not _HEX_STRING.match(item):
            raise errors.ResponseCorrupted(f"{where}: field {key!r} holds a value that is not hex")
        return item.lower()

    if not isinstance(value, list):
        raise errors.ResponseCorrupted(f"{where}: field {key!r} is not a list")
    out: list[dict[str, Any]] = []
    for obj in value:
        if not isinstance(obj, dict):
            raise errors.ResponseCorrupted(f"{where}: field {key!r} holds a non-object")
        entry: dict[str, Any] = {}
        for name, item in obj.items():
            if not _KEY.match(name):
                raise errors.ResponseCorrupted(f"{where}: field {key!r} has a key {name!r}")
            entry[name] = (
                [hex_string(i) for i in item] if isinstance(item, list) else (hex_string(item))
            )
        out.append(entry)
    return out


class FieldTable:
    """One table's rules, compiled for both decode paths (see the module docstring)."""

    def __init__(
        self, table: tables.Table, rules: Mapping[str, Rule], checks: Sequence[Check] = ()
    ) -> None:
        columns = [c.name for c in table.data_columns]
        unknown = set(rules) - set(columns)
        assert not unknown, f"{table.name}: rules for undeclared columns {sorted(unknown)}"
        for column in table.data_columns:
            assert column.nullable or column.name in rules, (
                f"{table.name}.{column.name} is NOT NULL but has no rule"
            )
        self.table = table
        # Every column in table order: the columns no rule fills are null.
        self._rules = [(c, rules.get(c.name, Rule(_NULL))) for c in table.data_columns]
        self._indexed = [
            (i, c, rule) for i, (c, rule) in enumerate(self._rules) if rule.kind != _NULL
        ]
        self._checks = tuple(checks)
        self.struct = self._struct()
        self.c_table = _rows.FieldTable(self._ops())

    @property
    def rules(self) -> list[tuple[tables.Column, Rule]]:
        """Every data column in table order with its rule (a column no rule fills: null)."""
        return list(self._rules)

    # -- Fast path

    def _struct(self) -> type[msgspec.Struct]:
        fields: dict[str, tuple[Any, Any]] = {}
        for check in self._checks:
            fields[check.key] = (
                (bool, False) if check.kind == _CHECK_FALSE else (str, msgspec.NODEFAULT)
            )
        for column, rule in self._rules:
            if rule.key is None:
                continue
            if rule.kind == _HEX_LIST:
                fields[rule.key] = (
                    (list[str] | None, None) if column.nullable else (list[str], msgspec.NODEFAULT)
                )
            elif rule.kind == _COUNT:
                fields[rule.key] = (list[Any], msgspec.NODEFAULT)
            elif rule.kind == _BOOL:
                fields[rule.key] = (bool | None, None)
            elif rule.kind == _HEX_JSON:
                fields[rule.key] = (list[dict[str, str | list[str]]] | None, None)
            elif column.nullable or rule.default_zero:
                fields[rule.key] = (str | None, None)
            else:
                fields[rule.key] = (str, msgspec.NODEFAULT)
        spec = [
            (key, kind) if default is msgspec.NODEFAULT else (key, kind, default)
            for key, (kind, default) in fields.items()
        ]
        return msgspec.defstruct(
            f"{self.table.name}_item", spec, kw_only=True, gc=False, forbid_unknown_fields=False
        )

    def _ops(self) -> list[_rows.Op]:
        ops: list[_rows.Op] = [(c.kind, c.key, 0, -1, False, False, 0, c.key) for c in self._checks]
        for column, rule in self._rules:
            pg = _PG[column.type]
            size = -1 if column.size is None else column.size
            label = rule.key or column.name
            ops.append((rule.kind, rule.key, pg, size, column.nullable, rule.default_zero,
                        rule.max_items, label))  # fmt: skip
        return ops

    def encode(
        self,
        prefix: bytes,
        items: list[Any],
        *,
        block_hash: str,
        block_number: str,
        number: int,
        tx_hashes: list[str] | None = None,
        first_position: int = 0,
        tx_index: int = -1,
    ) -> bytes:
        """`items` (structs of `self.struct`) as binary COPY rows; ValueError if refused.

        With `tx_index` >= 0, every item must name that transaction (one receipt's logs).
        """
        return self.c_table.rows(
            prefix, items, block_hash, block_number, number, tx_hashes, first_position, tx_index
        )

    # -- Checked path

    def values(self, item: Any, *, context: Context, position: int, where: str) -> tuple[Any, ...]:
        """One item (parsed JSON, or a struct of `self.struct`) as a checked row: table
        order, `chain` left out."""
        get: Callable[[str], Any]
        if isinstance(item, dict):
            get = item.get
        elif isinstance(item, msgspec.Struct):
            get = item.__getattribute__
        else:
            raise errors.ResponseCorrupted(f"{where}: item {position} is not an object")
        for check in self._checks:
            self._check(check, get(check.key), context, position, where)
        out: list[Any] = [None] * len(self.table.data_columns)
        reg = position
        for index, column, rule in self._indexed:
            key = rule.key or ""
            value = get(key) if rule.key is not None else None
            kind = rule.kind
            if kind == _HEX:
                out[index] = None if value is None else read_hex(value, key, where, column.size)
            elif kind == _QUANTITY or kind == _TIMESTAMP:
                if value is None:
                    out[index] = 0 if rule.default_zero else None
                else:
                    out[index] = read_quantity(value, key, where)
            elif kind == _BLOCK_NUMBER:
                out[index] = context.number
            elif kind == _POSITION:
                out[index] = position
            elif kind == _HEX_LIST and value is None:
                out[index] = None
            elif kind == _HEX_LIST:
                if not isinstance(value, list) or len(value) > rule.max_items:
                    raise errors.ResponseCorrupted(
                        f"{where}: field {rule.key!r} is not a list of at most "
                        f"{rule.max_items} items"
                    )
                out[index] = [read_hex(v, key, where, column.size) for v in value]
            elif kind == _BOOL:
                if value is not None and not isinstance(value, bool):
                    raise errors.ResponseCorrupted(f"{where}: field {key!r} is not a boolean")
                out[index] = value
            elif kind == _HEX_JSON:
                out[index] = None if value is None else read_hex_json(value, key, where)
            elif kind == _COUNT:
                if not isinstance(value, list):
                    raise errors.ResponseCorrupted(f"{where}: field {rule.key!r} is not a list")
                out[index] = len(value)
            elif kind == _TX_INDEX:
                reg = read_quantity(value, key, where)
                hashes = context.tx_hashes or ()
                if not 0 <= reg < len(hashes):
                    raise errors.ResponseCorrupted(
                        f"{where}: item {position} names a transaction not in its block"
                    )
                out[index] = reg
            elif kind == _TX_HASH:
                got = read_hex(value, key, where, 32)
                hashes = context.tx_hashes or ()
                if not 0 <= reg < len(hashes) or hashes[reg] != got:
                    raise errors.ResponseCorrupted(
                        f"{where}: item {position} names a transaction not in its block"
                    )
                out[index] = got
            else:
                raise AssertionError(f"unknown rule kind {kind}")
        return self.table.checked(out, where=where)

    @staticmethod
    def _check(check: Check, value: Any, context: Context, position: int, where: str) -> None:
        key = check.key
        if check.kind == _CHECK_BLOCK_HASH:
            if read_hex(value, key, where, 32) != context.hash:
                raise errors.ResponseCorrupted(f"{where}: item {position} names another block hash")
        elif check.kind == _CHECK_BLOCK_NUMBER:
            if read_quantity(value, key, where) != context.number:
                raise errors.ResponseCorrupted(
                    f"{where}: item {position} names another block number"
                )
        elif check.kind == _CHECK_POSITION:
            if read_quantity(value, key, where) != position:
                raise errors.ResponseCorrupted(f"{where}: {key} out of order at {position}")
        elif check.kind == _CHECK_FALSE:
            if value is not None and value is not False:
                raise errors.ResponseCorrupted(f"{where}: item {position} has {key} set")
        else:
            raise AssertionError(f"unknown check kind {check.kind}")
