"""Build valid Bitcoin regtest blocks: genesis, BIP34 coinbases, merkle roots, ground nonces.

Pure functions and frozen dataclasses, no I/O. Hashes are held as `*_bytes` in internal
(little-endian, wire) order and shown as `*_hex` in display (reversed) order, as bitcoind
and ElectrumX show them. Transactions are legacy (no witness) serializations: valid on
every network and parsed by any SegWit-aware deserializer.

Only what a chain *indexer* can see is modelled: header linkage and proof of work,
transaction and block encoding, BIP34 heights, coinbase subsidies. Script execution and
coinbase maturity are not (a spend of an `OP_TRUE` output needs no signature anyway).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

COIN_SATS = 100_000_000
REGTEST_BITS = 0x207FFFFF
REGTEST_HALVING_INTERVAL_BLOCKS = 150
GENESIS_HASH_HEX = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
GENESIS_MERKLE_ROOT_HEX = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
GENESIS_TIME = 1296688602
GENESIS_NONCE = 2
GENESIS_TIMES_MESSAGE = b"The Times 03/Jan/2009 Chancellor on brink of second bailout for banks"
GENESIS_PUBKEY = bytes.fromhex(
    "04678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb6"
    "49f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5f"
)
NULL_HASH = bytes(32)
HEADER_SIZE = 80

OP_0 = 0x00
OP_PUSHDATA1 = 0x4C
OP_1 = 0x51
OP_TRUE = OP_1
OP_CHECKSIG = 0xAC
# Anyone can spend this output: handy for follow-up transactions that need no signature.
OP_TRUE_SCRIPT = bytes([OP_TRUE])
_MAX_NONCE = 0xFFFFFFFF


# -- Hashing and encoding


def double_sha256(data: bytes) -> bytes:
    """Return SHA256(SHA256(data)), in internal byte order."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def hash_to_hex(hash_bytes: bytes) -> str:
    """Show an internal-order hash in display (reversed) order."""
    return hash_bytes[::-1].hex()


def hex_to_hash(hash_hex: str) -> bytes:
    """Parse a display-order hash into internal byte order."""
    hash_bytes = bytes.fromhex(hash_hex)[::-1]
    if len(hash_bytes) != 32:
        raise ValueError(f"expected a 32-byte hash, got {hash_hex!r}")
    return hash_bytes


def varint(n: int) -> bytes:
    """Encode a Bitcoin CompactSize integer."""
    if n < 0:
        raise ValueError(f"negative varint {n}")
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + struct.pack("<H", n)
    if n <= 0xFFFF_FFFF:
        return b"\xfe" + struct.pack("<I", n)
    return b"\xff" + struct.pack("<Q", n)


def push_data(data: bytes) -> bytes:
    """Encode a minimal script push of `data` (up to 255 bytes)."""
    if len(data) < OP_PUSHDATA1:
        return bytes([len(data)]) + data
    if len(data) <= 0xFF:
        return bytes([OP_PUSHDATA1, len(data)]) + data
    raise ValueError(f"push of {len(data)} bytes is not supported")


def script_number(n: int) -> bytes:
    """Encode `n` as a script push, as Bitcoin Core's `CScript() << n` does (BIP34 heights)."""
    if n == 0:
        return bytes([OP_0])
    if n == -1 or 1 <= n <= 16:
        return bytes([OP_1 + n - 1])
    magnitude, negative = abs(n), n < 0
    encoded = bytearray()
    while magnitude:
        encoded.append(magnitude & 0xFF)
        magnitude >>= 8
    if encoded[-1] & 0x80:
        encoded.append(0x80 if negative else 0x00)
    elif negative:
        encoded[-1] |= 0x80
    return push_data(bytes(encoded))


def bits_to_target(bits: int) -> int:
    """Expand a compact difficulty target (`nBits`)."""
    exponent, mantissa = bits >> 24, bits & 0x007FFFFF
    if exponent <= 3:
        return mantissa >> (8 * (3 - exponent))
    return mantissa << (8 * (exponent - 3))


