"""EVM chains over JSON-RPC: batched blocks with full transactions, plus their logs.

Each batch is ONE JSON-RPC batch request to ONE endpoint: `eth_getBlockByNumber(n, true)` for
every height and one `eth_getLogs` over the range, so blocks and logs come from the same node
at the same moment. Every response is untrusted: the `require_*` helpers check shape, and
`_map_block` / `_attach_logs` check that each block is the one asked for and that every
transaction and log names that block. Anything off raises `ResponseCorrupted` and nothing of
the batch is returned.

That mapping is the checked path. A source bound to the store (`bind`) first hands the raw
answer to the fast path (`evm_rows`: msgspec + the C row encoder, same checks, same rows),
on the decode thread or worker processes, and falls back to the checked path for whatever
the fast path does not take.

Why not web3's provider here: see ARCHITECTURE.md (the hot path needs batches that mix
methods, one endpoint per batch and our own validation; measured 2.3x faster).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

from indexer import errors, redact, tables
from indexer.chain import evm_fields
from indexer.chain.decode_pool import Decoder
from indexer.chain.evm_rows import decode_full_batch, decode_hashes_batch
from indexer.chain.fields import Context, read_hex, read_quantity
from indexer.chain.rpc import RpcClient, results_of
from indexer.config import EvmChainConfig
from indexer.models import Block, Rows

logger = logging.getLogger(__name__)

_ZERO_BLOOM = "0x" + "0" * 512


# -- Shape checks (raise ResponseCorrupted naming the field)


def require_int(obj: dict[str, Any], key: str, where: str) -> int:
    return read_quantity(obj.get(key), key, where)


def require_bytes(obj: dict[str, Any], key: str, where: str, size: int | None = None) -> bytes:
    return read_hex(obj.get(key), key, where, size)


def require_list(obj: dict[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key)
    if not isinstance(value, list):
        raise errors.ResponseCorrupted(f"{where}: field {key!r} is not a list")
    return value


def require_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise errors.ResponseCorrupted(f"{where}: expected an object, got {type(value).__name__}")
    return value


# -- Mapping (the checked path): the rules of `evm_fields`, in Python

_TX = evm_fields.TRANSACTIONS
_LOG = evm_fields.LOGS
_WITHDRAWAL = evm_fields.WITHDRAWALS
_TX_HASH = tables.TRANSACTIONS.index("hash")
_LOG_INDEX = tables.LOGS.index("log_index")
_BLOCK_HASH = tables.BLOCKS.index("hash")
_PARENT_HASH = tables.BLOCKS.index("parent_hash")


def _check_tx_hashes(raw_txs: list[Any], where: str) -> None:
    """Blocks-only mode: the node sent transaction hashes; check them without decoding."""
    try:
        ok = set(map(len, raw_txs)) <= {66} and all(map(str.startswith, raw_txs, repeat("0x")))
    except TypeError:  # not strings
        ok = False
    if not ok:
        raise errors.ResponseCorrupted(f"{where}: transactions are not all 32-byte hashes")


@dataclass(frozen=True, slots=True)
class _Mapped:
    """One block of the checked path before its logs are attached."""

    block: Block
    tx_hashes: list[bytes]
    bloom_says_logs: bool


def _map_block(raw: Any, *, number: int, where: str, full: bool) -> _Mapped:
    """Map one block: its header row and, with `full`, its transactions' rows.

    `full`: the answer holds transaction objects (mapped); otherwise transaction hashes
    (checked, counted, not kept).
    """
    if raw is None:
        raise errors.ResponseCorrupted(f"{where}: node returned no block at {number:,d}")
    obj = require_dict(raw, where)
    got = require_int(obj, "number", where)
    if got != number:
        raise errors.ResponseCorrupted(f"{where}: asked for block {number:,d}, got {got:,d}")
    row = evm_fields.BLOCKS.values(obj, context=Context(number, b""), position=0, where=where)
    block_hash = row[_BLOCK_HASH]
    raw_txs = require_list(obj, "transactions", where)
    children: dict[str, Rows] = {"blocks": Rows.of((row,))}
    tx_hashes: list[bytes] = []
    if full:
        context = Context(number, block_hash)
        txs = tuple(
            _TX.values(t, context=context, position=i, where=f"{where} transaction {i}")
            for i, t in enumerate(raw_txs)
        )
        children[_TX.table.name] = Rows.of(txs)
        tx_hashes = [t[_TX_HASH] for t in txs]
        raw_withdrawals = obj.get("withdrawals")
        if raw_withdrawals is not None:
            if not isinstance(raw_withdrawals, list):
                raise errors.ResponseCorrupted(f"{where}: field 'withdrawals' is not a list")
            context = Context(number, block_hash)
            children[_WITHDRAWAL.table.name] = Rows.of(
                tuple(
                    _WITHDRAWAL.values(
                        w, context=context, position=i, where=f"{where} withdrawal {i}"
                    )
                    for i, w in enumerate(raw_withdrawals)
                )
            )
    else:
        _check_tx_hashes(raw_txs, where)
    bloom = obj.get("logsBloom")
    return _Mapped(
        Block(number, block_hash, row[_PARENT_HASH], children),
        tx_hashes,
        isinstance(bloom, str) and bloom != _ZERO_BLOOM,
    )


def _attach_logs(mapped: list[_Mapped], raw_logs: Any, *, where: str) -> list[Block]:
    """Give each block its logs; every log must name one of these blocks by number AND hash."""
    if not isinstance(raw_logs, list):
        raise errors.ResponseCorrupted(f"{where}: eth_getLogs result is not a list")
    start = mapped[0].block.number
    per_block: list[list[tuple[Any, ...]]] = [[] for _ in mapped]
    for i, raw in enumerate(raw_logs):
        log_where = f"{where} log {i}"
        obj = require_dict(raw, log_where)
        number = require_int(obj, "blockNumber", log_where)
        offset = number - start
        if not 0 <= offset < len(mapped):
            raise errors.ResponseCorrupted(f"{where}: log for block {number:,d} outside the range")
        m = mapped[offset]
        context = Context(number, m.block.hash, m.tx_hashes)
        log_index = require_int(obj, "logIndex", log_where)
        per_block[offset].append(
            _LOG.values(obj, context=context, position=log_index, where=log_where)
        )
    out = []
    for m, logs in zip(mapped, per_block, strict=True):
        logs.sort(key=lambda row: int(row[_LOG_INDEX]))
        number = m.block.number
        if [row[_LOG_INDEX] for row in logs] != list(range(len(logs))):
            # logIndex is the position in the block: a gap or a repeat means logs are missing.
            raise errors.ResponseCorrupted(f"{where}: block {number:,d} log indexes are not 0..n-1")
        if m.bloom_says_logs and not logs:
            # A load-balanced backend that lags answers eth_getLogs with [] for blocks it has
            # not seen yet; the bloom proves the block has logs.
            raise errors.ResponseCorrupted(
                f"{where}: block {number:,d} has a logs bloom but no logs were returned"
            )
        if logs and not m.bloom_says_logs:
            raise errors.ResponseCorrupted(f"{where}: block {number:,d} logs contradict its bloom")
        block = m.block
        rows = {**block.rows, _LOG.table.name: Rows.of(tuple(logs))}
        out.append(Block(block.number, block.hash, block.parent_hash, rows))
    return out


class EvmSource:
    """An EVM chain over JSON-RPC (one or more equivalent endpoints)."""

    def __init__(self, cfg: EvmChainConfig, rpc: RpcClient) -> None:
        self.cfg = cfg
        self.rpc = rpc
        self.label = cfg.name
        # The store's COPY row prefixes, once bound: batches then take the fast path
        # (`evm_rows`), which encodes full batches' rows with them. Unbound, every batch
        # takes the checked path.
        self.copy_prefixes: dict[str, bytes] | None = None
        self.decoder = Decoder(cfg.decode_workers, label=cfg.name)
        self.fast_batches = 0
        self.checked_batches = 0  # batches the fast path left to the checked path

    def bind(self, copy_prefixes: Mapping[str, bytes]) -> None:
        self.copy_prefixes = dict(copy_prefixes)

    def close(self) -> None:
        self.decoder.close()

    def decode_counts(self) -> dict[str, int]:
        return {"fast": self.fast_batches, "checked": self.checked_batches}

    async def check_identity(self) -> None:
        """Check every endpoint's chain id; unreachable ones wait until they answer.

        A mismatch is fatal (`ChainMismatch`). An endpoint that does not answer now is kept
        out of rotation and checked again later; at least one must answer now.
        """
        self.rpc.verifier = self._recheck
        unreachable: list[errors.SourceError] = []
        for url in self.rpc.urls:
            try:
                await self._check(url)
            except errors.SourceError as exc:
                self.rpc.set_verified(url, False)
                unreachable.append(exc)
                logger.warning(
                    "%s: endpoint %s did not answer eth_chainId (%s); it takes no requests "
                    "until it does",
                    self.label,
                    redact.redact_url(url),
                    exc,
                    extra={"chain": self.label, "action": "endpoint_unverified"},
                )
        if len(unreachable) == len(self.rpc.urls):
            raise unreachable[0]

    async def _check(self, url: str, *, attempts: int | None = None) -> None:
        where = redact.redact_url(url)
        raw = await self.rpc.call("eth_chainId", url=url, attempts=attempts)
        chain_id = require_int({"result": raw}, "result", f"{where} eth_chainId")
        if chain_id != self.cfg.chain_id:
            raise errors.ChainMismatch(
                f"chains[{self.cfg.name}].chain_id: config says {self.cfg.chain_id} but "
                f"{where} serves chain id {chain_id}; refusing to index"
            )

    async def _recheck(self, url: str) -> None:
        try:
            await self._check(url, attempts=1)  # one try: never hold up the real requests
        except errors.ChainMismatch as exc:
            logger.error(
                "%s: %s", self.label, exc,
                extra={"chain": self.label, "action": "endpoint_mismatch"},
            )  # fmt: skip
            return
        except errors.SourceError:
            return
        self.rpc.set_verified(url, True)
        logger.info(
            "%s: endpoint %s answers with the right chain id; back in rotation",
            self.label,
            redact.redact_url(url),
            extra={"chain": self.label, "action": "endpoint_verified"},
        )

    # Every answer is parsed inside the transport's attempt (`batch_parsed`), so a malformed
    # one is retried, and failed over, like a transport error.

    async def head(self) -> int:
        where = f"{self.label} eth_blockNumber"
        return await self.rpc.batch_parsed(
            [("eth_blockNumber", [])], lambda r: require_int({"result": r[0]}, "result", where)
        )

    async def hashes(
        self, numbers: Sequence[int], *, alternate: bool = False
    ) -> dict[int, bytes | None]:
        url = self.rpc.alternate_url() if alternate else None

        def parse(results: list[Any]) -> dict[int, bytes | None]:
            out: dict[int, bytes | None] = {}
            for number, raw in zip(numbers, results, strict=True):
                where = f"{self.label} block {number:,d}"
                if raw is None:
                    out[number] = None
                    continue
                obj = require_dict(raw, where)
                if require_int(obj, "number", where) != number:
                    raise errors.ResponseCorrupted(f"{where}: node answered another height")
                out[number] = require_bytes(obj, "hash", where, 32)
            return out

        return await self.rpc.batch_parsed(
            [("eth_getBlockByNumber", [hex(n), False]) for n in numbers], parse, url=url
        )

    async def blocks(self, start: int, count: int) -> list[Block]:
        assert count > 0
        end = start + count - 1
        # What to ask for follows `store`: headers with tx hashes only, or full transactions,
        # or full transactions plus the logs of the same range.
        full = self.cfg.store != "blocks"
        with_logs = self.cfg.store == "logs"
        calls: list[tuple[str, Sequence[Any]]] = [
            ("eth_getBlockByNumber", [hex(n), full]) for n in range(start, end + 1)
        ]
        if with_logs:
            calls.append(("eth_getLogs", [{"fromBlock": hex(start), "toBlock": hex(end)}]))
        where = f"{self.label} blocks {start:,d}-{end:,d}"

        def parse(results: list[Any]) -> list[Block]:
            mapped = [
                _map_block(
                    raw, number=start + i, where=f"{self.label} block {start + i:,d}", full=full
                )
                for i, raw in enumerate(results[:count])
            ]
            if not with_logs:
                return [m.block for m in mapped]
            return _attach_logs(mapped, results[-1], where=where)

        prefixes = self.copy_prefixes
        if prefixes is None:  # not bound to a store (tests, tools): the checked path only
            return await self.rpc.batch_parsed(calls, parse)

        async def checked(raw: bytes, ids: list[int], endpoint: str) -> list[Block]:
            # Not in the fast path's form (or wrong): the checked path maps it or says why.
            self.checked_batches += 1
            logger.debug("%s: decoded by the checked path", where)
            return await self.decoder.run_here(lambda: parse(results_of(raw, ids, calls, endpoint)))

        async def decode(raw: bytes, ids: list[int], endpoint: str) -> list[Block]:
            if full:
                blocks = await self.decoder.run(
                    decode_full_batch, raw, ids, start=start, count=count, prefixes=prefixes,
                    with_logs=with_logs,
                )  # fmt: skip
            else:
                blocks = await self.decoder.run_here(
                    decode_hashes_batch, raw, ids, start=start, prefixes=prefixes
                )
            if blocks is None:
                return await checked(raw, ids, endpoint)
            self.fast_batches += 1
            return blocks

        return await self.rpc.batch_decoded(calls, decode)
