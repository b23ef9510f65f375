"""Bitcoin block header validation: pure functions over 80-byte headers, no I/O.

As strict as the Electrum wallet's `blockchain.py` (`verify_header`, `verify_chunk`,
`get_target`) and stricter on test networks, where Electrum skips every check:

- parse: exactly 80 bytes; the hash is double SHA-256, kept (like every hash here) in display
  order, i.e. byte-reversed;
- linkage: each header names the hash of the one below it; height 0 is the network's genesis;
- `bits`: the compact target must decode to a positive target within the network's
  proof-of-work limit (Core's `CheckProofOfWork`: negative, zero and overflowing encodings are
  refused), and the hash, read as a number, must not exceed it;
- difficulty: `bits` must equal what the network's rules expect (Core's `GetNextWorkRequired`):
  - every 2016 blocks the target is retargeted from the previous period: its last target times
    the time between its first and last headers, clamped to [1/4, 4] times two weeks, capped at the
    proof-of-work limit; inside a period, `bits` stay those of the period's first block;
  - testnet's 20-minute rule (`fPowAllowMinDifficultyBlocks`), implemented, not skipped: a
    block more than 20 minutes after its parent may (must) use the minimum difficulty, any
    other block carries the bits of the last non-minimum block of its period. In a valid
    chain those are always the bits of the period's first block (each non-minimum block
    carried them, by induction), which is what we compare with;
  - regtest never retargets (`fPowNoRetargeting`) and its genesis is at the proof-of-work
    limit, so every regtest block carries the limit's bits (0x207fffff).

Not checked, as in Electrum: timestamps against the median of the last 11 blocks or the clock,
and the version floors of BIP34/65/66 (they need more context than a header chunk carries).

Why `errors.InvalidHeader` is a `ResponseCorrupted` and not a `ChainValidationError`: a header that
fails these checks cannot be part of any valid chain, whatever reorg happened, so the server
that sent it is faulty or lying. As `ResponseCorrupted` it counts against that server and the
request fails over to the next one (`electrum_servers`); `ChainValidationError` is for valid
chains that disagree with ours (a reorg, or a node that changed between answers).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from indexer import errors

HEADER_SIZE = 80
RETARGET_INTERVAL = 2016  # blocks per difficulty period
TARGET_TIMESPAN_SECS = 14 * 24 * 60 * 60  # two weeks
TARGET_SPACING_SECS = 10 * 60
NULL_HASH = bytes(32)


@dataclass(frozen=True, slots=True)
class Network:
    """The consensus parameters that header validation needs."""

    name: str
    genesis_hash: bytes  # display order
    genesis_bits: int
    pow_limit: int
    allow_min_difficulty: bool  # testnet's 20-minute rule
    no_retargeting: bool

    @property
    def pow_limit_bits(self) -> int:
        return target_to_bits(self.pow_limit)

    @property
    def needs_period_first(self) -> bool:
        """Whether the expected `bits` depend on the first header of the period."""
        return not (self.no_retargeting and self.genesis_bits == self.pow_limit_bits)


# Bitcoin Core, src/kernel/chainparams.cpp (consensus.powLimit, genesis).
MAINNET = Network(
    name="mainnet",
    genesis_hash=bytes.fromhex("000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"),
    genesis_bits=0x1D00FFFF,
    pow_limit=(1 << 224) - 1,
    allow_min_difficulty=False,
    no_retargeting=False,
)
TESTNET = Network(
    name="testnet3",
    genesis_hash=bytes.fromhex("000000000933ea01ad0ee984209779baaec3ced90fa3f408719526f8d77f4943"),
    genesis_bits=0x1D00FFFF,
    pow_limit=(1 << 224) - 1,
    allow_min_difficulty=True,
    no_retargeting=False,
)
REGTEST = Network(
    name="regtest",
    genesis_hash=bytes.fromhex("0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"),
    genesis_bits=0x207FFFFF,
    pow_limit=(1 << 255) - 1,
    allow_min_difficulty=True,
    no_retargeting=True,
)
NETWORKS = (MAINNET, TESTNET, REGTEST)


def network_for_genesis(genesis_hash: bytes) -> Network | None:
    """The network whose genesis block has this (display-order) hash, if we know it."""
    return next((n for n in NETWORKS if n.genesis_hash == genesis_hash), None)


# -- Parsing


@dataclass(frozen=True, slots=True)
class Header:
    """A parsed header; hashes in display (reversed) byte order."""

    height: int
    version: int  # signed, as bitcoind shows it
    prev_hash: bytes
    merkle_root: bytes
    timestamp: int
    bits: int
    nonce: int
    hash: bytes
    raw: bytes


def double_sha256(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def parse_header(raw: bytes, *, height: int) -> Header:
    """Parse one serialized header; raise `errors.InvalidHeader` unless it is 80 bytes."""
    if len(raw) != HEADER_SIZE:
        raise errors.InvalidHeader(height, f"a header is {HEADER_SIZE} bytes, got {len(raw)}")
    (version,) = struct.unpack_from("<i", raw, 0)
    timestamp, bits, nonce = struct.unpack_from("<III", raw, 68)
    return Header(
        height=height,
        version=version,
        prev_hash=raw[35:3:-1],
        merkle_root=raw[67:35:-1],
        timestamp=timestamp,
        bits=bits,
        nonce=nonce,
        hash=double_sha256(raw)[::-1],
        raw=bytes(raw),
    )


# -- Compact targets (arith_uint256::SetCompact / GetCompact)


def bits_to_target(network: Network, bits: int, *, height: int) -> int:
    """Decode `bits`; raise `errors.InvalidHeader` for what `CheckProofOfWork` refuses."""
    if not 0 <= bits <= 0xFFFFFFFF:
        raise errors.InvalidHeader(height, f"bits {bits!r} is not a uint32")
    size = bits >> 24
    word = bits & 0x007FFFFF
    target = word >> 8 * (3 - size) if size <= 3 else word << 8 * (size - 3)
    if word and bits & 0x00800000:
        raise errors.InvalidHeader(height, f"bits 0x{bits:08x} encode a negative target")
    if word and (size > 34 or (word > 0xFF and size > 33) or (word > 0xFFFF and size > 32)):
        raise errors.InvalidHeader(height, f"bits 0x{bits:08x} overflow 256 bits")
    if target == 0:
        raise errors.InvalidHeader(height, f"bits 0x{bits:08x} encode a zero target")
    if target > network.pow_limit:
        raise errors.InvalidHeader(
            height, f"bits 0x{bits:08x} ask less work than the {network.name} proof-of-work limit"
        )
    return target


def target_to_bits(target: int) -> int:
    """Encode a non-negative target in compact form (rounding down, as Core does)."""
    assert target >= 0
    size = (target.bit_length() + 7) // 8
    compact = target << 8 * (3 - size) if size <= 3 else target >> 8 * (size - 3)
    if compact & 0x00800000:  # the sign bit: move one byte up instead
        compact >>= 8
        size += 1
    return compact | size << 24


# -- Difficulty


def retarget_bits(network: Network, *, first: Header, last: Header) -> int:
    """The bits of the block after `last`, which ends the period that `first` starts."""
    assert last.height == first.height + RETARGET_INTERVAL - 1, "not one whole period"
    if network.no_retargeting:
        return last.bits
    timespan = last.timestamp - first.timestamp
    timespan = min(max(timespan, TARGET_TIMESPAN_SECS // 4), TARGET_TIMESPAN_SECS * 4)
    # Core scales the target of the LAST block (on testnet3 it may be a minimum-difficulty one).
    target = bits_to_target(network, last.bits, height=last.height)
    return target_to_bits(min(target * timespan // TARGET_TIMESPAN_SECS, network.pow_limit))


def expected_bits(
    network: Network, *, header: Header, prev: Header, period_first: Header | None
) -> int:
    """The bits `header` must carry; `period_first` is the first header of `prev`'s period."""
    if not network.needs_period_first:
        return network.pow_limit_bits
    assert period_first is not None, "period_first is needed on this network"
    assert period_first.height == prev.height - prev.height % RETARGET_INTERVAL
    if header.height % RETARGET_INTERVAL == 0:
        return retarget_bits(network, first=period_first, last=prev)
    if network.allow_min_difficulty and (
        header.timestamp > prev.timestamp + 2 * TARGET_SPACING_SECS
    ):
        return network.pow_limit_bits
    return period_first.bits


