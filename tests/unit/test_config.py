from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from indexer import config, errors

BASE: dict[str, Any] = {
    "database": {"url": "postgresql://indexer:s3cretpw@127.0.0.1:5432/indexer"},
    "chains": [
        {"name": "dev", "kind": "evm", "urls": ["http://127.0.0.1:8545"], "chain_id": 31337}
    ],
}


def build(**changes: Any) -> config.Config:
    data = {**BASE, **changes}
    return config.build(data, {})


def with_chain(**changes: Any) -> dict[str, Any]:
    return {**BASE, "chains": [{**BASE["chains"][0], **changes}]}


def test_minimal_config_has_documented_defaults() -> None:
    cfg = build()
    chain = cfg.chains[0]
    assert (chain.start_block, chain.confirmations, chain.max_reorg_depth, chain.batch_size) == (
        0, 0, 64, 100,
    )  # fmt: skip
    assert cfg.http is None


def test_the_memory_budget_reaches_the_chains_client() -> None:
    from indexer.chain.kinds import kind_of
    from indexer.chain.rpc import RpcClient

    cfg = build(chains=[{**BASE["chains"][0], "max_bytes_in_flight": 64 * 2**20}]).chains[0]
    client = kind_of(cfg).make_client(cfg)
    assert isinstance(client, RpcClient)
    assert client.budget.capacity_bytes == 64 * 2**20
    assert client.budget.max_answer_bytes == 16 * 2**20


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (with_chain(foo=1), "chains[0].foo: unknown key"),
        ({**BASE, "extra": {}}, "extra: unknown key"),
        (with_chain(chain_id=None), "chain_id"),
        (with_chain(name="Bad Name"), "chains[0].name"),
        (with_chain(kind="solana"), "chains[0].kind"),
        (with_chain(urls=["tcp://127.0.0.1:1"]), "urls"),
        (with_chain(urls=[]), "chains[0].urls"),
        (with_chain(batch_size=0), "chains[0].batch_size"),
        (with_chain(confirmations=-1), "chains[0].confirmations"),
        (with_chain(max_bytes_in_flight=1024), "chains[0].max_bytes_in_flight"),
        (with_chain(max_bytes_in_flight=2**40), "chains[0].max_bytes_in_flight"),
        ({"chains": BASE["chains"]}, "database: required key is missing"),
        ({**BASE, "database": {"url": "mysql://x/y"}}, "database.url"),
        ({**BASE, "http": {"listen": "nope"}}, "http.listen"),
        ({**BASE, "chains": [*BASE["chains"], *BASE["chains"]]}, "duplicate name 'dev'"),
        ({**BASE, "chains": []}, "chains"),
    ],
)
def test_errors_name_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(errors.ConfigError) as info:
        config.build(data, {})
    assert key in str(info.value)
    assert info.value.exit_code == 2


def test_errors_never_echo_values() -> None:
    data = {**BASE, "database": {"url": "mysql://u:CANARY123@h/db"}}
    with pytest.raises(errors.ConfigError) as info:
        config.build(data, {})
    assert "CANARY123" not in str(info.value)


def test_env_overrides_database_url() -> None:
    cfg = config.build(BASE, {"INDEXER_DATABASE_URL": "postgresql://other@127.0.0.1/x"})
    assert cfg.database.url == "postgresql://other@127.0.0.1/x"


def test_env_supplies_missing_database_section() -> None:
    cfg = config.build({"chains": BASE["chains"]}, {"INDEXER_DATABASE_URL": "postgresql://h/x"})
    assert cfg.database.url == "postgresql://h/x"


def test_load_reads_path_then_env_then_default(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[database]\nurl = "postgresql://h/x"\n[[chains]]\nname = "a"\nkind = "evm"\n'
        'urls = ["http://127.0.0.1:1"]\nchain_id = 1\n'
    )
    assert config.load(str(path), {}).chains[0].name == "a"
    assert config.load(None, {"INDEXER_CONFIG": str(path)}).chains[0].name == "a"
    assert config.resolve_path(None, {}) == Path("config/indexer.toml")


def test_unreadable_and_invalid_toml_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="cannot read config file"):
        config.load(str(tmp_path / "missing.toml"), {})
    bad = tmp_path / "bad.toml"
    bad.write_text("[database\n")
    with pytest.raises(errors.ConfigError, match="not valid TOML"):
        config.load(str(bad), {})


