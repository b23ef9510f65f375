"""Header validation against real published mainnet headers and constructed chains.

Where the real headers come from (no network here; all are public test data):
- GENESIS_HEX and BLOCK_1_HEX: github.com/ethereum/btcrelay, test/headers/firstEleven.txt
  (the first eleven mainnet headers, one hex header per line). The genesis hash, merkle root,
  time, bits and nonce asserted below are Bitcoin Core's (src/kernel/chainparams.cpp).
- PERIOD_*, BOUNDARY_* and BLOCK_99995_TO_100000: github.com/ethereum/btcrelay,
  test/headers/bh80_100k.txt (mainnet headers 80,001 to 100,000, one per line; its readme
  names the source: headers.electrum.org/blockchain_headers). Lines 16,767 (96,768), 18,779
  to 18,789 (98,780 to 98,790) and 19,994 to 19,999 (99,995 to 100,000). Block 98,784 is a
  real retarget (bits 0x1b055953 -> 0x1b04864c). Block 100,000's hash is the published
  000000000003ba27aa200b1cecaad478d2b00432346c3f1f3986da1afd33e506 (quoted, for one, by
  Bitcoin-wiki-derived checkpoint lists such as NBitcoin's network parameters).
"""

from __future__ import annotations

import dataclasses
import struct

import pytest

from indexer.chain import btc_headers as bh
from indexer.chain.btc_headers import MAINNET, REGTEST, TESTNET, Header
from indexer.errors import InvalidHeader
from tests.electrum import regtest

