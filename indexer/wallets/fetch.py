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
HISTORY_RETRIES = 3  # a history that moved between its status and its entries is asked again


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


async def _script_call(conn: ec.ElectrumConnection, what: str, script: Script) -> Any:
    """`blockchain.scripthash.<what>` by script hash, or from protocol 1.7 (where those are
    gone) `blockchain.scriptpubkey.<what>` by the script itself; histories unwrapped."""
    if conn.protocol >= SCRIPTPUBKEY_PROTOCOL:
        reply = await conn.request(f"blockchain.scriptpubkey.{what}", [script.script.hex()])
        if what == "get_history":
            if not isinstance(reply, dict) or "history" not in reply:
                raise errors.ResponseCorrupted(f"{conn.where} get_history: expected a history")
            return reply["history"]
        return reply
    return await conn.request(f"blockchain.scripthash.{what}", [script.scripthash.hex()])


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
            replies = await gather_all([_script_call(conn, "subscribe", s) for s in scripts])
            return conn.url, {
                s.scripthash: parse_status(reply, where)
                for s, reply in zip(scripts, replies, strict=True)
            }

        return await self.servers.run(job, url=url, alternate=alternate)

    async def history(self, script: Script, *, url: str | None = None) -> History:
        """One script's history and status, from one server, consistent with each other."""

        async def job(conn: ec.ElectrumConnection) -> History:
            where = f"{conn.where} history of {script.scripthash.hex()}"
            for _ in range(HISTORY_RETRIES):
                status_reply, history_reply = await gather_all([
                    _script_call(conn, "subscribe", script),
                    _script_call(conn, "get_history", script),
                ])  # fmt: skip
                status = parse_status(status_reply, where)
                entries = parse_history(history_reply, where)
                if proofs.status(entries) == status:
                    return History(conn.url, status, entries)
            raise errors.ResponseCorrupted(f"{where}: the history does not hash to its status")

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

    async def transaction(self, txid: bytes) -> proofs.ParsedTx:
        """A transaction, whose bytes must hash to `txid`."""

        async def job(conn: ec.ElectrumConnection) -> proofs.ParsedTx:
            where = f"{conn.where} blockchain.transaction.get {txid.hex()}"
            raw = require_hex(await conn.request("blockchain.transaction.get", [txid.hex()]), where)
            return proofs.parse_tx(raw, txid, where=where)

        return await self._spread(job)

    async def proof(
        self,
        parsed: proofs.ParsedTx,
        height: int,
        *,
        block_hash: bytes,
        merkle_root: bytes,
        prefer: str | None = None,
    ) -> Proof | None:
        """`parsed`'s proof in the block we store at `height` (None: the server's block at
        that height is another than ours, so ask again once the two agree)."""

        async def job(conn: ec.ElectrumConnection) -> Proof | None:
            where = f"{conn.where} blockchain.transaction.get_merkle {parsed.txid.hex()}"
            reply = require_dict(
                await conn.request(
                    "blockchain.transaction.get_merkle", [parsed.txid.hex(), height]
                ),
                where,
            )
            if reply.get("block_height") != height:
                raise errors.ResponseCorrupted(f"{where}: a proof for another height")
            branch_hex = reply.get("merkle")
            position = reply.get("pos")
            if (
                not isinstance(branch_hex, list)
                or isinstance(position, bool)
                or not isinstance(position, int)
            ):
                raise errors.ResponseCorrupted(f"{where}: expected merkle (a list) and pos")
            branch = tuple(require_hex(h, where, size=32) for h in branch_hex)
            try:
                proofs.check_proof(
                    parsed, branch=branch, position=position, header_merkle_root=merkle_root,
                    where=where,
                )  # fmt: skip
            except errors.ResponseCorrupted:
                header = require_hex(
                    await conn.request("blockchain.block.header", [height]),
                    f"{conn.where} header {height}",
                    size=btc_headers.HEADER_SIZE,
                )
                if btc_headers.parse_header(header, height=height).hash != block_hash:
                    return None  # its chain differs from ours at that height: not a lie
                raise
            return Proof(height=height, block_hash=block_hash, position=position, branch=branch)

        return await self._spread(job, prefer=prefer)

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
