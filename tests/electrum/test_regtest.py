"""Unit tests for the regtest block builder, checked against public Bitcoin data."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.electrum import regtest

# Mainnet block 100,000: its four txids, merkle root and header fields. The header's proof of
# work (checked below against its own bits) is what vouches for these values.
BLOCK_100000_TXIDS = (
    "8c14f0db3df150123e6f3dbbf30f8b955a8249b62ac1d1ff16284aefa3d06d87",
    "fff2525b8931402dd09222c50775608f75787bd2b87e56995a7bdd30f79702c4",
    "6359f0868171b1d194cbee1af2f16ea598ae8fad666d9b012c8ed2b79a236ec4",
    "e9a66845e05d5abc0ad04ec80f774a7e585c6e8db975962d069a522137b80c1d",
)
BLOCK_100000_MERKLE_ROOT = "f3e94742aca4b5ef85488dc37c06c3282295ffec960994b2c0d5ac2a25a95766"
BLOCK_100000_PREV = "000000000002d01c1fccc21636b607dfd930d31d01c3a62104612a1719011250"
BLOCK_100000_HASH = "000000000003ba27aa200b1cecaad478d2b00432346c3f1f3986da1afd33e506"
BLOCK_100000_TIME, BLOCK_100000_BITS, BLOCK_100000_NONCE = 1293623863, 0x1B04864C, 274148111
# The regtest genesis header as bitcoind serves it (`getblockheader <genesis> false`).
GENESIS_HEADER_HEX = (
    "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b2"
    "7ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4adae5494dffff7f2002000000"
)


def block_100000_header() -> regtest.Header:
    return regtest.Header(
        version=1,
        prev_hash_bytes=regtest.hex_to_hash(BLOCK_100000_PREV),
        merkle_root_bytes=regtest.hex_to_hash(BLOCK_100000_MERKLE_ROOT),
        time=BLOCK_100000_TIME,
        bits=BLOCK_100000_BITS,
        nonce=BLOCK_100000_NONCE,
    )


def test_genesis_block_is_bitcoins_regtest_genesis() -> None:
    genesis = regtest.genesis_block()
    assert genesis.hash_hex == regtest.GENESIS_HASH_HEX
    assert genesis.header.serialize().hex() == GENESIS_HEADER_HEX
    assert regtest.hash_to_hex(genesis.header.merkle_root_bytes) == regtest.GENESIS_MERKLE_ROOT_HEX
    assert genesis.txs[0].txid_hex == regtest.GENESIS_MERKLE_ROOT_HEX
    assert len(genesis.serialize()) == 285
    assert regtest.check_pow(genesis.header)


def test_merkle_root_of_mainnet_block_100000() -> None:
    txids = [regtest.hex_to_hash(txid) for txid in BLOCK_100000_TXIDS]
    assert regtest.hash_to_hex(regtest.merkle_root(txids)) == BLOCK_100000_MERKLE_ROOT
    header = block_100000_header()
    assert header.hash_hex == BLOCK_100000_HASH
    assert regtest.check_pow(header)


def test_merkle_root_duplicates_the_last_hash_of_odd_levels() -> None:
    a, b, c = (bytes([n]) * 32 for n in (1, 2, 3))
    h = regtest.double_sha256
    assert regtest.merkle_root([a]) == a
    assert regtest.merkle_root([a, b, c]) == h(h(a + b) + h(c + c))
    with pytest.raises(ValueError):
        regtest.merkle_root([])


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(regtest.Header)])
def test_header_hash_changes_with_every_field(field: str) -> None:
    header = block_100000_header()
    value = getattr(header, field)
    changed: Any = bytes([value[0] ^ 1]) + value[1:] if isinstance(value, bytes) else value ^ 1
    other = dataclasses.replace(header, **{field: changed})
    assert len(other.serialize()) == regtest.HEADER_SIZE
    assert other.hash_bytes != header.hash_bytes
    assert not regtest.check_pow(other)  # one flipped bit breaks mainnet-grade proof of work


def test_header_parse_round_trips() -> None:
    header = block_100000_header()
    assert regtest.Header.parse(header.serialize()) == header
    with pytest.raises(ValueError):
        regtest.Header.parse(header.serialize()[:79])


def test_bits_expand_to_known_targets() -> None:
    assert regtest.bits_to_target(0x1D00FFFF) == 0xFFFF << 208
    assert regtest.bits_to_target(regtest.REGTEST_BITS) == 0x7FFFFF << 232


def test_made_blocks_are_valid_and_linked() -> None:
    prev = regtest.genesis_block()
    for height in range(1, 300):
        block = regtest.make_block(
            prev_hash_bytes=prev.hash_bytes, height=height, time=prev.header.time + 600
        )
        assert regtest.check_pow(block.header)
        assert block.header.prev_hash_bytes == prev.hash_bytes
        assert block.header.merkle_root_bytes == regtest.merkle_root(
            [tx.txid_bytes for tx in block.txs]
        )
        coinbase = block.txs[0]
        assert coinbase.is_coinbase
        assert coinbase.inputs[0].script_sig.startswith(regtest.script_number(height))
        assert coinbase.outputs[0].value_sats == regtest.block_subsidy_sats(height)
        prev = block


def test_grind_returns_the_first_nonce_meeting_the_target() -> None:
    block = regtest.make_block(
        prev_hash_bytes=regtest.genesis_block().hash_bytes, height=1, time=1296689202
    )
    for nonce in range(block.header.nonce):
        assert not regtest.check_pow(dataclasses.replace(block.header, nonce=nonce))


def test_blocks_at_one_height_differ_by_tag() -> None:
    genesis = regtest.genesis_block()

    def at_height_1(tag: bytes) -> regtest.Block:
        return regtest.make_block(
            prev_hash_bytes=genesis.hash_bytes, height=1, time=1296689202, tag=tag
        )

    assert at_height_1(b"").hash_bytes == at_height_1(b"").hash_bytes
    assert at_height_1(b"").hash_bytes != at_height_1(b"branch 1").hash_bytes


def test_block_serialization_is_header_count_and_txs() -> None:
    genesis = regtest.genesis_block()
    spend = regtest.spend_tx(
        prev_txid_bytes=genesis.txs[0].txid_bytes,
        prev_index=0,
        outputs=[regtest.TxOut(1000, regtest.OP_TRUE_SCRIPT)],
    )
    block = regtest.make_block(
        prev_hash_bytes=genesis.hash_bytes, height=1, time=1296689202, txs=[spend]
    )
    raw = block.serialize()
    assert raw[:80] == block.header.serialize()
    assert raw[80] == 2
    assert raw[81:] == block.txs[0].serialize() + spend.serialize()
    assert block.hash_hex == regtest.hash_to_hex(regtest.double_sha256(raw[:80]))


@pytest.mark.parametrize(
    ("height", "encoded_hex"),
    [
        (1, "51"),
        (16, "60"),
        (17, "0111"),
        (127, "017f"),
        (128, "028000"),
        (255, "02ff00"),
        (256, "020001"),
        (2000, "02d007"),
        (65535, "03ffff00"),
        (8_388_608, "0400008000"),
    ],
)
def test_bip34_heights_encode_like_bitcoin_core(height: int, encoded_hex: str) -> None:
    assert regtest.script_number(height).hex() == encoded_hex


def test_regtest_subsidy_halves_every_150_blocks() -> None:
    assert regtest.block_subsidy_sats(149) == 50 * regtest.COIN_SATS
    assert regtest.block_subsidy_sats(150) == 25 * regtest.COIN_SATS
    assert regtest.block_subsidy_sats(150 * 64) == 0


@pytest.mark.parametrize(
    ("n", "encoded_hex"),
    [(0, "00"), (0xFC, "fc"), (0xFD, "fdfd00"), (0xFFFF, "fdffff"), (0x10000, "fe00000100")],
)
def test_varint(n: int, encoded_hex: str) -> None:
    assert regtest.varint(n).hex() == encoded_hex


def test_hashes_display_reversed() -> None:
    internal = bytes(range(32))
    assert regtest.hash_to_hex(internal) == internal[::-1].hex()
    assert regtest.hex_to_hash(regtest.hash_to_hex(internal)) == internal
    with pytest.raises(ValueError):
        regtest.hex_to_hash("00" * 31)