GENESIS_HEX = (
    "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac7"
    "2c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c"
)
BLOCK_1_HEX = (
    "010000006fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6190000000000982051fd1e4ba744bbbe"
    "680e1fee14677ba1a3c3540bf7b1cdb606e857233e0e61bc6649ffff001d01e36299"
)
# Mainnet 96,768: the first header of the period that ends at 98,783.
PERIOD_FIRST_96768_HEX = (
    "01000000842087991505af1295554cd0644f6f3c9f707529f82596aaa03104000000000028aaafae19d97af088d3"
    "22ba80f0dc0f02504abe1a1f26e76652c110706f8d0e1256014d5359051b02d46276"
)
# Mainnet 98,780 .. 98,790, across the retarget at 98,784.
BOUNDARY_98780_HEX = [
    "0100000085a650e18828b3a6422302e63277a35ae04b5efed000c924283a030000000000877cbd9929be8d91c1f7"
    "c7850a566b73c4768ee5fba2c4d2c826aa941d40444f78eb104d5359051b0d7afd59",
    "01000000a7980179309f8fc68534efbd536d30fb94f5159d9b31937a1eb503000000000019c119f5aa4418e5bc69"
    "638ac8f7963580773020bf9aa6565d5d1d7faacfd85312f0104d5359051b2c22f341",
    "01000000b6fec3c959e033ed4a3be587c27e829ec2f1c0f867e1e74696d4020000000000de665c029723bdf252b7"
    "8f0aba73b462ba4476577cfaff159b9ffec331537a13e4f0104d5359051bd43da445",
    "01000000ea973afd0ac7dd93b0427ba2b70e1c7fdb57653a8fc01b66e2be04000000000050191c9d993d3602e327"
    "0ef38f44d7c99353644e9542a0db59df31722141b302e9f2104d5359051b84a3fb3c",
    "01000000f9e89064a1802f4dbbaf44da8aa7b4cb034d6b8e57f8b850b89202000000000093691ac65801307ba452"
    "ee9933fb2213411e59a6c06ad792c8f17b081872b7d11bf3104d4c86041be1d4fa20",
    "010000003d74778833fa09b9bcde0fedb829afe909ce369c1086d10e4b3c0400000000008b39811e45eba2c191dd"
    "40d48f8f0eb24e22dbb42f62ba52d1edf2676804c6f33cf8104d4c86041b60055c36",
    "01000000dae286be92d28df60db4ea34870a1493a1c3264637de21aac61d000000000000a9a6c3bf577302cc55e7"
    "4e12651951cf61214ae6f48ea2a0d22d52205553798812fc104d4c86041b1c1de877",
    "01000000fb35457948007bd827f16df5060029d94042610b890cdc65d89601000000000047c2106de4457d2e706b"
    "8140ef452cae2d90207da4630f2c1b0be9ba91ff41c882ff104d4c86041b12ec4c8b",
    "01000000dea25a5a1ce61f110fab565a0e3f6befce26040620a7343783690200000000002c83f11f48ad759bb9d5"
    "3afa356a3ba6f4032711b09d28ac2cf72ab64c759447d701114d4c86041baa57437c",
    "0100000095573eb248e24b527c89efe8294bcd89de9c47e83a1bf025125b0100000000000d7424cbb35c4f61b7f1"
    "c839c12512d1a6a85e6d1af429e79077c0bcb04d2fde5905114d4c86041b0686f55f",
    "0100000095a9ee16317427dc865d2a2459f3c467692dbf0766352f623855040000000000fcb07045d20320e7c944"
    "4a85a4c0fac7d073284f40ef0a1583b508b3458be9699e06114d4c86041bfd91a95f",
]
# Mainnet 99,995 .. 100,000.
BLOCK_99995_TO_100000_HEX = [
    "0100000001799c424ca1f0a862273a5fc7ca41d2fcab87fe961b9f1da2ee0300000000008de06cdc238bfb5ec998"
    "b00d0a5a0bfe85cd06b169330ab5140e719ba05825915c1d1b4d4c86041b330b1165",
    "010000002325f50e2ec0d59ca0c6633d24ec6dee3a58fcce06f069dbd4710400000000009c39f3a2fb2c831839e2"
    "9375c3fa61d820185028b5590edc28dd56afd52d4672891f1b4d4c86041b448364e9",
    "010000002fbe90d98be372c14e10792b2c5329bed719ce88136a95c18ab10200000000000e5f78ed0a4945c8eeea"
    "1657093b7210a4554c8989c11be8f82b672f97e540516e201b4d4c86041b1249681b",
    "01000000e8f8a9d34ad300de2177a8ee1d6402eea6763e50954fd0aa57f60100000000000aabb27496c9cbfca2be"
    "67efa87eec6fa21976794af2b81949b725033bada0f381201b4d4c86041b8ae48fbc",
    "01000000d153ecc827a531652c430d8895b07f6896091967d21079630321000000000000907a54a1d714ac57d8c4"
    "3c8cc5b57006032fc3a5de6d97943a1e8a552fd90e11b3211b4d4c86041bb28803e8",
    "0100000050120119172a610421a6c3011dd330d9df07b63616c2cc1f1cd00200000000006657a9252aacd5c0b294"
    "0996ecff952228c3067cc38d4885efb5a4ac4247e9f337221b4d4c86041b0f2b5710",
]
BLOCK_100000_HASH = "000000000003ba27aa200b1cecaad478d2b00432346c3f1f3986da1afd33e506"
EASY_LIMIT = (1 << 255) - 1  # regtest's limit: about one hash in two meets it


def parse(hex_header: str, height: int) -> Header:
    return bh.parse_header(bytes.fromhex(hex_header), height=height)


def parse_run(hex_headers: list[str], first_height: int) -> list[Header]:
    return [parse(h, first_height + i) for i, h in enumerate(hex_headers)]


def mine(*, prev: Header | None, height: int, timestamp: int, bits: int) -> Header:
    """A header on `prev` whose hash meets its own `bits` (cheap for targets near 2**255)."""
    prev_internal = prev.hash[::-1] if prev is not None else bytes(32)
    merkle = bh.double_sha256(struct.pack("<I", height))
    prefix = struct.pack("<i", 0x20000000) + prev_internal + merkle
    prefix += struct.pack("<II", timestamp, bits)
    target = bh.bits_to_target(REGTEST, bits, height=height)  # the easiest limit we know
    for nonce in range(1 << 20):
        header = bh.parse_header(prefix + struct.pack("<I", nonce), height=height)
        if int.from_bytes(header.hash, "big") <= target:
            return header
    raise AssertionError("no nonce found")


