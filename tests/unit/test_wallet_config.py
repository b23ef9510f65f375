"""`[[wallets]]`: addresses and descriptors checked against the chain's network, errors
naming the key (exit 2), scripts derived by embit."""

from __future__ import annotations

from typing import Any

import pytest

from indexer import config, errors
from indexer.wallets import keys

REGTEST_GENESIS = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
MAINNET_GENESIS = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
# BIP 32 test vector 1's master key, as a tpub (testnet/regtest) and as an xpub (mainnet).
TPUB = (
    "tpubD6NzVbkrYhZ4WaWSyoBvQwbpLkojyoTZPRsgXELWz3Popb3qkjcJyJUGLnL4qHHoQvao8ESaAstxYSnhyswJ76"
    "uZPStJRJCTKvosUCJZL5B"
)
XPUB = (
    "xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8YtGqsefD26"
    "5TMg7usUDFdp6W1EGMcet8"
)
TPRV = (
    "tprv8ZgxMBicQKsPeDgjzdC36fs6bMjGApWDNLR9erAXMs5skhMv36j9MV5ecvfavji5khqjWaWSFhN3YcCUUdiKH6"
    "isR4Pwy3U5y5egddBr16m"
)
BASE: dict[str, Any] = {
    "database": {"url": "postgresql://127.0.0.1:5432/test"},
    "chains": [
        {"name": "btc", "kind": "electrum", "urls": ["tcp://127.0.0.1:1"],
         "genesis_hash": REGTEST_GENESIS},
        {"name": "main", "kind": "electrum", "urls": ["tcp://127.0.0.1:2"],
         "genesis_hash": MAINNET_GENESIS},
        {"name": "dev", "kind": "evm", "urls": ["http://127.0.0.1:8545"], "chain_id": 31337},
    ],
}  # fmt: skip


def wallet(**entry: Any) -> dict[str, Any]:
    return {**BASE, "wallets": [{"chain": "btc", "name": "w", **entry}]}


def test_addresses_of_every_standard_type_become_their_scripts() -> None:
    cfg = config.build(
        wallet(
            addresses=[
                "mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn",  # P2PKH (regtest/testnet)
                "2MzQwSSnBHWHqSAqtTVQ6v47XtaisrJa1Vc",  # P2SH
                "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",  # P2WPKH
                "bcrt1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qzf4jry",  # P2WSH
                "bcrt1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqc8gma6",  # P2TR
            ]
        ),
        {},
    )
    scripts = cfg.wallets[0].fixed_scripts
    assert [s.script[:2].hex() for s in scripts] == ["76a9", "a914", "0014", "0020", "5120"]
    assert scripts[2].scripthash == keys.scripthash(scripts[2].script)
    assert len(scripts[2].scripthash) == 32


def test_ranged_descriptors_derive_with_embit() -> None:
    from embit.descriptor import Descriptor

    text = f"wpkh([d34db33f/84h/1h/0h]{TPUB}/0/*)"
    cfg = config.build(wallet(descriptors=[text, f"sh(wpkh({TPUB}/<0;1>/*))"]), {})
    entry = cfg.wallets[0]
    assert entry.gap_limit == 20
    assert [(b.descriptor, b.branch) for b in entry.branches] == [(0, 0), (1, 0), (1, 1)]
    derived = entry.branches[0].derive(7, "regtest")
    assert derived.script == Descriptor.from_string(text).derive(7).script_pubkey().data
    assert derived.address.startswith("bcrt1q") and derived.index == 7
    # The two branches of a multipath descriptor differ.
    assert entry.branches[1].derive(0, "regtest") != entry.branches[2].derive(0, "regtest")


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({"addresses": ["bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"]},
         "wallets[0].addresses[0]: 'bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4' is not an "
         "address of regtest"),
        ({"addresses": ["1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"]}, "wallets[0].addresses[0]"),
        ({"addresses": ["bcrt1qnotanaddress"]}, "wallets[0].addresses[0]"),
        ({"descriptors": ["wpkh(nonsense)"]}, "wallets[0].descriptors[0]: cannot parse"),
        ({"descriptors": [f"wpkh({XPUB}/0/*)"]},
         "wallets[0].descriptors[0]: an extended key of another network"),
        ({"descriptors": [f"wpkh({TPRV}/0/*)"]}, "wallets[0].descriptors[0]: holds a private key"),
        ({"descriptors": [f"wpkh({TPUB}/0/*h)"]}, "wallets[0].descriptors[0]"),
        ({}, "wallets[0]: give `addresses`, `descriptors` or both"),
        ({"chain": "dev", "addresses": ["mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn"]},
         "wallets[0].chain: 'dev' is not an Electrum (Bitcoin) chain"),
        ({"chain": "nope", "addresses": ["mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn"]},
         "wallets[0].chain: no chain named 'nope'"),
        ({"name": "Bad Name", "addresses": ["mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn"]},
         "wallets[0].name"),
        ({"gap_limit": 0, "addresses": ["mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn"]},
         "wallets[0].gap_limit"),
        ({"gap_limit": "20", "addresses": ["mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn"]},
         "wallets[0].gap_limit"),
        ({"addresses": "mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn"}, "wallets[0].addresses"),
    ],
)  # fmt: skip
def test_wallet_errors_name_the_key(entry: dict[str, Any], key: str) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        config.build(wallet(**entry), {})
    assert key in str(caught.value)
    assert caught.value.exit_code == errors.EXIT_USAGE
    assert TPRV not in str(caught.value)


def test_mainnet_wallets_take_mainnet_keys_and_duplicate_names_are_refused() -> None:
    data = {
        **BASE,
        "wallets": [
            {"chain": "main", "name": "a", "descriptors": [f"pkh({XPUB}/0/*)"],
             "addresses": ["bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"]},
            {"chain": "main", "name": "a", "addresses": ["1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"]},
        ],
    }  # fmt: skip
    with pytest.raises(errors.ConfigError, match=r"wallets\[1\].name: 'a' is already a wallet"):
        config.build(data, {})
    data["wallets"] = data["wallets"][:1]
    cfg = config.build(data, {})
    assert cfg.wallets_of("main")[0].branches[0].derive(0, "mainnet").address.startswith("1")
