"""What a wallet's answers must prove: a transaction's bytes hash to its txid, a merkle branch
reaches the merkle root of the header we store, a history hashes to the status the server
gave. Pure functions; anything that fails is `ResponseCorrupted` (a lie or a broken server:
refused, another server asked).

Transactions are parsed by embit. Hashes are bytes in display order (as Electrum's hex and
our `blocks` table hold them) unless said otherwise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from embit.transaction import Transaction

from indexer import errors

MAX_BRANCH = 64  # a merkle branch longer than this is no branch of a block


def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


@dataclass(frozen=True, slots=True)
class ParsedTx:
    txid: bytes
    raw: bytes
    inputs: tuple[tuple[bytes, int], ...]  # (previous txid, vout); empty for a coinbase
    outputs: tuple[tuple[bytes, int], ...]  # (scriptPubKey, value in satoshis)
    stripped_size: int  # bytes without the witness (what the txid hashes)


COINBASE_PREVOUT = bytes(32)


def parse_tx(raw: bytes, txid: bytes, *, where: str) -> ParsedTx:
    """The transaction `raw`, which must be the whole of one transaction with id `txid`."""
    try:
        tx = Transaction.parse(raw)
        again = tx.serialize()
    except Exception as exc:  # embit raises many types for malformed bytes
        raise errors.ResponseCorrupted(f"{where}: not a transaction ({exc})"[:300]) from None
    if again != raw:
        raise errors.ResponseCorrupted(f"{where}: not exactly one transaction (trailing bytes)")
    if tx.txid() != txid:
        raise errors.ResponseCorrupted(
            f"{where}: the transaction's bytes hash to {tx.txid().hex()}, not to {txid.hex()}"
        )
    inputs = tuple(
        (bytes(i.txid), int(i.vout))
        for i in tx.vin
        if not (bytes(i.txid) == COINBASE_PREVOUT and i.vout == 0xFFFFFFFF)
    )
    outputs = tuple((bytes(o.script_pubkey.data), int(o.value)) for o in tx.vout)
    if tx.is_segwit:
        for vin in tx.vin:
            vin.witness.items = []
        stripped = len(tx.serialize())
    else:
        stripped = len(raw)
    return ParsedTx(txid=txid, raw=raw, inputs=inputs, outputs=outputs, stripped_size=stripped)


def merkle_root(txid: bytes, branch: Sequence[bytes], position: int) -> bytes:
    """The root that `branch` leads to from `txid` at `position` (display order in and out)."""
    node = txid[::-1]
    for sibling in branch:
        if position & 1:
            node = sha256d(sibling[::-1] + node)
        else:
            node = sha256d(node + sibling[::-1])
        position >>= 1
    return node[::-1]


def check_proof(
    parsed: ParsedTx,
    *,
    branch: Sequence[bytes],
    position: int,
    header_merkle_root: bytes,
    where: str,
) -> None:
    """Refuse a proof that does not put `parsed` in the block with this merkle root.

    A 64-byte transaction is refused outright: its hash could pass for an inner node of
    the tree (the merkle ambiguity Electrum clients guard against the same way).
    """
    if not 0 <= len(branch) <= MAX_BRANCH or not 0 <= position < (1 << len(branch)):
        raise errors.ResponseCorrupted(
            f"{where}: position {position} does not fit a branch of {len(branch)} hashes"
        )
    if parsed.stripped_size == 64:
        raise errors.ResponseCorrupted(f"{where}: a 64-byte transaction cannot be proven")
    if merkle_root(parsed.txid, branch, position) != header_merkle_root:
        raise errors.ResponseCorrupted(
            f"{where}: the merkle proof of {parsed.txid.hex()} does not reach the merkle root "
            "of the header we store at its height"
        )


def status(history: Sequence[tuple[bytes, int]]) -> bytes | None:
    """Electrum's status of a script: sha256 of "txid:height:" for each entry, in order, as
    the hex string a server sends (ASCII bytes); None for an empty history."""
    if not history:
        return None
    text = "".join(f"{txid.hex()}:{height}:" for txid, height in history)
    return hashlib.sha256(text.encode()).hexdigest().encode()
