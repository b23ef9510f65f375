"""An event table's declaration (`indexer.tables.Table`) and its DDL, from its config entry.

The columns are INTERFACE.md's "Event tables": `chain`, `block_number`, `log_index`,
`tx_index`, `tx_hash`, `address`, then one per parameter (`abi.Event.columns`), primary key
`(chain, block_number, log_index)`. Everything else (COPY, rollback deletes, counts) derives
from the `Table` like for every other table (`store.sinks`). Only `indexer migrate` runs the
DDL here (as the owner role); `indexer sync` checks the catalog against the declaration and
refuses to start, naming the table, when they differ (`events.registry`). Identifiers from
the config go through `psycopg.sql.Identifier`.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from indexer import tables
from indexer.config import EventConfig
from indexer.events import abi
from indexer.store.queries import Q

# abi column types (`abi.Param.pg_type`) as declared table types.
_TYPES = {
    "numeric": tables.NUMERIC,
    "bytea": tables.BYTEA,
    "boolean": tables.BOOLEAN,
    "text": tables.TEXT,
    "jsonb": tables.JSONB,
}


def _size(param: abi.Param) -> int | None:
    """The exact byte size of a bytea parameter column (None: any size)."""
    if param.hashed:
        return 32  # an indexed reference type: the log holds its keccak256
    kind = param.type
    if not isinstance(kind, abi.Elementary):
        return None
    if kind.base == "address":
        return 20
    if kind.base == "function":
        return 24
    if kind.base == "bytes" and kind.size:
        return kind.size
    return None


def table_of(entry: EventConfig) -> tables.Table:
    """The declaration of `entry`'s table."""
    c = tables.Column
    fixed = (
        tables.CHAIN,
        c("block_number", tables.BIGINT),
        c("log_index", tables.INTEGER),
        c("tx_index", tables.INTEGER),
        c("tx_hash", tables.BYTEA, size=32),
        c("address", tables.BYTEA, size=20),
    )
    assert [x.name for x in fixed] == [x.name for x in abi.FIXED_COLUMNS]
    params = tuple(
        c(p.column, _TYPES[p.pg_type], size=_size(p) if p.pg_type == "bytea" else None)
        for p in entry.decl.params
    )
    return tables.Table(entry.table, fixed + params, height="block_number", position="log_index")


def create_statement(table: tables.Table) -> sql.Composed:
    """CREATE TABLE IF NOT EXISTS for `table` (every column NOT NULL, the primary key)."""
    columns = [
        sql.SQL("{} {} NOT NULL").format(sql.Identifier(col.name), sql.SQL(col.type))
        for col in table.columns
    ]
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY (chain, block_number, log_index))"
    ).format(sql.Identifier(table.name), sql.SQL(", ").join(columns))


async def catalog_columns(conn: psycopg.AsyncConnection[Any], name: str) -> list[tuple[str, str]]:
    """(name, type) of table `name`'s columns in the catalog, in order ([] if no table)."""
    cur = await conn.execute(Q["table_columns"], {"table": name})
    return [(str(n), str(t)) for n, t in await cur.fetchall()]


def differences(table: tables.Table, found: list[tuple[str, str]]) -> str | None:
    """How the catalog's columns differ from the declaration (None: they do not)."""
    wanted = [(col.name, col.type) for col in table.columns]
    if found == wanted:
        return None
    if not found:
        return "it does not exist"
    return (
        f"it has columns ({', '.join(f'{n} {t}' for n, t in found)}), the config's event "
        f"needs ({', '.join(f'{n} {t}' for n, t in wanted)})"
    )
