"""Index a real anvil chain through the fault-injecting proxy (RELIABILITY.md section 8.C).

Every fault kind of `FaultProxy` is injected into a sync of a chain with transactions and
logs. Whatever the node gets wrong, the stored chain must end up exactly the node's (checked
against anvil directly, never through the proxy): nothing invalid is written, a transient
fault is waited out, a fault that cannot pass ends the sync with an error instead of a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from indexer import config, daemon, errors
from indexer.chain import rpc
from indexer.devnet.anvil import Anvil
from indexer.devnet.traffic import FillSummary, fill_blocks
from indexer.sync.progress import Progress
from tests.integration.helpers import (
    async_wait_for,
    checkpoint,
    make_config,
    run_cli,
    sync_to,
    write_config,
)
from tests.support.faultproxy import FAULT_KINDS, FaultProxy
from tests.support.oracle import assert_equals_node, check_invariants, table_counts

HEIGHT = 60
RESUME_AT = 20  # a clean sync stops here first, so faults hit batches above a stored tip
BLOCK, LOGS, HEAD = "eth_getBlockByNumber", "eth_getLogs", "eth_blockNumber"
RECEIPTS = "eth_getBlockReceipts"
# Several batches, two in flight: faults land mid-sync, next to healthy requests.
BATCHES: dict[str, Any] = {"batch_size": 16, "prefetch_batches": 2}
SYNC_TIMEOUT_SECS = 30.0


@dataclasses.dataclass(frozen=True)
class Chain:
    node: Anvil
    summary: FillSummary

    @property
    def url(self) -> str:
        return self.node.url


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
    """One anvil chain of HEIGHT blocks with traffic, shared read-only by this module."""
    with Anvil() as node:
        summary = fill_blocks(node, HEIGHT, txs_per_block=(1, 3), seed=7)
        assert summary.log_count > HEIGHT // 2, "the chain must hold logs for the log faults"
        yield Chain(node, summary)


@pytest.fixture
def proxy(chain: Chain) -> Iterator[FaultProxy]:
    with FaultProxy(chain.url) as running:
        yield running


def assert_indexed_exactly(db_url: str, chain: Chain) -> None:
    """The stored chain is the node's, block 0 to HEIGHT, with every transaction and log."""
    assert check_invariants(db_url, "dev") == HEIGHT
    assert_equals_node(db_url, "dev", chain.url)  # anvil itself, not the proxy
    assert table_counts(db_url) == {
        "blocks": HEIGHT + 1,
        "transactions": chain.summary.tx_count,
        "logs": chain.summary.log_count,
        "reorgs": 0,
    }


@contextlib.asynccontextmanager
async def background_sync(
    cfg: config.Config, *, to_height: int | None = None
) -> AsyncIterator[asyncio.Task[int]]:
    """Run `indexer sync` as a task; on the way out stop it and wait for it to end."""
    stop = asyncio.Event()
    task = asyncio.create_task(
        daemon.run_sync(cfg, to_height=to_height, stop=stop, progress=Progress(tty=False)),
        name="sync",
    )
    try:
        yield task
    finally:
        stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), 10)
        except BaseException:
            task.cancel()
            raise


# -- Every fault kind, once or twice, then the node answers properly again


@dataclasses.dataclass(frozen=True)
class Case:
    kind: str
    method: str | None
    times: int = 1
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    chain_keys: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    check_used_up: bool = True  # False: a standing condition of the node, never used up


# The deadline must fire fast for the faults that hold the answer back.
_DEADLINE = {"request_timeout_secs": 1.0}
_GET_LOGS = {"store": "logs"}  # the cases that alter eth_getLogs answers
CASES = [
    Case("http_500", BLOCK),
    Case("http_503", BLOCK, times=2),
    Case("http_429", BLOCK, params={"retry_after": 1}),
    Case("http_401", BLOCK),  # a wrong API key, once (test_node_faults: one that stays)
    Case("http_403", BLOCK),
    Case("timeout", BLOCK, params={"delay": 30.0}, chain_keys=_DEADLINE),
    Case("slow_body", BLOCK, params={"delay": 0.05}, chain_keys=_DEADLINE),
    Case("malformed_json", BLOCK, times=2),
    Case("truncated_json", BLOCK),
    Case("rpc_parse_error", BLOCK),  # -32700 to the whole batch, once
    Case("rpc_error", LOGS, times=2, chain_keys=_GET_LOGS),  # -32000: the node failed
    Case("wrong_id", BLOCK),
    Case("missing_item", LOGS, chain_keys=_GET_LOGS),
    Case("null_result", BLOCK, params={"index": 3}),
    Case("wrong_block_number", BLOCK, params={"index": 2}),
    Case("break_link", BLOCK),
    Case("break_first_link", BLOCK),
    Case("foreign_log", LOGS, chain_keys=_GET_LOGS),
    Case("drop_logs", LOGS, chain_keys=_GET_LOGS),
    Case("lag", HEAD, params={"blocks": 5}),
    # Well-formed lies: refused by verification (a hash or root that does not recompute).
    Case("change_tx_value", BLOCK),
    Case("change_header", BLOCK, params={"field": "stateRoot"}),
    Case("drop_receipt_log", RECEIPTS),
    Case("swap_status", RECEIPTS),
    Case("duplicate_tx", BLOCK),
    Case("drop_last_log", LOGS, chain_keys=_GET_LOGS),
    # A value its column cannot hold: refused by the column check, never stored changed.
    Case("set_field", BLOCK, params={"field": "block.size", "value": "0xffffffffff"}),
    # A node with a batch limit below ours: the sync halves its batches until they pass.
    Case("batch_limit", None, times=1_000_000, params={"max_items": 6}, check_used_up=False),
]


