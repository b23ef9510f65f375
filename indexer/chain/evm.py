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
from collections.abc import Sequence
from itertools import repeat
from typing import Any

from indexer import errors, redact
from indexer.chain.decode_pool import Decoder
from indexer.chain.evm_rows import decode_full_batch, decode_hashes_batch
from indexer.chain.rpc import RpcClient, results_of
from indexer.config import ChainConfig
from indexer.models import Block, Log, Tx

logger = logging.getLogger(__name__)

_ZERO_BLOOM = "0x" + "0" * 512


# -- Shape checks (raise ResponseCorrupted naming the field)


def require_int(obj: dict[str, Any], key: str, where: str) -> int:
    value = obj.get(key)
    if not isinstance(value, str) or not value.startswith("0x") or len(value) > 66:
        raise errors.ResponseCorrupted(f"{where}: field {key!r} is not a hex quantity")
    try:
        return int(value, 16)
    except ValueError:
        raise errors.ResponseCorrupted(f"{where}: field {key!r} is not a hex quantity") from None


def require_opt_int(obj: dict[str, Any], key: str, where: str) -> int | None:
    return None if obj.get(key) is None else require_int(obj, key, where)


def require_bytes(obj: dict[str, Any], key: str, where: str, size: int | None = None) -> bytes:
    value = obj.get(key)
    if not isinstance(value, str) or not value.startswith("0x"):
        raise errors.ResponseCorrupted(f"{where}: field {key!r} is not hex data")
    try:
        raw = bytes.fromhex(value[2:])
    except ValueError:
        raise errors.ResponseCorrupted(f"{where}: field {key!r} is not hex data") from None
    if size is not None and len(raw) != size:
        raise errors.ResponseCorrupted(f"{where}: field {key!r} is not {size} bytes")
    return raw


def require_opt_bytes(obj: dict[str, Any], key: str, where: str, size: int) -> bytes | None:
    return None if obj.get(key) is None else require_bytes(obj, key, where, size)


