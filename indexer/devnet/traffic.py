"""Deterministic, realistic traffic on anvil: ETH transfers, log-emitting calls, creations.

Transactions come from anvil's unlocked dev accounts (`eth_accounts`, `eth_sendTransaction`)
with every field set explicitly (nonce, gas, fees), so that the same seed on a fresh anvil
yields the same transactions, the same hashes and the same logs, and anvil never has to
estimate gas. One block's transactions go out as one JSON-RPC batch over one keep-alive
connection: 500 blocks take seconds.

The contract is `Emitter`, hand-assembled below (there is no solc here). Every call emits
`Note(bytes32 indexed tag, bytes data)` with `tag` = calldata[0:32] (zero-padded, as
CALLDATALOAD reads) and `data` = the raw calldata (not ABI-encoded). A call whose first byte
is >= 0x80 also emits `Pair(bytes32 indexed a, bytes32 indexed b)` with a = calldata[0:32],
b = calldata[32:64] and empty data. So a transaction carries 0 (transfer, creation), 1 or 2
logs.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import random
import threading
from collections.abc import Sequence

from eth_utils.crypto import keccak

from indexer.devnet import anvil

logger = logging.getLogger(__name__)

NOTE_TOPIC = keccak(text="Note(bytes32,bytes)")
PAIR_TOPIC = keccak(text="Pair(bytes32,bytes32)")

GAS_TRANSFER = 21_000
GAS_CALL = 100_000
GAS_CREATE = 300_000
_GWEI = 10**9


# -- A tiny assembler: just enough to keep hand-written bytecode readable and its jumps right.


@dataclasses.dataclass(frozen=True)
class Push:
    """PUSHn of `value`: an int in the fewest bytes (at least 1), or bytes as they are."""

    value: int | bytes


@dataclasses.dataclass(frozen=True)
class PushLabel:
    """PUSH2 of the offset of `Label(name)`."""

    name: str


@dataclasses.dataclass(frozen=True)
class Label:
    """Marks an offset; emits nothing (put a "JUMPDEST" after it for a jump target)."""

    name: str


Op = str | Push | PushLabel | Label

OPCODES = {
    "STOP": 0x00,
    "AND": 0x16,
    "SHR": 0x1C,
    "CALLDATALOAD": 0x35,
    "CALLDATASIZE": 0x36,
    "CALLDATACOPY": 0x37,
    "CODECOPY": 0x39,
    "JUMPI": 0x57,
    "MSTORE": 0x52,
    "JUMPDEST": 0x5B,
    "DUP1": 0x80,
    "LOG1": 0xA1,
    "LOG2": 0xA2,
    "LOG3": 0xA3,
    "CREATE": 0xF0,
    "RETURN": 0xF3,
}


def _push_bytes(value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def _encode(op: Op, labels: dict[str, int]) -> bytes:
    if isinstance(op, str):
        return bytes([OPCODES[op]])
    if isinstance(op, Label):
        return b""
    if isinstance(op, PushLabel):
        return bytes([0x61]) + labels.get(op.name, 0).to_bytes(2, "big")  # PUSH2
    data = _push_bytes(op.value)
    assert 1 <= len(data) <= 32, "PUSH1..PUSH32 only"
    return bytes([0x5F + len(data)]) + data  # PUSH1 is 0x60


def assemble(program: Sequence[Op]) -> bytes:
    """Assemble `program` into EVM bytecode (two passes: label offsets, then bytes)."""
    labels: dict[str, int] = {}
    offset = 0
    for op in program:
        if isinstance(op, Label):
            labels[op.name] = offset
        offset += len(_encode(op, labels))  # a PushLabel is 3 bytes whatever its target
    return b"".join(_encode(op, labels) for op in program)


# Stack comments list the top of the stack first.
EMITTER_RUNTIME = assemble(
    [
        # memory[0:n] = calldata: CALLDATACOPY(destOffset=0, offset=0, size=n)
        "CALLDATASIZE",  # [n]
        Push(0),  # [0, n]
        Push(0),  # [0, 0, n]
        "CALLDATACOPY",  # []
        # Note(tag=calldata[0:32], data=calldata): LOG2(offset=0, size=n, topic0, topic1)
        Push(0),
        "CALLDATALOAD",  # [w0]
        Push(NOTE_TOPIC),  # [NOTE, w0]
        "CALLDATASIZE",  # [n, NOTE, w0]
        Push(0),  # [0, n, NOTE, w0]
        "LOG2",  # []
        # if calldata[0] & 0x80: goto pair
        Push(0),
        "CALLDATALOAD",  # [w0]
        Push(248),
        "SHR",  # [w0 >> 248] = [calldata[0]]
        Push(0x80),
        "AND",  # [calldata[0] & 0x80]
        PushLabel("pair"),  # [pair, cond]
        "JUMPI",  # []
        "STOP",
        Label("pair"),
        "JUMPDEST",
        # Pair(a=calldata[0:32], b=calldata[32:64]), no data: LOG3(0, 0, PAIR, w0, w1)
        Push(32),
        "CALLDATALOAD",  # [w1]
        Push(0),
        "CALLDATALOAD",  # [w0, w1]
        Push(PAIR_TOPIC),  # [PAIR, w0, w1]
        Push(0),  # [0 (size), PAIR, w0, w1]
        Push(0),  # [0 (offset), 0, PAIR, w0, w1]
        "LOG3",  # []
        "STOP",
    ]
)

# Init code: copy the runtime (appended after the init code) to memory and return it.
EMITTER_INIT = (
    assemble(
        [
            Push(len(EMITTER_RUNTIME)),  # [len]
            "DUP1",  # [len, len]
            PushLabel("runtime"),  # [offset, len, len]
            Push(0),  # [0, offset, len, len]
            "CODECOPY",  # [len]  memory[0:len] = code[offset:offset+len]
            Push(0),  # [0, len]
            "RETURN",  # return memory[0:len]
            Label("runtime"),
        ]
    )
    + EMITTER_RUNTIME
)


def expected_logs(calldata: bytes) -> int:
    """Return how many logs a call to an Emitter with `calldata` emits."""
    return 2 if calldata and calldata[0] & 0x80 else 1


def create_address(sender: str, nonce: int) -> str:
    """Return the address `sender` creates a contract at with `nonce`: keccak(rlp([s, n]))."""
    if nonce == 0:
        nonce_rlp = b"\x80"
    elif nonce < 0x80:
        nonce_rlp = bytes([nonce])
    else:
        raw = nonce.to_bytes((nonce.bit_length() + 7) // 8, "big")
        nonce_rlp = bytes([0x80 + len(raw)]) + raw
    payload = b"\x94" + bytes.fromhex(sender.removeprefix("0x")) + nonce_rlp
    return "0x" + keccak(bytes([0xC0 + len(payload)]) + payload)[12:].hex()


# -- Traffic


class TxKind(enum.Enum):
    TRANSFER = "transfer"
    NOTE = "note"  # Emitter call, 1 log
    PAIR = "pair"  # Emitter call, 2 logs
    CREATE = "create"  # Emitter deployment


# Relative weights of the kinds once an Emitter exists: creations are occasional.
_KIND_WEIGHTS = {TxKind.TRANSFER: 45, TxKind.NOTE: 25, TxKind.PAIR: 22, TxKind.CREATE: 8}


@dataclasses.dataclass(frozen=True)
class SentTx:
    hash_hex: str
    kind: TxKind
    sender: str
    to: str | None
    input_hex: str
    expected_logs: int
    contract_address: str | None  # set for CREATE


@dataclasses.dataclass(frozen=True)
class MinedBlock:
    number: int
    txs: tuple[SentTx, ...]

    @property
    def log_count(self) -> int:
        return sum(tx.expected_logs for tx in self.txs)


@dataclasses.dataclass(frozen=True)
class FillSummary:
    blocks: tuple[MinedBlock, ...]

    @property
    def blocks_mined(self) -> int:
        return len(self.blocks)

    @property
    def tx_count(self) -> int:
        return sum(len(block.txs) for block in self.blocks)

    @property
    def log_count(self) -> int:
        return sum(block.log_count for block in self.blocks)

    @property
    def contracts_created(self) -> tuple[str, ...]:
        return tuple(
            tx.contract_address
            for block in self.blocks
            for tx in block.txs
            if tx.contract_address is not None
        )


class Traffic:
    """Send a seeded mix of transactions from anvil's unlocked dev accounts.

    Nonces are tracked locally (read once from the node in `setup`), so the node must not
    receive other transactions from the dev accounts meanwhile; call `setup` again after a
    reorg or rollback. Emitters become call targets only once their creation is mined
    (`promote_deployed`), so no call ever lands on an address without code.
    """

    def __init__(
        self,
        client: anvil.RpcClient,
        *,
        seed: int = 0,
        txs_per_block: tuple[int, int] = (1, 5),
    ) -> None:
        low, high = txs_per_block
        if not 0 <= low <= high:
            raise ValueError(
                f"txs_per_block must be (min, max) with 0 <= min <= max, not {low, high}"
            )
        self._client = client
        self._rng = random.Random(seed)
        self._txs_per_block = txs_per_block
        self._accounts: list[str] = []
        self._nonces: dict[str, int] = {}
        self.emitters: list[str] = []
        self._pending_creations: list[SentTx] = []

    def setup(self) -> None:
        """Read the dev accounts and their pending nonces from the node (again, to resync)."""
        self._accounts = [str(account).lower() for account in self._client.call("eth_accounts")]
        if not self._accounts:
            raise anvil.DevnetError("the node has no unlocked accounts")
        counts = self._client.batch(
            [("eth_getTransactionCount", [account, "pending"]) for account in self._accounts]
        )
        self._nonces = {a: anvil.hex_to_int(n) for a, n in zip(self._accounts, counts, strict=True)}

    def send_block(self, count: int | None = None) -> list[SentTx]:
        """Send one block's worth of transactions (a seeded count unless `count`) in one batch.

        Each sender sends at most one tx per call. Two reasons, both seen on anvil 1.7.1: it
        runs a batch's requests concurrently, so a sender's nonce n+1 could arrive before n;
        and its fee-ordered pool silently drops a sender's next tx when that one pays a higher
        priority fee than the previous (e.g. legacy 2 gwei, then legacy 5 gwei).
        """
        if not self._accounts:
            raise anvil.DevnetError("call setup() first")
        if count is None:
            count = self._rng.randint(*self._txs_per_block)
        if count > len(self._accounts):
            raise anvil.DevnetError(
                f"{count} txs in a block need as many dev accounts, the node has "
                f"{len(self._accounts)}: start anvil with more (--accounts)"
            )
        senders = self._rng.sample(self._accounts, count)
        planned = [self._plan(index, sender) for index, sender in enumerate(senders)]
        hashes = self._client.batch([("eth_sendTransaction", [request]) for request, _ in planned])
        sent = [
            dataclasses.replace(tx, hash_hex=str(tx_hash))
            for (_, tx), tx_hash in zip(planned, hashes, strict=True)
        ]
        self._pending_creations += [tx for tx in sent if tx.kind is TxKind.CREATE]
        return sent

    def promote_deployed(self) -> None:
        """Make Emitters whose creation has been mined available as call targets."""
        if not self._pending_creations:
            return
        receipts = self._client.batch(
            [("eth_getTransactionReceipt", [tx.hash_hex]) for tx in self._pending_creations]
        )
        still_pending = []
        for tx, receipt in zip(self._pending_creations, receipts, strict=True):
            if receipt is None:
                still_pending.append(tx)
            elif receipt.get("status") == "0x1":
                assert receipt.get("contractAddress") == tx.contract_address, "CREATE address"
                self.emitters.append(str(tx.contract_address))
            else:
                logger.warning("Emitter creation %s failed", tx.hash_hex)
        self._pending_creations = still_pending

    def _plan(self, index: int, sender: str) -> tuple[dict[str, object], SentTx]:
        """Return the next tx request from `sender` and its record (without its hash yet)."""
        rng = self._rng
        nonce = self._nonces[sender]
        self._nonces[sender] = nonce + 1
        if not self.emitters and not self._pending_creations and index == 0:
            kind = TxKind.CREATE  # the first Emitter; calls start once it is mined
        elif not self.emitters:
            kind = rng.choice([TxKind.TRANSFER, TxKind.CREATE])
        else:
            kind = rng.choices(list(_KIND_WEIGHTS), weights=list(_KIND_WEIGHTS.values()))[0]
        request: dict[str, object] = {"from": sender, "nonce": hex(nonce)}
        calldata = b""
        to: str | None = None
        logs = 0
        contract: str | None = None
        if kind is TxKind.TRANSFER:
            # Mostly between dev accounts, sometimes to a brand-new address.
            to = (
                rng.choice(self._accounts) if rng.random() < 0.7 else "0x" + rng.randbytes(20).hex()
            )
            request |= {"to": to, "gas": hex(GAS_TRANSFER), "value": hex(rng.randint(1, 10**16))}
        elif kind is TxKind.CREATE:
            calldata = EMITTER_INIT
            contract = create_address(sender, nonce)
            request |= {"gas": hex(GAS_CREATE), "data": "0x" + calldata.hex()}
        else:
            to = rng.choice(self.emitters)
            calldata = rng.randbytes(rng.randint(1, 96))
            high_bit = 0x80 if kind is TxKind.PAIR else 0x00
            calldata = bytes([(calldata[0] & 0x7F) | high_bit]) + calldata[1:]
            logs = expected_logs(calldata)
            request |= {"to": to, "gas": hex(GAS_CALL), "data": "0x" + calldata.hex()}
        # Mostly EIP-1559, sometimes legacy. Fees sit well above anvil's base fee (<= 1 gwei
        # while blocks stay under the gas target), so every tx is minable in the next block.
        if rng.random() < 0.8:
            request |= {
                "maxFeePerGas": hex(50 * _GWEI),
                "maxPriorityFeePerGas": hex(rng.randint(1, 3) * _GWEI),
            }
        else:
            request |= {"gasPrice": hex(rng.randint(2, 5) * _GWEI)}
        record = SentTx(
            hash_hex="",
            kind=kind,
            sender=sender,
            to=to,
            input_hex="0x" + calldata.hex(),
            expected_logs=logs,
            contract_address=contract,
        )
        return request, record


def _url(target: anvil.Anvil | str) -> str:
    return target.url if isinstance(target, anvil.Anvil) else target


def fill_blocks(
    target: anvil.Anvil | str,
    n_blocks: int,
    *,
    txs_per_block: tuple[int, int] = (1, 5),
    seed: int = 0,
) -> FillSummary:
    """Mine `n_blocks` blocks of seeded traffic, each with `txs_per_block` (min, max) txs.

    Automine is switched off meanwhile (and restored); the node must not mine on its own
    (start it with `block_time_secs=None`), or the blocks would not match the summary.
    Two round trips per block: ~2 s for 500 blocks of ~3 txs on a fresh node. Anvil's own
    `evm_mine` gets slower as its chain grows (it keeps per-block state), so the next 500
    blocks take a little longer each time.
    """
    with anvil.RpcClient(_url(target)) as client:
        automine = bool(client.call("anvil_getAutomine"))
        if automine:
            client.call("evm_setAutomine", [False])
        try:
            mix = Traffic(client, seed=seed, txs_per_block=txs_per_block)
            mix.setup()
            start = anvil.hex_to_int(client.call("eth_blockNumber"))
            blocks = []
            for number in range(start + 1, start + n_blocks + 1):
                sent = mix.send_block()
                client.call("evm_mine")
                blocks.append(MinedBlock(number=number, txs=tuple(sent)))
                mix.promote_deployed()
            end = anvil.hex_to_int(client.call("eth_blockNumber"))
        finally:
            if automine:
                client.call("evm_setAutomine", [True])
    if end != start + n_blocks:
        raise anvil.DevnetError(
            f"tip moved from {start} to {end} while mining {n_blocks} blocks: "
            "is the node mining on its own?"
        )
    summary = FillSummary(blocks=tuple(blocks))
    logger.info(
        "mined %s blocks with %s txs and %s logs, up to block %s",
        f"{summary.blocks_mined:,d}",
        f"{summary.tx_count:,d}",
        f"{summary.log_count:,d}",
        f"{end:,d}",
        extra={"action": "fill", "height": end},
    )
    return summary


def run_forever(
    url: str,
    *,
    interval_secs: float,
    stop_event: threading.Event,
    txs_per_block: tuple[int, int] = (0, 4),
    seed: int = 0,
    mine: bool = False,
) -> int:
    """Send a block's worth of traffic every `interval_secs` until `stop_event` is set.

    With `mine=False` the node mines on its own (`--block-time` or `evm_setIntervalMining`);
    with `mine=True` this loop mines a block (`evm_mine`) after each send. Returns the number
    of transactions sent. Meant to run in a thread of its own.
    """
    sent_total = 0
    with anvil.RpcClient(url) as client:
        mix = Traffic(client, seed=seed, txs_per_block=txs_per_block)
        mix.setup()
        while not stop_event.is_set():
            try:
                if not mine:
                    # The node mines on its own schedule, so two rounds may share a block and
                    # hit the pool quirk described in `Traffic.send_block`: resync nonces every
                    # round so a dropped tx never leaves its sender stuck behind a nonce gap.
                    mix.setup()
                mix.promote_deployed()
                sent_total += len(mix.send_block())
                if mine:
                    client.call("evm_mine")
            except anvil.DevnetError as exc:  # a busy node: this round is skipped
                logger.warning("traffic round skipped: %s", exc, extra={"action": "traffic"})
            stop_event.wait(interval_secs)
    logger.info("traffic stopped after %s txs", f"{sent_total:,d}", extra={"action": "traffic"})
    return sent_total
