"""Property: after any sequence of forks, the stored chain is the node's canonical chain.

Random fork trees and reorg sequences on a fake node (tests/support/fakechain.py) drive the
real syncer, reorg logic and Postgres store. After every step the stored chain equals the
node's canonical chain, no rollback exceeded max_reorg_depth, and a deeper reorg halted the
chain without deleting anything (then an operator rewind recovers it).
"""

from __future__ import annotations

import asyncio

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indexer import errors
from indexer.config import DatabaseConfig, EvmChainConfig
from indexer.models import BlockRef
from indexer.store import Store
from indexer.store.writer import ChainWriter
from indexer.sync.progress import Progress
from indexer.sync.syncer import ChainSyncer
from tests.support.fakechain import FakeChain

LIMIT = 6

node_op = st.one_of(
    st.tuples(st.just("extend"), st.integers(1, 25), st.just(0)),
    st.tuples(st.just("reorg"), st.integers(1, LIMIT + 4), st.integers(0, 6)),
)
steps = st.lists(st.lists(node_op, min_size=1, max_size=2), min_size=1, max_size=7)


def stored_chain(db_url: str) -> list[bytes]:
    with psycopg.connect(db_url) as conn:
        return [bytes(r[0]) for r in conn.execute("SELECT hash FROM blocks ORDER BY number")]


def reorg_depths(db_url: str) -> list[tuple[str, int]]:
    with psycopg.connect(db_url) as conn:
        return [(str(k), int(d)) for k, d in conn.execute("SELECT kind, depth FROM reorgs")]


def common_prefix(a: list[bytes], b: list[bytes]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


async def run_steps(db_url: str, plan: list[list[tuple[str, int, int]]], batch_size: int) -> None:
    cfg = EvmChainConfig(name="fake", kind="evm", urls=("http://127.0.0.1:1",), chain_id=1,
                      max_reorg_depth=LIMIT, batch_size=batch_size, poll_interval_secs=0.01,
                      prefetch_batches=2)  # fmt: skip
    db = DatabaseConfig(url=db_url)
    node = FakeChain(12)
    async with Store(db) as store:
        chain_id = await store.register_chain(name="fake", kind="evm", chain_id=1,
                                              genesis_hash=None, start_block=0)  # fmt: skip
        async with ChainWriter(db, chain=chain_id, name="fake") as writer:

            async def sync() -> None:
                syncer = ChainSyncer(cfg, source=node, writer=writer, stop=asyncio.Event(),
                                     progress=Progress(tty=False), to_height=node.tip)  # fmt: skip
                await asyncio.wait_for(syncer.run(), 30)

            await sync()
            for step in plan:
                before = stored_chain(db_url)
                for op, a, b in step:
                    if op == "extend":
                        node.extend(a)
                    else:
                        node.reorg(min(a, len(node.canonical)), min(a, len(node.canonical)) + b)
                fork = common_prefix(before, node.canonical) - 1
                depth = len(before) - 1 - fork
                try:
                    await sync()
                except errors.ReorgTooDeep as exc:
                    assert depth > LIMIT, f"halted at depth {depth} within the limit"
                    assert f"depth {depth}" in str(exc)
                    assert stored_chain(db_url) == before, "a halt must delete nothing"
                    tip = await writer.tip()
                    assert tip is not None
                    fork_ref = BlockRef(fork, before[fork]) if fork >= 0 else None
                    await writer.roll_back(expected=tip, fork=fork_ref, fork_number=fork,
                                           kind="rewind", new_tip_hash=None)  # fmt: skip
                    await sync()
                else:
                    assert depth <= LIMIT or fork == len(before) - 1
                assert stored_chain(db_url) == node.canonical
                for kind, d in reorg_depths(db_url):
                    assert kind == "rewind" or d <= LIMIT


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=steps, batch_size=st.sampled_from([1, 3, 8, 50]))
def test_stored_chain_always_equals_canonical(
    db_url: str, plan: list[list[tuple[str, int, int]]], batch_size: int
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("TRUNCATE chains, blocks, transactions, logs, checkpoints, reorgs CASCADE")
    asyncio.run(run_steps(db_url, plan, batch_size))