def test_every_fault_kind_has_a_case() -> None:
    assert sorted(c.kind for c in CASES) == sorted(FAULT_KINDS)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.kind) for c in CASES])
async def test_transient_fault_is_waited_out_and_nothing_invalid_is_written(
    db_url: str, chain: Chain, proxy: FaultProxy, case: Case
) -> None:
    cfg = make_config(db_url, proxy.url, **BATCHES, **case.chain_keys)
    assert await sync_to(cfg, RESUME_AT, timeout_secs=SYNC_TIMEOUT_SECS) == errors.EXIT_OK
    fault = proxy.add_fault(case.kind, method=case.method, times=case.times, **case.params)

    assert await sync_to(cfg, HEIGHT, timeout_secs=SYNC_TIMEOUT_SECS) == errors.EXIT_OK

    assert fault.applied >= 1 and (fault.remaining == 0 or not case.check_used_up), fault
    assert_indexed_exactly(db_url, chain)


@pytest.mark.parametrize("start_block", [0, 30])
async def test_lying_parent_hash_in_the_very_first_batch_is_not_written(
    db_url: str, chain: Chain, proxy: FaultProxy, start_block: int
) -> None:
    # With nothing stored there is no tip to link to: block 0's parent must be 32 zero bytes,
    # and above it the first batch links to the node's block at start_block - 1.
    fault = proxy.add_fault("break_first_link")
    # One batch in flight, so the fault surely hits the first one.
    cfg = make_config(db_url, proxy.url, start_block=start_block, batch_size=16, prefetch_batches=1)

    assert await sync_to(cfg, HEIGHT, timeout_secs=SYNC_TIMEOUT_SECS) == errors.EXIT_OK

    assert fault.applied == 1
    assert check_invariants(db_url, "dev", start_block=start_block) == HEIGHT
    assert_equals_node(db_url, "dev", chain.url, start=start_block)


# -- Faults that do not go away


def syncer_retried(caplog: pytest.LogCaptureFixture) -> bool:
    """True once the sync loop itself gave up on a batch and scheduled a refetch (a refused
    answer - corrupt, or not linking inside - is said as such, at error level)."""
    return any(
        r.name == "indexer.sync.syncer"
        and getattr(r, "action", None) in ("retry", "refused_answer")
        for r in caplog.records
    )


# Each kind fails the batch at a different layer, and each must end in the syncer's retry:
# break_link in validate.check_links (BrokenBatch), wrong_block_number in the EVM mapping
# (ResponseCorrupted), rpc_error (-32000, e.g. "header not found") as a JSON-RPC error that
# is not fatal. A transport fault (http_503) is not here: on a single URL the transport's
# circuit breaker opens once its attempts are used up and asks again only after a fixed
# 30 s cool-down, too slow for this suite (test_fails_over_when_the_first_url_answers_503
# covers the breaker with a second URL).
@pytest.mark.parametrize("kind", ["break_link", "wrong_block_number", "rpc_error"])
async def test_persistent_fault_writes_nothing_until_it_clears(
    db_url: str,
    chain: Chain,
    proxy: FaultProxy,
    caplog: pytest.LogCaptureFixture,
    kind: str,
) -> None:
    cfg = make_config(db_url, proxy.url, **BATCHES)
    assert await sync_to(cfg, RESUME_AT, timeout_secs=SYNC_TIMEOUT_SECS) == errors.EXIT_OK
    before = table_counts(db_url)
    caplog.clear()
    fault = proxy.add_fault(kind, method=BLOCK, times=1_000_000)

    async with background_sync(cfg, to_height=HEIGHT) as task:
        await async_wait_for(
            lambda: syncer_retried(caplog) or task.done(), timeout_secs=20, what="a retry"
        )
        applied = fault.applied
        # The refetch after the back-off meets the same fault again.
        await async_wait_for(
            lambda: fault.applied > applied or task.done(), timeout_secs=20, what="a refetch"
        )
        assert not task.done(), "the sync must keep retrying, not give up"
        assert check_invariants(db_url, "dev") == RESUME_AT  # nothing of 21..60 written
        assert table_counts(db_url) == before
        proxy.clear()
        assert await asyncio.wait_for(asyncio.shield(task), 20) == errors.EXIT_OK

    assert_indexed_exactly(db_url, chain)


