"""The replay node's blocks: mainnet-shaped templates whose commitments are real.

A *template* is one block body (transactions, their receipts and logs, withdrawals) and the
header fields that follow from it, generated once from the seed and pre-serialised as JSON cut
where the block-specific bytes go (`BLOCK_MARK`: the block hash, then the block number).
Every commitment is computed once per template by the reference encoders
(`indexer.chain.evm_encoding`), so it is what `evm_proof.verify_block` recomputes: each
transaction hash is keccak of its envelope, transactionsRoot, receiptsRoot and
withdrawalsRoot are the tries of the envelopes, each receipt's logsBloom is the bloom of its
logs and the header's the bloom of all of them. No consensus encoding of a transaction, a
receipt or a withdrawal holds the block hash, so every block made from a template shares
them (transaction hashes repeat across blocks; the indexer keys transactions by block and
index). Per block only the header differs (`HeaderRlp`): parentHash, number, timestamp, the
branch in extraData, and stateRoot/mixHash/parentBeaconBlockRoot derived from the parent.

Fees agree with each other: every transaction pays at least the template's baseFeePerGas,
`gasPrice` and the receipt's `effectiveGasPrice` are min(maxFeePerGas, baseFee + priority
fee), blob transactions pay the blob base fee of the template's excessBlobGas, blobGasUsed is
131072 per blob, gasUsed is the last receipt's cumulativeGasUsed. About 2% of transactions
fail (status 0x0, no logs); contract creations carry the address CREATE gives them.

Logs have random topics by default (24 made-up events per template). `Shape(events=True)`
(the node's `--events`) gives them the shapes that matter to decoded event tables instead:
of every log, `EVENT_MIX` says the share of ERC-20 `Transfer` and `Approval` (3 topics: the
signature's keccak, two addresses; one 32-byte word of data), Uniswap V2 `Swap` (3 topics:
the signature, `sender`, `to`; four 32-byte amounts, one side in and the other out),
ERC-721 `Transfer` (4 topics, no data: the ERC-20 Transfer's topic0, so not an instance of
it) and random others as by default. `Template.events` counts each kind.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from indexer.chain import evm_encoding
from indexer.chain.mpt import keccak256, ordered_trie_root, rlp_encode

VARIANTS = ("full", "headers")
GENESIS_TIMESTAMP = 1_700_000_000
EMPTY_UNCLES = "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347"
GAS_LIMIT = 30_000_000
GAS_PER_BLOB = 131_072
MAX_BLOBS = 6
EXTRA_DATA = b"builder0x69"  # then the branch salt, 4 bytes
BLOCK_MARK = b"@@B@@"
"""Where a block's bytes go in a template's JSON: `<block hash hex>","blockNumber":"<hex>`."""

_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_BLOB_FEE_FRACTION = 3_338_477

# Calldata length (bytes) distribution of mainnet transactions, roughly: plain transfers,
# ERC-20 transfer/approve (4 + 2 x 32), swaps, aggregator/multicall, large calls.
_INPUT_BUCKETS: list[tuple[float, int, int]] = [
    (0.25, 0, 0),
    (0.35, 68, 68),
    (0.20, 100, 600),
    (0.15, 600, 2500),
    (0.04, 2500, 8000),
]
_TOPIC_COUNTS = [(0.10, 1), (0.12, 2), (0.68, 3), (0.10, 4)]
_DATA_LENGTHS = [(0.10, 0), (0.45, 32), (0.15, 64), (0.25, -1), (0.05, -2)]

# Decodable events (`Shape(events=True)`): table name -> signature, as `[[events]]` spells it.
EVENT_SIGNATURES = {
    "transfers": "Transfer(address indexed from, address indexed to, uint256 value)",
    "approvals": "Approval(address indexed owner, address indexed spender, uint256 value)",
    "swaps": (
        "Swap(address indexed sender, uint256 amount0In, uint256 amount1In, "
        "uint256 amount0Out, uint256 amount1Out, address indexed to)"
    ),
}
EVENT_TOPIC0 = {
    "transfers": keccak256(b"Transfer(address,address,uint256)"),
    "approvals": keccak256(b"Approval(address,address,uint256)"),
    "swaps": keccak256(b"Swap(address,uint256,uint256,uint256,uint256,address)"),
}
# Share of all logs per kind; "nft" is an ERC-721 Transfer (the ERC-20 Transfer's topic0,
# 4 topics, no data: undecodable as an ERC-20 Transfer), None a random event as by default.
# More decodable logs than mainnet has (roughly 40-50% Transfer, ~5% Approval, a few % V2
# Swap), so the decoding cost measured is an upper bound.
EVENT_MIX: list[tuple[float, str | None]] = [
    (0.50, "transfers"),
    (0.10, "approvals"),
    (0.10, "swaps"),
    (0.05, "nft"),
    (0.25, None),
]
_MAX_UINT256 = (1 << 256) - 1


@dataclass(frozen=True, slots=True)
class Shape:
    """What chain to serve: variant, sizes, seed."""

    variant: str = "full"
    txs_per_block: int = 150
    logs_per_block: int = 300
    templates: int = 16
    seed: int = 1
    chain_id: int = 1
    events: bool = False  # logs shaped as Transfer/Approval/Swap (`EVENT_MIX`), not random

    def __post_init__(self) -> None:
        assert self.variant in VARIANTS, self.variant


@dataclass(frozen=True, slots=True)
class Template:
    """One block body, pre-serialised; each `list[bytes]` is JSON cut at `BLOCK_MARK`."""

    tx_count: int
    log_count: int
    header: list[bytes]  # text, field name, text, ...: cut at `@@name@@` (`build_template`)
    txs_full: list[bytes]  # the JSON array of full transactions
    tx_hashes_json: bytes  # the JSON array of their hashes
    logs: list[bytes]  # the logs as comma-separated objects ([b""] when none)
    receipts: list[bytes]  # the JSON array of receipts (eth_getBlockReceipts)
    receipt_pieces: list[list[bytes]]  # each receipt alone (eth_getTransactionReceipt)
    tx_hashes: list[str]  # "0x...", lowercase, in block order
    rlp: HeaderRlp
    events: dict[str, int] = field(default_factory=dict)  # logs per `EVENT_MIX` kind


# -- Header RLP per block


@dataclass(frozen=True, slots=True)
class HeaderRlp:
    """A template's header RLP, cut around the fields that differ per block.

    `encode` joins: list prefix, parentHash, [sha3Uncles, miner], stateRoot, [roots, bloom,
    difficulty], number, [gasLimit, gasUsed], timestamp, extraData, mixHash, [nonce, baseFee,
    withdrawalsRoot, blobGasUsed, excessBlobGas], parentBeaconBlockRoot; bracketed runs are
    the template's, pre-encoded (a run ends with the next 32-byte field's prefix 0xa0).
    """

    after_parent: bytes
    after_state: bytes
    after_number: bytes
    after_mix: bytes
    fixed: int  # payload length less number, timestamp and extraData(+0xa0)

    def encode(self, parent: bytes, derived: bytes, number: int, extra_a0: bytes) -> bytes:
        """The header's RLP: `derived` is `derive(parent, tail)`, `extra_a0` is
        rlp(extraData) + 0xa0 (the branch's). Timestamps fit 4 bytes below block 2**27."""
        if number < 0x80:
            number_rlp = b"\x80" if number == 0 else bytes((number,))
        else:
            size = (number.bit_length() + 7) >> 3
            number_rlp = bytes((0x80 + size,)) + number.to_bytes(size, "big")
        length = self.fixed + len(number_rlp) + 5 + len(extra_a0)
        return b"".join(
            (b"\xf9", length.to_bytes(2, "big"), b"\xa0", parent, self.after_parent, derived[:32],
             self.after_state, number_rlp, self.after_number,
             b"\x84", (GENESIS_TIMESTAMP + 12 * number).to_bytes(4, "big"), extra_a0,
             derived[32:], self.after_mix, derived[16:48])
        )  # fmt: skip


def derive(parent: bytes, tail: bytes) -> bytes:
    """64 bytes that stand for a block's state: stateRoot [0:32], mixHash [32:64],
    parentBeaconBlockRoot [16:48], template choice [0]; `tail` is the branch salt and seed."""
    return hashlib.blake2b(parent + tail, digest_size=64).digest()


def extra_data(salt: int) -> bytes:
    return EXTRA_DATA + salt.to_bytes(4, "big")


# Header fields in consensus order (`evm_encoding.header_fields` for a Cancun header).
_HEADER_ORDER = (
    "parentHash", "sha3Uncles", "miner", "stateRoot", "transactionsRoot", "receiptsRoot",
    "logsBloom", "difficulty", "number", "gasLimit", "gasUsed", "timestamp", "extraData",
    "mixHash", "nonce", "baseFeePerGas", "withdrawalsRoot", "blobGasUsed", "excessBlobGas",
    "parentBeaconBlockRoot",
)  # fmt: skip


def _header_rlp(header: dict[str, Any]) -> HeaderRlp:
    fields = evm_encoding.header_fields(header)
    assert len(fields) == len(_HEADER_ORDER), "header_fields order changed"
    enc = dict(zip(_HEADER_ORDER, (rlp_encode(item) for item in fields), strict=True))

    def run(*names: str) -> bytes:
        return b"".join(enc[name] for name in names)

    after_parent = run("sha3Uncles", "miner") + b"\xa0"
    after_state = run("transactionsRoot", "receiptsRoot", "logsBloom", "difficulty")
    after_number = run("gasLimit", "gasUsed")
    after_mix = run("nonce", "baseFeePerGas", "withdrawalsRoot", "blobGasUsed", "excessBlobGas")
    after_mix += b"\xa0"
    # parentHash, stateRoot, mixHash, parentBeaconBlockRoot: 32 bytes each, prefixes included.
    fixed = 33 + 32 + 32 + 32 + len(after_parent + after_state + after_number + after_mix)
    assert 256 <= fixed < 65_000, fixed  # the list prefix is always 0xf9 + 2 bytes
    return HeaderRlp(after_parent, after_state, after_number, after_mix, fixed)


# -- keccak for the header chain


def keccak_function() -> Callable[[bytes], bytes]:
    """keccak256 for the header chain, in about half the time of `mpt.keccak256`.

    pycryptodome's C core called directly with one reused state (its Python wrapper costs
    as much as the hash; ~3 us against ~6-7 for a 600-byte header); `mpt.keccak256` when
    that core cannot be loaded or disagrees with it. Each
    call returns a new bytes object; the state is not shared between functions, but one
    function must not be called from two threads at once.
    """
    try:
        lib_name = importlib.import_module("Crypto.Hash.keccak")._raw_keccak_lib._name
        lib = ctypes.CDLL(lib_name)
        state = ctypes.c_void_p()
        if lib.keccak_init(ctypes.byref(state), ctypes.c_size_t(64), ctypes.c_ubyte(24)) != 0:
            return keccak256
    except (AttributeError, ImportError, OSError):
        return keccak256
    reset, absorb, digest = lib.keccak_reset, lib.keccak_absorb, lib.keccak_digest
    out = ctypes.create_string_buffer(32)
    out_size, padding = ctypes.c_size_t(32), ctypes.c_ubyte(1)

    def fast(data: bytes) -> bytes:
        reset(state)
        absorb(state, data, ctypes.c_size_t(len(data)))
        digest(state, out, out_size, padding)
        return out.raw

    samples = (b"", b"abc", bytes(range(256)) * 3)
    return fast if all(fast(s) == keccak256(s) for s in samples) else keccak256


# -- Templates


def _pick(rng: random.Random, table: list[tuple[float, int]]) -> int:
    return rng.choices([v for _, v in table], weights=[w for w, _ in table])[0]


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def blob_base_fee(excess_blob_gas: int) -> int:
    """EIP-4844's fake_exponential(1, excess_blob_gas, 3338477)."""
    i, output, accumulator = 1, 0, _BLOB_FEE_FRACTION
    while accumulator > 0:
        output += accumulator
        accumulator = accumulator * excess_blob_gas // (_BLOB_FEE_FRACTION * i)
        i += 1
    return output // _BLOB_FEE_FRACTION


def _split(value: object) -> list[bytes]:
    return orjson.dumps(value).split(BLOCK_MARK)


_MARKED = "0x" + BLOCK_MARK.decode()


@dataclass
class _Body:
    txs: list[dict[str, Any]]
    envelopes: list[bytes]
    receipts: list[dict[str, Any]]
    logs: list[dict[str, Any]]
    bloom: bytes  # of every log
    blob_gas_used: int
    events: dict[str, int] = field(default_factory=dict)  # logs per `EVENT_MIX` kind


def _transactions(shape: Shape, rng: random.Random, base_fee: int, blob_fee: int) -> _Body:
    contracts = [rng.randbytes(20) for _ in range(60)]
    events = [rng.randbytes(32) for _ in range(24)]
    body = _Body([], [], [], [], bytes(256), 0)
    cumulative = 0
    for i in range(shape.txs_per_block):
        bucket = rng.choices(_INPUT_BUCKETS, weights=[b[0] for b in _INPUT_BUCKETS])[0]
        input_len = rng.randint(bucket[1], bucket[2])
        creation = rng.random() < 0.01
        kind = rng.choices([0, 2, 3], weights=[0.15, 0.83, 0.02])[0]
        blobs = rng.randint(1, 2) if kind == 3 else 0
        if creation or body.blob_gas_used + blobs * GAS_PER_BLOB > MAX_BLOBS * GAS_PER_BLOB:
            kind, blobs = (2 if kind == 3 else kind), 0  # a blob transaction cannot create
        if creation:
            input_len = rng.randint(3000, 15000)
        sender, nonce = rng.randbytes(20), rng.randint(0, 200_000)
        to = None if creation else rng.choice([*contracts, rng.randbytes(20)])
        gas_used = 21_000 + 16 * input_len
        gas_used += 32_000 + 2 * ((input_len + 31) // 32) if creation else 0
        gas_used += rng.randint(0, 80_000) if input_len and not creation else 0
        priority = rng.randint(0, 3 * 10**9)
        max_fee = base_fee + priority + rng.randint(0, 60) * 10**9
        price = base_fee + priority if kind else base_fee + rng.randint(0, 5 * 10**9)
        tx: dict[str, Any] = {"blockHash": _MARKED, "from": _hex(sender)}
        tx["gas"] = hex(gas_used + rng.randint(0, gas_used // 2))
        tx["gasPrice"] = hex(price)
        if kind >= 2:
            tx["maxFeePerGas"] = hex(max_fee)
            tx["maxPriorityFeePerGas"] = hex(priority)
        if kind == 3:
            tx["maxFeePerBlobGas"] = hex(blob_fee + rng.randint(0, 10) * 10**9)
        tx["hash"] = ""  # below: keccak of the envelope
        tx["input"] = _hex(rng.randbytes(input_len))
        tx["nonce"] = hex(nonce)
        tx["to"] = None if to is None else _hex(to)
        tx["transactionIndex"] = hex(i)
        tx["value"] = hex(rng.randint(0, 10**19) if input_len == 0 else rng.choice([0, 0, 10**16]))
        tx["type"] = hex(kind)
        if kind >= 2:
            tx["accessList"] = []
        tx["chainId"] = hex(shape.chain_id)
        if kind == 3:
            tx["blobVersionedHashes"] = [_hex(b"\x01" + rng.randbytes(31)) for _ in range(blobs)]
        parity = rng.randint(0, 1)
        tx["v"] = hex(2 * shape.chain_id + 35 + parity) if kind == 0 else hex(parity)
        tx["r"] = hex(rng.randrange(1, _SECP256K1_N))
        tx["s"] = hex(rng.randrange(1, _SECP256K1_N // 2))
        if kind >= 2:
            tx["yParity"] = hex(parity)
        envelope = evm_encoding.transaction_envelope(tx, index=i)
        tx["hash"] = _hex(keccak256(envelope))
        body.txs.append(tx)
        body.envelopes.append(envelope)
        body.blob_gas_used += blobs * GAS_PER_BLOB
        cumulative += gas_used
        failed = rng.random() < 0.02
        receipt: dict[str, Any] = {
            "blockHash": _MARKED,
            "contractAddress": (
                _hex(keccak256(rlp_encode([sender, nonce]))[12:]) if creation else None
            ),
            "cumulativeGasUsed": hex(cumulative),
            "effectiveGasPrice": hex(price),
            "from": tx["from"],
            "gasUsed": hex(gas_used),
            "logs": [],
            "logsBloom": "",  # below: the bloom of its logs
            "status": "0x0" if failed else "0x1",
            "to": tx["to"],
            "transactionHash": tx["hash"],
            "transactionIndex": hex(i),
            "type": hex(kind),
        }
        if kind == 3:
            receipt["blobGasUsed"] = hex(blobs * GAS_PER_BLOB)
            receipt["blobGasPrice"] = hex(blob_fee)
        body.receipts.append(receipt)
    # Logs go to transactions that call something and succeed; logIndex runs over the block.
    callers = [
        i
        for i, (tx, receipt) in enumerate(zip(body.txs, body.receipts, strict=True))
        if tx["input"] != "0x" and tx["to"] is not None and receipt["status"] == "0x1"
    ]
    owners = sorted(rng.choices(callers, k=shape.logs_per_block)) if callers else []
    log_kinds = [k for _, k in EVENT_MIX]
    weights = [w for w, _ in EVENT_MIX]
    for log_index, owner in enumerate(owners):
        log_kind = rng.choices(log_kinds, weights=weights)[0] if shape.events else None
        data: bytes | None = None
        if log_kind is None:
            topics = [rng.choice(events)] + [
                bytes(12) + rng.randbytes(20) for _ in range(_pick(rng, _TOPIC_COUNTS) - 1)
            ]
            data_len = _pick(rng, _DATA_LENGTHS)
            if data_len == -1:
                data_len = 32 * rng.randint(3, 10)
            elif data_len == -2:
                data_len = 32 * rng.randint(16, 32)
        else:
            topics, data = _event_log(rng, log_kind)
        counted = log_kind or "other"
        body.events[counted] = body.events.get(counted, 0) + 1
        address = rng.choice(contracts)
        if data is None:
            data = rng.randbytes(data_len)  # after the address, as before `events` existed
        log = {
            "blockHash": _MARKED,
            "transactionHash": body.txs[owner]["hash"],
            "address": _hex(address),
            "topics": [_hex(t) for t in topics],
            "data": _hex(data),
            "logIndex": hex(log_index),
            "transactionIndex": hex(owner),
            "removed": False,
        }
        body.logs.append(log)
        body.receipts[owner]["logs"].append(log)
    bloom = 0
    for receipt in body.receipts:
        own = evm_encoding.logs_bloom(receipt["logs"])
        receipt["logsBloom"] = _hex(own)
        bloom |= int.from_bytes(own, "big")  # the block's bloom: the union of its receipts'
    body.bloom = bloom.to_bytes(256, "big")
    return body


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _address_topic(rng: random.Random) -> bytes:
    return bytes(12) + rng.randbytes(20)


def _event_log(rng: random.Random, kind: str) -> tuple[list[bytes], bytes]:
    """(topics, data) of one log of `kind` (an `EVENT_MIX` kind but None)."""
    if kind == "transfers":
        value = rng.getrandbits(rng.choice((40, 64, 80, 96, 128)))
        return [EVENT_TOPIC0[kind], _address_topic(rng), _address_topic(rng)], _word(value)
    if kind == "approvals":
        value = _MAX_UINT256 if rng.random() < 0.5 else rng.getrandbits(96)
        return [EVENT_TOPIC0[kind], _address_topic(rng), _address_topic(rng)], _word(value)
    if kind == "swaps":
        amount_in, amount_out = rng.getrandbits(rng.choice((60, 80, 100))), rng.getrandbits(90)
        amounts = (
            [amount_in, 0, 0, amount_out] if rng.random() < 0.5 else [0, amount_in, amount_out, 0]
        )
        data = b"".join(_word(a) for a in amounts)
        return [EVENT_TOPIC0[kind], _address_topic(rng), _address_topic(rng)], data
    assert kind == "nft", kind
    token = _word(rng.getrandbits(rng.choice((16, 32, 256))))
    return [EVENT_TOPIC0["transfers"], _address_topic(rng), _address_topic(rng), token], b""


def _rlp_size(payload: int) -> int:
    """The size of an RLP string or list whose payload is `payload` bytes."""
    return payload + (1 if payload < 56 else 1 + (payload.bit_length() + 7) // 8)


def _block_size(header: int, envelopes: list[bytes], withdrawals: int) -> int:
    """len(rlp([header, transactions, uncles, withdrawals])): the block's `size`."""
    # A legacy envelope is an RLP list, embedded as is; a typed one is an RLP string.
    txs = sum(len(e) if e[0] >= 0xC0 else _rlp_size(len(e)) for e in envelopes)
    return _rlp_size(header + _rlp_size(txs) + 1 + withdrawals)


def build_template(shape: Shape, index: int) -> Template:
    """Template `index` of `shape`: deterministic in (shape, index)."""
    rng = random.Random(shape.seed * 1_000_003 + index)
    base_fee = rng.randint(4, 40) * 10**9 + rng.randrange(10**9)
    excess_blob_gas = rng.randrange(0, 60) * GAS_PER_BLOB
    blob_fee = blob_base_fee(excess_blob_gas)
    withdrawals = [
        {
            "index": hex(rng.randint(40_000_000, 90_000_000)),
            "validatorIndex": hex(rng.randint(0, 1_500_000)),
            "address": _hex(rng.randbytes(20)),
            "amount": hex(rng.randint(17_000_000, 18_000_000)),
        }
        for _ in range(16)
    ]
    miner = _hex(rng.randbytes(20))
    if shape.variant == "headers":
        body = _Body([], [], [], [], bytes(256), 0)
    else:
        body = _transactions(shape, rng, base_fee, blob_fee)
    envelopes = body.envelopes
    receipts_root = ordered_trie_root([evm_encoding.receipt_envelope(r) for r in body.receipts])
    gas_used = int(body.receipts[-1]["cumulativeGasUsed"], 16) if body.receipts else 0
    header: dict[str, Any] = {
        "baseFeePerGas": hex(base_fee),
        "blobGasUsed": hex(body.blob_gas_used),
        "difficulty": "0x0",
        "excessBlobGas": hex(excess_blob_gas),
        "extraData": "0x@@extraData@@",
        "gasLimit": hex(GAS_LIMIT),
        "gasUsed": hex(gas_used),
        "hash": "0x@@hash@@",
        "logsBloom": _hex(body.bloom),
        "miner": miner,
        "mixHash": "0x@@mixHash@@",
        "nonce": "0x0000000000000000",
        "number": "@@number@@",
        "parentBeaconBlockRoot": "0x@@beaconRoot@@",
        "parentHash": "0x@@parentHash@@",
        "receiptsRoot": _hex(receipts_root),
        "sha3Uncles": EMPTY_UNCLES,
        "size": "0x0",  # below
        "stateRoot": "0x@@stateRoot@@",
        "timestamp": "@@timestamp@@",
        "totalDifficulty": "0xc70d815d562d3cfa955",
        "transactions": "@@transactions@@",
        "transactionsRoot": _hex(ordered_trie_root(envelopes)),
        "uncles": [],
        "withdrawals": withdrawals,
        "withdrawalsRoot": _hex(evm_encoding.withdrawals_root(withdrawals)),
    }
    # The RLP runs come from a sample header with the per-block fields filled in.
    sample = {**header, "extraData": _hex(extra_data(0)), "number": "0x1", "timestamp": "0x1"}
    sample.update({k: _hex(bytes(32)) for k in ("mixHash", "parentHash", "stateRoot")})
    sample["parentBeaconBlockRoot"] = _hex(bytes(32))
    rlp = _header_rlp(sample)
    withdrawal_items = rlp_encode(
        [
            [int(w["index"], 16), int(w["validatorIndex"], 16), bytes.fromhex(w["address"][2:]),
             int(w["amount"], 16)]
            for w in withdrawals
        ]
    )  # fmt: skip
    # The header's size for a 3-byte block number (within a byte or two of every other).
    header_size = 3 + rlp.fixed + 4 + 5 + len(rlp_encode(extra_data(0))) + 1
    header["size"] = hex(_block_size(header_size, envelopes, len(withdrawal_items)))
    text = orjson.dumps(header).replace(b'"@@transactions@@"', b"@@transactions@@")
    receipts = body.receipts
    return Template(
        tx_count=len(body.txs),
        log_count=len(body.logs),
        header=_MARK.split(text),
        txs_full=_split(body.txs),
        tx_hashes_json=orjson.dumps([tx["hash"] for tx in body.txs]),
        logs=orjson.dumps(body.logs)[1:-1].split(BLOCK_MARK),
        receipts=_split(receipts),
        receipt_pieces=[_split(r) for r in receipts],
        tx_hashes=[tx["hash"] for tx in body.txs],
        rlp=rlp,
        events=body.events,
    )


_MARK = re.compile(rb"@@(\w+)@@")
