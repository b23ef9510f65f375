"""`indexer verify`: check the stored chains with SQL, at rest, and optionally against the node.

At rest (EVM chains, no node): every stored block's hash, and with full data its
transaction hashes, roots and blooms, recomputed from the stored rows by the same verifier
that checked the node's answers, at the chain's `verify` level.

Every check honours `--from/--to`. A check lists its first `SHOWN` problems and counts the
rest ("and N more"); the summary line counts them all, and any problem exits 1.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from indexer import daemon, errors, tables
from indexer.chain import evm_rest, evm_verify
from indexer.config import ChainConfig, Config, EvmChainConfig
from indexer.store import Store
from indexer.store.migrate import migrate
from indexer.store.stored import StoredChain
from indexer.store.wallets import WalletStore
from indexer.wallets import proof as wallet_proofs

logger = logging.getLogger(__name__)

NODE_CHUNK = 500
MAX_HEIGHT = 1 << 62
SHOWN = 100  # problems listed per check; the rest are counted


def _hex(value: Any) -> str:
    return "0x" + bytes(value).hex()


@dataclass
class Problems:
    """What one chain's checks found: the lines to show and how many there are in all."""

    shown: list[str] = field(default_factory=list)
    total: int = 0
    unshown: int = 0  # lines `add` counted but did not keep

    def add(self, line: str) -> None:
        self.total += 1
        if len(self.shown) < SHOWN:
            self.shown.append(line)
        else:
            self.unshown += 1

    def add_rows(self, rows: list[tuple[Any, ...]], describe: Callable[..., str]) -> None:
        """Rows of a check query (total first): show them, count every one."""
        if not rows:
            return
        total = int(rows[0][0])
        for row in rows:
            self.shown.append(describe(*row[1:]))
        if total > len(rows):
            self.shown.append(f"... and {total - len(rows):,d} more like the line above")
        self.total += total


async def _sql_checks(
    stored: StoredChain, chain: ChainConfig, low: int, high: int, problems: Problems
) -> None:
    problems.add_rows(
        await stored.link_breaks(low, high, limit=SHOWN),
        lambda number, parent, prev: (
            f"block {number:,d}: parent hash {_hex(parent)} is not the stored block "
            f"{number - 1:,d}'s hash {_hex(prev)}"
        ),
    )
    problems.add_rows(
        await stored.orphan_transactions(low, high, limit=SHOWN),
        lambda number, count: f"block {number:,d}: {count} transaction(s) but no stored block",
    )
    problems.add_rows(
        await stored.orphan_logs(low, high, limit=SHOWN),
        lambda number, index: f"block {number:,d}: log {index} names a transaction not stored",
    )
    problems.add_rows(
        await stored.log_index_gaps(low, high, limit=SHOWN),
        lambda number, count, first, last: (
            f"block {number:,d}: {count} log(s) stored with indexes {first}..{last}, not "
            f"0..{count - 1} (a log is missing)"
        ),
    )
    if chain.keeps("transactions"):
        problems.add_rows(
            await stored.tx_count_mismatches(low, high, limit=SHOWN),
            lambda number, expected, count: (
                f"block {number:,d}: tx_count {expected} but {count} transaction(s) stored"
            ),
        )
    problems.add_rows(
        await stored.range_mismatches(limit=SHOWN),
        lambda problem, first, last: f"coverage bookkeeping: {first:,d}-{last:,d} {problem}",
    )
    checkpoint = await stored.checkpoint()
    highest = await stored.highest()
    if (checkpoint.number if checkpoint else None) != highest:
        problems.add(
            f"checkpoint {checkpoint.number if checkpoint else None} is not the highest "
            f"stored block {highest}"
        )
    elif checkpoint is not None and await stored.hash_at(checkpoint.number) != checkpoint.hash:
        problems.add(f"checkpoint hash differs from stored block {checkpoint.number:,d}")


REST_CHUNK = 200


async def _rest_checks(
    stored: StoredChain, chain: EvmChainConfig, low: int, high: int, problems: Problems
) -> str:
    """Recompute every stored block's commitments from its rows (no node); say what."""
    rules = evm_verify.rules_for(chain.chain_id, chain.rules)
    level = chain.verify or evm_verify.default_level(rules)
    if level == "links":
        return 'no commitments (verify = "links")'
    verifier = evm_verify.Verifier(level=level, rules=rules, label=chain.name)
    highest = await stored.highest()
    if not chain.keeps("transactions"):
        level = "headers"  # the header is all that is stored
    if highest is None:
        return level
    keeps = {t.name: chain.keeps(t.name) for t in tables.ALL}
    position = low
    while position <= min(high, highest):
        end = min(high, highest, position + REST_CHUNK - 1)
        rows = {
            t.name: _by_block(await stored.rows_between(t.name, position, end), t.height)
            if keeps[t.name] else {}
            for t in tables.ALL
        }  # fmt: skip
        for number, (block,) in sorted(rows["blocks"].items()):
            answer, receipts, logs = evm_rest.block_answers(
                block,
                transactions=rows["transactions"].get(number, [])
                if keeps["transactions"] else None,
                receipts=rows["receipts"].get(number, []) if keeps["receipts"] else None,
                logs=rows["logs"].get(number, []),
                withdrawals=rows["withdrawals"].get(number, [])
                if keeps["withdrawals"] and block["withdrawals_root"] is not None else None,
            )  # fmt: skip
            try:
                if not keeps["transactions"]:
                    verifier.check_header(answer)
                elif receipts is not None:
                    verifier.check(answer, receipts=receipts)
                else:
                    verifier.check(answer, logs=logs if keeps["logs"] else None)
            except errors.ResponseCorrupted as exc:
                problems.add(f"block {number:,d}: stored rows do not recompute: {exc}")
        position = end + 1
    return level