def require_list(obj: dict[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key)
    if not isinstance(value, list):
        raise errors.ResponseCorrupted(f"{where}: field {key!r} is not a list")
    return value


def require_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise errors.ResponseCorrupted(f"{where}: expected an object, got {type(value).__name__}")
    return value


# -- Mapping


def _map_tx(tx: Any, *, number: int, block_hash: bytes, index: int, where: str) -> Tx:
    if not isinstance(tx, dict):
        raise errors.ResponseCorrupted(f"{where}: transaction {index} is not an object")
    if require_int(tx, "blockNumber", where) != number:
        raise errors.ResponseCorrupted(f"{where}: transaction {index} names another block number")
    if require_bytes(tx, "blockHash", where, 32) != block_hash:
        raise errors.ResponseCorrupted(f"{where}: transaction {index} names another block hash")
    if require_int(tx, "transactionIndex", where) != index:
        raise errors.ResponseCorrupted(f"{where}: transactionIndex out of order at {index}")
    return Tx(
        block_number=number,
        tx_index=index,
        hash=require_bytes(tx, "hash", where, 32),
        from_address=require_bytes(tx, "from", where, 20),
        to_address=require_opt_bytes(tx, "to", where, 20),
        value=require_int(tx, "value", where),
        nonce=require_int(tx, "nonce", where),
        gas=require_int(tx, "gas", where),
        gas_price=require_opt_int(tx, "gasPrice", where),
        input=require_bytes(tx, "input", where),
        type=require_opt_int(tx, "type", where) or 0,
    )


def _check_tx_hashes(raw_txs: list[Any], where: str) -> None:
    """Blocks-only mode: the node sent transaction hashes; check them without decoding."""
    try:
        ok = set(map(len, raw_txs)) <= {66} and all(map(str.startswith, raw_txs, repeat("0x")))
    except TypeError:  # not strings
        ok = False
    if not ok:
        raise errors.ResponseCorrupted(f"{where}: transactions are not all 32-byte hashes")


def _map_block(raw: Any, *, number: int, where: str, full: bool) -> tuple[dict[str, Any], bool]:
    """Map one block's fields (a `Block`'s keyword arguments, transactions included) and say
    whether its logs bloom announces logs. The `Block` is built once, with its logs, later.

    `full`: the answer holds transaction objects (mapped); otherwise transaction hashes
    (checked, counted, not kept).
    """
    if raw is None:
        raise errors.ResponseCorrupted(f"{where}: node returned no block at {number:,d}")
    obj = require_dict(raw, where)
    got = require_int(obj, "number", where)
    if got != number:
        raise errors.ResponseCorrupted(f"{where}: asked for block {number:,d}, got {got:,d}")
    raw_txs = require_list(obj, "transactions", where)
    bloom = obj.get("logsBloom")
    block_hash = require_bytes(obj, "hash", where, 32)
    if full:
        txs = tuple(
            _map_tx(t, number=number, block_hash=block_hash, index=i, where=where)
            for i, t in enumerate(raw_txs)
        )
    else:
        _check_tx_hashes(raw_txs, where)
        txs = ()
    fields = {
        "number": number,
        "hash": block_hash,
        "parent_hash": require_bytes(obj, "parentHash", where, 32),
        "timestamp": require_int(obj, "timestamp", where),
        "tx_count": len(raw_txs),
        "miner": require_opt_bytes(obj, "miner", where, 20),
        "gas_used": require_int(obj, "gasUsed", where),
        "gas_limit": require_int(obj, "gasLimit", where),
        "base_fee_per_gas": require_opt_int(obj, "baseFeePerGas", where),
        "size": require_opt_int(obj, "size", where),
        "transactions": txs,
    }
    has_logs = isinstance(bloom, str) and bloom != _ZERO_BLOOM
    return fields, has_logs


def _topic(value: Any, where: str) -> bytes:
    if not (isinstance(value, str) and len(value) == 66 and value.startswith("0x")):
        raise errors.ResponseCorrupted(f"{where}: a topic is not 32 bytes of hex")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise errors.ResponseCorrupted(f"{where}: a topic is not 32 bytes of hex") from None


def _map_log(raw: Any, where: str) -> tuple[int, bytes, Log]:
    obj = require_dict(raw, where)
    if obj.get("removed") is True:
        raise errors.ResponseCorrupted(f"{where}: log marked removed")
    topics = require_list(obj, "topics", where)
    if len(topics) > 4:
        raise errors.ResponseCorrupted(f"{where}: more than 4 topics")
    number = require_int(obj, "blockNumber", where)
    log = Log(
        block_number=number,
        log_index=require_int(obj, "logIndex", where),
        tx_index=require_int(obj, "transactionIndex", where),
        tx_hash=require_bytes(obj, "transactionHash", where, 32),
        address=require_bytes(obj, "address", where, 20),
        topics=tuple([_topic(t, where) for t in topics]),
        data=require_bytes(obj, "data", where),
    )
    return number, require_bytes(obj, "blockHash", where, 32), log


def _attach_logs(
    blocks: list[dict[str, Any]], has_logs: list[bool], raw_logs: Any, *, where: str
) -> list[Block]:
    """Give each block its logs; every log must name one of these blocks by number AND hash."""
    if not isinstance(raw_logs, list):
        raise errors.ResponseCorrupted(f"{where}: eth_getLogs result is not a list")
    start = blocks[0]["number"]
    per_block: list[list[Log]] = [[] for _ in blocks]
    for i, raw in enumerate(raw_logs):
        number, block_hash, log = _map_log(raw, f"{where} log {i}")
        offset = number - start
        if not 0 <= offset < len(blocks):
            raise errors.ResponseCorrupted(f"{where}: log for block {number:,d} outside the range")
        block = blocks[offset]
        if block_hash != block["hash"]:
            raise errors.ResponseCorrupted(
                f"{where}: log names block {number:,d} with another hash than the block answer"
            )
        txs = block["transactions"]
        if not 0 <= log.tx_index < len(txs) or txs[log.tx_index].hash != log.tx_hash:
            raise errors.ResponseCorrupted(f"{where}: log names a transaction not in its block")
        per_block[offset].append(log)
    out = []
    for block, logs, bloom_says in zip(blocks, per_block, has_logs, strict=True):
        logs.sort(key=lambda lg: lg.log_index)
        number = block["number"]
        if [lg.log_index for lg in logs] != list(range(len(logs))):
            # logIndex is the position in the block: a gap or a repeat means logs are missing.
            raise errors.ResponseCorrupted(f"{where}: block {number:,d} log indexes are not 0..n-1")
        if bloom_says and not logs:
            # A load-balanced backend that lags answers eth_getLogs with [] for blocks it has
            # not seen yet; the bloom proves the block has logs.
            raise errors.ResponseCorrupted(
                f"{where}: block {number:,d} has a logs bloom but no logs were returned"
            )
        if logs and not bloom_says:
            raise errors.ResponseCorrupted(f"{where}: block {number:,d} logs contradict its bloom")
        out.append(Block(**block, logs=tuple(logs)))
    return out


class EvmSource:
    """An EVM chain over JSON-RPC (one or more equivalent endpoints)."""

    def __init__(self, cfg: ChainConfig, rpc: RpcClient) -> None:
        self.cfg = cfg
        self.rpc = rpc
        self.label = cfg.name
        # The store's id of this chain, once bound: batches then take the fast path
        # (`evm_rows`), which encodes full batches' rows for it. Unbound, every batch takes
        # the checked path.
        self.store_chain: int | None = None
        self.decoder = Decoder(cfg.decode_workers, label=cfg.name)
        self.fast_batches = 0
        self.checked_batches = 0  # batches the fast path left to the checked path

    def bind(self, store_chain: int) -> None:
        self.store_chain = store_chain

    def close(self) -> None:
        self.decoder.close()

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
            fields = [f for f, _ in mapped]
            if not with_logs:
                return [Block(**f) for f in fields]
            return _attach_logs(fields, [h for _, h in mapped], results[-1], where=where)

        chain = self.store_chain
        if chain is None:  # not bound to a store (tests, tools): the checked path only
            return await self.rpc.batch_parsed(calls, parse)

        async def checked(raw: bytes, ids: list[int], endpoint: str) -> list[Block]:
            # Not in the fast path's form (or wrong): the checked path maps it or says why.
            self.checked_batches += 1
            logger.debug("%s: decoded by the checked path", where)
            return await self.decoder.run_here(lambda: parse(results_of(raw, ids, calls, endpoint)))

        async def decode(raw: bytes, ids: list[int], endpoint: str) -> list[Block]:
            if full:
                blocks = await self.decoder.run(
                    decode_full_batch, raw, ids, start=start, count=count, chain=chain,
                    with_logs=with_logs,
                )  # fmt: skip
            else:
                blocks = await self.decoder.run_here(decode_hashes_batch, raw, ids, start=start)
            if blocks is None:
                return await checked(raw, ids, endpoint)
            self.fast_batches += 1
            return blocks

        return await self.rpc.batch_decoded(calls, decode)
