"""Rows of declared tables by column name, for assertions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from indexer import tables
from indexer.models import Block


def named(table: tables.Table, rows: Sequence[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Rows of `Table.row` (no `chain`) as dicts by column name."""
    names = [c.name for c in table.data_columns]
    return [dict(zip(names, row, strict=True)) for row in rows]


def header(block: Block) -> dict[str, Any]:
    """A block's `blocks` row by column name (a row of Python values, not encoded)."""
    return named(tables.BLOCKS, block.rows["blocks"].values)[0]


def utc(secs: int) -> datetime:
    """A unix time as the `timestamp` column holds it."""
    return datetime.fromtimestamp(secs, UTC)