# -- Real mainnet headers


def test_mainnet_genesis_header_parses_to_core_constants() -> None:
    genesis = parse(GENESIS_HEX, 0)
    assert genesis.hash == MAINNET.genesis_hash
    assert genesis.hash.hex() == "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
    assert genesis.merkle_root.hex() == (
        "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
    )
    assert (genesis.version, genesis.timestamp, genesis.bits, genesis.nonce) == (
        1,
        1231006505,
        0x1D00FFFF,
        2083236893,
    )
    assert genesis.prev_hash == bytes(32)
    assert bh.network_for_genesis(genesis.hash) is MAINNET
    bh.verify_chain(MAINNET, [genesis], prev=None, period_first=None)


def test_genesis_and_block_1_form_a_valid_chain() -> None:
    genesis, block_1 = parse(GENESIS_HEX, 0), parse(BLOCK_1_HEX, 1)
    assert block_1.hash.hex() == "00000000839a8e6886ab5951d76f411475428afc90947ee320161bbf18eb6048"
    assert block_1.prev_hash == genesis.hash
    bh.verify_chain(MAINNET, [genesis, block_1], prev=None, period_first=None)


def test_real_retarget_at_98784_is_computed_and_accepted() -> None:
    period_first = parse(PERIOD_FIRST_96768_HEX, 96768)
    run = parse_run(BOUNDARY_98780_HEX, 98780)
    last_of_period, boundary = run[3], run[4]
    assert (last_of_period.height, boundary.height) == (98783, 98784)
    assert bh.retarget_bits(MAINNET, first=period_first, last=last_of_period) == 0x1B04864C
    assert (last_of_period.bits, boundary.bits) == (0x1B055953, 0x1B04864C)
    # Across the boundary: bits before it from the old period, after it from the new one.
    bh.verify_chain(MAINNET, run[1:], prev=run[0], period_first=period_first)


def test_retarget_with_a_forged_period_start_is_rejected() -> None:
    real_first = parse(PERIOD_FIRST_96768_HEX, 96768)
    forged_first = dataclasses.replace(real_first, timestamp=real_first.timestamp - 3 * 86400)
    run = parse_run(BOUNDARY_98780_HEX, 98780)
    with pytest.raises(InvalidHeader, match="difficulty rules require") as info:
        bh.verify_chain(MAINNET, run[1:], prev=run[0], period_first=forged_first)
    assert info.value.height == 98784


def test_block_100000_has_its_published_hash() -> None:
    run = parse_run(BLOCK_99995_TO_100000_HEX, 99995)
    assert run[-1].hash.hex() == BLOCK_100000_HASH
    assert run[-1].merkle_root.hex() == (
        "f3e94742aca4b5ef85488dc37c06c3282295ffec960994b2c0d5ac2a25a95766"
    )
    period_first = parse(BOUNDARY_98780_HEX[4], 98784)  # the period 99,995 is in
    bh.verify_chain(MAINNET, run[1:], prev=run[0], period_first=period_first)


# -- Failures, each raised with its height


def test_bad_proof_of_work_is_rejected() -> None:
    genesis = parse(GENESIS_HEX, 0)
    raw = bytearray(bytes.fromhex(BLOCK_1_HEX))
    raw[76:80] = struct.pack("<I", 12345)  # another nonce: the hash misses the target
    with pytest.raises(InvalidHeader, match="insufficient proof of work") as info:
        bh.verify_chain(
            MAINNET, [bh.parse_header(bytes(raw), height=1)], prev=genesis, period_first=genesis
        )
    assert info.value.height == 1