async def _wallet_checks(
    store: Store, chain_id: int, name: str, low: int, high: int, problems: Problems
) -> int:
    """Every stored confirmed wallet transaction: its bytes hash to its txid, its block is
    the header stored at its height, and its merkle proof reaches that header's merkle
    root; every stored output is the output of the stored transaction. Returns how many
    transactions were checked."""
    wallets = WalletStore(store, chain=chain_id, name=name)
    rows = await wallets.confirmed_between(low, high)
    for row in rows:
        txid, height = bytes(row["txid"]), int(row["height"])
        where = f"wallet {row['wallet']}: transaction {txid.hex()} at {height:,d}"
        try:
            parsed = wallet_proofs.parse_tx(bytes(row["raw"]), txid, where=where)
            if row["header_hash"] is None:
                raise errors.ResponseCorrupted(f"{where}: no header stored at its height")
            if bytes(row["header_hash"]) != bytes(row["block_hash"]):
                raise errors.ResponseCorrupted(f"{where}: its block is not the stored header")
            wallet_proofs.check_proof(
                parsed,
                branch=[bytes(b) for b in row["merkle_branch"] or ()],
                position=int(row["position"]),
                header_merkle_root=bytes(row["merkle_root"]),
                where=where,
            )
        except errors.ResponseCorrupted as exc:
            problems.add(str(exc))
    for out in await wallets.outputs_between(low, high):
        txid, vout = bytes(out["txid"]), int(out["vout"])
        where = f"wallet {out['wallet']}: output {txid.hex()}:{vout}"
        try:
            parsed = wallet_proofs.parse_tx(bytes(out["raw"]), txid, where=where)
        except errors.ResponseCorrupted as exc:
            problems.add(str(exc))
            continue
        if vout >= len(parsed.outputs) or parsed.outputs[vout] != (
            bytes(out["script"]),
            int(out["value"]),
        ):
            problems.add(f"{where}: not what the stored transaction pays")
    return len(rows)


def _by_block(rows: list[dict[str, Any]], height: str) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(int(row[height]), []).append(row)
    return out


async def _node_checks(
    stored: StoredChain, chain: ChainConfig, low: int, high: int, problems: Problems
) -> None:
    highest = await stored.highest()
    if highest is None:
        return
    high = min(high, highest)
    async with daemon.make_rpc(chain) as rpc:
        source = daemon.make_source(chain, rpc)
        await source.check_identity()
        position = low
        while position <= high:
            ours = await stored.hashes_between(position, min(high, position + NODE_CHUNK - 1))
            if ours:
                node = await source.hashes(sorted(ours))
                for number, hash_ in sorted(ours.items()):
                    theirs = node.get(number)
                    if theirs is None:
                        problems.add(f"block {number:,d}: the node has no block there")
                    elif theirs != hash_:
                        problems.add(
                            f"block {number:,d}: stored {_hex(hash_)} but the node has "
                            f"{_hex(theirs)}"
                        )
            position += NODE_CHUNK


async def verify(
    cfg: Config,
    *,
    chains: Sequence[str],
    low: int | None,
    high: int | None,
    against_node: bool,
    echo: Callable[[str], None],
) -> int:
    """Print the problems found (see the module docstring); return 1 if any, else 0."""
    await migrate(cfg.database)
    found = 0
    async with Store(cfg.database) as store:
        for chain, chain_id in await daemon.synced_chains(
            cfg, store, chains, echo=echo, doing="verify"
        ):
            lo = chain.start_block if low is None else low
            hi = MAX_HEIGHT if high is None else high
            stored = StoredChain(store, chain=chain_id, name=chain.name)
            problems = Problems()
            await _sql_checks(stored, chain, lo, hi, problems)
            rest = ""
            if isinstance(chain, EvmChainConfig):
                rest = await _rest_checks(stored, chain, lo, hi, problems)
            else:
                proven = await _wallet_checks(store, chain_id, chain.name, lo, hi, problems)
                rest = f"{proven:,d} wallet transaction proof(s)"
            if against_node:
                await _node_checks(stored, chain, lo, hi, problems)
            for line in problems.shown:
                echo(f"{chain.name}: {line}")
            if problems.unshown:
                echo(f"{chain.name}: ... and {problems.unshown:,d} more")
            what = "links, child rows and coverage"
            if rest:
                what += f", stored commitments: {rest}"
            if against_node:
                what += ", and the node's hashes"
            summary = "ok" if not problems.total else f"{problems.total:,d} problem(s)"
            echo(f"{chain.name}: {summary} ({what})")
            found += problems.total
    return errors.EXIT_FAILURE if found else errors.EXIT_OK
