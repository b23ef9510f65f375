"""Hostile world, issue 11 item 4 (RELIABILITY.md D6): an Electrum server that floods us with
notifications while we fetch headers.

Ten thousand notifications arrive ahead of every header chunk: `blockchain.headers.subscribe`
with the tip, again and again, and methods we never subscribed to. Each costs a little CPU
and nothing else: sync completes and equals the chain, other tasks run between any two
notifications, and memory stays bounded, measured with tracemalloc in this process: what is
held at the peak stays under what the line limit allows a connection to buffer, a fraction
of what flowed through, and nothing is left once the flood is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import tracemalloc
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from indexer import config
from indexer.chain import electrum_connection as ec
from indexer.chain.electrum_servers import ElectrumServers
from tests.electrum import regtest
from tests.electrum.fake_electrum import REGTEST_CHAIN, FakeElectrum, Faults, hashes_of
from tests.integration.helpers import eventually, running_sync
from tests.support.oracle import check_invariants

FLOOD = 10_000  # notifications ahead of every header chunk
TIP = len(REGTEST_CHAIN) - 1
MIB = 2**20
# A line limit smaller than the default 8 MiB, so that far more flows through than one
# connection may buffer (twice the limit, README "Memory") within seconds.
LINE_LIMIT_BYTES = 256 * 1024
# The stream's buffer, a line and its parsed form, the fake server's write buffers and the
# sync's own working memory (0.5 MiB without a flood).
PEAK_BOUND_BYTES = 6 * MIB


@contextlib.contextmanager
def traced_memory() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def stored_hashes(db_url: str) -> list[bytes]:
    with psycopg.connect(db_url) as conn:
        return [bytes(h) for (h,) in conn.execute("SELECT hash FROM blocks ORDER BY number")]


def electrum_config(db_url: str, url: str) -> config.Config:
    return config.build(
        {
            "database": {"url": db_url},
            "chains": [
                {
                    "name": "btc",
                    "kind": "electrum",
                    "urls": [url],
                    "genesis_hash": regtest.GENESIS_HASH_HEX,
                    "batch_size": 50,
                    "poll_interval_secs": 0.2,
                }
            ],
        },
        {},
    )


async def test_a_notification_flood_costs_cpu_not_memory(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every connection the daemon opens takes this limit.
    defaults = ec.ElectrumConnection.__init__.__kwdefaults__
    assert defaults is not None and "max_line_bytes" in defaults
    monkeypatch.setitem(defaults, "max_line_bytes", LINE_LIMIT_BYTES)
    fake = FakeElectrum(REGTEST_CHAIN, faults=Faults(flood=FLOOD))
    seen = 0  # notifications the client has handled
    most_between_beats = 0  # the most it handled without letting another task run

    async def heartbeat() -> None:
        nonlocal most_between_beats
        last = seen
        while True:
            await asyncio.sleep(0)
            most_between_beats = max(most_between_beats, seen - last)
            last = seen

    async with fake:
        with traced_memory():
            async with running_sync(electrum_config(db_url, fake.url)) as (task, runtime):
                chain = runtime.chains[0]
                servers = chain.rpc
                assert isinstance(servers, ElectrumServers) and servers.listeners
                handle = servers.listeners[0]  # the header source's

                def counted(url: str, method: str, params: list[Any]) -> None:
                    nonlocal seen
                    seen += 1
                    handle(url, method, params)

                servers.listeners[0] = counted
                before, _ = tracemalloc.get_traced_memory()
                tracemalloc.reset_peak()
                beats = asyncio.create_task(heartbeat())
                try:
                    await eventually(
                        lambda: chain.state.tip is not None and chain.state.tip.number == TIP,
                        timeout_secs=60,
                        what=f"the tip {TIP}",
                    )
                    # Caught up, the loop asks for the tip's header again and again: each
                    # answer comes after a flood of its own.
                    flooded = fake.flooded
                    await eventually(lambda: fake.flooded >= flooded + 2 * FLOOD,
                                     what="two more floods")  # fmt: skip
                    fake.faults.flood = 0  # floods under way are sent whole
                    # Every flood came after `counted` was put in place: the first header
                    # chunk is asked for after READY.
                    await eventually(lambda: seen == fake.flooded, what="the last one read")
                    after, peak = tracemalloc.get_traced_memory()
                finally:
                    beats.cancel()
                assert not task.done(), "the flood must not end the sync"
                servers.listeners[0] = handle

    # Each notification was handled as it came, never queued: other tasks ran between any
    # two; memory held at the peak is bounded by the line limit, not by what flowed through;
    # nothing is left of them afterwards.
    assert seen >= 8 * FLOOD, seen
    assert most_between_beats <= 100, most_between_beats
    assert fake.flooded_bytes >= 2 * PEAK_BOUND_BYTES, fake.flooded_bytes
    assert peak - before < PEAK_BOUND_BYTES, f"the peak grew by {(peak - before) / MIB:.1f} MiB"
    assert after - before < MIB, f"{(after - before) / MIB:.1f} MiB left after the flood"
    assert check_invariants(db_url, "btc") == TIP
    assert stored_hashes(db_url) == hashes_of(REGTEST_CHAIN)
