"""The running daemon's parts, as seen by health checks, metrics and the watchdog."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from indexer.chain.kinds import Client
from indexer.config import Config
from indexer.events.backfill import EventBackfiller
from indexer.store import Store
from indexer.sync.gaps import GapRepairer
from indexer.sync.state import ChainState
from indexer.sync.syncer import ChainSyncer
from indexer.wallets.syncer import WalletSyncer


@dataclass
class ChainRuntime:
    syncer: ChainSyncer
    repairer: GapRepairer
    rpc: Client
    backfiller: EventBackfiller | None = None  # when the chain has event tables
    wallets: WalletSyncer | None = None  # when the chain has wallets

    @property
    def name(self) -> str:
        return self.syncer.cfg.name

    @property
    def state(self) -> ChainState:
        return self.syncer.state


@dataclass
class Runtime:
    cfg: Config
    store: Store
    chains: list[ChainRuntime] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    database_size_bytes: int | None = None  # refreshed in the background
    database_errors: int = 0
