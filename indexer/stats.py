"""`indexer stats`: what each chain has and lacks, as text or JSON."""

from __future__ import annotations

import asyncio
import contextlib
import time
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
    out: list[dict[str, Any]] = []
    async with Store(cfg.database) as store:
        for chain, live_head in zip(chains, heads, strict=True):
            row = await store.chain_stats(chain.name)
            if row is None:
                out.append({"chain": chain.name, "kind": chain.kind, "registered": False,
                            "node_head": live_head})  # fmt: skip
                continue
            head = live_head if live_head is not None else row["head"]
            checkpoint = row["checkpoint"]
            base = checkpoint if checkpoint is not None else row["start_block"] - 1
            coverage = row["coverage_pct"]
            out.append(
                {
                    "chain": chain.name,
                    "kind": chain.kind,
                    "registered": True,
                    "start_block": int(row["start_block"]),
                    "checkpoint": checkpoint,
                    "node_head": head,
                    "node_head_live": live_head is not None,
                    "lag": None if head is None else head - base,
                    "blocks_stored": int(row["blocks_stored"]),
                    "blocks_expected": int(row["blocks_expected"]),
                    "blocks_missing": int(row["blocks_missing"]),
                    "coverage_pct": None if coverage is None else float(coverage),
                    "gap_count": int(row["gap_count"]),
                    "failed_ranges": int(row["failed_ranges"]),
                    "failed_blocks": int(row["failed_blocks"]),
                    "last_reorg": row["last_reorg"].isoformat() if row["last_reorg"] else None,
                    "event_tables": [
                        {
                            "table": e["table"],
                            "signature": e["signature"],
                            "start_block": int(e["start_block"]),
                            "synced_to": int(e["synced_to"]),
                            "rows": int(e["rows"]),
                            "undecodable": int(e["undecodable"]),
                            "configured": e["live_from"] is not None,
                            "factory": e["factory"],
                            "fill": e["fill"],
                            "backfill_pending_blocks": (
                                0
                                if e["live_from"] is None
                                else max(0, int(e["live_from"]) - 1 - int(e["backfilled_to"]))
                                if e["fill"] == "live"
                                else max(0, (checkpoint or 0) - int(e["synced_to"]))
                            ),
                        }
                        for e in await store.event_table_stats(chain.name)
                    ],
                    "wallets": [
                        {
                            "wallet": w["wallet"],
                            "scripts": int(w["scripts"]),
                            "confirmed_transactions": int(w["confirmed"]),
                            "unconfirmed_transactions": int(w["unconfirmed"]),
                            "synced_at": w["synced_at"].isoformat() if w["synced_at"] else None,
                            "lag_secs": None
                            if w["synced_at"] is None
                            else max(0, int(time.time() - w["synced_at"].timestamp())),
                        }
                        for w in await store.wallet_stats(chain.name)
                    ],
                }
            )
    return out


def _num(value: int | None) -> str:
    return "?" if value is None else f"{value:,d}"


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
        cov = row["coverage_pct"]
        checkpoint = row["checkpoint"]
        lines += [
            f"{row['chain']} ({row['kind']})",
            f"  start block     {row['start_block']:,d}",
            f"  checkpoint      {'none' if checkpoint is None else format(checkpoint, ',d')}",
            f"  node head       {head_text}",
            f"  lag             {_num(row['lag'])}",
            f"  blocks stored   {row['blocks_stored']:,d} of {row['blocks_expected']:,d}",
            f"  blocks missing  {row['blocks_missing']:,d} in {row['gap_count']:,d} gap(s)",
            f"  coverage        {'-' if cov is None else f'{cov:.2f}%'}",
            f"  failed ranges   {row['failed_ranges']:,d} ({row['failed_blocks']:,d} blocks; "
            "retried with backoff, or `repair-gaps --retry-failed`)",
            f"  last reorg      {row['last_reorg'] or 'never'}",
        ]
        for wallet in row.get("wallets", ()):
            synced = (
                "never synced"
                if wallet["synced_at"] is None
                else f"last in sync {wallet['synced_at']} ({wallet['lag_secs']:,d}s ago)"
            )
            lines.append(
                f"  wallet {wallet['wallet']}: {wallet['scripts']:,d} scripts, "
                f"{wallet['confirmed_transactions']:,d} confirmed and "
                f"{wallet['unconfirmed_transactions']:,d} unconfirmed transactions; {synced}"
            )
        for event in row.get("event_tables", ()):
            state = f"synced to {event['synced_to']:,d}"
            if event["backfill_pending_blocks"]:
                state += f", backfilling ({event['backfill_pending_blocks']:,d} blocks to go)"
            if not event["configured"]:
                state += ", not in the config (nothing more is added)"
            lines += [
                f"  event table {event['table']}: {event['signature']}",
                f"    {state}; {event['rows']:,d} rows, {event['undecodable']:,d} "
                f"undecodable log(s); from block {event['start_block']:,d}",
            ]
    return "\n".join(lines)
