"""The one validated configuration object, built at start-up and passed down.

TOML from ``--config`` / ``$INDEXER_CONFIG`` / ``config/indexer.toml``, with
``INDEXER_DATABASE_URL`` overriding ``[database] url``. Nothing else reads the environment.
Every error names the key; no error echoes a value (values may hold secrets).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

import psycopg
import pydantic
from psycopg.conninfo import conninfo_to_dict
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from indexer import errors, redact
from indexer.chain import btc_headers, budget
from indexer.events import abi as events_abi
from indexer.events import declarations
from indexer.models import MAX_HEIGHT
from indexer.wallets import keys as wallet_keys

DEFAULT_CONFIG_PATH = Path("config/indexer.toml")
ENV_CONFIG = "INDEXER_CONFIG"
ENV_DATABASE_URL = "INDEXER_DATABASE_URL"
ENV_CREDENTIALS_DIR = "CREDENTIALS_DIRECTORY"  # systemd LoadCredential=
CREDENTIAL_DATABASE_URL = "database-url"
_NAME_RE = re.compile(r"^[a-z0-9_-]+$")


class _Model(BaseModel):
    # Strict: a string is not a number and a boolean is not an integer; no inf or nan.
    # Errors and reprs never show values: a URL may hold a password or an API key.
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, allow_inf_nan=False, hide_input_in_errors=True
    )


_PERCENT_ENCODE = "percent-encode any : / @ ? # % in the password or key"
_UNCLEAR_URL = f"libraries would read another host than it shows ({_PERCENT_ENCODE})"


class DatabaseConfig(_Model):
    url: str = Field(repr=False)
    pool_min_size: int = Field(default=1, ge=1, le=100)
    pool_max_size: int = Field(default=4, ge=1, le=100)
    connect_timeout_secs: float = Field(default=10.0, gt=0, le=3600)
    max_outage_secs: float = Field(default=300.0, gt=0)  # then exit 1 so systemd restarts us

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, url: str) -> str:
        scheme = urlsplit(url).scheme
        if scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL")
        if not redact.is_clear(url):
            raise ValueError(_UNCLEAR_URL)
        try:
            conninfo_to_dict(url)  # what libpq would reject at connect, with the URL in the error
        except psycopg.ProgrammingError:
            raise ValueError(f"not a valid PostgreSQL URL ({_PERCENT_ENCODE})") from None
        return url

    @model_validator(mode="after")
    def _pool_sizes(self) -> DatabaseConfig:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("pool_min_size must not exceed pool_max_size")
        return self


class HttpConfig(_Model):
    listen: str
    ready_max_lag_blocks: int = Field(default=20, ge=0)  # /health/ready: lag allowed per chain

    @field_validator("listen")
    @classmethod
    def _host_port(cls, listen: str) -> str:
        host, sep, port = listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be HOST:PORT")
        return listen


class ServiceConfig(_Model):
    shutdown_grace_secs: float = Field(default=60.0, gt=0)  # then the batch in flight is aborted
    stall_timeout_secs: float = Field(default=300.0, gt=0)  # behind yet no progress: no WATCHDOG


class ChainConfig(_Model):
    """The keys every kind of chain has; `EvmChainConfig` and `ElectrumChainConfig` add theirs.

    The config file's `kind` picks the model, so a key of another kind is an unknown key.
    """

    name: str
    kind: str
    urls: tuple[str, ...] = Field(min_length=1, repr=False, strict=False)
    start_block: int = Field(default=0, ge=0, le=MAX_HEIGHT)
    confirmations: int = Field(default=0, ge=0, le=10_000)
    max_reorg_depth: int = Field(default=64, ge=1, le=100_000)
    batch_size: int = Field(default=100, ge=1, le=2016)
    poll_interval_secs: float = Field(default=2.0, gt=0, le=3600)
    request_timeout_secs: float = Field(default=30.0, gt=0, le=3600)
    prefetch_batches: int = Field(default=4, ge=1, le=64)
    repair_interval_secs: float = Field(default=600.0, ge=0)  # 0: only at start-up
    circuit_failures: int = Field(default=5, ge=1)  # consecutive failures that open a circuit
    circuit_cooldown_secs: float = Field(default=30.0, gt=0)  # open this long, then one probe
    endpoint_concurrency: int = Field(default=8, ge=1, le=256)  # requests in flight per URL
    # Bytes of answers and prefetched batches in flight for this chain (`chain.budget`).
    max_bytes_in_flight: int = Field(
        default=budget.DEFAULT_MAX_BYTES_IN_FLIGHT,
        ge=budget.MIN_MAX_BYTES_IN_FLIGHT,
        le=budget.MAX_MAX_BYTES_IN_FLIGHT,
    )

    # The URL schemes of this kind of chain.
    schemes: ClassVar[tuple[str, ...]] = ()

    def keeps(self, table: str) -> bool:
        """Whether this chain stores rows in `table` (a declared table's name)."""
        return table == "blocks"

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _NAME_RE.match(name):
            raise ValueError("must match [a-z0-9_-]+")
        return name

    @model_validator(mode="after")
    def _urls(self) -> ChainConfig:
        for url in self.urls:
            try:
                parts = urlsplit(url)
                hostname, port = parts.hostname, parts.port
            except ValueError:
                raise ValueError("urls: each must be a URL with a valid host and port") from None
            if parts.scheme not in self.schemes or not hostname:
                want = " or ".join(f"{s}://" for s in self.schemes)
                raise ValueError(f"urls: each must be a {want} URL for kind {self.kind!r}")
            if not redact.is_clear(url):
                raise ValueError(f"urls: {_UNCLEAR_URL}")
            del port  # parsed to check it is a valid port
        return self


class EvmChainConfig(ChainConfig):
    kind: Literal["evm"] = "evm"
    chain_id: int = Field(ge=0)  # must equal every endpoint's eth_chainId
    # What to store: "blocks" (headers; the node sends tx hashes only), "transactions"
    # (blocks, their transactions and withdrawals), "logs" (and logs, from eth_getLogs),
    # "receipts" (and receipts, with the logs from them: eth_getBlockReceipts).
    store: Literal["blocks", "transactions", "logs", "receipts"] = "receipts"
    # Where full batches (transactions/logs) are decoded: 0 = one decode thread of the main
    # process (fastest on few cores); N = N worker processes (for cores to spare).
    decode_workers: int = Field(default=0, ge=0, le=32)
    # What to verify of every answer before it is kept: "links" (parent links and answer
    # consistency), "headers" (plus every block hash recomputed from its header), "full"
    # (plus transaction hashes, transactions/receipts/withdrawals roots, logs blooms).
    # Default: "full" for chains whose rules we know (by chain_id, or `rules`), else "links".
    verify: Literal["links", "headers", "full"] | None = None
    # The chain's consensus rules, where chain_id does not say (a fork of a known chain):
    # "ethereum", "optimism", "base", "arbitrum", "polygon", "gnosis".
    rules: Literal["ethereum", "optimism", "base", "arbitrum", "polygon", "gnosis"] | None = None

    schemes: ClassVar[tuple[str, ...]] = ("http", "https")

    def keeps(self, table: str) -> bool:
        kept = {
            "blocks": ("blocks",),
            "transactions": ("blocks", "transactions", "withdrawals"),
            "logs": ("blocks", "transactions", "withdrawals", "logs"),
            "receipts": ("blocks", "transactions", "withdrawals", "logs", "receipts"),
        }
        return table in kept[self.store]


class ElectrumChainConfig(ChainConfig):
    kind: Literal["electrum"] = "electrum"
    genesis_hash: str  # must equal every server's genesis hash
    # SHA-256 of a server's DER certificate, for self-signed ssl:// servers.
    tls_fingerprints: dict[str, str] = Field(default_factory=dict, repr=False)

    schemes: ClassVar[tuple[str, ...]] = ("tcp", "ssl")

    @field_validator("genesis_hash")
    @classmethod
    def _genesis(cls, value: str) -> str:
        if not re.fullmatch(r"(0x)?[0-9a-fA-F]{64}", value):
            raise ValueError("must be a 32-byte hex hash")
        return value

    @model_validator(mode="after")
    def _fingerprints(self) -> ElectrumChainConfig:
        for url in self.tls_fingerprints:
            if url not in self.urls or not url.startswith("ssl://"):
                raise ValueError("tls_fingerprints: each key must be one of urls, an ssl:// URL")
        return self


AnyChainConfig = Annotated[EvmChainConfig | ElectrumChainConfig, Field(discriminator="kind")]


_TABLE_RE = re.compile(r"[a-z][a-z0-9_]*\Z")
_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}\Z")
# Every relation the migrations create (a test holds this to the migrated catalog): an event
# table may not take one of these names.
RESERVED_TABLES = frozenset(
    {
        "schema_migrations", "chains", "checkpoints", "blocks", "transactions", "logs",
        "receipts", "withdrawals", "reorgs", "gap_failures", "block_ranges", "gaps",
        "coverage", "chain_ranges", "event_registry", "event_tables", "event_undecodable",
        "wallets", "wallet_scripts", "wallet_history", "wallet_transactions", "wallet_inputs",
        "wallet_outputs", "wallet_balances", "wallet_utxos",
    }
)  # fmt: skip


