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
import gc
import logging
from collections.abc import Callable, Sequence

from indexer import errors, tables
from indexer.chain import ChainSource, kinds
from indexer.chain.electrum_servers import ElectrumServers
from indexer.chain.rpc import RpcClient
from indexer.config import ChainConfig, Config
from indexer.events.backfill import EventBackfiller
from indexer.events.matcher import EventSet
from indexer.http.app import HttpServer
from indexer.runtime import ChainRuntime, Runtime
from indexer.sdnotify import Notifier
from indexer.store import Store
from indexer.store.migrate import migrate
from indexer.store.repairs import RepairStore
from indexer.store.wallets import WalletStore
from indexer.store.writer import ChainWriter
from indexer.sync import retry
from indexer.sync.gaps import GapRepairer
from indexer.sync.progress import Progress
from indexer.sync.syncer import ChainSyncer
from indexer.wallets.syncer import WalletSyncer

logger = logging.getLogger(__name__)


def select_chains(cfg: Config, names: Sequence[str]) -> list[ChainConfig]:
    return [cfg.chain(n) for n in names] if names else list(cfg.chains)


async def synced_chains(
    cfg: Config, store: Store, names: Sequence[str], *, echo: Callable[[str], None], doing: str
) -> list[tuple[ChainConfig, int]]:
    """The selected chains that have been synced, with their ids; say so for the others."""
    found = []
    for chain in select_chains(cfg, names):
        row = await store.chain_row(chain.name)
        if row is None:
            echo(f"{chain.name}: never synced; nothing to {doing}")
        else:
            found.append((chain, int(row["id"])))
    return found


def make_source(chain: ChainConfig, client: kinds.Client) -> ChainSource:
    return kinds.kind_of(chain).make_source(chain, client)


def make_rpc(chain: ChainConfig) -> kinds.Client:
    """The node client of a chain (JSON-RPC endpoints, or Electrum servers)."""
    return kinds.kind_of(chain).make_client(chain)


class Reload:
    """SIGHUP: read the config file again and apply what can change without a restart (the
    `[[wallets]]` entries); anything else is logged as waiting for a restart."""

    def __init__(self, load: Callable[[], Config]) -> None:
        self._load = load
        self.requested = asyncio.Event()

    def request(self) -> None:
        self.requested.set()

    async def run(self, runtime: Runtime, *, stop: asyncio.Event) -> None:
        while not stop.is_set():
            waiters = [asyncio.ensure_future(stop.wait()),
                       asyncio.ensure_future(self.requested.wait())]  # fmt: skip
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            if stop.is_set():
                return
            self.requested.clear()
            await self.apply(runtime)

    async def apply(self, runtime: Runtime) -> None:
        try:
            new = await asyncio.to_thread(self._load)
        except errors.ConfigError as exc:
            logger.error("reload: the config is not applied: %s", exc, extra={"action": "reload"})
            return
        if new.model_dump(exclude={"wallets"}) != runtime.cfg.model_dump(exclude={"wallets"}):
            logger.warning(
                "reload: only [[wallets]] changes apply without a restart; the other changes "
                "wait for one",
                extra={"action": "reload"},
            )
        for chain in runtime.chains:
            if chain.wallets is not None:
                await chain.wallets.reconfigure(new.wallets_of(chain.name))
        names = [w.name for w in new.wallets]
        logger.info(
            "reload: watching wallet(s) %s", ", ".join(names) or "(none)",
            extra={"action": "reload"},
        )  # fmt: skip


async def run_sync(
    cfg: Config,
    *,
    chains: Sequence[str] = (),
    to_height: int | None = None,
    stop: asyncio.Event,
    progress: Progress | None = None,
    notifier: Notifier | None = None,
    on_ready: Callable[[Runtime], None] | None = None,
    reload: Reload | None = None,
) -> int:
    """Run `indexer sync`; return the process exit code.

    READY=1 goes out only once the database answered, every endpoint's chain id was checked,
    every writer lock is held and every resume point was validated. A database that does not
    answer (or refuses what start-up needs) is waited for, up to `max_outage_secs`.
    """
    selected = select_chains(cfg, chains)
    progress = progress or Progress()
    notifier = notifier or Notifier({})
    async with contextlib.AsyncExitStack() as stack:
        runtime = await _start_when_database_answers(
            cfg, selected, stack=stack, stop=stop, progress=progress, notifier=notifier,
            to_height=to_height,
        )  # fmt: skip
        if runtime is None:
            return errors.EXIT_OK  # stopped while waiting
        if cfg.http is not None:
            server = HttpServer(
                runtime, listen=cfg.http.listen, ready_max_lag_blocks=cfg.http.ready_max_lag_blocks
            )
            await server.start()
            stack.push_async_callback(server.stop)
        # Long-lived objects built so far never need scanning again, and parsed batches make
        # many short-lived containers: collect less often (measured +15-30% throughput).
        thresholds = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        stack.callback(gc.set_threshold, *thresholds)
        stack.callback(gc.unfreeze)
        notifier.notify("READY=1")
        notifier.notify(f"STATUS=syncing {', '.join(c.name for c in runtime.chains)}")
        stack.callback(notifier.notify, "STOPPING=1")
        if on_ready is not None:
            on_ready(runtime)
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(
                        _run_chain(c.syncer, c.repairer, c.backfiller, c.wallets),
                        name=f"chain-{c.name}",
                    )
                    for c in runtime.chains
                ]
                watchdog = group.create_task(
                    _watchdog(runtime, notifier, stop=stop), name="watchdog"
                )
                reloader = None
                if reload is not None:
                    reloader = group.create_task(reload.run(runtime, stop=stop), name="reload")
                await asyncio.gather(*tasks)
                watchdog.cancel()
                if reloader is not None:
                    reloader.cancel()
        except* errors.IndexerError as group_exc:
            # One chain failed in a way that needs a restart: report that error, not a group.
            raise group_exc.exceptions[0] from None
    return max((t.result() for t in tasks), default=errors.EXIT_OK)


