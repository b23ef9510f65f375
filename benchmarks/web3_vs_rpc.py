"""Why the hot path does not use web3's provider: fetch the same blocks both ways.

Starts anvil, mines blocks with transactions and logs, then fetches and decodes them
(a) with web3 8 `AsyncWeb3.batch_requests()` (get_block with full transactions + get_logs,
web3's own result formatters), and (b) with our `EvmSource.blocks` (one JSON-RPC batch,
orjson, our validation into frozen dataclasses). Prints blocks/s for each; run with
`python -m benchmarks.web3_vs_rpc`.
"""

from __future__ import annotations

import asyncio
import sys
import time

from web3 import AsyncWeb3

from indexer.chain.evm import EvmSource
from indexer.chain.rpc import RpcClient
from indexer.config import EvmChainConfig
from indexer.devnet.anvil import Anvil
from indexer.devnet.traffic import fill_blocks

BLOCKS = 400
BATCH = 50
ROUNDS = 3


async def with_web3(url: str) -> float:
    w3 = AsyncWeb3(AsyncWeb3.AsyncHTTPProvider(url))
    started = time.perf_counter()
    for _ in range(ROUNDS):
        for start in range(1, BLOCKS + 1, BATCH):
            end = min(start + BATCH - 1, BLOCKS)
            async with w3.batch_requests() as batch:
                for n in range(start, end + 1):
                    batch.add(w3.eth.get_block(n, full_transactions=True))
                batch.add(w3.eth.get_logs({"fromBlock": start, "toBlock": end}))
                results = await batch.async_execute()
            assert len(results) == end - start + 2
    elapsed = time.perf_counter() - started
    await w3.provider.disconnect()
    return ROUNDS * BLOCKS / elapsed


async def with_ours(url: str) -> float:
    cfg = EvmChainConfig(name="bench", kind="evm", urls=(url,), chain_id=31337)
    async with RpcClient(cfg.urls, timeout_secs=30) as rpc:
        source = EvmSource(cfg, rpc)
        started = time.perf_counter()
        for _ in range(ROUNDS):
            for start in range(1, BLOCKS + 1, BATCH):
                count = min(BATCH, BLOCKS - start + 1)
                assert len(await source.blocks(start, count)) == count
        return ROUNDS * BLOCKS / (time.perf_counter() - started)


def main() -> int:
    with Anvil() as node:
        summary = fill_blocks(node, BLOCKS, txs_per_block=(2, 6), seed=42)
        print(f"{BLOCKS} blocks, {summary.tx_count} txs, {summary.log_count} logs; "
              f"batches of {BATCH}, {ROUNDS} rounds")  # fmt: skip
        ours = asyncio.run(with_ours(node.url))
        theirs = asyncio.run(with_web3(node.url))
    print(f"web3 batch_requests + formatters : {theirs:8,.0f} blocks/s")
    print(f"indexer EvmSource (orjson, checks): {ours:8,.0f} blocks/s  ({ours / theirs:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
