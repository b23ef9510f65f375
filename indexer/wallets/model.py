"""What one wallet sync round hands the store: the scripts whose histories changed, and
every transaction those histories name, checked (and, when confirmed, proven)."""

from __future__ import annotations

from dataclasses import dataclass, field

from indexer.wallets.keys import Script
from indexer.wallets.proof import ParsedTx


@dataclass(frozen=True, slots=True)
class Proof:
    """Where a transaction is: proven against the header we store at `height`."""

    height: int
    block_hash: bytes
    position: int
    branch: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class WalletTx:
    parsed: ParsedTx
    proof: Proof | None  # None: unconfirmed (in the mempool)

    @property
    def height(self) -> int | None:
        return None if self.proof is None else self.proof.height


@dataclass(frozen=True, slots=True)
class ScriptUpdate:
    """A script's history as a server gave it, with the status it hashes to."""

    scripthash: bytes
    status: bytes | None  # None: not all of it proven yet (sync it again)
    txids: tuple[bytes, ...]


@dataclass
class WalletChange:
    """One wallet's changes of a round, written in one transaction (`sinks.WalletSink`)."""

    wallet: str
    scripts: dict[bytes, Script]  # every script the wallet watches, by scriptPubKey
    updates: list[ScriptUpdate] = field(default_factory=list)
    txs: dict[bytes, WalletTx] = field(default_factory=dict)

    def proven_heights(self) -> dict[int, bytes]:
        """The block hash each proof was checked against, by height."""
        return {t.proof.height: t.proof.block_hash for t in self.txs.values() if t.proof}