def block_subsidy_sats(height: int) -> int:
    """Return regtest's coinbase subsidy at `height` (halving every 150 blocks)."""
    halvings = height // REGTEST_HALVING_INTERVAL_BLOCKS
    return 0 if halvings >= 64 else (50 * COIN_SATS) >> halvings


def p2pk_script(pubkey: bytes) -> bytes:
    """Return a pay-to-pubkey script, as in the genesis coinbase."""
    return push_data(pubkey) + bytes([OP_CHECKSIG])


# -- Transactions


@dataclass(frozen=True)
class TxIn:
    prev_txid_bytes: bytes
    prev_index: int
    script_sig: bytes
    sequence: int = 0xFFFFFFFF

    def serialize(self) -> bytes:
        return b"".join(
            (
                self.prev_txid_bytes,
                struct.pack("<I", self.prev_index),
                varint(len(self.script_sig)),
                self.script_sig,
                struct.pack("<I", self.sequence),
            )
        )


@dataclass(frozen=True)
class TxOut:
    value_sats: int
    script_pubkey: bytes

    def serialize(self) -> bytes:
        return (
            struct.pack("<q", self.value_sats)
            + varint(len(self.script_pubkey))
            + (self.script_pubkey)
        )


@dataclass(frozen=True)
class Tx:
    inputs: tuple[TxIn, ...]
    outputs: tuple[TxOut, ...]
    version: int = 1
    locktime: int = 0

    def serialize(self) -> bytes:
        return b"".join(
            (
                struct.pack("<i", self.version),
                varint(len(self.inputs)),
                *(txin.serialize() for txin in self.inputs),
                varint(len(self.outputs)),
                *(txout.serialize() for txout in self.outputs),
                struct.pack("<I", self.locktime),
            )
        )

    @property
    def txid_bytes(self) -> bytes:
        return double_sha256(self.serialize())

    @property
    def txid_hex(self) -> str:
        return hash_to_hex(self.txid_bytes)

    @property
    def is_coinbase(self) -> bool:
        return len(self.inputs) == 1 and self.inputs[0].prev_txid_bytes == NULL_HASH


def coinbase_tx(
    *, height: int, script_pubkey: bytes, value_sats: int | None = None, tag: bytes = b""
) -> Tx:
    """Return a BIP34 coinbase for `height` paying the subsidy (or `value_sats`).

    `tag` is pushed after the height: blocks built on the same parent at the same height
    differ only by it, so each branch of a reorg must use its own tag.
    """
    script_sig = script_number(height) + push_data(tag)
    if not 2 <= len(script_sig) <= 100:
        raise ValueError(f"coinbase scriptSig must be 2-100 bytes, got {len(script_sig)}")
    value = block_subsidy_sats(height) if value_sats is None else value_sats
    return Tx(
        inputs=(TxIn(NULL_HASH, 0xFFFFFFFF, script_sig),),
        outputs=(TxOut(value, script_pubkey),),
    )


def spend_tx(
    *, prev_txid_bytes: bytes, prev_index: int, outputs: Sequence[TxOut], script_sig: bytes = b""
) -> Tx:
    """Return a one-input transaction spending `prev_txid_bytes:prev_index`.

    With an `OP_TRUE_SCRIPT` previous output the empty `script_sig` is a valid spend.
    """
    return Tx(inputs=(TxIn(prev_txid_bytes, prev_index, script_sig),), outputs=tuple(outputs))


