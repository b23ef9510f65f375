"""Every stored table of chain data, declared once: its columns, their types, their checks.

A `Table` lists its columns in the order of the table in Postgres. Everything else derives
from it: the COPY statement and the binary type list its sink writes with, the delete and
count that roll it back above a height (`store.sinks`), the field tables of the EVM fast
path's C encoder (`chain.fields`), and `Table.row`, which checks every value against the
column it goes into before anything is written. A test diffs these declarations against
the migrated catalog, so a migration and a declaration cannot drift apart.

Adding a column is a migration, one `Column` line here, and (for a source that fills it)
one decoding rule in that source's field list (`chain.evm_fields`).

Every table starts with `chain smallint` (the store's id of the chain, filled by the store,
never by a source) and holds a height column: rows above a height belong to blocks above
it and go with them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from indexer import errors

# Postgres types as the catalog names them (format_type), with the name psycopg's binary
# COPY wants for each.
SMALLINT: Final = "smallint"
INTEGER: Final = "integer"
BIGINT: Final = "bigint"
NUMERIC: Final = "numeric"
BYTEA: Final = "bytea"
BYTEA_ARRAY: Final = "bytea[]"
TIMESTAMPTZ: Final = "timestamp with time zone"
TEXT: Final = "text"
BOOLEAN: Final = "boolean"
JSONB: Final = "jsonb"

COPY_TYPE_NAMES: Final = {
    SMALLINT: "int2",
    INTEGER: "int4",
    BIGINT: "int8",
    NUMERIC: "numeric",
    BYTEA: "bytea",
    BYTEA_ARRAY: "bytea[]",
    TIMESTAMPTZ: "timestamptz",
    TEXT: "text",
    BOOLEAN: "bool",
    JSONB: "jsonb",
}
INT_RANGES: Final = {
    SMALLINT: (-(1 << 15), (1 << 15) - 1),
    INTEGER: (-(1 << 31), (1 << 31) - 1),
    BIGINT: (-(1 << 63), (1 << 63) - 1),
}
# The latest instant Python's datetime holds (Postgres holds more): 9999-12-31T23:59:59Z.
MAX_TIMESTAMP_SECS: Final = 253_402_300_799


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str
    nullable: bool = False
    size: int | None = None  # bytea, and each bytea[] element: exactly this many bytes

    def check(self, value: Any) -> Any:
        """`value` as the store writes it; raise ValueError saying why it does not fit."""
        return _checkers(self)(value)

    def _check(self, value: Any) -> Any:
        if value is None:
            if not self.nullable:
                raise ValueError("is missing (the column is NOT NULL)")
            return None
        kind = self.type
        if kind in INT_RANGES or kind == NUMERIC:
            if type(value) is not int:
                raise ValueError(f"is not an integer ({type(value).__name__})")
            low, high = INT_RANGES.get(kind, (None, None))
            if low is not None and high is not None and not low <= value <= high:
                raise ValueError(f"{value} does not fit a {kind} column")
            return value
        if kind == BYTEA:
            return self._bytes(value)
        if kind == BYTEA_ARRAY:
            if not isinstance(value, list | tuple):
                raise ValueError("is not a list")
            return [self._bytes(item) for item in value]
        if kind == TIMESTAMPTZ:
            if type(value) is not int or not 0 <= value <= MAX_TIMESTAMP_SECS:
                raise ValueError(f"{value!r} is not a timestamp between 1970 and 9999")
            return datetime.fromtimestamp(value, UTC)
        if kind == TEXT:
            if not isinstance(value, str):
                raise ValueError("is not text")
            if "\x00" in value:
                raise ValueError("holds a NUL character (Postgres text cannot)")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("is not valid Unicode") from None
            return value
        if kind == BOOLEAN:
            if not isinstance(value, bool):
                raise ValueError("is not a boolean")
            return value
        if kind == JSONB:
            return value
        raise AssertionError(f"column {self.name}: no check for type {kind}")

    def _bytes(self, value: Any) -> bytes:
        if not isinstance(value, bytes):
            raise ValueError("is not bytes")
        if self.size is not None and len(value) != self.size:
            raise ValueError(f"is {len(value)} bytes, not {self.size}")
        return value


@dataclass(frozen=True, slots=True)
class Table:
    """One stored table: `chain smallint` first, then the data columns in table order."""

    name: str
    columns: tuple[Column, ...]
    height: str  # the column holding the block height the row belongs to
    position: str | None = None  # the column numbering a block's rows (None: one per block)
    _checks: tuple[Callable[[Any], Any], ...] = field(
        init=False, repr=False, compare=False, default=()
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_checks", tuple(_checkers(c) for c in self.columns[1:]))
        names = [c.name for c in self.columns]
        assert names[0] == "chain" and self.columns[0].type == SMALLINT, self.name
        assert len(set(names)) == len(names), f"{self.name}: duplicate column"
        assert self.height in names, f"{self.name}: no height column {self.height}"
        assert self.position is None or self.position in names, self.name

    @property
    def data_columns(self) -> tuple[Column, ...]:
        """Every column but `chain`, in table order: what a source fills."""
        return self.columns[1:]

    @property
    def copy_types(self) -> list[str]:
        """The binary COPY type of every column, in table order."""
        return [COPY_TYPE_NAMES[c.type] for c in self.columns]

    def index(self, name: str) -> int:
        """The position of column `name` in a row of `Table.row` (no `chain`)."""
        return [c.name for c in self.data_columns].index(name)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name}")

    def copy_prefix(self, chain: int) -> bytes:
        """The start of every binary COPY row of this table for `chain`: the field count,
        then the `chain` field (a source's fast path writes the rest)."""
        return (
            len(self.columns).to_bytes(2, "big")
            + (2).to_bytes(4, "big")
            + chain.to_bytes(2, "big", signed=True)
        )

    def row(self, values: Mapping[str, Any], *, where: str) -> tuple[Any, ...]:
        """`values` (by column name, `chain` left out) as a checked row in table order.

        A column not given is null; a value that does not fit its column, a missing
        NOT NULL value or an unknown name raises `ResponseCorrupted` naming the column:
        what a node sent is refused, never stored changed.
        """
        unknown = set(values) - {c.name for c in self.data_columns}
        assert not unknown, f"{self.name}: no column(s) {sorted(unknown)}"
        return self.checked([values.get(c.name) for c in self.data_columns], where=where)

    def checked(self, values: Sequence[Any], *, where: str) -> tuple[Any, ...]:
        """`values` (every data column, in table order) checked as `row` checks them."""
        checks = self._checks
        try:
            return tuple([check(value) for check, value in zip(checks, values, strict=True)])
        except ValueError:
            pass
        for column, check, value in zip(self.data_columns, checks, values, strict=True):
            try:
                check(value)
            except ValueError as exc:
                raise errors.ResponseCorrupted(
                    f"{where}: {self.name}.{column.name} {exc}", column=column.name
                ) from None
        raise AssertionError("a check failed once and then passed")


_INT_TYPES = (SMALLINT, INTEGER, BIGINT)


@functools.cache
def _checkers(column: Column) -> Callable[[Any], Any]:
    """`column`'s check, specialised once (the common cases without dispatch)."""
    nullable, size = column.nullable, column.size
    if column.type in _INT_TYPES:
        low, high = INT_RANGES[column.type]

        def check_int(value: Any) -> Any:
            if type(value) is int and low <= value <= high:
                return value
            if value is None and nullable:
                return None
            return column._check(value)  # raises, saying why

        return check_int
    if column.type == BYTEA:

        def check_bytes(value: Any) -> Any:
            if type(value) is bytes and (size is None or len(value) == size):
                return value
            if value is None and nullable:
                return None
            return column._check(value)

        return check_bytes
    return column._check


def _c(name: str, type_: str, *, null: bool = False, size: int | None = None) -> Column:
    return Column(name, type_, nullable=null, size=size)


CHAIN = _c("chain", SMALLINT)

BLOCKS = Table(
    "blocks",
    (
        CHAIN,
        _c("number", BIGINT),
        _c("hash", BYTEA, size=32),
        _c("parent_hash", BYTEA, size=32),
        _c("timestamp", TIMESTAMPTZ),
        _c("tx_count", INTEGER),
        # EVM header fields (null on Bitcoin chains)
        _c("miner", BYTEA, null=True, size=20),
        _c("gas_used", BIGINT, null=True),
        _c("gas_limit", BIGINT, null=True),
        _c("base_fee_per_gas", NUMERIC, null=True),
        _c("size", INTEGER, null=True),
        # Bitcoin header fields (null on EVM chains)
        _c("version", BIGINT, null=True),
        _c("merkle_root", BYTEA, null=True, size=32),
        _c("bits", BIGINT, null=True),
        _c("nonce", BIGINT, null=True),
        # EVM header fields of migration 0004: with the ones above, enough to recompute the
        # block hash (keccak of the RLP header) from the row
        _c("sha3_uncles", BYTEA, null=True, size=32),
        _c("state_root", BYTEA, null=True, size=32),
        _c("transactions_root", BYTEA, null=True, size=32),
        _c("receipts_root", BYTEA, null=True, size=32),
        _c("logs_bloom", BYTEA, null=True, size=256),
        _c("difficulty", NUMERIC, null=True),
        _c("extra_data", BYTEA, null=True),
        _c("mix_hash", BYTEA, null=True, size=32),
        _c("header_nonce", BYTEA, null=True, size=8),  # the EVM header's nonce
        _c("withdrawals_root", BYTEA, null=True, size=32),
        _c("blob_gas_used", BIGINT, null=True),
        _c("excess_blob_gas", BIGINT, null=True),
        _c("parent_beacon_block_root", BYTEA, null=True, size=32),
        _c("requests_hash", BYTEA, null=True, size=32),
        _c("aura_step", NUMERIC, null=True),  # Gnosis before the merge
        _c("aura_seal", BYTEA, null=True, size=65),
        _c("l1_block_number", BIGINT, null=True),  # Arbitrum
        _c("send_count", NUMERIC, null=True),
        _c("send_root", BYTEA, null=True, size=32),
    ),
    height="number",
)

TRANSACTIONS = Table(
    "transactions",
    (
        CHAIN,
        _c("block_number", BIGINT),
        _c("tx_index", INTEGER),
        _c("hash", BYTEA, size=32),
        _c("from_address", BYTEA, size=20),
        _c("to_address", BYTEA, null=True, size=20),  # null for a contract creation
        _c("value", NUMERIC),
        _c("nonce", NUMERIC, null=True),  # null only where the node leaves it out (OP deposits)
        _c("gas", NUMERIC),
        _c("gas_price", NUMERIC, null=True),
        _c("input", BYTEA),
        _c("type", SMALLINT),
        _c("max_fee_per_gas", NUMERIC, null=True),
        _c("max_priority_fee_per_gas", NUMERIC, null=True),
        _c("max_fee_per_blob_gas", NUMERIC, null=True),
        _c("blob_versioned_hashes", BYTEA_ARRAY, null=True, size=32),
        _c("chain_id", NUMERIC, null=True),
        _c("access_list", JSONB, null=True),
        _c("authorization_list", JSONB, null=True),
        _c("v", NUMERIC, null=True),
        _c("r", NUMERIC, null=True),
        _c("s", NUMERIC, null=True),
        _c("y_parity", SMALLINT, null=True),
        _c("source_hash", BYTEA, null=True, size=32),  # OP Stack deposit
        _c("mint", NUMERIC, null=True),
        _c("is_system_tx", BOOLEAN, null=True),
        _c("request_id", BYTEA, null=True, size=32),  # Arbitrum
        _c("ticket_id", BYTEA, null=True, size=32),
        _c("refund_to", BYTEA, null=True, size=20),
        _c("max_refund", NUMERIC, null=True),
        _c("submission_fee_refund", NUMERIC, null=True),
        _c("l1_base_fee", NUMERIC, null=True),
        _c("deposit_value", NUMERIC, null=True),
        _c("retry_to", BYTEA, null=True, size=20),
        _c("retry_value", NUMERIC, null=True),
        _c("retry_data", BYTEA, null=True),
        _c("beneficiary", BYTEA, null=True, size=20),
        _c("max_submission_fee", NUMERIC, null=True),
    ),
    height="block_number",
    position="tx_index",
)

LOGS = Table(
    "logs",
    (
        CHAIN,
        _c("block_number", BIGINT),
        _c("log_index", INTEGER),
        _c("tx_index", INTEGER),
        _c("tx_hash", BYTEA, size=32),
        _c("address", BYTEA, size=20),
        _c("topics", BYTEA_ARRAY, size=32),
        _c("data", BYTEA),
    ),
    height="block_number",
    position="log_index",
)

RECEIPTS = Table(
    "receipts",
    (
        CHAIN,
        _c("block_number", BIGINT),
        _c("tx_index", INTEGER),
        _c("tx_hash", BYTEA, size=32),
        _c("type", SMALLINT),
        _c("status", SMALLINT, null=True),  # null before Byzantium
        _c("root", BYTEA, null=True, size=32),  # the state root, before Byzantium
        _c("gas_used", BIGINT),
        _c("cumulative_gas_used", BIGINT),
        _c("effective_gas_price", NUMERIC, null=True),
        _c("contract_address", BYTEA, null=True, size=20),
        _c("logs_bloom", BYTEA, size=256),
        _c("blob_gas_used", BIGINT, null=True),
        _c("blob_gas_price", NUMERIC, null=True),
        _c("deposit_nonce", NUMERIC, null=True),  # OP Stack deposits
        _c("deposit_receipt_version", SMALLINT, null=True),
        _c("l1_fee", NUMERIC, null=True),  # OP Stack
        _c("l1_gas_used", NUMERIC, null=True),
        _c("l1_gas_price", NUMERIC, null=True),
        _c("gas_used_for_l1", NUMERIC, null=True),  # Arbitrum
        _c("l1_block_number", BIGINT, null=True),
    ),
    height="block_number",
    position="tx_index",
)

WITHDRAWALS = Table(
    "withdrawals",
    (
        CHAIN,
        _c("block_number", BIGINT),
        _c("position", INTEGER),  # 0-based in the block
        _c("index", BIGINT),
        _c("validator_index", BIGINT),
        _c("address", BYTEA, size=20),
        _c("amount", BIGINT),  # gwei
    ),
    height="block_number",
    position="position",
)

# Every table of chain data, parents before children: written in this order, rolled back
# in the reverse one.
ALL: Final = (BLOCKS, TRANSACTIONS, RECEIPTS, LOGS, WITHDRAWALS)


# -- Bitcoin wallets (migrations/0006_wallets.sql). Not written with blocks: a wallet's rows
# come from its own sync (`indexer.wallets`), and a rollback turns those above the fork point
# back to unconfirmed (`store.sinks.WalletSink`) instead of deleting them.

WALLET = _c("wallet", TEXT)
TXID = _c("txid", BYTEA, size=32)

WALLET_HISTORY = Table(
    "wallet_history",
    (CHAIN, WALLET, _c("scripthash", BYTEA, size=32), TXID, _c("height", BIGINT, null=True)),
    height="height",
)
WALLET_TRANSACTIONS = Table(
    "wallet_transactions",
    (
        CHAIN,
        WALLET,
        TXID,
        _c("height", BIGINT, null=True),
        _c("block_hash", BYTEA, null=True, size=32),
        _c("position", INTEGER, null=True),
        _c("merkle_branch", BYTEA_ARRAY, null=True, size=32),
        _c("raw", BYTEA),
        _c("first_seen", TIMESTAMPTZ),
    ),
    height="height",
)
WALLET_INPUTS = Table(
    "wallet_inputs",
    (
        CHAIN,
        WALLET,
        TXID,
        _c("vin", INTEGER),
        _c("prev_txid", BYTEA, size=32),
        _c("prev_vout", BIGINT),
        _c("height", BIGINT, null=True),
    ),
    height="height",
)
WALLET_OUTPUTS = Table(
    "wallet_outputs",
    (
        CHAIN,
        WALLET,
        TXID,
        _c("vout", INTEGER),
        _c("address", TEXT),
        _c("script", BYTEA),
        _c("value", BIGINT),
        _c("height", BIGINT, null=True),
        _c("spent_txid", BYTEA, null=True, size=32),
        _c("spent_height", BIGINT, null=True),
    ),
    height="height",
)
WALLET_TABLES: Final = (WALLET_HISTORY, WALLET_TRANSACTIONS, WALLET_INPUTS, WALLET_OUTPUTS)


def copy_prefixes(chain: int) -> dict[str, bytes]:
    """Every table's COPY row prefix for `chain` (what a source's fast path is bound to)."""
    return {t.name: t.copy_prefix(chain) for t in ALL}
