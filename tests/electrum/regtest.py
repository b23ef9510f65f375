"""Build valid Bitcoin regtest blocks: genesis, BIP34 coinbases, merkle roots, ground nonces.

Also the oracle for wallet tests: `ChainView` indexes the outputs and spends of an active
chain plus mempool, and `wallet_ledger` says what a wallet of scripts holds there, in the
shapes ElectrumX answers with.

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
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

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


# -- Chain views and wallet ledgers

# An output's address: (txid in internal order, output index).
Outpoint = tuple[bytes, int]


@dataclass(frozen=True)
class Placement:
    """Where a transaction is: a position in an active block, or the mempool (all None)."""

    height: int | None
    block_hash_bytes: bytes | None
    position: int | None


_MEMPOOL = Placement(None, None, None)


class ChainView:
    """Every transaction, output and spend of an active chain plus a mempool, indexed once.

    `blocks` is the active chain from genesis (index = height); `mempool` is in insertion
    order. Later entries win: a spend listed twice (a double spend) keeps the last spender.
    """

    def __init__(self, blocks: Sequence[Block], mempool: Sequence[Tx]) -> None:
        self.tip_height = len(blocks) - 1
        self.tip_hash_bytes = blocks[-1].hash_bytes
        self.placed: dict[bytes, tuple[Tx, Placement]] = {}
        self.outputs: dict[Outpoint, TxOut] = {}
        self.spenders: dict[Outpoint, bytes] = {}
        self.mempool_txids = frozenset(tx.txid_bytes for tx in mempool)
        for height, block in enumerate(blocks):
            for position, tx in enumerate(block.txs):
                self._add(tx, Placement(height, block.hash_bytes, position))
        for tx in mempool:
            self._add(tx, _MEMPOOL)

    def _add(self, tx: Tx, placement: Placement) -> None:
        txid = tx.txid_bytes
        self.placed[txid] = (tx, placement)
        if not tx.is_coinbase:
            for txin in tx.inputs:
                self.spenders[(txin.prev_txid_bytes, txin.prev_index)] = txid
        for vout, txout in enumerate(tx.outputs):
            self.outputs[(txid, vout)] = txout

    def height_of(self, txid_bytes: bytes) -> int | None:
        return self.placed[txid_bytes][1].height

    def is_unspent(self, outpoint: Outpoint) -> bool:
        return outpoint in self.outputs and outpoint not in self.spenders

    def input_value_sats(self, tx: Tx) -> int:
        """Sum the inputs of `tx` that spend known outputs (a coinbase has none)."""
        if tx.is_coinbase:
            return 0
        prevouts = ((txin.prev_txid_bytes, txin.prev_index) for txin in tx.inputs)
        return sum(self.outputs[p].value_sats for p in prevouts if p in self.outputs)


@dataclass(frozen=True)
class LedgerTx:
    """A transaction touching the ledger's scripts (pays to one, or spends such an output)."""

    txid_hex: str
    height: int | None  # None: in the mempool
    block_hash_hex: str | None
    position: int | None  # index in its block, the coinbase being 0
    fee_sats: int  # known inputs minus outputs, floored at 0 (as ElectrumX computes it)
    has_unconfirmed_inputs: bool  # spends an output of another mempool transaction
    scripts: frozenset[bytes]  # which of the ledger's scripts it touches


@dataclass(frozen=True)
class LedgerOutput:
    """An output paying to one of the ledger's scripts, and who spends it."""

    txid_hex: str
    vout: int
    script_pubkey: bytes
    value_sats: int
    height: int | None  # None: created in the mempool
    spent_txid_hex: str | None  # spent by an active-chain or mempool transaction
    spent_height: int | None  # None: unspent, or spent in the mempool

    @property
    def is_unspent(self) -> bool:
        return self.spent_txid_hex is None


@dataclass(frozen=True)
class Balance:
    confirmed_sats: int
    unconfirmed_sats: int


