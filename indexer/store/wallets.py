"""The wallet tables of one chain, as wallet sync reads and writes them.

Reads (scripts, stored transactions and proofs, stored headers) take a pooled connection
and no lock. Every write of a round is one transaction under the chain's write lock, so no
header batch, rollback or repair of the chain runs meanwhile: the headers the round's
proofs were checked against are checked to be still the ones stored, then each wallet's
change goes through the wallet sink (`sinks.WalletSink.apply`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row

from indexer import errors
from indexer.store import Store
from indexer.store.queries import Q
from indexer.store.sinks import WALLETS
from indexer.store.writer import lock_chain_writes
from indexer.wallets.keys import Script
from indexer.wallets.model import Proof, WalletChange


@dataclass(frozen=True, slots=True)
class StoredScript:
    script: Script
    status: bytes | None  # None: to sync; b"": synced, empty history
    used: bool


@dataclass(frozen=True, slots=True)
class StoredHeader:
    hash: bytes
    merkle_root: bytes


@dataclass(frozen=True, slots=True)
class WalletStats:
    name: str
    scripts: int
    confirmed: int
    unconfirmed: int
    synced_at: datetime | None


class HeadersMoved(errors.SourceTransient):
    """A header a proof was checked against is no longer stored (a reorg came first): the
    round is not written, and runs again."""


class WalletStore:
    def __init__(self, store: Store, *, chain: int, name: str) -> None:
        self._store = store
        self.chain = chain
        self.name = name

    async def register(self, wallet: str, scripts: Iterable[Script]) -> dict[bytes, StoredScript]:
        """Register `wallet`, add the scripts it does not watch yet; every script it watches."""
        base = {"chain": self.chain, "wallet": wallet}
        async with self._store.connection(f"register wallet {wallet}") as conn:
            async with conn.transaction():
                cur = conn.cursor()
                await cur.execute(Q["wallet_register"], base)
                await self._add(cur, wallet, scripts)
            return await self._scripts(conn, wallet)

    async def add_scripts(self, wallet: str, scripts: Iterable[Script]) -> None:
        async with self._store.connection(f"derive scripts of wallet {wallet}") as conn:
            async with conn.transaction():
                await self._add(conn.cursor(), wallet, scripts)

    async def _add(self, cur: Any, wallet: str, scripts: Iterable[Script]) -> None:
        params = [
            {"chain": self.chain, "wallet": wallet, "scripthash": s.scripthash,
             "script": s.script, "address": s.address, "descriptor": s.descriptor,
             "branch": s.branch, "derivation_index": s.index}
            for s in scripts
        ]  # fmt: skip
        if params:
            await cur.executemany(Q["wallet_script_add"], params)
        await cur.execute(Q["wallet_scripts_count"], {"chain": self.chain, "wallet": wallet})

    async def _scripts(self, conn: Any, wallet: str) -> dict[bytes, StoredScript]:
        cur = conn.cursor()
        await cur.execute(Q["wallet_scripts_of"], {"chain": self.chain, "wallet": wallet})
        out: dict[bytes, StoredScript] = {}
        for sh, script, address, descriptor, branch, index, status, used in await cur.fetchall():
            out[bytes(sh)] = StoredScript(
                Script(bytes(script), address, descriptor, branch, index),
                None if status is None else bytes(status),
                bool(used),
            )
        return out

    async def unsynced(self) -> set[tuple[str, bytes]]:
        """(wallet, scripthash) of every script to sync again."""
        async with self._store.connection("read wallet scripts to sync") as conn:
            cur = conn.cursor()
            await cur.execute(Q["wallet_scripts_unsynced"], {"chain": self.chain})
            return {(str(w), bytes(sh)) for w, sh in await cur.fetchall()}

    async def raw_transactions(self, txids: Sequence[bytes]) -> dict[bytes, bytes]:
        async with self._store.connection("read wallet transactions") as conn:
            cur = conn.cursor()
            await cur.execute(Q["wallet_raw_transactions"], {"chain": self.chain, "txids": txids})
            return {bytes(t): bytes(r) for t, r in await cur.fetchall()}

    async def proofs(self, txids: Sequence[bytes]) -> dict[bytes, Proof]:
        async with self._store.connection("read wallet proofs") as conn:
            cur = conn.cursor()
            await cur.execute(Q["wallet_stored_proofs"], {"chain": self.chain, "txids": txids})
            return {
                bytes(txid): Proof(int(h), bytes(bh), int(pos), tuple(bytes(b) for b in branch))
                for txid, h, bh, pos, branch in await cur.fetchall()
            }

    async def headers(self, heights: Iterable[int]) -> dict[int, StoredHeader]:
        async with self._store.connection("read stored headers") as conn:
            return await _headers(conn.cursor(), self.chain, sorted(set(heights)))

    async def write(self, changes: Sequence[WalletChange], *, synced: Sequence[str]) -> None:
        """Write a round in one transaction (see the module docstring); `synced`: wallets
        whose every script now equals the server's."""
        async with self._store.connection(f"write wallets of {self.name}") as conn:
            async with conn.transaction():
                cur = conn.cursor()
                await lock_chain_writes(cur, self.chain)
                proven: dict[int, bytes] = {}
                for change in changes:
                    proven.update(change.proven_heights())
                stored = await _headers(cur, self.chain, sorted(proven))
                for height, block_hash in proven.items():
                    header = stored.get(height)
                    if header is None or header.hash != block_hash:
                        raise HeadersMoved(
                            f"{self.name}: the header at {height:,d} changed while its proofs "
                            "were checked; syncing the wallets again"
                        )
                now = int(time.time())
                for change in changes:
                    if change.updates:
                        await WALLETS.apply(cur, self.chain, change, now=now)
                for wallet in synced:
                    await cur.execute(Q["wallet_synced"], {"chain": self.chain, "wallet": wallet})

    async def confirmed_between(self, low: int, high: int) -> list[dict[str, Any]]:
        """Stored confirmed transactions of heights [low, high], with the stored header."""
        return await self._dicts("wallet_confirmed_between", low, high)

    async def outputs_between(self, low: int, high: int) -> list[dict[str, Any]]:
        """Stored outputs of transactions of heights [low, high] or unconfirmed, with the
        transaction's bytes."""
        return await self._dicts("wallet_outputs_between", low, high)

    async def _dicts(self, query: str, low: int, high: int) -> list[dict[str, Any]]:
        async with self._store.connection(f"read wallets of {self.name}") as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(Q[query], {"chain": self.chain, "low": low, "high": high})
            return await cur.fetchall()

    async def stats(self) -> list[WalletStats]:
        async with self._store.connection("read wallet stats") as conn:
            cur = conn.cursor()
            await cur.execute(Q["wallet_stats"], {"chain": self.chain})
            return [
                WalletStats(str(n), int(s), int(c), int(u), at)
                for n, s, c, u, at in await cur.fetchall()
            ]


async def _headers(cur: Any, chain: int, heights: Sequence[int]) -> dict[int, StoredHeader]:
    if not heights:
        return {}
    await cur.execute(Q["blocks_headers_at"], {"chain": chain, "numbers": list(heights)})
    return {
        int(n): StoredHeader(bytes(h), bytes(m))
        for n, h, m in await cur.fetchall()
        if m is not None
    }