def test_header_that_does_not_link_is_rejected() -> None:
    run = parse_run(BLOCK_99995_TO_100000_HEX, 99995)
    period_first = parse(BOUNDARY_98780_HEX[4], 98784)
    bh.verify_chain(MAINNET, run[1:3], prev=run[0], period_first=period_first)
    skipped = dataclasses.replace(run[2], height=99996)  # 99,997's header put at 99,996
    with pytest.raises(InvalidHeader, match="does not link") as info:
        bh.verify_chain(MAINNET, [skipped], prev=run[0], period_first=period_first)
    assert info.value.height == 99996
    with pytest.raises(InvalidHeader, match="does not follow height 99,995"):
        bh.verify_chain(MAINNET, [run[2]], prev=run[0], period_first=period_first)
    with pytest.raises(InvalidHeader, match="no previous header"):
        bh.verify_chain(MAINNET, run[1:3], prev=None, period_first=None)


def test_wrong_genesis_is_rejected() -> None:
    regtest_genesis = bh.parse_header(regtest.genesis_block().header.serialize(), height=0)
    bh.verify_chain(REGTEST, [regtest_genesis], prev=None, period_first=None)
    with pytest.raises(InvalidHeader, match="not the mainnet genesis"):
        bh.verify_chain(MAINNET, [regtest_genesis], prev=None, period_first=None)


@pytest.mark.parametrize("size", [0, 79, 81])
def test_header_of_the_wrong_size_is_rejected(size: int) -> None:
    with pytest.raises(InvalidHeader, match="80 bytes"):
        bh.parse_header(bytes(size), height=7)


@pytest.mark.parametrize(
    ("bits", "reason"),
    [
        (0x04923456, "negative"),
        (0x23000001, "overflow"),
        (0xFF123456, "overflow"),
        (0x1D000000, "zero target"),
        (0x00000000, "zero target"),
        (0x1D01FFFF, "proof-of-work limit"),  # twice mainnet's limit
        (0x207FFFFF, "proof-of-work limit"),  # regtest's limit is not mainnet's
    ],
)
def test_bad_bits_are_rejected(bits: int, reason: str) -> None:
    with pytest.raises(InvalidHeader, match=reason):
        bh.bits_to_target(MAINNET, bits, height=5)


def test_compact_encoding_round_trips_the_limits() -> None:
    assert MAINNET.pow_limit_bits == TESTNET.pow_limit_bits == 0x1D00FFFF
    assert REGTEST.pow_limit_bits == 0x207FFFFF
    assert bh.bits_to_target(REGTEST, 0x207FFFFF, height=0) == 0x7FFFFF << 232
    for bits in (0x1D00FFFF, 0x1B04864C, 0x1A05DB8B, 0x03123456):
        assert bh.target_to_bits(bh.bits_to_target(MAINNET, bits, height=0)) == bits


# -- Difficulty rules over constructed chains


EASY_MAINNET = dataclasses.replace(MAINNET, name="easy-mainnet", pow_limit=EASY_LIMIT)
EASY_TESTNET = dataclasses.replace(TESTNET, name="easy-testnet", pow_limit=EASY_LIMIT)
PERIOD_BITS = 0x203FFFFF  # half the easy limit's target: about one hash in four


def build_period(*, timespan_secs: int) -> list[Header]:
    """Heights 0..2015 at PERIOD_BITS, evenly spread over `timespan_secs`."""
    headers: list[Header] = []
    step = timespan_secs / (bh.RETARGET_INTERVAL - 1)
    for height in range(bh.RETARGET_INTERVAL):
        prev = headers[-1] if headers else None
        timestamp = 1_600_000_000 + round(height * step)
        headers.append(mine(prev=prev, height=height, timestamp=timestamp, bits=PERIOD_BITS))
    return headers


