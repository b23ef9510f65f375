"""Chain sources: fetch blocks from nodes and hand back checked domain objects.

Every source implements `ChainSource`. What a source returns has been checked for shape and
self-consistency (numbers asked for, child rows naming their block); whether consecutive
blocks link is checked by `indexer.sync.validate`, the same for every kind of chain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from indexer import errors, tables
from indexer.models import GENESIS_PARENT, Block, BlockRef, Rows


class ChainSource(Protocol):
    """What the sync engine needs from a chain."""

    label: str

    async def check_identity(self) -> None:
        """Raise `errors.ChainMismatch` unless every endpoint serves the configured chain."""

    def bind(self, copy_prefixes: Mapping[str, bytes]) -> None:
        """The store's COPY row prefix per table (`Table.copy_prefix`): sources that encode
        rows for COPY themselves start every row with it."""

    def close(self) -> None:
        """Release what the source holds besides its node client (worker processes)."""

    def decode_counts(self) -> Mapping[str, int]:
        """Batches decoded per decode path, for metrics (empty when there is one path)."""

    async def head(self) -> int:
        """The height of the node's best block."""

    async def blocks(self, start: int, count: int) -> list[Block]:
        """Blocks `start` .. `start + count - 1` with their child rows, in order."""

    async def hashes(
        self, numbers: Sequence[int], *, alternate: bool = False
    ) -> dict[int, bytes | None]:
        """The node's block hashes at `numbers` in one round trip (None: no such block).

        With `alternate`, ask another endpoint than the usual one when there are several
        (a second opinion before deleting anything).
        """


async def anchor_below(source: ChainSource, start_block: int) -> BlockRef:
    """What the first block at `start_block` must link to.

    For a genesis block, the all-zero parent hash; otherwise the node's block at
    `start_block - 1` (asked from another endpoint when there are several).
    """
    if start_block == 0:
        return GENESIS_PARENT
    number = start_block - 1
    found = (await source.hashes([number], alternate=True)).get(number)
    if found is None:
        raise errors.ResponseCorrupted(f"{source.label}: node has no block at {number:,d}")
    return BlockRef(number, found)


def header_block(*, where: str, **values: Any) -> Block:
    """A block from its `blocks` column values (checked; the columns not given are null)."""
    row = tables.BLOCKS.row(values, where=where)
    return Block(
        values["number"], values["hash"], values["parent_hash"], {"blocks": Rows.of((row,))}
    )
