"""Domain objects: what a chain source hands to validation and the store.

Only these travel past `indexer.chain`; hashes and addresses are raw bytes in the byte order
explorers display, heights are ints.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class BlockRef:
    """A block identified by height and hash (a tip, a checkpoint, a fork point)."""

    number: int
    hash: bytes

    def __str__(self) -> str:
        return f"{self.number:,d}/0x{self.hash.hex()[:12]}"


@dataclass(frozen=True, slots=True)
class Tx:
    block_number: int
    tx_index: int
    hash: bytes
    from_address: bytes
    to_address: bytes | None  # None for a contract creation
    value: int
    nonce: int
    gas: int
    gas_price: int | None
    input: bytes
    type: int


@dataclass(frozen=True, slots=True)
class Log:
    block_number: int
    log_index: int
    tx_index: int
    tx_hash: bytes
    address: bytes
    topics: tuple[bytes, ...]
    data: bytes


@dataclass(frozen=True, slots=True)
class CopyRows:
    """A block's transaction and log rows, already in PostgreSQL's binary COPY row format.

    Each `*_data` is the rows back to back (no COPY header or trailer), in the column order
    of the writer's COPY statements, for the store's chain id they were encoded with. The
    EVM fast path (`indexer.chain.evm_rows`) builds them in a worker process so that the
    writer only moves bytes.
    """

    chain: int
    tx_data: bytes  # every one of the block's `tx_count` transactions
    log_count: int
    log_data: bytes


@dataclass(frozen=True, slots=True)
class Block:
    number: int
    hash: bytes
    parent_hash: bytes
    timestamp: int  # unix seconds
    tx_count: int
    # EVM header fields (None on other chains)
    miner: bytes | None = None
    gas_used: int | None = None
    gas_limit: int | None = None
    base_fee_per_gas: int | None = None
    size: int | None = None
    # Bitcoin header fields (None on other chains)
    version: int | None = None
    merkle_root: bytes | None = None
    bits: int | None = None
    nonce: int | None = None
    transactions: tuple[Tx, ...] = field(default=(), repr=False)
    logs: tuple[Log, ...] = field(default=(), repr=False)
    # Transactions and logs pre-encoded for COPY (instead of `transactions` / `logs`).
    rows: CopyRows | None = field(default=None, repr=False)

    @property
    def tx_rows(self) -> int:
        """Transaction rows this block writes."""
        return self.tx_count if self.rows is not None else len(self.transactions)

    @property
    def log_rows(self) -> int:
        """Log rows this block writes."""
        return self.rows.log_count if self.rows is not None else len(self.logs)

    @property
    def ref(self) -> BlockRef:
        return BlockRef(self.number, self.hash)


# What a genesis block's parent hash is, as a ref one below height 0.
GENESIS_PARENT = BlockRef(-1, b"\x00" * 32)
