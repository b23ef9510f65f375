"""Domain objects: what a chain source hands to validation and the store.

Only these travel past `indexer.chain`; hashes and addresses are raw bytes in the byte order
explorers display, heights are ints. A block carries its rows for the declared tables
(`indexer.tables`), its own `blocks` row among them, already checked against their columns
by the source that made them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class BlockRef:
    """A block identified by height and hash (a tip, a checkpoint, a fork point)."""

    number: int
    hash: bytes

    def __str__(self) -> str:
        return f"{self.number:,d}/0x{self.hash.hex()[:12]}"


@dataclass(frozen=True, slots=True)
class Rows:
    """One table's rows of one block, in one of two forms.

    `values`: rows of Python values in the table's column order, `chain` left out (the store
    adds it). `encoded`: the same rows in PostgreSQL's binary COPY row format, complete
    (the `chain` field comes from the store's `Table.copy_prefix`), back to back with no
    header or trailer: a fast path made them, and the store sends them as they are.
    """

    count: int
    values: tuple[tuple[Any, ...], ...] = ()
    encoded: bytes = b""
    # Positions left out (an event table: log indexes of logs with its topic that did not decode).
    skipped: tuple[int, ...] = ()

    @classmethod
    def of(cls, values: tuple[tuple[Any, ...], ...]) -> Rows:
        return cls(len(values), values=values)


@dataclass(frozen=True, slots=True)
class Block:
    number: int
    hash: bytes
    parent_hash: bytes
    rows: Mapping[str, Rows] = field(repr=False)  # by table name; "blocks" is its own row

    @property
    def ref(self) -> BlockRef:
        return BlockRef(self.number, self.hash)

    def rows_in(self, table: str) -> int:
        """How many rows this block writes to `table`."""
        rows = self.rows.get(table)
        return 0 if rows is None else rows.count


# The highest block height anything takes (config, a node's head): far above any chain, and
# safe for bigint arithmetic. A node that says more is corrupt.
MAX_HEIGHT = (1 << 62) - 1

# What a genesis block's parent hash is, as a ref one below height 0.
GENESIS_PARENT = BlockRef(-1, b"\x00" * 32)
