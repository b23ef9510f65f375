"""Wallet sync of one Electrum chain: every script its wallets watch, kept equal to the servers.

A round: subscribe to the scripts to check on one server (all of them on the first round, on
a new connection and every `FULL_PASS_SECS`; otherwise those the servers notified us of,
those a rollback marked, and those waiting for a header), compare each status with the one
stored, and for each that changed: its history from that server (which must hash to the
status), a second server's opinion when there is one (a history that omits a transaction
the other proves is a lie: that server is dropped), each new transaction fetched once (its
bytes must hash to its txid) and each confirmed one proven against the merkle root of the
header we store at its height. A script whose proof needs a header we do not store yet (or
that a server has on another branch) waits for the next round, unchanged. What changed is
written in one transaction (`store.wallets.WalletStore.write`). Then ranged descriptors
are derived further where used scripts came within `gap_limit` of the end.

Notifications are coalesced (`COALESCE_SECS`); requests go as JSON-RPC batches (`fetch`:
one answer line for many, bounded by each server's concurrency limit); a server that
throttles us is left alone for a while by the pool, not given up on.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indexer import errors
from indexer.chain.electrum_servers import ElectrumServers
from indexer.config import WalletConfig
from indexer.store.wallets import StoredScript, WalletStore
from indexer.wallets import proof as proofs
from indexer.wallets.fetch import History, ProofAsk, WalletServers
from indexer.wallets.keys import Branch, Script
from indexer.wallets.model import Proof, ScriptUpdate, WalletChange, WalletTx

logger = logging.getLogger(__name__)

# A script's history changed (params: its script hash, its new status); 1.7 renamed it.
NOTIFICATIONS = frozenset({"blockchain.scripthash.subscribe", "blockchain.scriptpubkey.subscribe"})
COALESCE_SECS = 0.2  # notifications gathered into one round
POLL_SECS = 2.0  # how often to look for scripts a rollback marked, or waiting for headers
FULL_PASS_SECS = 600.0  # every script checked again at least this often
RETRY_MAX_SECS = 30.0


@dataclass
class _Wallet:
    cfg: WalletConfig
    scripts: dict[bytes, StoredScript] = field(default_factory=dict)  # by scripthash
    by_script: dict[bytes, Script] = field(default_factory=dict)
    derived: dict[tuple[int, int], int] = field(default_factory=dict)  # branch: indexes made
    synced_at: float | None = None  # wall clock, for metrics
    in_sync: bool = False
    confirmed: int = 0  # stored transactions, as of the last write
    unconfirmed: int = 0

    @property
    def name(self) -> str:
        return self.cfg.name

    def keep(self, stored: dict[bytes, StoredScript]) -> None:
        self.scripts = stored
        self.by_script = {s.script.script: s.script for s in stored.values()}
        for s in stored.values():
            if s.script.index is not None and s.script.descriptor is not None:
                key = (s.script.descriptor, s.script.branch or 0)
                self.derived[key] = max(self.derived.get(key, 0), s.script.index + 1)

    def wanted(self) -> tuple[list[Script], dict[tuple[int, int], int]]:
        """Scripts to watch that are not stored yet: fixed ones, and each branch derived up
        to its highest used index plus the gap limit; and how far each branch then is."""
        out = [s for s in self.cfg.fixed_scripts if s.scripthash not in self.scripts]
        reach: dict[tuple[int, int], int] = {}
        for branch in self.cfg.branches:
            key = (branch.descriptor, branch.branch)
            used = [
                s.script.index
                for s in self.scripts.values()
                if s.used
                and s.script.index is not None
                and (s.script.descriptor, s.script.branch or 0) == key
            ]
            upto = (max(used) + 1 if used else 0) + self.cfg.gap_limit
            start = self.derived.get(key, 0)
            if upto > start:
                made = _derive(branch, start, upto, self.cfg.network)
                out.extend(s for s in made if s.scripthash not in self.scripts)
                reach[key] = upto
        return out, reach


def _derive(branch: Branch, start: int, stop: int, network: str) -> list[Script]:
    return [branch.derive(i, network) for i in range(start, stop)]


class WalletSyncer:
    """Keeps the wallets of one chain in sync (see the module docstring)."""

    def __init__(
        self,
        store: WalletStore,
        servers: ElectrumServers,
        wallets: Sequence[WalletConfig],
        *,
        name: str,
    ) -> None:
        self.store = store
        self.name = name
        self.servers = servers
        self.requests = WalletServers(servers)
        self.wallets: dict[str, _Wallet] = {w.name: _Wallet(w) for w in wallets}
        self._dirty: set[bytes] = set()
        self._waiting: set[tuple[str, bytes]] = set()  # for a header, or another branch
        self._wake = asyncio.Event()
        self._full_due = True
        self._last_full = 0.0
        self._subscribed: tuple[str, Any] | None = None
        self._settled = False  # with --to: sync ended, full passes until one is clean
        self._clean = False  # the last round was a full pass that left nothing to do
        self._other_branch = False  # the last round met a proof of another branch than ours
        # Counters for /metrics.
        self.rounds = 0
        self.transactions_fetched = 0
        self.proofs_checked = 0
        self.lies_refused = 0
        self.unexpected_errors = 0
        self.last_error: str | None = None
        servers.listeners.append(self._on_notification)

    # -- Set-up and configuration

    async def prepare(self) -> None:
        """Register every wallet and derive what it watches, before the first round."""
        for wallet in self.wallets.values():
            await self._extend(wallet)

    async def reconfigure(self, wallets: Sequence[WalletConfig]) -> None:
        """Take a new list of wallets (added, or given more addresses) without a restart."""
        fresh: dict[str, _Wallet] = {}
        for cfg in wallets:
            known = self.wallets.get(cfg.name)
            fresh[cfg.name] = _Wallet(cfg) if known is None else known
            fresh[cfg.name].cfg = cfg
        self.wallets = fresh
        for wallet in self.wallets.values():
            await self._extend(wallet)
        self._full_due = True
        self._wake.set()

    async def _extend(self, wallet: _Wallet) -> bool:
        """Store the scripts `wallet` should watch and does not yet; True if there were."""
        if not wallet.scripts:
            wallet.keep(await self.store.register(wallet.name, ()))
        added = False
        while True:
            wanted, reach = await asyncio.to_thread(wallet.wanted)
            if not reach and not wanted:
                return added
            if wanted:
                wallet.keep(await self.store.register(wallet.name, wanted))
                added = True
            wallet.derived.update(reach)

    # -- The loop

    def _on_notification(self, url: str, method: str, params: list[Any]) -> None:
        if method not in NOTIFICATIONS or not params:
            return
        try:
            self._dirty.add(bytes.fromhex(str(params[0])))
        except ValueError:
            return  # the next full pass sees whatever it meant
        self._wake.set()

    @property
    def in_sync(self) -> bool:
        """Every wallet equal to the servers as of the last round."""
        return all(w.in_sync for w in self.wallets.values())

    async def run(
        self,
        *,
        stop: asyncio.Event,
        done: asyncio.Event | None = None,
        finish: bool = False,
    ) -> None:
        """Rounds until `stop`, or `done` (sync ended; with `finish`, once every wallet is in
        sync after it ended). Faults are logged and retried with backoff, never raised."""
        delay = 0.0
        while not stop.is_set():
            if done is not None and done.is_set():
                if not finish:
                    return
                if self._settled and self._clean:
                    return  # a full pass after the last headers found nothing more
                self._full_due = self._settled = True
            try:
                busy = await self._until_stop(stop)
                if busy is None:
                    return  # stopped mid-round: nothing of it was written
                delay = 0.0
                self.last_error = None
            except (errors.SourceError, errors.StoreUnavailable, errors.StoreDenied) as exc:
                delay = min(RETRY_MAX_SECS, max(1.0, delay * 2))
                self.last_error = str(exc)
                logger.warning(
                    "%s: wallet sync: %s (again in %.0fs)", self.name, exc, delay,
                    extra={"chain": self.name, "action": "wallet_sync"},
                )  # fmt: skip
                busy = False
            except errors.IndexerError:
                raise  # what needs an operator (a config the servers refuse) ends the run
            except Exception as exc:  # a bug: said in one line, waited out, never a crash
                delay = min(RETRY_MAX_SECS, max(1.0, delay * 2))
                self.unexpected_errors += 1
                self.last_error = f"unexpected {type(exc).__name__}: {exc}"
                frames = traceback.extract_tb(exc.__traceback__)
                at = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
                logger.error(
                    "%s: wallet sync: unexpected %s%s: %s; retrying in %.0fs (please report it)",
                    self.name, type(exc).__name__, at, exc, delay,
                    extra={"chain": self.name, "action": "unexpected"},
                )  # fmt: skip
                busy = False
            if busy and delay == 0:
                continue
            await self._sleep(stop, delay or POLL_SECS)

    async def _until_stop(self, stop: asyncio.Event) -> bool | None:
        """One round, or None if `stop` is set first (the round is cancelled: a round is
        written in one transaction, so nothing is half written)."""
        round_task = asyncio.ensure_future(self.round())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait([round_task, stopping], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            round_task.cancel()
            stopping.cancel()
            raise
        stopping.cancel()
        if round_task.done():
            return round_task.result()
        round_task.cancel()
        await asyncio.gather(round_task, return_exceptions=True)
        return None

    async def _sleep(self, stop: asyncio.Event, secs: float) -> None:
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=secs, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if self._wake.is_set() and not stop.is_set():
            await asyncio.sleep(COALESCE_SECS)  # let a burst of notifications arrive

    async def round(self) -> bool:
        """One round (see the module docstring); True when another should follow at once."""
        self._wake.clear()
        if not self.wallets:
            self._clean = True
            return False
        self.rounds += 1
        now = time.monotonic()
        full = self._full_due or now - self._last_full > FULL_PASS_SECS
        usable = self.servers.usable_urls()
        if usable and not full:
            # Subscriptions live on one connection: a new one (or another server) has none.
            current = usable[0]
            full = self._subscribed != (current, self.servers.connection_of(current))
        dirty, self._dirty = self._dirty, set()
        check: dict[str, set[bytes]] = {}
        unsynced = set() if full else await self.store.unsynced()
        for wallet in self.wallets.values():
            if full:
                check[wallet.name] = set(wallet.scripts)
            else:
                picked = {sh for sh in wallet.scripts if sh in dirty}
                picked |= {sh for w, sh in unsynced | self._waiting if w == wallet.name}
                check[wallet.name] = picked & set(wallet.scripts)
        every = self._scripts_of({sh for shs in check.values() for sh in shs})
        if not every:
            self._clean = full
            return False
        try:
            waiting, changes = await self._check(every, check, full=full)
        except BaseException:
            # Nothing of this round was written: look at everything it had to look at again.
            self._dirty |= dirty
            if full:
                self._full_due = True
            raise
        if full:
            self._full_due, self._last_full = False, now
        self._waiting = waiting
        logger.debug(
            "%s: wallet round %d (%s): %d script(s) checked, %d changed, %d waiting (%.2fs)",
            self.name, self.rounds, "full" if full else "notified", len(every),
            sum(len(c.updates) for c in changes), len(waiting), time.monotonic() - now,
            extra={"chain": self.name, "action": "wallet_round"},
        )  # fmt: skip
        for change in changes:
            wallet = self.wallets[change.wallet]
            for update in change.updates:
                old = wallet.scripts[update.scripthash]
                wallet.scripts[update.scripthash] = StoredScript(
                    old.script, update.status, old.used or bool(update.txids)
                )
        grown = set()
        for wallet in self.wallets.values():  # every one: a round that failed late may owe
            if await self._extend(wallet):
                grown.add(wallet.name)  # new scripts to look at
        wall = time.time()
        for w in self.wallets.values():
            w.in_sync = (
                w.name not in grown and not any(n == w.name for n, _ in waiting) and not self._dirty
            )
            if w.in_sync:
                w.synced_at = wall
        # With `sync --to`, transactions above the headers we store wait for nothing that
        # will come: a full pass that finds only those is as clean as it gets.
        self._clean = full and not grown and (not waiting or not self._other_branch)
        return bool(grown)

    async def _check(
        self, every: list[Script], check: dict[str, set[bytes]], *, full: bool
    ) -> tuple[set[tuple[str, bytes]], list[WalletChange]]:
        """Statuses of `every` script, then what changed fetched, checked and written;
        the scripts left waiting, and the changes."""
        self._other_branch = False  # a server's block at a height differs from ours
        url, statuses = await self.requests.statuses(every)
        self._subscribed = (url, self.servers.connection_of(url))
        changed = {
            w: {sh for sh in shs if self.wallets[w].scripts[sh].status != (statuses[sh] or b"")}
            for w, shs in check.items()
        }
        waiting, changes = await self._changes(url, statuses, changed)
        synced = [
            w.name for w in self.wallets.values()
            if full and not any(n == w.name for n, _ in waiting)
        ]  # fmt: skip
        if any(c.updates for c in changes) or synced or self.rounds == 1:
            await self.store.write(changes, synced=synced)
            for row in await self.store.stats():
                if row.name in self.wallets:
                    self.wallets[row.name].confirmed = row.confirmed
                    self.wallets[row.name].unconfirmed = row.unconfirmed
        return waiting, changes

    # -- Fetch and check what changed

    async def _changes(
        self, url: str, statuses: dict[bytes, bytes | None], changed: dict[str, set[bytes]]
    ) -> tuple[set[tuple[str, bytes]], list[WalletChange]]:
        hashes = sorted({sh for shs in changed.values() for sh in shs})
        if not hashes:
            return set(), []
        histories = await self.requests.histories(self._scripts_of(set(hashes)), url=url)
        merged, opinions = await self._second_opinion(url, histories)
        txids = sorted({txid for entries in merged.values() for txid, _, _ in entries})
        parsed = await self._transactions(txids)
        proven, unproven = await self._prove(merged, parsed)
        await self._refuse_omissions(opinions, proven)
        waiting: set[tuple[str, bytes]] = set()
        changes = []
        for name, shs in changed.items():
            wallet = self.wallets[name]
            change = WalletChange(wallet=name, scripts=dict(wallet.by_script))
            for sh in sorted(shs):
                entries = merged[sh]
                status: bytes | None = proofs.status([(t, h) for t, h, _ in entries]) or b""
                if histories[sh].url == url and histories[sh].status is not None:
                    status = histories[sh].status or b""
                if any(txid in unproven for txid, _, _ in entries):
                    # Stored all the same, the unproven ones as unconfirmed (never as
                    # confirmed), and the script left to sync again (no status).
                    waiting.add((name, sh))
                    status = None
                change.updates.append(
                    ScriptUpdate(sh, status, tuple(txid for txid, _, _ in entries))
                )
                for txid, height, _ in entries:
                    change.txs[txid] = WalletTx(
                        parsed[txid], proven.get(txid) if height > 0 else None
                    )
            changes.append(change)
        return waiting, changes

    async def _second_opinion(
        self, url: str, histories: dict[bytes, History]
    ) -> tuple[dict[bytes, list[tuple[bytes, int, str]]], dict[bytes, list[History]]]:
        """Each script's entries (txid, height, who said so), with another server's where it
        disagrees with the first (a lagging server, or one that omits a transaction); and
        every history asked, per script."""
        merged = {
            sh: [(txid, height, h.url) for txid, height in h.entries] for sh, h in histories.items()
        }
        opinions = {sh: [h] for sh, h in histories.items()}
        others = [u for u in self.servers.usable_urls() if u != url]
        if not others:
            return merged, opinions
        try:
            scripts = self._scripts_of(set(histories))
            other, statuses = await self.requests.statuses(scripts, url=others[0])
            differ = [s.scripthash for s in scripts if statuses.get(s.scripthash) !=
                      histories[s.scripthash].status]  # fmt: skip
            found = await self.requests.histories(self._scripts_of(set(differ)), url=other)
            seconds = [found[sh] for sh in differ]
        except (errors.SourceTransient, errors.ResponseCorrupted):
            return merged, opinions  # no second opinion this round
        for sh, second in zip(differ, seconds, strict=True):
            opinions[sh].append(second)
            theirs = dict(second.entries)
            known = {txid for txid, _, _ in merged[sh]}
            for i, (txid, height, _) in enumerate(merged[sh]):
                if theirs.get(txid, 0) > 0 and height <= 0:
                    merged[sh][i] = (txid, theirs[txid], second.url)  # confirmed over mempool
            merged[sh].extend(
                (txid, height, second.url) for txid, height in second.entries if txid not in known
            )
        return merged, opinions

    def _scripts_of(self, hashes: set[bytes]) -> list[Script]:
        """The scripts with these hashes, in hash order."""
        found: dict[bytes, Script] = {}
        for wallet in self.wallets.values():
            for sh in hashes - found.keys():
                stored = wallet.scripts.get(sh)
                if stored is not None:
                    found[sh] = stored.script
        return [found[sh] for sh in sorted(found)]

    async def _transactions(self, txids: Sequence[bytes]) -> dict[bytes, proofs.ParsedTx]:
        stored = await self.store.raw_transactions(txids)
        out = {
            txid: proofs.parse_tx(raw, txid, where=f"{self.name} stored transaction {txid.hex()}")
            for txid, raw in stored.items()
        }
        missing = [t for t in txids if t not in out]
        fetched = await self.requests.transactions(missing)
        self.transactions_fetched += len(fetched)
        out.update(fetched)
        return out

    async def _prove(
        self,
        merged: dict[bytes, list[tuple[bytes, int, str]]],
        parsed: dict[bytes, proofs.ParsedTx],
    ) -> tuple[dict[bytes, Proof], set[bytes]]:
        """Proofs of every confirmed entry, or the txids that cannot be proven now."""
        wanted = {(txid, height, who) for es in merged.values() for txid, height, who in es
                  if height > 0}  # fmt: skip
        headers = await self.store.headers({h for _, h, _ in wanted})
        stored = await self.store.proofs(sorted({t for t, _, _ in wanted}))
        proven: dict[bytes, Proof] = {}
        unproven: set[bytes] = set()
        asks: list[tuple[bytes, int, str]] = []
        for txid, height, who in sorted(wanted):
            header = headers.get(height)
            if header is None:
                unproven.add(txid)  # a header we do not store yet
                continue
            old = stored.get(txid)
            if old is not None and old.height == height and old.block_hash == header.hash:
                proven[txid] = old
                continue
            asks.append((txid, height, who))
        results = await self.requests.proofs([
            ProofAsk(parsed[txid], height, headers[height].hash, headers[height].merkle_root,
                     prefer=who)
            for txid, height, who in asks
        ])  # fmt: skip
        for (txid, _, _), result in zip(asks, results, strict=True):
            self.proofs_checked += 1
            if result is None:
                unproven.add(txid)
                self._other_branch = True
            else:
                proven[txid] = result
        unproven -= set(proven)
        return proven, unproven

    async def _refuse_omissions(
        self,
        opinions: dict[bytes, list[History]],
        proven: dict[bytes, Proof],
    ) -> None:
        """A server whose history lacks a transaction another server reported and we proved
        in a block below its own tip is lying by omission: it is dropped like any server
        that sends wrong data (the transaction is stored all the same)."""
        tips: dict[str, int | None] = {}
        for sh, histories in opinions.items():
            if len(histories) < 2:
                continue
            for lacking in histories:
                have = {txid for txid, _ in lacking.entries}
                omitted = [
                    txid for h in histories if h is not lacking
                    for txid, _ in h.entries if txid in proven and txid not in have
                ]  # fmt: skip
                if not omitted:
                    continue
                height = proven[omitted[0]].height
                if lacking.url not in tips:
                    tips[lacking.url] = await self._tip(lacking.url)
                tip = tips[lacking.url]
                if tip is None or tip <= height:
                    continue  # it may not have that block yet
                self.lies_refused += 1
                self.servers.refuse(
                    lacking.url,
                    errors.ResponseCorrupted(
                        f"{self.name}: its history of script {sh.hex()} omits "
                        f"{omitted[0].hex()}, proven in block {height:,d} below its tip"
                    ),
                )
                return

    async def _tip(self, url: str) -> int | None:
        try:
            return await self.requests.tip(url)
        except (errors.SourceTransient, errors.ResponseCorrupted):
            return None
