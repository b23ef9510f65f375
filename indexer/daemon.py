"""Composition root: build the parts from the config, run the chains, take them down.

Resources are entered on one AsyncExitStack in dependency order (store pool, then per chain
the RPC session and the writer with its lock) and unwound in reverse. Signals only set the
`stop` event; each syncer finishes or abandons its current batch between transactions.
A chain that halts (`ChainHalted`) stops alone and the others go on; any other error stops
the daemon so that systemd restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from indexer import errors
from indexer.chain import ChainSource
from indexer.chain.evm import EvmSource
from indexer.chain.rpc import RpcClient
from indexer.config import ChainConfig, Config
from indexer.store import Store
from indexer.store.migrate import migrate
from indexer.store.writer import ChainWriter
from indexer.sync.progress import Progress
from indexer.sync.syncer import ChainSyncer

logger = logging.getLogger(__name__)


def select_chains(cfg: Config, names: Sequence[str]) -> list[ChainConfig]:
    return [cfg.chain(n) for n in names] if names else list(cfg.chains)


def make_source(chain: ChainConfig, rpc: RpcClient) -> ChainSource:
    if chain.kind == "evm":
        return EvmSource(chain, rpc)
    raise errors.ConfigError(f"chains[{chain.name}].kind: {chain.kind!r} is not supported yet")


def make_rpc(chain: ChainConfig) -> RpcClient:
    return RpcClient(
        chain.urls,
        timeout_secs=chain.request_timeout_secs,
        max_concurrency=chain.prefetch_batches + 2,
        label=chain.name,
    )


async def run_sync(
    cfg: Config,
    *,
    chains: Sequence[str] = (),
    to_height: int | None = None,
    stop: asyncio.Event,
    progress: Progress | None = None,
) -> int:
    """Run `indexer sync`; return the process exit code."""
    selected = select_chains(cfg, chains)
    progress = progress or Progress()
    await migrate(cfg.database)
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(Store(cfg.database))
        syncers = []
        for chain in selected:
            rpc = await stack.enter_async_context(make_rpc(chain))
            source = make_source(chain, rpc)
            await source.check_identity()
            chain_id = await store.register_chain(
                name=chain.name,
                kind=chain.kind,
                chain_id=chain.chain_id,
                genesis_hash=bytes.fromhex(chain.genesis_hash.removeprefix("0x"))
                if chain.genesis_hash
                else None,
                start_block=chain.start_block,
            )
            writer = await stack.enter_async_context(
                ChainWriter(cfg.database, chain=chain_id, name=chain.name)
            )
            syncers.append(
                ChainSyncer(
                    chain,
                    source=source,
                    writer=writer,
                    store=store,
                    stop=stop,
                    progress=progress,
                    to_height=to_height,
                )
            )
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_run_chain(s), name=f"sync-{s.cfg.name}") for s in syncers]
    return max((t.result() for t in tasks), default=errors.EXIT_OK)


async def _run_chain(syncer: ChainSyncer) -> int:
    try:
        await syncer.run()
    except errors.ChainHalted as exc:
        logger.error(
            "%s: halted: %s",
            syncer.cfg.name,
            exc,
            extra={"chain": syncer.cfg.name, "action": "halted"},
        )
        return exc.exit_code
    return errors.EXIT_OK
