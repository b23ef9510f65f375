"""The migrated catalog equals the table declarations (`indexer.tables`), column by column.

A migration and a declaration cannot drift apart: a column added to one and not the other,
a type or nullability that differs, or a table of chain data with no declaration (so no
sink: it would keep reorged rows) fails here.
"""

from __future__ import annotations

import psycopg

from indexer import tables

# Tables that are not chain data rows: bookkeeping, never rolled back with blocks.
BOOKKEEPING = {
    "chains",
    "checkpoints",
    "reorgs",
    "block_ranges",
    "gap_failures",
    "schema_migrations",
    "event_registry",
    # The logs each event table skipped: rolled back with their blocks by the event table's
    # sink (`sinks.EventSink`; tests/integration/test_events.py).
    "event_undecodable",
    # Wallets and the scripts they watch: kept from the config by wallet sync.
    "wallets",
    "wallet_scripts",
}
# Wallet rows: declared, but turned back to unconfirmed by a rollback rather than deleted
# (`sinks.WalletSink`; tests/electrum/test_wallets.py).
DECLARED = tables.ALL + tables.WALLET_TABLES


def _catalog(db_url: str) -> dict[str, list[tuple[str, str, bool]]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            """
            SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull
            FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
              AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY c.relname, a.attnum
            """
        ).fetchall()
    out: dict[str, list[tuple[str, str, bool]]] = {}
    for table, column, type_, nullable in rows:
        out.setdefault(table, []).append((column, type_, nullable))
    return out


def test_every_declared_table_matches_the_catalog(db_url: str) -> None:
    catalog = _catalog(db_url)
    for table in DECLARED:
        declared = [(c.name, c.type, c.nullable) for c in table.columns]
        assert catalog.get(table.name) == declared, table.name


def test_every_table_of_chain_data_is_declared(db_url: str) -> None:
    undeclared = set(_catalog(db_url)) - BOOKKEEPING - {t.name for t in DECLARED}
    assert not undeclared, f"tables with no declaration (and so no sink): {sorted(undeclared)}"


def test_every_declared_table_has_a_sink() -> None:
    from indexer.store import sinks

    assert [s.table for s in sinks.SINKS] == list(tables.ALL)


def test_no_event_table_may_take_the_name_of_a_relation_of_ours(db_url: str) -> None:
    from indexer.config import RESERVED_TABLES

    with psycopg.connect(db_url) as conn:
        relations = {
            str(name)
            for (name,) in conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')"
            )
        }
    assert relations == RESERVED_TABLES