def merkle_root(txids_bytes: Sequence[bytes]) -> bytes:
    """Return the merkle root of internal-order txids (the last one doubled on odd levels)."""
    if not txids_bytes:
        raise ValueError("a block has at least one transaction")
    level = list(txids_bytes)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [double_sha256(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


# -- Headers and blocks


@dataclass(frozen=True)
class Header:
    version: int
    prev_hash_bytes: bytes
    merkle_root_bytes: bytes
    time: int
    bits: int
    nonce: int

    def serialize(self) -> bytes:
        return (
            struct.pack("<i", self.version)
            + self.prev_hash_bytes
            + self.merkle_root_bytes
            + struct.pack("<III", self.time, self.bits, self.nonce)
        )

    @classmethod
    def parse(cls, raw: bytes) -> Header:
        if len(raw) != HEADER_SIZE:
            raise ValueError(f"a header is {HEADER_SIZE} bytes, got {len(raw)}")
        (version,) = struct.unpack_from("<i", raw, 0)
        time, bits, nonce = struct.unpack_from("<III", raw, 68)
        return cls(version, raw[4:36], raw[36:68], time, bits, nonce)

    @property
    def hash_bytes(self) -> bytes:
        return double_sha256(self.serialize())

    @property
    def hash_hex(self) -> str:
        return hash_to_hex(self.hash_bytes)

    @property
    def prev_hash_hex(self) -> str:
        return hash_to_hex(self.prev_hash_bytes)


def check_pow(header: Header) -> bool:
    """Return whether the header's hash meets the target its own `bits` claim."""
    return int.from_bytes(header.hash_bytes, "little") <= bits_to_target(header.bits)


def grind(header: Header) -> Header:
    """Return `header` with the first nonce (from its own) that satisfies its target.

    Regtest's target accepts about one hash in two, so this takes ~2 hashes.
    """
    target = bits_to_target(header.bits)
    prefix = header.serialize()[:76]
    for nonce in range(header.nonce, _MAX_NONCE + 1):
        if int.from_bytes(double_sha256(prefix + struct.pack("<I", nonce)), "little") <= target:
            return replace(header, nonce=nonce)
    raise ValueError("nonce space exhausted; change the time or the coinbase tag")


@dataclass(frozen=True)
class Block:
    header: Header
    txs: tuple[Tx, ...]
    _raw: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        raw = self.header.serialize() + varint(len(self.txs))
        object.__setattr__(self, "_raw", raw + b"".join(tx.serialize() for tx in self.txs))

    def serialize(self) -> bytes:
        return self._raw

    @property
    def hash_bytes(self) -> bytes:
        return self.header.hash_bytes

    @property
    def hash_hex(self) -> str:
        return self.header.hash_hex


def make_block(
    *,
    prev_hash_bytes: bytes,
    height: int,
    time: int,
    script_pubkey: bytes = OP_TRUE_SCRIPT,
    txs: Sequence[Tx] = (),
    tag: bytes = b"",
    version: int = 0x20000000,
    bits: int = REGTEST_BITS,
) -> Block:
    """Return a valid block at `height` on `prev_hash_bytes`: BIP34 coinbase, then `txs`."""
    coinbase = coinbase_tx(height=height, script_pubkey=script_pubkey, tag=tag)
    all_txs = (coinbase, *txs)
    header = Header(
        version=version,
        prev_hash_bytes=prev_hash_bytes,
        merkle_root_bytes=merkle_root([tx.txid_bytes for tx in all_txs]),
        time=time,
        bits=bits,
        nonce=0,
    )
    return Block(grind(header), all_txs)


def genesis_block() -> Block:
    """Return Bitcoin's regtest genesis block, byte for byte."""
    script_sig = (
        push_data(struct.pack("<I", 0x1D00FFFF))
        + push_data(b"\x04")
        + push_data(GENESIS_TIMES_MESSAGE)
    )
    coinbase = Tx(
        inputs=(TxIn(NULL_HASH, 0xFFFFFFFF, script_sig),),
        outputs=(TxOut(50 * COIN_SATS, p2pk_script(GENESIS_PUBKEY)),),
    )
    header = Header(
        version=1,
        prev_hash_bytes=NULL_HASH,
        merkle_root_bytes=merkle_root([coinbase.txid_bytes]),
        time=GENESIS_TIME,
        bits=REGTEST_BITS,
        nonce=GENESIS_NONCE,
    )
    return Block(header, (coinbase,))
