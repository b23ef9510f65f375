"""Wallet requests to Electrum servers, each answer checked before it is returned.

- `statuses`: `blockchain.scripthash.subscribe` for many scripts on one server (which also
  subscribes us there: the server notifies us when a history changes);
- `history`: `blockchain.scripthash.get_history` of one script, with its status from the
  same server, and the history must hash to that status (protocol 1.7 names both
  `blockchain.scriptpubkey.*` and takes the script itself);
- `transaction`: `blockchain.transaction.get`, whose bytes must hash to the txid asked for;
- `proof`: `blockchain.transaction.get_merkle`, which must reach the merkle root of the
  header we store at that height; when it does not, the server's own header at that height
  tells a lie (same header: `ResponseCorrupted`) from another branch (`None`: ask later).

Transactions and proofs are spread over the servers that may take requests (one after the
other by index), each failed over to the rest of the pool when its server fails.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from indexer import errors
from indexer.chain import btc_headers
from indexer.chain import electrum_connection as ec
from indexer.chain.electrum import gather_all, require_dict, require_hex
from indexer.chain.electrum_servers import ElectrumServers
from indexer.models import MAX_HEIGHT
from indexer.wallets import proof as proofs
from indexer.wallets.keys import Script
from indexer.wallets.model import Proof

T = TypeVar("T")

SCRIPTPUBKEY_PROTOCOL = (1, 7)
HISTORY_RETRIES = 3
BATCH = 100  # requests per JSON-RPC batch
Call = tuple[
    str, Sequence[Any]
]  # a history that moved between its status and its entries is asked again


@dataclass(frozen=True, slots=True)
class History:
    url: str
    status: bytes | None
    entries: tuple[tuple[bytes, int], ...]  # (txid, height as the server said: <= 0 mempool)


def parse_status(value: Any, where: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 64:
        raise errors.ResponseCorrupted(f"{where}: a status is 64 hex digits or null")
    require_hex(value, where)
    return value.lower().encode()


def parse_history(value: Any, where: str) -> tuple[tuple[bytes, int], ...]:
    if not isinstance(value, list):
        raise errors.ResponseCorrupted(f"{where}: expected a list")
    entries: list[tuple[bytes, int]] = []
    seen: set[bytes] = set()
    for item in value:
        obj = require_dict(item, where)
        txid = require_hex(obj.get("tx_hash"), f"{where} tx_hash", size=32)
        height = obj.get("height")
        if isinstance(height, bool) or not isinstance(height, int) or height < -1:
            raise errors.ResponseCorrupted(f"{where}: height of {txid.hex()} is not valid")
        if height > MAX_HEIGHT:
            raise errors.ResponseCorrupted(f"{where}: height of {txid.hex()} is out of range")
        if txid in seen:
            raise errors.ResponseCorrupted(f"{where}: {txid.hex()} twice in one history")
        seen.add(txid)
        entries.append((txid, height))
    return tuple(entries)


def _script_request(conn: ec.ElectrumConnection, what: str, script: Script) -> Call:
    """`blockchain.scripthash.<what>` by script hash, or from protocol 1.7 (where those are
    gone) `blockchain.scriptpubkey.<what>` by the script itself."""
    if conn.protocol >= SCRIPTPUBKEY_PROTOCOL:
        return f"blockchain.scriptpubkey.{what}", [script.script.hex()]
    return f"blockchain.scripthash.{what}", [script.scripthash.hex()]


def _history_of(conn: ec.ElectrumConnection, reply: Any, where: str) -> Any:
    """A history answer as a list (1.7 wraps it in an object)."""
    if conn.protocol >= SCRIPTPUBKEY_PROTOCOL:
        if not isinstance(reply, dict) or "history" not in reply:
            raise errors.ResponseCorrupted(f"{where}: expected a history")
        return reply["history"]
    return reply


def _chunks(items: Sequence[T], size: int = BATCH) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def _batched(conn: ec.ElectrumConnection, calls: Sequence[Call]) -> list[Any]:
    """`calls` as JSON-RPC batches of at most `BATCH`, all in flight at once."""
    replies = await gather_all([conn.batch(chunk) for chunk in _chunks(calls)])
    return [reply for chunk in replies for reply in chunk]


@dataclass(frozen=True, slots=True)
class ProofAsk:
    parsed: proofs.ParsedTx
    height: int
    block_hash: bytes
    merkle_root: bytes
    prefer: str | None = None


def _checked_proof(conn: ec.ElectrumConnection, ask: ProofAsk, reply: Any) -> Proof:
    where = f"{conn.where} blockchain.transaction.get_merkle {ask.parsed.txid.hex()}"
    obj = require_dict(reply, where)
    if obj.get("block_height") != ask.height:
        raise errors.ResponseCorrupted(f"{where}: a proof for another height")
    branch_hex, position = obj.get("merkle"), obj.get("pos")
    if (
        not isinstance(branch_hex, list)
        or isinstance(position, bool)
        or not isinstance(position, int)
    ):
        raise errors.ResponseCorrupted(f"{where}: expected merkle (a list) and pos")
    branch = tuple(require_hex(h, where, size=32) for h in branch_hex)
    proofs.check_proof(
        ask.parsed, branch=branch, position=position, header_merkle_root=ask.merkle_root,
        where=where,
    )  # fmt: skip
    return Proof(height=ask.height, block_hash=ask.block_hash, position=position, branch=branch)


class WalletServers:
    """The wallet requests of one chain, on its Electrum server pool."""

    def __init__(self, servers: ElectrumServers) -> None:
        self.servers = servers
        self._next = 0

    async def statuses(
        self, scripts: Sequence[Script], *, url: str | None = None, alternate: bool = False
    ) -> tuple[str, dict[bytes, bytes | None]]:
        """Subscribe to every script on one server; its statuses (by script hash), and which
        server."""

        async def job(conn: ec.ElectrumConnection) -> tuple[str, dict[bytes, bytes | None]]:
            where = f"{conn.where} subscribe"
            replies = await _batched(conn, [_script_request(conn, "subscribe", s) for s in scripts])
            return conn.url, {
                s.scripthash: parse_status(reply, where)
                for s, reply in zip(scripts, replies, strict=True)
            }

        return await self.servers.run(job, url=url, alternate=alternate)

    async def histories(
        self, scripts: Sequence[Script], *, url: str | None = None
    ) -> dict[bytes, History]:
        """Each script's history and status, all from one server, each history hashing to
        its status (one that moved in between is asked again)."""

        async def job(conn: ec.ElectrumConnection) -> dict[bytes, History]:
            out: dict[bytes, History] = {}
            pending = list(scripts)
            for _ in range(HISTORY_RETRIES):
                calls = [
                    call
                    for s in pending
                    for call in (_script_request(conn, "subscribe", s),
                                 _script_request(conn, "get_history", s))
                ]  # fmt: skip
                replies = await _batched(conn, calls)
                moved = []
                for i, script in enumerate(pending):
                    where = f"{conn.where} history of {script.scripthash.hex()}"
                    status = parse_status(replies[2 * i], where)
                    entries = parse_history(_history_of(conn, replies[2 * i + 1], where), where)
                    if proofs.status(entries) == status:
                        out[script.scripthash] = History(conn.url, status, entries)
                    else:
                        moved.append(script)
                if not moved:
                    return out
                pending = moved
            raise errors.ResponseCorrupted(
                f"{conn.where}: the history of {pending[0].scripthash.hex()} does not hash to "
                "its status"
            )

        return await self.servers.run(job, url=url)

    async def tip(self, url: str) -> int:
        """The height of `url`'s chain tip."""

        async def job(conn: ec.ElectrumConnection) -> int:
            where = f"{conn.where} blockchain.headers.subscribe"
            height = require_dict(await conn.request("blockchain.headers.subscribe"), where).get(
                "height"
            )
            if isinstance(height, bool) or not isinstance(height, int) or height < 0:
                raise errors.ResponseCorrupted(f"{where}: no height")
            return height

        return await self.servers.run(job, url=url, attempts=1)

    async def transactions(self, txids: Sequence[bytes]) -> dict[bytes, proofs.ParsedTx]:
        """Transactions, each of whose bytes must hash to its txid; batches spread over the
        servers."""

        async def fetch(chunk: Sequence[bytes]) -> list[proofs.ParsedTx]:
            async def job(conn: ec.ElectrumConnection) -> list[proofs.ParsedTx]:
                replies = await conn.batch(
                    [("blockchain.transaction.get", [t.hex()]) for t in chunk]
                )
                out = []
                for txid, reply in zip(chunk, replies, strict=True):
                    where = f"{conn.where} blockchain.transaction.get {txid.hex()}"
                    out.append(proofs.parse_tx(require_hex(reply, where), txid, where=where))
                return out

            return await self._spread(job)

        found = await gather_all([fetch(chunk) for chunk in _chunks(txids)])
        return {tx.txid: tx for chunk in found for tx in chunk}

    async def proofs(self, asks: Sequence[ProofAsk]) -> list[Proof | None]:
        """Each transaction's proof in the block we store at its height (None: the server's
        block at that height is another than ours, so ask again once the two agree);
        batches spread over the servers, the server that reported a transaction first."""

        async def fetch(chunk: Sequence[ProofAsk]) -> list[Proof | None]:
            async def job(conn: ec.ElectrumConnection) -> list[Proof | None]:
                replies = await conn.batch(
                    [("blockchain.transaction.get_merkle", [a.parsed.txid.hex(), a.height])
                     for a in chunk]
                )  # fmt: skip
                out: list[Proof | None] = []
                doubtful: list[tuple[int, errors.ResponseCorrupted]] = []
                for i, (ask, reply) in enumerate(zip(chunk, replies, strict=True)):
                    try:
                        out.append(_checked_proof(conn, ask, reply))
                    except errors.ResponseCorrupted as exc:
                        out.append(None)
                        doubtful.append((i, exc))
                if doubtful:
                    # A proof that does not reach our header's root: a lie if the server's
                    # header at that height is ours, else its chain differs from ours there.
                    headers = await conn.batch(
                        [("blockchain.block.header", [chunk[i].height]) for i, _ in doubtful]
                    )
                    for (i, refused), header in zip(doubtful, headers, strict=True):
                        ask = chunk[i]
                        raw = require_hex(
                            header, f"{conn.where} header {ask.height}",
                            size=btc_headers.HEADER_SIZE,
                        )  # fmt: skip
                        if btc_headers.parse_header(raw, height=ask.height).hash == ask.block_hash:
                            raise refused
                return out

            return await self._spread(job, prefer=chunk[0].prefer)

        found = await gather_all([fetch(chunk) for chunk in _chunks(asks)])
        return [proof for chunk in found for proof in chunk]

    async def _spread(
        self, job: Callable[[ec.ElectrumConnection], Awaitable[T]], *, prefer: str | None = None
    ) -> T:
        urls = self.servers.usable_urls()
        url = prefer if prefer in urls else None
        if url is None and urls:
            url = urls[self._next % len(urls)]
            self._next += 1
        if url is not None:
            try:
                return await self.servers.run(job, url=url, attempts=1)
            except (errors.SourceTransient, errors.ResponseCorrupted):
                pass  # that server is backed off or dropped now; the pool picks another
        return await self.servers.run(job)
