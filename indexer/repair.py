"""`indexer repair-gaps`: list the missing ranges of each chain and fill them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from indexer import daemon, errors, tables
from indexer.chain import ChainSource
from indexer.config import ChainConfig, Config
from indexer.store import Store
from indexer.store.migrate import migrate
from indexer.store.repairs import RepairStore
from indexer.store.writer import ChainWriter
from indexer.sync import reorg
from indexer.sync.gaps import GapRepairer, RangeReport
from indexer.sync.pipeline import LinkedBatches, write_up_to

logger = logging.getLogger(__name__)


async def repair_gaps(
    cfg: Config,
    *,
    chains: Sequence[str],
    low: int | None,
    high: int | None,
    dry_run: bool,
    retry_failed: bool,
    echo: Callable[[str], None],
    stop: asyncio.Event,
) -> int:
    """Return 0 when no gap remains in the selected ranges, 1 otherwise."""
    await migrate(cfg.database)
    exit_code = errors.EXIT_OK
    async with Store(cfg.database) as store:
        for chain, chain_id in await daemon.synced_chains(
            cfg, store, chains, echo=echo, doing="repair"
        ):
            async with daemon.make_rpc(chain) as rpc:
                source = daemon.make_source(chain, rpc)
                try:
                    source.bind(tables.copy_prefixes(chain_id))
                    await source.check_identity()
                    repairs = RepairStore(store, chain=chain_id, name=chain.name)

                    def on_report(report: RangeReport, name: str = chain.name) -> None:
                        echo(f"{name}: {report}")

                    async def on_reorg(
                        chain: ChainConfig = chain,
                        chain_id: int = chain_id,
                        source: ChainSource = source,
                    ) -> None:
                        await _resolve_reorg(
                            cfg, chain, chain_id, source=source, stop=stop, echo=echo
                        )

                    repairer = GapRepairer(
                        chain, source=source, repairs=repairs, on_report=on_report
                    )

                    remaining = await repairer.repair(
                        low=low,
                        high=high,
                        dry_run=dry_run,
                        retry_failed=retry_failed,
                        on_reorg=on_reorg,
                    )
                finally:
                    source.close()
            if remaining:
                total = sum(e - s + 1 for s, e in remaining)
                echo(f"{chain.name}: {len(remaining)} gap(s), {total:,d} blocks missing")
                exit_code = errors.EXIT_FAILURE
            else:
                echo(f"{chain.name}: no gaps")
    return exit_code


async def _resolve_reorg(
    cfg: Config,
    chain: ChainConfig,
    chain_id: int,
    *,
    source: ChainSource,
    stop: asyncio.Event,
    echo: Callable[[str], None],
) -> None:
    """A repaired range met a stale neighbour: let the reorg logic bring the chain in line.

    If `indexer sync` is running on this chain, it owns the writer lock and will roll back the
    stale blocks itself (its tip is stale too); we give it a few poll intervals. Otherwise we
    take the lock, resolve the reorg at the tip (`reorg.resolve`: fork point, confirmation,
    rollback) and sync the new branch back up to the height we had.
    """
    writer = ChainWriter(cfg.database, chain=chain_id, name=chain.name)
    try:
        await writer.open()
    except errors.WriterLockHeld:
        echo(f"{chain.name}: stale blocks found; the running sync will roll them back")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=5 * chain.poll_interval_secs)
        return
    try:
        tip = await writer.tip()
        if tip is None:
            return
        echo(f"{chain.name}: stale blocks found; checking the tip for a reorg")
        try:
            rollback = await reorg.resolve(tip=tip, chain=chain, source=source, writer=writer)
        except errors.ReorgNotConfirmed as exc:
            echo(f"{chain.name}: no reorg to roll back ({exc})")
            return
        fork = rollback.fork.block
        echo(f"{chain.name}: rolled back {rollback.depth:,d} block(s) to {fork or 'the start'}")
        batches = LinkedBatches(
            source,
            start_block=chain.start_block,
            batch_size=chain.batch_size,
            depth=chain.prefetch_batches,
        )
        try:
            limit = min(tip.number, await source.head() - chain.confirmations)
            await write_up_to(batches, writer, tip=fork, limit=limit)
        finally:
            await batches.close()
    finally:
        await writer.close()