def test_secrets_collects_passwords_and_keys() -> None:
    cfg = config.build(
        with_chain(urls=["https://node.example/v2/abcdefghijklmnopqrstuvwxyz012345?apikey=KEY42x"]),
        {},
    )
    secrets = cfg.secrets()
    # Every path segment and query value, the database name included (redact.py).
    assert {"s3cretpw", "abcdefghijklmnopqrstuvwxyz012345", "KEY42x", "v2", "indexer"} <= secrets
    assert not {"node.example", "127.0.0.1", "5432", "apikey"} & secrets


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:p@ss:w/rd?x@127.0.0.1/db",  # a raw / ? in the password
        "postgresql://u:p%25w/d@127.0.0.1/db",
        "postgresql://u:p%zz@127.0.0.1/db",  # libpq: invalid percent-encoded token
    ],
)
def test_a_database_url_libpq_would_misread_is_refused_without_echo(url: str) -> None:
    with pytest.raises(errors.ConfigError, match=r"database\.url: .*percent-encode") as info:
        build(database={"url": url})
    for piece in ("ss:w", "rd?x", "%25w", "p%w", "%zz", "127.0.0.1", "/db"):
        assert piece not in str(info.value)


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "indexer.example.toml"
    cfg = config.load(str(example), {})
    assert cfg.chains


def test_systemd_credential_supplies_database_url(tmp_path: Path) -> None:
    (tmp_path / "database-url").write_text("postgresql://cred@127.0.0.1/x\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert config.build(BASE, env).database.url == "postgresql://cred@127.0.0.1/x"
    env["INDEXER_DATABASE_URL"] = "postgresql://env@127.0.0.1/x"
    assert config.build(BASE, env).database.url == "postgresql://env@127.0.0.1/x"
    assert (
        config.build(BASE, {"CREDENTIALS_DIRECTORY": str(tmp_path / "none")}).database.url
        == (BASE["database"]["url"])
    )


# -- Strict types: every config problem is exit 2 naming the key (issue: hostile world, 10)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (with_chain(batch_size="100"), "chains[0].batch_size"),  # a string is not a number
        (with_chain(confirmations=True), "chains[0].confirmations"),  # nor is a boolean
        (with_chain(poll_interval_secs="2"), "chains[0].poll_interval_secs"),
        ({**BASE, "database": {**BASE["database"], "connect_timeout_secs": float("inf")}},
         "database.connect_timeout_secs"),
        ({**BASE, "database": {**BASE["database"], "max_outage_secs": float("nan")}},
         "database.max_outage_secs"),
        (with_chain(start_block=2**63), "chains[0].start_block"),
        (with_chain(urls=["http://127.0.0.1:99999"]), "chains[0].urls"),
        (with_chain(genesis_hash="00" * 32), "chains[0].genesis_hash: unknown key"),
        (with_chain(tls_fingerprints={}), "chains[0].tls_fingerprints: unknown key"),
        (with_chain(kind="electrum", urls=["tcp://127.0.0.1:1"], genesis_hash="00" * 32),
         "chains[0].chain_id: unknown key"),
        (with_chain(store="receipts!"), "chains[0].store"),
    ],
)  # fmt: skip
def test_values_of_the_wrong_type_or_kind_are_refused(data: dict[str, Any], key: str) -> None:
    with pytest.raises(errors.ConfigError) as info:
        config.build(data, {})
    assert key in str(info.value)
    assert info.value.exit_code == errors.EXIT_USAGE


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'[database]\nurl = "postgresql://h/\xff"\n')
    with pytest.raises(errors.ConfigError, match="not UTF-8"):
        config.load(str(bad), {})


def test_the_chain_kind_picks_its_model() -> None:
    cfg = build(
        chains=[
            BASE["chains"][0],
            {"name": "btc", "kind": "electrum", "urls": ["tcp://127.0.0.1:1"],
             "genesis_hash": "00" * 32},
        ]
    )  # fmt: skip
    evm, btc = cfg.chains
    assert isinstance(evm, config.EvmChainConfig) and evm.keeps("logs")
    assert isinstance(btc, config.ElectrumChainConfig) and not btc.keeps("transactions")


# -- [[events]]: every problem is exit 2 naming the key

TRANSFER = "Transfer(address indexed from, address indexed to, uint256 value)"
POOL_CREATED = "PoolCreated(address indexed token0, bytes32 indexed salt, uint24 fee, address pool)"