def test_retarget_over_a_constructed_period() -> None:
    week = 7 * 86400
    period = build_period(timespan_secs=week)  # twice as fast as planned
    want = bh.target_to_bits(bh.bits_to_target(EASY_MAINNET, PERIOD_BITS, height=0) // 2)
    assert bh.retarget_bits(EASY_MAINNET, first=period[0], last=period[-1]) == want
    good = mine(prev=period[-1], height=2016, timestamp=period[-1].timestamp + 600, bits=want)
    bh.verify_chain(EASY_MAINNET, [*period[1:], good], prev=period[0], period_first=period[0])
    unchanged = mine(
        prev=period[-1], height=2016, timestamp=period[-1].timestamp + 600, bits=PERIOD_BITS
    )
    with pytest.raises(InvalidHeader, match="difficulty rules require") as info:
        bh.verify_chain(EASY_MAINNET, [unchanged], prev=period[-1], period_first=period[0])
    assert info.value.height == 2016
    inside = mine(prev=period[5], height=6, timestamp=period[5].timestamp + 600, bits=want)
    with pytest.raises(InvalidHeader, match="difficulty rules require"):
        bh.verify_chain(EASY_MAINNET, [inside], prev=period[5], period_first=period[0])


def _fake(height: int, timestamp: int, bits: int) -> Header:
    return Header(height, 1, bytes(32), bytes(32), timestamp, bits, 0, bytes(32), bytes(80))


@pytest.mark.parametrize(
    ("timespan_secs", "factor"),
    [(86400, (1, 4)), (bh.TARGET_TIMESPAN_SECS, (1, 1)), (70 * 86400, (4, 1))],
)
def test_retarget_clamps_the_timespan(timespan_secs: int, factor: tuple[int, int]) -> None:
    bits = 0x1B04864C
    first, last = _fake(96768, 0, bits), _fake(98783, timespan_secs, bits)
    target = bh.bits_to_target(MAINNET, bits, height=0) * factor[0] // factor[1]
    assert bh.retarget_bits(MAINNET, first=first, last=last) == bh.target_to_bits(target)


def test_retarget_is_capped_at_the_pow_limit() -> None:
    first, last = _fake(0, 0, 0x1D00FFFF), _fake(2015, 10 * bh.TARGET_TIMESPAN_SECS, 0x1D00FFFF)
    assert bh.retarget_bits(MAINNET, first=first, last=last) == 0x1D00FFFF


def test_testnet_min_difficulty_rule() -> None:
    first = mine(prev=None, height=4032, timestamp=1_600_000_000, bits=PERIOD_BITS)
    limit_bits = EASY_TESTNET.pow_limit_bits
    slow = mine(prev=first, height=4033, timestamp=first.timestamp + 1201, bits=limit_bits)
    after = mine(prev=slow, height=4034, timestamp=slow.timestamp + 60, bits=PERIOD_BITS)
    bh.verify_chain(EASY_TESTNET, [slow, after], prev=first, period_first=first)
    # The same chain on mainnet rules: no minimum-difficulty blocks.
    with pytest.raises(InvalidHeader, match="difficulty rules require"):
        bh.verify_chain(EASY_MAINNET, [slow, after], prev=first, period_first=first)
    # More than 20 minutes: the minimum difficulty is required, not merely allowed.
    late = mine(prev=first, height=4033, timestamp=first.timestamp + 1201, bits=PERIOD_BITS)
    with pytest.raises(InvalidHeader, match="difficulty rules require"):
        bh.verify_chain(EASY_TESTNET, [late], prev=first, period_first=first)
    # Twenty minutes exactly: normal difficulty.
    early = mine(prev=first, height=4033, timestamp=first.timestamp + 1200, bits=limit_bits)
    with pytest.raises(InvalidHeader, match="difficulty rules require"):
        bh.verify_chain(EASY_TESTNET, [early], prev=first, period_first=first)


def test_regtest_never_retargets() -> None:
    assert not REGTEST.needs_period_first and MAINNET.needs_period_first
    genesis = bh.parse_header(regtest.genesis_block().header.serialize(), height=0)
    blocks = [genesis]
    for height in range(1, 4):
        timestamp = genesis.timestamp + height
        blocks.append(mine(prev=blocks[-1], height=height, timestamp=timestamp, bits=0x207FFFFF))
    bh.verify_chain(REGTEST, blocks, prev=None, period_first=None)
    harder = mine(prev=blocks[-1], height=4, timestamp=genesis.timestamp + 9, bits=PERIOD_BITS)
    with pytest.raises(InvalidHeader, match="require 0x207fffff"):
        bh.verify_chain(REGTEST, [harder], prev=blocks[-1], period_first=None)