async def test_lagging_head_is_never_passed_then_followed(db_url: str, anvil: Anvil) -> None:
    summary = fill_blocks(anvil, 30, txs_per_block=(1, 3), seed=8)
    with FaultProxy(anvil.url) as proxy:
        fault = proxy.add_fault("lag", times=1_000_000, blocks=5)
        cfg = make_config(db_url, proxy.url, batch_size=8)
        async with background_sync(cfg) as task:
            await async_wait_for(lambda: checkpoint(db_url) == 25, what="checkpoint 25")
            polls = fault.applied
            await async_wait_for(lambda: fault.applied >= polls + 3,
                                 what="several polls of the lagging head")  # fmt: skip
            assert checkpoint(db_url) == 25
            proxy.clear()
            await async_wait_for(lambda: checkpoint(db_url) == 30, what="checkpoint 30")
            assert not task.done()
        assert task.result() == errors.EXIT_OK
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url)
    assert table_counts(db_url)["transactions"] == summary.tx_count


# -- Failover and errors that retrying cannot cure


async def test_fails_over_when_the_first_url_answers_503(
    db_url: str, chain: Chain, proxy: FaultProxy
) -> None:
    # Only block requests fail, so the eth_chainId check of every URL at startup passes.
    fault = proxy.add_fault("http_503", method=BLOCK, times=1_000_000)
    cfg = make_config(db_url, [proxy.url, chain.url], **BATCHES)

    assert await sync_to(cfg, HEIGHT, timeout_secs=SYNC_TIMEOUT_SECS) == errors.EXIT_OK

    assert fault.applied >= 1
    assert_indexed_exactly(db_url, chain)


async def test_fails_over_when_the_first_url_keeps_answering_corrupt_blocks(
    db_url: str, chain: Chain, proxy: FaultProxy
) -> None:
    # An endpoint that answers well-formed but wrong data ("asked for block N, got N+1") is
    # failed over like a transport failure (RELIABILITY C8: "rejected; retry or other
    # provider"), not retried forever while a healthy one is configured.
    fault = proxy.add_fault("wrong_block_number", times=1_000_000)
    cfg = make_config(db_url, [proxy.url, chain.url], **BATCHES)

    # With failover this takes about a second.
    assert await sync_to(cfg, HEIGHT, timeout_secs=8) == errors.EXIT_OK

    assert fault.applied >= 1
    assert_indexed_exactly(db_url, chain)


def test_method_not_found_ends_the_sync_with_an_error(
    db_url: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    fault = proxy.add_fault(
        "rpc_error", method=BLOCK, times=1_000_000, code=-32601, message="method not found"
    )
    path = write_config(tmp_path / "c.toml", db_url, proxy.url, **BATCHES)

    result = run_cli("--config", str(path), "sync", "--to", str(HEIGHT), timeout_secs=60)

    # A clear one-line error, not a traceback of the task groups it crossed.
    assert result.returncode == errors.EXIT_FAILURE, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and "method not found" in last_line, result.stderr
    # Not retried: at most the batches that were already in flight got the error.
    assert 1 <= fault.applied <= BATCHES["prefetch_batches"]
    assert table_counts(db_url)["blocks"] == 0


async def test_endpoint_unreachable_at_start_joins_once_it_answers(
    db_url: str, chain: Chain, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second endpoint cannot tell its chain id at start: sync starts on the first alone,
    # keeps the second out of rotation, and takes it in once it answers with the right id.
    monkeypatch.setattr(rpc, "RECHECK_INTERVAL_SECS", 0.2)
    down = proxy.add_fault("http_503", method="eth_chainId", times=1_000_000)
    direct = FaultProxy(chain.url)
    with direct:
        cfg = make_config(db_url, [direct.url, proxy.url], **BATCHES)
        async with background_sync(cfg) as task:
            await async_wait_for(lambda: checkpoint(db_url) == HEIGHT, what="sync on url 1")
            assert not any("eth_getBlockByNumber" in s.methods for s in proxy.served)
            proxy.clear()
            # Take the first endpoint away: requests must now go to the second.
            direct.add_fault("http_503", times=1_000_000)
            await async_wait_for(
                lambda: any(s.methods == ("eth_chainId",) and s.status == 200
                            for s in proxy.served),
                what="the recheck of url 2",
            )  # fmt: skip
            assert not task.done()
        assert down.applied >= 1
    assert_indexed_exactly(db_url, chain)


async def test_malformed_head_answers_are_retried_by_the_transport(
    db_url: str, chain: Chain, proxy: FaultProxy
) -> None:
    # Found by the soak benchmark: a malformed eth_blockNumber answer used to become a sync
    # failure with a doubling backoff, so a burst of six stalled the chain for half a minute.
    bad = proxy.add_fault("null_result", method="eth_blockNumber", times=6)
    cfg = make_config(db_url, proxy.url, **BATCHES)
    assert await sync_to(cfg, HEIGHT, timeout_secs=15) == errors.EXIT_OK
    assert bad.remaining == 0
    assert_indexed_exactly(db_url, chain)