def check_proof_of_work(network: Network, header: Header) -> None:
    """Raise unless `header`'s hash meets the target its own `bits` claim."""
    target = bits_to_target(network, header.bits, height=header.height)
    if int.from_bytes(header.hash, "big") > target:
        raise errors.InvalidHeader(
            header.height,
            f"insufficient proof of work: hash 0x{header.hash.hex()} above the target of "
            f"bits 0x{header.bits:08x}",
        )


# -- Chains of headers


def verify_chain(
    network: Network,
    headers: Sequence[Header],
    *,
    prev: Header | None,
    period_first: Header | None,
) -> None:
    """Raise `errors.InvalidHeader` unless `headers` form a valid chain on top of `prev`.

    `headers` are consecutive from `prev.height + 1` (from 0 when `prev` is None: the first
    header must then be the genesis). `period_first` is the first header of `prev`'s
    difficulty period (`prev` itself at a boundary); it may be None where the network's
    `needs_period_first` is false. Later periods take their first header from `headers`.
    """
    if not headers:
        return
    for header in headers:
        if prev is None:
            _check_genesis(network, header)
        else:
            _check_next(network, header, prev=prev, period_first=period_first)
        if header.height % RETARGET_INTERVAL == 0:
            period_first = header
        prev = header


def _check_genesis(network: Network, header: Header) -> None:
    if header.height != 0:
        raise errors.InvalidHeader(header.height, "no previous header to link to")
    if header.hash != network.genesis_hash:
        raise errors.InvalidHeader(
            0, f"hash 0x{header.hash.hex()} is not the {network.name} genesis block"
        )
    if header.prev_hash != NULL_HASH:
        raise errors.InvalidHeader(0, "the genesis block names a parent")
    check_proof_of_work(network, header)


def _check_next(
    network: Network, header: Header, *, prev: Header, period_first: Header | None
) -> None:
    height = header.height
    if height != prev.height + 1:
        raise errors.InvalidHeader(height, f"does not follow height {prev.height:,d}")
    if header.prev_hash != prev.hash:
        raise errors.InvalidHeader(
            height,
            f"does not link: parent 0x{header.prev_hash.hex()}, but header {prev.height:,d} "
            f"is 0x{prev.hash.hex()}",
        )
    check_proof_of_work(network, header)
    want = expected_bits(network, header=header, prev=prev, period_first=period_first)
    if header.bits != want:
        raise errors.InvalidHeader(
            height, f"bits 0x{header.bits:08x}, but the difficulty rules require 0x{want:08x}"
        )
