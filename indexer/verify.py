"""`indexer verify`: check the stored chains with SQL and, optionally, against the node."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from indexer import daemon, errors
from indexer.config import ChainConfig, Config
from indexer.store import Store
from indexer.store.migrate import migrate
from indexer.store.queries import Q

logger = logging.getLogger(__name__)

NODE_CHUNK = 500
MAX_HEIGHT = 1 << 62


def _hex(value: Any) -> str:
    return "0x" + bytes(value).hex()


async def _sql_checks(
    store: Store, chain: ChainConfig, chain_id: int, low: int, high: int
) -> list[str]:
    params = {"chain": chain_id, "low": low, "high": high}
    problems: list[str] = []
    async with store.connection(f"verify {chain.name}") as conn:

        async def rows(name: str, query_params: dict[str, Any]) -> list[tuple[Any, ...]]:
            cur = await conn.execute(Q[name], query_params)
            return await cur.fetchall()

        for number, parent, prev in await rows("verify_links", params):
            problems.append(
                f"block {number:,d}: parent hash {_hex(parent)} is not the stored block "
                f"{number - 1:,d}'s hash {_hex(prev)}"
            )
        for number, count in await rows("verify_orphan_transactions", params):
            problems.append(f"block {number:,d}: {count} transaction(s) but no stored block")
        for number, index in await rows("verify_orphan_logs", params):
            problems.append(f"block {number:,d}: log {index} names a transaction not stored")
        tx_counts = await rows("verify_tx_counts", params) if chain.keeps("transactions") else []
        for number, expected, stored in tx_counts:
            problems.append(
                f"block {number:,d}: tx_count {expected} but {stored} transaction(s) stored"
            )
        for problem, first, last in await rows("verify_ranges", {"chain": chain_id}):
            problems.append(f"coverage bookkeeping: {first:,d}-{last:,d} {problem}")
        cur = await conn.execute(Q["checkpoint_get"], {"chain": chain_id})
        checkpoint = await cur.fetchone()
        cur = await conn.execute(Q["highest_stored"], {"chain": chain_id})
        highest_row = await cur.fetchone()
        highest = highest_row[0] if highest_row else None
        if checkpoint is not None and checkpoint[0] != highest:
            problems.append(f"checkpoint {checkpoint[0]} is not the highest stored block {highest}")
        elif checkpoint is not None and checkpoint[0] is not None:
            cur = await conn.execute(
                Q["block_hash_at"], {"chain": chain_id, "number": checkpoint[0]}
            )
            tip = await cur.fetchone()
            if tip is None or bytes(tip[0]) != bytes(checkpoint[1]):
                problems.append(f"checkpoint hash differs from stored block {checkpoint[0]:,d}")
    return problems


async def _node_checks(
    store: Store, chain: ChainConfig, chain_id: int, low: int, high: int
) -> list[str]:
    problems: list[str] = []
    async with store.connection("highest block") as conn:
        cur = await conn.execute(Q["highest_stored"], {"chain": chain_id})
        row = await cur.fetchone()
    if row is None or row[0] is None:
        return problems
    high = min(high, int(row[0]))
    async with daemon.make_rpc(chain) as rpc:
        source = daemon.make_source(chain, rpc)
        await source.check_identity()
        position = low
        while position <= high:
            async with store.connection(f"verify {chain.name} against the node") as conn:
                cur = await conn.execute(
                    Q["stored_hashes_between"],
                    {"chain": chain_id, "low": position, "high": position + NODE_CHUNK - 1},
                )
                stored = {int(n): bytes(h) for n, h in await cur.fetchall()}
            if stored:
                node = await source.hashes(sorted(stored))
                for number, ours in sorted(stored.items()):
                    theirs = node.get(number)
                    if theirs is None:
                        problems.append(f"block {number:,d}: the node has no block there")
                    elif theirs != ours:
                        problems.append(
                            f"block {number:,d}: stored {_hex(ours)} but the node has "
                            f"{_hex(theirs)}"
                        )
            position += NODE_CHUNK
    return problems


async def verify(
    cfg: Config,
    *,
    chains: Sequence[str],
    low: int | None,
    high: int | None,
    against_node: bool,
    echo: Callable[[str], None],
) -> int:
    """Print every problem found; return 1 if there is any, else 0."""
    await migrate(cfg.database)
    found = 0
    async with Store(cfg.database) as store:
        for chain, chain_id in await daemon.synced_chains(
            cfg, store, chains, echo=echo, doing="verify"
        ):
            lo = chain.start_block if low is None else low
            hi = MAX_HEIGHT if high is None else high
            problems = await _sql_checks(store, chain, chain_id, lo, hi)
            if against_node:
                problems += await _node_checks(store, chain, chain_id, lo, hi)
            for problem in problems:
                echo(f"{chain.name}: {problem}")
            what = "links, child rows and coverage" + (
                " and the node's hashes" if against_node else ""
            )
            echo(
                f"{chain.name}: {'ok' if not problems else f'{len(problems)} problem(s)'} ({what})"
            )
            found += len(problems)
    return errors.EXIT_FAILURE if found else errors.EXIT_OK