async def _start_when_database_answers(
    cfg: Config,
    selected: Sequence[ChainConfig],
    *,
    stack: contextlib.AsyncExitStack,
    stop: asyncio.Event,
    progress: Progress,
    notifier: Notifier,
    to_height: int | None,
) -> Runtime | None:
    """Build the runtime (`_build`), again and again while the database is out or refuses.

    Each failed attempt unwinds what it opened. Transient failures are tried again with
    backoff, a refusal only an operator can lift every `DENIED_RECHECK_SECS`; the cause is
    logged and sent as the systemd STATUS. Longer than `max_outage_secs` raises (exit 1).
    Returns None when `stop` is set while waiting.
    """
    outage = retry.Outage(cfg.database.max_outage_secs, label="start-up")
    backoff = retry.Backoff()
    while not stop.is_set():
        try:
            async with contextlib.AsyncExitStack() as attempt:
                runtime = await _build(cfg, selected, stack=attempt, stop=stop,
                                       progress=progress, to_height=to_height)  # fmt: skip
                await stack.enter_async_context(attempt.pop_all())
                if outage.ended() is not None:
                    logger.info("the database answers; starting", extra={"action": "db_restored"})
                return runtime
        except (errors.StoreUnavailable, errors.StoreDenied) as exc:
            outage.started(str(exc))
            outage.check()
            delay, warn = backoff.failed()
            denied = isinstance(exc, errors.StoreDenied)
            if denied:
                delay = retry.DENIED_RECHECK_SECS
            notifier.notify(f"STATUS=waiting for the database: {exc}")
            if warn or denied:
                logger.log(
                    logging.ERROR if denied else logging.WARNING,
                    "waiting for the database before starting: %s (trying again in %.1fs; "
                    "exit after max_outage_secs %g)",
                    exc,
                    delay,
                    outage.max_secs,
                    extra={"action": "db_wait"},
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
    return None


async def _build(
    cfg: Config,
    selected: Sequence[ChainConfig],
    *,
    stack: contextlib.AsyncExitStack,
    stop: asyncio.Event,
    progress: Progress,
    to_height: int | None,
) -> Runtime:
    """Migrate, open the pool, check every node, register each chain, take its writer lock
    and validate its resume point."""
    await migrate(cfg.database)
    store = await stack.enter_async_context(Store(cfg.database))
    runtime = Runtime(cfg=cfg, store=store)
    for chain in selected:
        rpc = make_rpc(chain)
        await stack.enter_async_context(rpc)
        source = make_source(chain, rpc)
        stack.callback(source.close)
        await source.check_identity()
        node_chain_id, genesis_hash = kinds.kind_of(chain).identity(chain)
        chain_id = await store.register_chain(
            name=chain.name,
            kind=chain.kind,
            chain_id=node_chain_id,
            genesis_hash=genesis_hash,
            start_block=chain.start_block,
        )
        source.bind(tables.copy_prefixes(chain_id))
        writer = await stack.enter_async_context(
            ChainWriter(cfg.database, chain=chain_id, name=chain.name)
        )
        events = EventSet(
            cfg.events_of(chain.name),
            start_block=chain.start_block,
            logs_stored=chain.keeps("logs"),
        )
        # Event tables as migrate made them, registered; rollbacks delete from every one.
        await writer.attach_events(events, start_block=chain.start_block)
        syncer = ChainSyncer(
            chain,
            source=source,
            writer=writer,
            stop=stop,
            progress=progress,
            to_height=to_height,
            max_outage_secs=cfg.database.max_outage_secs,
            events=events,
        )
        await syncer.prepare()  # the resume point is consistent, or this raises
        repairs = RepairStore(store, chain=chain_id, name=chain.name, chain_sinks=writer.sinks)
        repairer = GapRepairer(chain, source=source, repairs=repairs, events=events)
        backfiller = None
        if events:
            backfiller = EventBackfiller(
                store, chain=chain_id, name=chain.name, events=events, sinks=writer.sinks,
                rpc=rpc if isinstance(rpc, RpcClient) else None,
            )  # fmt: skip
        wallets = None
        if isinstance(rpc, ElectrumServers):  # wallets can be added later (SIGHUP)
            wallets = WalletSyncer(
                WalletStore(store, chain=chain_id, name=chain.name),
                rpc,
                cfg.wallets_of(chain.name),
                name=chain.name,
            )
            await wallets.prepare()
        runtime.chains.append(
            ChainRuntime(
                syncer=syncer, repairer=repairer, rpc=rpc, backfiller=backfiller, wallets=wallets
            )
        )
    return runtime


async def _watchdog(runtime: Runtime, notifier: Notifier, *, stop: asyncio.Event) -> None:
    """Ping systemd's watchdog from the event loop, but only while every chain progresses.

    A blocked loop sends nothing, so systemd restarts us after WatchdogSec. A chain that is
    behind its node yet makes no progress for `stall_timeout_secs` stops the pings too; with
    no systemd watchdog, such a stall ends the process (exit 1) so a supervisor restarts it.
    """
    timeout = runtime.cfg.service.stall_timeout_secs
    interval = notifier.watchdog_interval_secs or min(5.0, timeout / 4)
    warned = False
    while not stop.is_set():
        stalled = [c.name for c in runtime.chains if c.state.stalled(timeout_secs=timeout)]
        if not stalled:
            warned = False
            if notifier.watchdog_interval_secs is not None:
                notifier.notify("WATCHDOG=1")
        else:
            if not warned:
                warned = True
                logger.error(
                    "stalled: %s behind the node with no progress for %.0fs; %s",
                    ", ".join(stalled),
                    timeout,
                    "withholding the watchdog ping"
                    if notifier.watchdog_interval_secs is not None
                    else "exiting so that the service manager restarts us",
                    extra={"action": "stalled"},
                )
            if notifier.watchdog_interval_secs is None:
                raise errors.IndexerError(f"sync stalled on {', '.join(stalled)}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


async def _run_chain(
    syncer: ChainSyncer,
    repairer: GapRepairer,
    backfiller: EventBackfiller | None = None,
    wallets: WalletSyncer | None = None,
) -> int:
    """Run a chain's syncer with its gap repairer (and event backfill, and wallet sync)
    beside it; a halt stops them all."""
    done = asyncio.Event()

    async def sync() -> None:
        try:
            await syncer.run()
        finally:
            done.set()

    halted: errors.ChainHalted | None = None
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(sync(), name=f"sync-{syncer.cfg.name}")
            group.create_task(
                _repair_loop(repairer, stop=syncer.stop, done=done),
                name=f"repair-{syncer.cfg.name}",
            )
            group.create_task(syncer.guard_lock(done=done), name=f"lock-{syncer.cfg.name}")
            if backfiller is not None:
                # With --to, the run ends once sync reached the height and every event table
                # is backfilled; following, the backfill stops with sync.
                group.create_task(
                    backfiller.run(
                        stop=syncer.stop, done=done, finish=syncer.to_height is not None
                    ),
                    name=f"backfill-{syncer.cfg.name}",
                )
            if wallets is not None:
                # With --to, the run ends once sync reached the height and every wallet is
                # in sync with the servers; following, wallet sync stops with sync.
                group.create_task(
                    wallets.run(stop=syncer.stop, done=done, finish=syncer.to_height is not None),
                    name=f"wallets-{syncer.cfg.name}",
                )
    except* errors.ChainHalted as group_exc:
        first = group_exc.exceptions[0]
        assert isinstance(first, errors.ChainHalted)
        halted = first
    except* errors.IndexerError as group_exc:
        raise group_exc.exceptions[0] from None
    if halted is None:
        return errors.EXIT_OK
    syncer.state.halted = str(halted)
    logger.error(
        "%s: halted: %s",
        syncer.cfg.name,
        halted,
        extra={"chain": syncer.cfg.name, "action": "halted"},
    )
    return halted.exit_code


async def _repair_loop(repairer: GapRepairer, *, stop: asyncio.Event, done: asyncio.Event) -> None:
    """Repair gaps at start-up and every `repair_interval_secs` until the chain stops.

    Stale neighbours are left to the syncer, which sees the same reorg at its tip.
    """
    cfg = repairer.cfg
    while not (stop.is_set() or done.is_set()):
        try:
            remaining = await repairer.repair()
            if remaining:
                logger.warning(
                    "%s: %d gap(s) remain, %s blocks missing",
                    cfg.name,
                    len(remaining),
                    f"{repairer.missing_blocks:,d}",
                    extra={"chain": cfg.name, "action": "repair"},
                )
        except (errors.SourceError, errors.StoreError) as exc:
            logger.warning(
                "%s: gap repair failed: %s", cfg.name, exc,
                extra={"chain": cfg.name, "action": "repair"},
            )  # fmt: skip
        if cfg.repair_interval_secs <= 0:
            return
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(done.wait())]
        try:
            await asyncio.wait(waiters, timeout=cfg.repair_interval_secs,
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        finally:
            for waiter in waiters:
                waiter.cancel()
