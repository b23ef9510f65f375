"""What each stored column should hold, decoded from the node's JSON independently of the
indexer's decoders: by the column's declared type alone, from the field its rule names."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from indexer import tables
from indexer.chain.fields import FieldTable


def independent(column: tables.Column, value: Any) -> Any:
    """The JSON field `value` as `column` holds it."""
    if value is None:
        return None
    if isinstance(value, list) and column.type == tables.INTEGER:
        return len(value)  # a count
    if column.type == tables.TIMESTAMPTZ:
        return datetime.fromtimestamp(int(value, 16), UTC)
    if column.type in (tables.NUMERIC, tables.BIGINT, tables.INTEGER, tables.SMALLINT):
        return int(value, 16)
    if column.type == tables.BYTEA:
        return bytes.fromhex(value[2:])
    if column.type == tables.BYTEA_ARRAY:
        return tuple(bytes.fromhex(v[2:]) for v in value)
    if column.type == tables.JSONB:
        return tuple(
            {k: [i.lower() for i in v] if isinstance(v, list) else v.lower() for k, v in o.items()}
            for o in value
        )
    return value


def expected(table: FieldTable, item: dict[str, Any]) -> dict[str, Any]:
    """Every column a rule fills from a field of `item`, as the column should hold it."""
    out = {}
    for column, rule in table._rules:
        if rule.key is None:
            continue
        want = independent(column, item.get(rule.key))
        if rule.default_zero and want is None:
            want = 0
        out[column.name] = want
    return out


def stored(row: dict[str, Any]) -> dict[str, Any]:
    """A row read back with psycopg, in the same forms as `expected`."""
    out = {}
    for key, value in row.items():
        if isinstance(value, memoryview):
            value = bytes(value)
        elif isinstance(value, list):
            value = tuple(bytes(v) if isinstance(v, memoryview) else v for v in value)
        elif hasattr(value, "as_integer_ratio") and not isinstance(value, float | bool):
            value = int(value)  # Decimal
        out[key] = value
    return out
