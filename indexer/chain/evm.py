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
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
import orjson

from indexer import errors, redact
from indexer.chain import evm_checked, evm_verify
from indexer.chain.decode_pool import Decoder
from indexer.chain.evm_checked import require_bytes, require_dict, require_int
from indexer.chain.evm_rows import _ENVELOPE, LogSource, decode_full_batch, decode_hashes_batch
from indexer.chain.fields import check_height
from indexer.chain.rpc import Body, RpcClient, results_of
from indexer.config import EvmChainConfig
from indexer.models import Block

logger = logging.getLogger(__name__)


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
        # Endpoints found without eth_getBlockReceipts, and when (asked again later).
        self._no_block_receipts: dict[str, float] = {}
        rules = evm_verify.rules_for(cfg.chain_id, cfg.rules)
        self.verifier = evm_verify.Verifier(
            level=cfg.verify or evm_verify.default_level(rules), rules=rules, label=cfg.name
        )

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
            [("eth_blockNumber", [])],
            lambda r: check_height(require_int({"result": r[0]}, "result", where), "result", where),
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
        # What to ask for follows `store`: headers with tx hashes only; full transactions;
        # plus the logs of the range; or plus every block's receipts (and their logs).
        store = self.cfg.store
        full = store != "blocks"
        logs: LogSource = {"logs": "getLogs", "receipts": "receipts"}.get(store, "none")  # type: ignore[assignment]
        block_calls: list[tuple[str, Sequence[Any]]] = [
            ("eth_getBlockByNumber", [hex(n), full]) for n in range(start, end + 1)
        ]
        if logs == "getLogs":
            block_calls.append(("eth_getLogs", [{"fromBlock": hex(start), "toBlock": hex(end)}]))
        where = f"{self.label} blocks {start:,d}-{end:,d}"

        def build(url: str) -> list[tuple[str, Sequence[Any]]]:
            if logs != "receipts" or not self._asks_block_receipts(url):
                return block_calls
            return block_calls + [("eth_getBlockReceipts", [hex(n)]) for n in range(start, end + 1)]

        def parse(results: list[Any], receipts: list[Any] | None) -> list[Block]:
            mapped = [
                evm_checked.map_block(
                    raw,
                    number=start + i,
                    where=f"{self.label} block {start + i:,d}",
                    full=full,
                    rules=self.verifier.rules,
                )
                for i, raw in enumerate(results[:count])
            ]
            verifier = self.verifier
            if logs == "getLogs":
                blocks = evm_checked.attach_logs(mapped, results[-1], where=where)
                by_block: list[list[Any]] = [[] for _ in mapped]
                for lg in results[-1]:  # checked by attach_logs: each names one of the blocks
                    by_block[int(lg["blockNumber"], 16) - start].append(lg)
                for raw, block_logs in zip(results[:count], by_block, strict=True):
                    verifier.check(raw, logs=block_logs)
                return blocks
            if logs == "receipts":
                got = receipts if receipts is not None else results[count:]
                blocks = evm_checked.attach_receipts(mapped, got, where=where)
                for raw, block_receipts in zip(results[:count], got, strict=True):
                    verifier.check(raw, receipts=block_receipts)
                return blocks
            for raw in results[:count]:
                if full:
                    verifier.check(raw)
                else:
                    verifier.check_header(raw)
            return [m.block for m in mapped]

        prefixes = self.copy_prefixes

        async def decode(
            raw: Body, ids: list[int], calls: Sequence[tuple[str, Sequence[Any]]], url: str
        ) -> list[Block]:
            endpoint = redact.redact_url(url)
            receipts: list[bytes] | None = None
            if logs == "receipts" and len(calls) == count:
                # This endpoint has no eth_getBlockReceipts: ask it for each transaction's.
                receipts = await self._receipts_per_transaction(raw, ids, calls, url, endpoint)
            try:
                return await self._decode(raw, ids, calls, endpoint, receipts=receipts,
                                          parse=parse, start=start, count=count, full=full,
                                          logs=logs, prefixes=prefixes, where=where)  # fmt: skip
            except errors.RpcError as exc:
                if len(calls) > count and logs == "receipts" and _lacks_block_receipts(exc):
                    self._no_block_receipts[url] = time.monotonic()
                    raise errors.SourceTransient(
                        f"{endpoint}: eth_getBlockReceipts is not available ({exc}); asking "
                        "for each transaction's receipt from now on"
                    ) from exc
                raise

        return await self.rpc.batch_for_endpoint(build, decode)

    async def _decode(
        self,
        raw: Body,
        ids: list[int],
        calls: Sequence[tuple[str, Sequence[Any]]],
        endpoint: str,
        *,
        receipts: list[bytes] | None,
        parse: Callable[[list[Any], list[Any] | None], list[Block]],
        start: int,
        count: int,
        full: bool,
        logs: LogSource,
        prefixes: dict[str, bytes] | None,
        where: str,
    ) -> list[Block]:
        """The fast path when bound and it takes the answer, else the checked path."""
        if prefixes is not None:
            if full:
                blocks = await self.decoder.run(
                    decode_full_batch, raw, ids, start=start, count=count, prefixes=prefixes,
                    logs=logs, receipts=receipts, verifier=self.verifier,
                )  # fmt: skip
            else:
                blocks = await self.decoder.run_here(
                    decode_hashes_batch, raw, ids, start=start, prefixes=prefixes,
                    verifier=self.verifier,
                )  # fmt: skip
            if blocks is not None:
                self.fast_batches += 1
                return blocks
            # Not in the fast path's form (or wrong): the checked path maps it or says why.
            self.checked_batches += 1
            logger.debug("%s: decoded by the checked path", where)

        def checked() -> list[Block]:
            results = results_of(raw, ids, calls, endpoint)
            parsed = None if receipts is None else [_loads(r, endpoint) for r in receipts]
            return parse(results, parsed)

        return await self.decoder.run_here(checked)

    def _asks_block_receipts(self, url: str) -> bool:
        """Whether to ask `url` for eth_getBlockReceipts (re-probed now and then)."""
        since = self._no_block_receipts.get(url)
        if since is not None and time.monotonic() - since >= BLOCK_RECEIPTS_RECHECK_SECS:
            del self._no_block_receipts[url]
            since = None
        return since is None

    async def _receipts_per_transaction(
        self,
        raw: Body,
        ids: list[int],
        calls: Sequence[tuple[str, Sequence[Any]]],
        url: str,
        endpoint: str,
    ) -> list[bytes]:
        """Each block's receipts as a JSON array, from `eth_getTransactionReceipt` calls to
        the same endpoint (in batches of `RECEIPTS_PER_REQUEST`)."""
        blocks = results_of(raw, ids, calls, endpoint)
        hashes: list[list[Any]] = []
        for i, block in enumerate(blocks[: len(calls)]):
            block_where = f"{endpoint} block answer {i}"
            txs = evm_checked.require_list(evm_checked.require_dict(block, block_where),
                                           "transactions", block_where)  # fmt: skip
            hashes.append([tx.get("hash") if isinstance(tx, dict) else None for tx in txs])
        flat = [h for block_hashes in hashes for h in block_hashes]
        answers: list[bytes] = []
        for at in range(0, len(flat), RECEIPTS_PER_REQUEST):
            chunk = flat[at : at + RECEIPTS_PER_REQUEST]
            answers += await self.rpc.batch_decoded(
                [("eth_getTransactionReceipt", [h]) for h in chunk],
                _raw_results,
                url=url,
                attempts=1,
            )
        out = []
        at = 0
        for block_hashes in hashes:
            out.append(b"[" + b",".join(answers[at : at + len(block_hashes)]) + b"]")
            at += len(block_hashes)
        return out


