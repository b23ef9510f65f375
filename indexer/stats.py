"""`indexer stats`: what each chain has, as text or JSON."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from indexer import daemon, errors
from indexer.config import Config
from indexer.store import Store

NODE_HEAD_TIMEOUT_SECS = 5.0


async def _node_head(cfg: Config, name: str) -> int | None:
    chain = cfg.chain(name)
    with contextlib.suppress(errors.SourceError, TimeoutError):
        async with daemon.make_rpc(chain) as rpc:
            async with asyncio.timeout(NODE_HEAD_TIMEOUT_SECS):
                return await daemon.make_source(chain, rpc).head()
    return None


async def collect(cfg: Config, names: Sequence[str]) -> list[dict[str, Any]]:
    """Per-chain stats from the database, with the node head asked live when reachable."""
    chains = daemon.select_chains(cfg, names)
    heads = await asyncio.gather(*(_node_head(cfg, c.name) for c in chains))
    out = []
    async with Store(cfg.database) as store:
        for chain, live_head in zip(chains, heads, strict=True):
            row = await store.chain_stats(chain.name)
            if row is None:
                out.append({"chain": chain.name, "kind": chain.kind, "registered": False,
                            "node_head": live_head})  # fmt: skip
                continue
            head = live_head if live_head is not None else row["head"]
            checkpoint = row["checkpoint"]
            stored = int(row["blocks_stored"])
            expected = (
                int(row["highest_stored"]) - int(row["start_block"]) + 1
                if row["highest_stored"] is not None
                else 0
            )
            out.append(
                {
                    "chain": chain.name,
                    "kind": chain.kind,
                    "registered": True,
                    "start_block": int(row["start_block"]),
                    "checkpoint": checkpoint,
                    "node_head": head,
                    "node_head_live": live_head is not None,
                    "lag": None if head is None else head - (checkpoint if checkpoint is not None
                                                             else chain.start_block - 1),
                    "blocks_stored": stored,
                    "blocks_missing": max(expected - stored, 0),
                    "coverage_pct": round(100.0 * stored / expected, 4) if expected else None,
                    "last_reorg": row["last_reorg"].isoformat() if row["last_reorg"] else None,
                }
            )  # fmt: skip
    return out


def render(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        if not row["registered"]:
            lines.append(f"{row['chain']} ({row['kind']}): not synced yet")
            continue
        head = row["node_head"]
        head_text = "unreachable" if head is None else f"{head:,d}"
        if head is not None and not row["node_head_live"]:
            head_text += " (last seen; node unreachable now)"
        checkpoint = row["checkpoint"]
        lines.append(f"{row['chain']} ({row['kind']})")
        lines.append(f"  start block     {row['start_block']:,d}")
        lines.append(
            f"  checkpoint      {'none' if checkpoint is None else format(checkpoint, ',d')}"
        )
        lines.append(f"  node head       {head_text}")
        lines.append(f"  lag             {'?' if row['lag'] is None else format(row['lag'], ',d')}")
        lines.append(f"  blocks stored   {row['blocks_stored']:,d}")
        lines.append(f"  blocks missing  {row['blocks_missing']:,d}")
        cov = row["coverage_pct"]
        lines.append(f"  coverage        {'-' if cov is None else f'{cov:.2f}%'}")
        lines.append(f"  last reorg      {row['last_reorg'] or 'never'}")
    return "\n".join(lines)