@dataclass(frozen=True)
class Ledger:
    """What a wallet of scripts holds on an active chain plus mempool (`wallet_ledger`)."""

    tip_height: int
    tip_hash_hex: str
    transactions: dict[str, LedgerTx]  # by txid: chain order (height, position), then mempool
    outputs: dict[tuple[str, int], LedgerOutput]  # by (txid, vout), in the same order
    balances: dict[bytes, Balance]  # every script asked for, even one never paid

    def total(self) -> Balance:
        """Sum the balances of every script."""
        return Balance(
            sum(b.confirmed_sats for b in self.balances.values()),
            sum(b.unconfirmed_sats for b in self.balances.values()),
        )

    def utxos(self, script_pubkey: bytes | None = None) -> list[LedgerOutput]:
        """Return the unspent outputs (of one script, or all), confirmed or not."""
        return [
            out
            for out in self.outputs.values()
            if out.is_unspent and script_pubkey in (None, out.script_pubkey)
        ]

    # -- The same facts, as ElectrumX answers them for one script

    def electrum_history(self, script_pubkey: bytes) -> list[dict[str, Any]]:
        """Return `blockchain.scripthash.get_history` for `script_pubkey`, entry for entry.

        Confirmed entries come in chain order; mempool entries after them, sorted by
        (has unconfirmed inputs, txid) with height -1 or 0 and their fee, as ElectrumX does.
        """
        touching = [tx for tx in self.transactions.values() if script_pubkey in tx.scripts]
        confirmed: list[dict[str, Any]] = [
            {"tx_hash": tx.txid_hex, "height": tx.height}
            for tx in touching
            if tx.height is not None
        ]
        mempool = sorted(
            (tx for tx in touching if tx.height is None),
            key=lambda tx: (tx.has_unconfirmed_inputs, tx.txid_hex),
        )
        return confirmed + [
            {"tx_hash": tx.txid_hex, "height": -int(tx.has_unconfirmed_inputs), "fee": tx.fee_sats}
            for tx in mempool
        ]

    def electrum_balance(self, script_pubkey: bytes) -> dict[str, int]:
        """Return `blockchain.scripthash.get_balance` for `script_pubkey`."""
        balance = self.balances[script_pubkey]
        return {"confirmed": balance.confirmed_sats, "unconfirmed": balance.unconfirmed_sats}

    def electrum_listunspent(self, script_pubkey: bytes) -> list[dict[str, Any]]:
        """Return `blockchain.scripthash.listunspent` for `script_pubkey` (height 0: mempool).

        ElectrumX lists mempool outputs in no particular order: compare sorted lists.
        """
        return [
            {"tx_hash": out.txid_hex, "tx_pos": out.vout, "height": out.height or 0}
            | {"value": out.value_sats}
            for out in self.utxos(script_pubkey)
        ]


def wallet_ledger(view: ChainView, scripts: Collection[bytes]) -> Ledger:
    """Compute the ledger of `scripts` (scriptPubKeys) over `view`.

    Balances per script, as ElectrumX's `get_balance` computes them:
    * `confirmed_sats`: outputs in active blocks not spent by an active block (an output
      spent only in the mempool still counts);
    * `unconfirmed_sats`: the mempool's net effect: outputs created in the mempool and not
      spent there, minus confirmed outputs spent in the mempool. It can be negative.
    So `confirmed + unconfirmed` is the value of every unspent output, mempool included.
    """
    wanted = frozenset(scripts)
    outputs: dict[tuple[str, int], LedgerOutput] = {}
    touched: dict[bytes, set[bytes]] = {}
    for (txid, vout), txout in view.outputs.items():
        if txout.script_pubkey not in wanted:
            continue
        spender = view.spenders.get((txid, vout))
        outputs[(hash_to_hex(txid), vout)] = LedgerOutput(
            txid_hex=hash_to_hex(txid),
            vout=vout,
            script_pubkey=txout.script_pubkey,
            value_sats=txout.value_sats,
            height=view.height_of(txid),
            spent_txid_hex=None if spender is None else hash_to_hex(spender),
            spent_height=None if spender is None else view.height_of(spender),
        )
        touched.setdefault(txid, set()).add(txout.script_pubkey)
        if spender is not None:
            touched.setdefault(spender, set()).add(txout.script_pubkey)

    transactions: dict[str, LedgerTx] = {}
    for txid, (tx, placement) in view.placed.items():  # chain order, then mempool order
        if txid not in touched:
            continue
        unconfirmed_inputs = placement.height is None and any(
            txin.prev_txid_bytes in view.mempool_txids for txin in tx.inputs
        )
        out_sats = sum(txout.value_sats for txout in tx.outputs)
        block_hash = placement.block_hash_bytes
        transactions[hash_to_hex(txid)] = LedgerTx(
            txid_hex=hash_to_hex(txid),
            height=placement.height,
            block_hash_hex=None if block_hash is None else hash_to_hex(block_hash),
            position=placement.position,
            fee_sats=0 if tx.is_coinbase else max(0, view.input_value_sats(tx) - out_sats),
            has_unconfirmed_inputs=unconfirmed_inputs,
            scripts=frozenset(touched[txid]),
        )

    balances = {script: Balance(0, 0) for script in wanted}
    for out in outputs.values():
        old = balances[out.script_pubkey]
        confirmed, unconfirmed = old.confirmed_sats, old.unconfirmed_sats
        if out.height is not None and (out.spent_txid_hex is None or out.spent_height is None):
            confirmed += out.value_sats
        if out.height is None and out.spent_txid_hex is None:
            unconfirmed += out.value_sats
        if out.height is not None and out.spent_txid_hex is not None and out.spent_height is None:
            unconfirmed -= out.value_sats
        balances[out.script_pubkey] = Balance(confirmed, unconfirmed)

    return Ledger(
        tip_height=view.tip_height,
        tip_hash_hex=hash_to_hex(view.tip_hash_bytes),
        transactions=transactions,
        outputs=outputs,
        balances=balances,
    )