BLOCK_RECEIPTS_RECHECK_SECS = 600.0
RECEIPTS_PER_REQUEST = 1000


def _lacks_block_receipts(exc: errors.RpcError) -> bool:
    """The error says the node has no eth_getBlockReceipts (not that a call failed)."""
    if exc.context.get("method") != "eth_getBlockReceipts":
        return False
    message = str(exc).lower()
    return exc.code == -32601 or any(
        s in message for s in ("not found", "does not exist", "not supported", "unsupported",
                               "not available")
    )  # fmt: skip


async def _raw_results(raw: Body, ids: list[int], where: str) -> list[bytes]:
    """Each call's `result` as raw JSON bytes, in call order (errors and gaps refused)."""
    try:
        items = _ENVELOPE.decode(raw)
    except msgspec.DecodeError as exc:
        raise errors.ResponseCorrupted(f"{where}: response is not a valid batch") from exc
    by_id = {item.id: item for item in items}
    if len(by_id) != len(items) or set(by_id) != set(ids):
        raise errors.ResponseCorrupted(f"{where}: batch answer ids do not match the request")
    out = []
    for i in ids:
        item = by_id[i]
        if item.error is not None:
            raise errors.RpcError(f"{where}: eth_getTransactionReceipt failed")
        out.append(bytes(item.result))
    return out


def _loads(raw: Body, where: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.ResponseCorrupted(f"{where}: receipts are not valid JSON") from exc
