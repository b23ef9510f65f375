"""`ElectrumSource` against a real ElectrumX indexing the bitcoind simulator on loopback.

Everything it returns is compared with what the simulator holds, hash by hash; every header
went through `btc_headers` validation (regtest rules) on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from indexer import errors
from indexer.chain import btc_headers as bh
from indexer.chain import electrum_connection as ec
from indexer.chain.electrum import ElectrumSource, gather_all, make_servers
from indexer.config import ElectrumChainConfig
from tests.electrum.bitcoind_sim import BitcoindSim
from tests.electrum.electrumx_proc import ElectrumXProc
from tests.support.rows import header, utc

REGTEST_GENESIS = bh.REGTEST.genesis_hash.hex()


@contextlib.asynccontextmanager
async def electrum_source(
    url: str, *, genesis_hash: str = REGTEST_GENESIS, **source_args: Any
) -> AsyncIterator[ElectrumSource]:
    protocol_max = source_args.pop("protocol_max", ec.PROTOCOL_MAX)
    cfg = ElectrumChainConfig(name="btc", kind="electrum", urls=(url,), genesis_hash=genesis_hash)
    async with make_servers(cfg, protocol_max=protocol_max) as servers:
        yield ElectrumSource(cfg, servers, **source_args)


async def wait_synced(electrumx: ElectrumXProc, sim: BitcoindSim) -> None:
    tip = sim.tip()
    await asyncio.to_thread(electrumx.wait_synced, tip.height, hash_hex=tip.hash_hex)


def sim_hashes(sim: BitcoindSim, start: int, count: int) -> list[bytes]:
    return [bytes.fromhex(sim.block_hash(h)) for h in range(start, start + count)]


@pytest.mark.parametrize("protocol_max", ["1.4", ec.PROTOCOL_MAX])
async def test_2000_headers_equal_the_simulators(
    protocol_max: str, electrumx: ElectrumXProc, bitcoind_sim: BitcoindSim
) -> None:
    bitcoind_sim.generate(2000)
    await wait_synced(electrumx, bitcoind_sim)
    async with electrum_source(electrumx.tcp_url, protocol_max=protocol_max) as source:
        await source.check_identity()
        conn = await source.servers.connect(electrumx.tcp_url)
        features = await conn.request("server.features")
        newest = ec.protocol_tuple(features["protocol_max"])
        assert conn.protocol == ((1, 4) if protocol_max == "1.4" else newest)
        # As the prefetcher does: several batches in flight on one connection.
        batches = await gather_all(
            [source.blocks(start, 400) for start in range(0, 2000, 400)] + [source.blocks(2000, 1)]
        )
        blocks = [block for batch in batches for block in batch]
        assert [b.number for b in blocks] == list(range(2001))
        assert [b.hash for b in blocks] == sim_hashes(bitcoind_sim, 0, 2001)
        for block in (blocks[0], blocks[1234], blocks[2000]):
            parsed = bh.parse_header(bitcoind_sim.header(block.number), height=block.number)
            got = header(block)
            assert (block.parent_hash, got["merkle_root"], got["timestamp"]) == (
                parsed.prev_hash,
                parsed.merkle_root,
                utc(parsed.timestamp),
            )
            assert (got["version"], got["bits"], got["nonce"], got["tx_count"]) == (
                parsed.version,
                parsed.bits,
                parsed.nonce,
                0,
            )
        numbers = [0, 1, 999, 2000, 2001, 5000]
        found = await source.hashes(numbers)
        want = {n: bytes.fromhex(bitcoind_sim.block_hash(n)) for n in numbers[:4]}
        assert found == {**want, 2001: None, 5000: None}
        assert await source.head() == 2000


async def test_head_follows_generate_through_notifications(
    electrumx: ElectrumXProc, bitcoind_sim: BitcoindSim
) -> None:
    bitcoind_sim.generate(5)
    await wait_synced(electrumx, bitcoind_sim)
    # A head older than a minute would be polled again: only notifications can move it here.
    async with electrum_source(electrumx.tcp_url, head_max_age_secs=60) as source:
        assert await source.head() == 5
        for expected in (8, 9):
            bitcoind_sim.generate(expected - bitcoind_sim.height)
            deadline = time.monotonic() + 15
            while await source.head() != expected:
                assert time.monotonic() < deadline, f"head stuck at {await source.head()}"
                await asyncio.sleep(0.05)
        tip = await source.hashes([9])
        assert tip[9] == bytes.fromhex(bitcoind_sim.block_hash(9))


async def test_a_reorg_is_seen_in_hashes_and_blocks(
    electrumx: ElectrumXProc, bitcoind_sim: BitcoindSim
) -> None:
    bitcoind_sim.generate(40)
    await wait_synced(electrumx, bitcoind_sim)
    async with electrum_source(electrumx.tcp_url) as source:
        before = await source.blocks(30, 11)
        bitcoind_sim.reorg(4, 5)  # 37..40 replaced, 41 added
        await wait_synced(electrumx, bitcoind_sim)
        after = await source.blocks(30, 12)
        assert [b.hash for b in after] == sim_hashes(bitcoind_sim, 30, 12)
        assert [b.hash for b in after[:7]] == [b.hash for b in before[:7]]
        assert all(a.hash != b.hash for a, b in zip(after[7:11], before[7:11], strict=True))
        found = await source.hashes([36, 37, 41])
        assert found == {h: bytes.fromhex(bitcoind_sim.block_hash(h)) for h in (36, 37, 41)}


async def test_wrong_genesis_is_refused_by_a_real_server(electrumx: ElectrumXProc) -> None:
    mainnet = bh.MAINNET.genesis_hash.hex()
    async with electrum_source(electrumx.tcp_url, genesis_hash=mainnet) as source:
        with pytest.raises(errors.ChainMismatch) as info:
            await source.check_identity()
    assert str(info.value).startswith(f"chains[btc].genesis_hash: config says {mainnet} (mainnet)")
    assert f"says its genesis is {REGTEST_GENESIS}; refusing to index" in str(info.value)