def with_events(*entries: dict[str, Any], **chain: Any) -> dict[str, Any]:
    return {**with_chain(**chain), "events": list(entries)}


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (with_events({"chain": "dev", "table": "t", "signature": "Transfer(addres to)"}),
         "events[0].signature: unknown type 'addres'"),
        (with_events({"chain": "dev", "table": "t", "signature": "Transfer(uint7 x)"}),
         "events[0].signature: unknown type 'uint7'"),
        (with_events({"chain": "dev", "table": "t", "signature": "Transfer(uint256 x"}),
         "events[0].signature"),
        (with_events({"chain": "dev", "table": "logs", "signature": TRANSFER}),
         "events[0].table: 'logs' is a table of the indexer itself"),
        (with_events({"chain": "dev", "table": "event_tables", "signature": TRANSFER}),
         "events[0].table"),
        (with_events({"chain": "dev", "table": "t", "signature": TRANSFER},
                     {"chain": "dev", "table": "t", "signature": TRANSFER}),
         "events[1].table: 't' is already an event table"),
        (with_events({"chain": "dev", "table": "Bad-Name", "signature": TRANSFER}),
         "events[0].table: must match"),
        (with_events({"chain": "dev", "table": "t", "abi": "no/such.json", "event": "Transfer"}),
         "events[0].abi: cannot read"),
        (with_events({"chain": "dev", "table": "t", "abi": "x.json"}), "events[0].event"),
        (with_events({"chain": "dev", "table": "t"}), "events[0].signature"),
        (with_events({"chain": "dev", "table": "t", "signature": TRANSFER, "abi": "x.json"}),
         "events[0].signature"),
        (with_events({"chain": "nope", "table": "t", "signature": TRANSFER}),
         "events[0].chain: no chain named 'nope'"),
        (with_events({"chain": "dev", "table": "t", "signature": TRANSFER, "address": "0x12"}),
         "events[0].address"),
        (with_events({"chain": "dev", "table": "t", "signature": TRANSFER, "start_block": -1}),
         "events[0].start_block"),
        (with_events({"chain": "dev", "table": "t", "signature": TRANSFER, "foo": 1}),
         "events[0].foo: unknown key"),
        (with_events({"chain": "dev", "table": "t", "signature": TRANSFER,
                      "factory": {"table": "pools", "column": "pool"}}),
         "events[0].factory.table: 'pools' is not another event table of chain 'dev'"),
        (with_events({"chain": "dev", "table": "pools", "signature": POOL_CREATED},
                     {"chain": "dev", "table": "t", "signature": TRANSFER,
                      "factory": {"table": "pools", "column": "fee"}}),
         "events[1].factory.column: 'fee' is not an address column of 'pools' (its address "
         "columns: token0, pool)"),
        (with_events({"chain": "dev", "table": "pools", "signature": POOL_CREATED},
                     {"chain": "dev", "table": "t", "signature": TRANSFER,
                      "address": "0x" + "11" * 20,
                      "factory": {"table": "pools", "column": "pool"}}),
         "events[1].factory: give either `address` or `factory`"),
        (with_events({"chain": "dev", "table": "pools", "signature": POOL_CREATED},
                     {"chain": "dev", "table": "t", "signature": TRANSFER,
                      "factory": {"table": "pools", "column": "pool"}},
                     {"chain": "dev", "table": "u", "signature": TRANSFER,
                      "factory": {"table": "t", "column": "to"}}),
         "events[2].factory.table: 't' has a factory itself"),
        (with_events({"chain": "dev", "table": "t", "signature": TRANSFER,
                      "factory": {"table": "pools"}}),
         "events[0].factory.column"),
    ],
)  # fmt: skip
def test_event_table_errors_name_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(errors.ConfigError) as info:
        config.build(data, {})
    assert key in str(info.value), str(info.value)
    assert info.value.exit_code == 2


def test_event_abi_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "abi").mkdir()
    (tmp_path / "abi" / "erc20.json").write_text(
        '[{"type": "event", "name": "Transfer", "anonymous": false, "inputs": ['
        '{"name": "from", "type": "address", "indexed": true},'
        '{"name": "to", "type": "address", "indexed": true},'
        '{"name": "value", "type": "uint256", "indexed": false}]}]'
    )
    path = tmp_path / "c.toml"
    path.write_text(
        '[database]\nurl = "postgresql://h/x"\n[[chains]]\nname = "dev"\nkind = "evm"\n'
        'urls = ["http://127.0.0.1:1"]\nchain_id = 1\n[[events]]\nchain = "dev"\n'
        'table = "transfers"\nabi = "abi/erc20.json"\nevent = "Transfer"\n'
        'address = "0xA0b86991c6218b36c1d19d4a2e9eB0cE3606eB48"\n'
    )
    (entry,) = config.load(str(path), {}).events
    assert entry.decl.declaration == TRANSFER
    assert entry.address == ("0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48",)