class EventFactoryConfig(_Model):
    table: str
    column: str


class EventConfig(_Model):
    """One `[[events]]` entry: a table of one event's decoded logs on one EVM chain."""

    chain: str
    table: str = Field(max_length=63)
    signature: str | None = None
    abi: str | None = None  # a JSON ABI file, relative to the config file
    event: str | None = None  # with `abi`: the event's name or canonical signature
    address: tuple[str, ...] | None = Field(default=None, strict=False, min_length=1)
    factory: EventFactoryConfig | None = None
    start_block: int | None = Field(default=None, ge=0, le=MAX_HEIGHT)
    _event: events_abi.Event | None = PrivateAttr(default=None)

    @field_validator("address", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("table")
    @classmethod
    def _table(cls, table: str) -> str:
        if not _TABLE_RE.match(table):
            raise ValueError("must match [a-z][a-z0-9_]*")
        if table in RESERVED_TABLES:
            raise ValueError(f"{table!r} is a table of the indexer itself; pick another name")
        return table

    @field_validator("address")
    @classmethod
    def _addresses(cls, addresses: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if addresses is None:
            return None
        for address in addresses:
            if not _ADDRESS_RE.match(address):
                raise ValueError("every address must be 0x and 40 hex digits")
        return tuple(sorted({a.lower() for a in addresses}))

    @model_validator(mode="after")
    def _declaration(self, info: pydantic.ValidationInfo) -> EventConfig:
        if self.factory is not None and self.address is not None:
            raise ValueError("factory: give either `address` or `factory`, not both")
        if (self.signature is None) == (self.abi is None):
            raise ValueError("signature: give either `signature` or `abi` with `event`")
        try:
            if self.signature is not None:
                if self.event is not None:
                    raise ValueError("event: goes with `abi`, not with `signature`")
                try:
                    self._event = declarations.parse_signature(self.signature)
                except events_abi.AbiError as exc:
                    raise ValueError(f"signature: {exc}") from None
            else:
                assert self.abi is not None
                if self.event is None:
                    raise ValueError("event: required with `abi` (the event's name)")
                base = (info.context or {}).get("base") or Path()
                path = Path(self.abi) if Path(self.abi).is_absolute() else base / self.abi
                try:
                    self._event = declarations.load_abi_event(path, self.event)
                except events_abi.AbiError as exc:
                    raise ValueError(f"abi: {exc}") from None
        except RecursionError:
            raise ValueError("signature: nested too deeply") from None
        return self

    @property
    def decl(self) -> events_abi.Event:
        """The checked event declaration."""
        assert self._event is not None
        return self._event

    @property
    def address_columns(self) -> tuple[str, ...]:
        """The columns of this event's table that hold an address (a parameter, not hashed)."""
        return tuple(
            p.column
            for p in self.decl.params
            if isinstance(p.type, events_abi.Elementary)
            and p.type.base == "address"
            and not p.hashed
        )

    @property
    def addresses(self) -> frozenset[bytes] | None:
        """The contracts whose logs count (None: any contract)."""
        if self.address is None:
            return None
        return frozenset(bytes.fromhex(a[2:]) for a in self.address)


class WalletConfig(_Model):
    """One `[[wallets]]` entry: addresses and descriptors watched on one Electrum chain."""

    chain: str
    name: str = Field(max_length=63)
    addresses: tuple[str, ...] = Field(default=(), strict=False)
    descriptors: tuple[str, ...] = Field(default=(), strict=False, repr=False)
    gap_limit: int = Field(default=20, ge=1, le=1000)
    # Filled by Config's check, which knows the chain's network.
    _scripts: tuple[wallet_keys.Script, ...] = PrivateAttr(default=())
    _branches: tuple[wallet_keys.Branch, ...] = PrivateAttr(default=())
    _network: str = PrivateAttr(default="")

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _NAME_RE.match(name):
            raise ValueError("must match [a-z0-9_-]+")
        return name

    def resolve(self, where: str, network: str) -> None:
        """Turn addresses and descriptors into scripts of `network`; raise naming the key."""
        if not self.addresses and not self.descriptors:
            raise ValueError(f"{where}: give `addresses`, `descriptors` or both")
        scripts: list[wallet_keys.Script] = []
        branches: list[wallet_keys.Branch] = []
        for i, address in enumerate(self.addresses):
            try:
                scripts.append(wallet_keys.address_script(address, network))
            except wallet_keys.KeyError_ as exc:
                raise ValueError(f"{where}.addresses[{i}]: {exc}") from None
        for i, text in enumerate(self.descriptors):
            try:
                parsed = wallet_keys.parse_descriptor(text, i, network)
            except wallet_keys.KeyError_ as exc:
                raise ValueError(f"{where}.descriptors[{i}]: {exc}") from None
            if parsed.fixed is not None:
                scripts.append(parsed.fixed)
            branches.extend(parsed.branches)
        self._scripts, self._branches, self._network = tuple(scripts), tuple(branches), network

    @property
    def fixed_scripts(self) -> tuple[wallet_keys.Script, ...]:
        """The scripts of `addresses` and of descriptors without a range."""
        return self._scripts

    @property
    def branches(self) -> tuple[wallet_keys.Branch, ...]:
        """The derivation chains of ranged descriptors."""
        return self._branches

    @property
    def network(self) -> str:
        return self._network


class Config(_Model):
    database: DatabaseConfig
    http: HttpConfig | None = None
    service: ServiceConfig = ServiceConfig()
    chains: tuple[AnyChainConfig, ...] = Field(strict=False)
    events: tuple[EventConfig, ...] = Field(default=(), strict=False)
    wallets: tuple[WalletConfig, ...] = Field(default=(), strict=False)

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        if not self.chains:
            raise ValueError("chains: at least one [[chains]] entry is required")
        seen: set[str] = set()
        for chain in self.chains:
            if chain.name in seen:
                raise ValueError(f"chains: duplicate name {chain.name!r}")
            seen.add(chain.name)
        return self

    @model_validator(mode="after")
    def _event_tables(self) -> Config:
        tables: set[str] = set()
        chains = {c.name: c for c in self.chains}
        for i, entry in enumerate(self.events):
            chain = chains.get(entry.chain)
            if chain is None:
                raise ValueError(f"events[{i}].chain: no chain named {entry.chain!r}")
            if not isinstance(chain, EvmChainConfig):
                raise ValueError(f"events[{i}].chain: {entry.chain!r} is not an EVM chain")
            if entry.table in tables:
                raise ValueError(f"events[{i}].table: {entry.table!r} is already an event table")
            tables.add(entry.table)
        by_table = {e.table: e for e in self.events}
        for i, entry in enumerate(self.events):
            if entry.factory is None:
                continue
            parent = by_table.get(entry.factory.table)
            where = f"events[{i}].factory"
            if parent is None or parent.chain != entry.chain or parent is entry:
                raise ValueError(
                    f"{where}.table: {entry.factory.table!r} is not another event table of "
                    f"chain {entry.chain!r}"
                )
            if parent.factory is not None:
                raise ValueError(f"{where}.table: {parent.table!r} has a factory itself")
            if entry.factory.column not in parent.address_columns:
                raise ValueError(
                    f"{where}.column: {entry.factory.column!r} is not an address column of "
                    f"{parent.table!r} (its address columns: "
                    f"{', '.join(parent.address_columns) or 'none'})"
                )
        return self

    @model_validator(mode="after")
    def _wallets(self) -> Config:
        chains = {c.name: c for c in self.chains}
        seen: set[tuple[str, str]] = set()
        for i, wallet in enumerate(self.wallets):
            chain = chains.get(wallet.chain)
            if chain is None:
                raise ValueError(f"wallets[{i}].chain: no chain named {wallet.chain!r}")
            if not isinstance(chain, ElectrumChainConfig):
                raise ValueError(
                    f"wallets[{i}].chain: {wallet.chain!r} is not an Electrum (Bitcoin) chain"
                )
            network = btc_headers.network_for_genesis(
                bytes.fromhex(chain.genesis_hash.removeprefix("0x"))
            )
            if network is None or network.name not in wallet_keys.EMBIT_NETWORKS:
                raise ValueError(
                    f"wallets[{i}].chain: the network of chain {wallet.chain!r} is not known "
                    "(its genesis_hash is not mainnet's, testnet3's or regtest's)"
                )
            if (wallet.chain, wallet.name) in seen:
                raise ValueError(f"wallets[{i}].name: {wallet.name!r} is already a wallet")
            seen.add((wallet.chain, wallet.name))
            wallet.resolve(f"wallets[{i}]", network.name)
        return self

    def wallets_of(self, chain: str) -> tuple[WalletConfig, ...]:
        """The wallets of chain `chain`, in config order."""
        return tuple(w for w in self.wallets if w.chain == chain)

    def events_of(self, chain: str) -> tuple[EventConfig, ...]:
        """The event tables of chain `chain`, in config order."""
        return tuple(e for e in self.events if e.chain == chain)

    def chain(self, name: str) -> EvmChainConfig | ElectrumChainConfig:
        for chain in self.chains:
            if chain.name == name:
                return chain
        raise errors.ConfigError(f"--chain: no chain named {name!r} in the config")

    def secrets(self) -> set[str]:
        """Every secret substring in the config, for the log filter."""
        found = redact.secrets_in_url(self.database.url)
        for chain in self.chains:
            for url in chain.urls:
                found |= redact.secrets_in_url(url)
        return found


_KINDS = ("evm", "electrum")


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    after_index = False
    for part in loc:
        if after_index and part in _KINDS:
            after_index = False
            continue  # the chain kind that picked the model, not a key
        after_index = isinstance(part, int)
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe(exc: pydantic.ValidationError) -> str:
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        key = _loc(tuple(err["loc"]))
        if err["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key")
        elif err["type"] == "missing":
            lines.append(f"{key}: required key is missing")
        elif err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            lines.append(f"{key}.kind: must be one of {', '.join(map(repr, _KINDS))}")
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            field, sep, rest = msg.partition(": ")
            if key and sep and re.fullmatch(r"[a-z_]+", field):
                key, msg = f"{key}.{field}", rest  # a model check that names its key
            lines.append(f"{key}: {msg}" if key else msg)
    return "invalid config: " + "; ".join(lines)


def _database_url_override(env: Mapping[str, str]) -> str | None:
    """`INDEXER_DATABASE_URL`, else the systemd credential `database-url` if present."""
    if env.get(ENV_DATABASE_URL):
        return env[ENV_DATABASE_URL]
    directory = env.get(ENV_CREDENTIALS_DIR)
    if directory:
        path = Path(directory) / CREDENTIAL_DATABASE_URL
        try:
            return path.read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise errors.ConfigError(f"cannot read credential {path}: {exc.strerror}") from None
    return None


def build(data: Mapping[str, Any], env: Mapping[str, str], *, base: Path | None = None) -> Config:
    """Validate `data` (parsed TOML) with the environment overlay applied; relative paths
    in it (an event's `abi`) are taken from `base` (the config file's directory)."""
    merged = dict(data)
    override = _database_url_override(env)
    if override:
        database = dict(merged.get("database") or {})
        database["url"] = override
        merged["database"] = database
    try:
        return Config.model_validate(merged, context={"base": base})
    except pydantic.ValidationError as exc:
        raise errors.ConfigError(_describe(exc)) from None


def resolve_path(path: str | None, env: Mapping[str, str]) -> Path:
    return Path(path or env.get(ENV_CONFIG) or DEFAULT_CONFIG_PATH)


def load(path: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load and validate the config file; raise `ConfigError` naming the problem."""
    env = os.environ if env is None else env
    resolved = resolve_path(path, env)
    try:
        text = resolved.read_text(encoding="utf-8")
    except OSError as exc:
        raise errors.ConfigError(f"cannot read config file {resolved}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise errors.ConfigError(
            f"config file {resolved} is not UTF-8 (byte {exc.start:,d})"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise errors.ConfigError(f"config file {resolved} is not valid TOML: {exc}") from None
    return build(data, env, base=resolved.parent)
