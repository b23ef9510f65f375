"""A fake chain node for property tests: a tree of blocks with a switchable canonical branch.

Implements `indexer.chain.ChainSource`, so the real sync engine, store and reorg code run
against it. Hashes are derived from (parent, height, branch salt), so two branches never share
a hash above their fork point.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from indexer.chain import header_block
from indexer.models import Block

GENESIS_PARENT = b"\x00" * 32


class FakeChain:
    label = "fake"

    def __init__(self, length: int = 1) -> None:
        self.canonical: list[bytes] = []
        self.parents: dict[bytes, bytes] = {}
        self._salt = 0
        self.requests = 0  # round trips asked of this node
        self.extend(length)

    # -- Test controls

    @property
    def tip(self) -> int:
        return len(self.canonical) - 1

    def extend(self, count: int) -> None:
        for _ in range(count):
            number = len(self.canonical)
            parent = self.canonical[-1] if self.canonical else GENESIS_PARENT
            h = hashlib.sha256(parent + number.to_bytes(8, "big") + bytes([self._salt % 256]))
            self.canonical.append(h.digest())
            self.parents[h.digest()] = parent

    def reorg(self, depth: int, new_length: int) -> None:
        """Replace the top `depth` blocks by a new branch of `new_length` blocks."""
        assert 1 <= depth <= len(self.canonical) and new_length >= 1
        del self.canonical[len(self.canonical) - depth :]
        self._salt += 1
        self.extend(new_length)

    # -- ChainSource

    def bind(self, copy_prefixes: Mapping[str, bytes]) -> None:
        pass

    def decode_counts(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass

    async def check_identity(self) -> None:
        return None

    async def head(self) -> int:
        self.requests += 1
        return self.tip

    def _block(self, number: int) -> Block:
        h = self.canonical[number]
        return header_block(where=self.label, number=number, hash=h,
                            parent_hash=self.parents[h], timestamp=number, tx_count=0)  # fmt: skip

    async def blocks(self, start: int, count: int) -> list[Block]:
        self.requests += 1
        return [self._block(n) for n in range(start, start + count) if n <= self.tip]

    async def hashes(
        self, numbers: Sequence[int], *, alternate: bool = False
    ) -> dict[int, bytes | None]:
        self.requests += 1
        return {n: self.canonical[n] if 0 <= n <= self.tip else None for n in numbers}
