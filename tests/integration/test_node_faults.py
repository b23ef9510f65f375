"""Hostile world, issue 11 items 1-3: node faults that had no real test (RELIABILITY.md C1,
C4, C6), against a real anvil and a real Postgres.

- A connect that never completes: a black hole on loopback (a listening socket whose accept
  queue is full, so the kernel drops every SYN and `connect()` waits for its own timeout).
- HTTP 401 / 403: an endpoint whose API key is wrong.
- JSON-RPC -32700 (parse error) and -32600 (invalid request) in answer to a valid request.

With a healthy second endpoint each is failed over and the stored chain is the node's. With
none, the sync waits it out (never an exit), says what it means, and takes up again once the
endpoint answers.
"""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from indexer import config, errors
from indexer.chain import rpc
from indexer.devnet.anvil import Anvil
from indexer.devnet.traffic import fill_blocks
from indexer.http.app import HttpServer
from tests.electrum import regtest
from tests.electrum.fake_electrum import REGTEST_CHAIN, FakeElectrum, hashes_of
from tests.integration.helpers import checkpoint, eventually, make_config, running_sync, sync_to
from tests.support.faultproxy import FaultProxy
from tests.support.oracle import assert_equals_node, check_invariants, table_counts
from tests.support.tcpproxy import TcpProxy

LOOPBACK = "127.0.0.1"
HEIGHT = 40
RESUME_AT = 20
BLOCK = "eth_getBlockByNumber"
BATCHES: dict[str, Any] = {"batch_size": 16, "prefetch_batches": 2}
# Secrets in a provider URL: never shown anywhere (README, "Secrets").
SECRET_PATH, SECRET_QUERY = "KEYinPATH0x5eC2e7", "KEYinQUERY0x5eC2e7"
MEANING = {
    "http_401": "HTTP 401: the endpoint refused our credentials (check the key in the URL)",
    "http_403": "HTTP 403: the endpoint denied access (check the key in the URL, and what "
    "it is allowed to call)",
}


class BlackHole:
    """A loopback port whose TCP connects never complete (RELIABILITY C1).

    A listening socket with a backlog of 0 queues one connection; one that nobody accepts
    fills the queue, and the kernel then drops every further SYN: a client's `connect()`
    is neither accepted nor refused, it waits until its own timeout.
    """

    def __init__(self, port: int = 0) -> None:
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((LOOPBACK, port))
        self._listener.listen(0)
        self.port = int(self._listener.getsockname()[1])
        self._filler = socket.socket()
        self._filler.setblocking(False)
        self._filler.connect_ex((LOOPBACK, self.port))
        # Its handshake completes at once, unless a client got in first on a reused port:
        # then that client's connection fills the queue instead.
        select.select([], [self._filler], [], 1.0)

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._filler.close()
        self._listener.close()

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://{LOOPBACK}:{self.port}"

    def assert_swallows(self) -> None:
        """A connect here is neither accepted nor refused (it hangs)."""
        with pytest.raises(TimeoutError):
            socket.create_connection((LOOPBACK, self.port), timeout=0.3).close()


@pytest.fixture(scope="module")
def chain() -> Iterator[Anvil]:
    """One anvil chain of HEIGHT blocks with traffic, shared read-only by this module."""
    with Anvil() as node:
        fill_blocks(node, HEIGHT, txs_per_block=(1, 3), seed=11)
        yield node


@pytest.fixture
def proxy(chain: Anvil) -> Iterator[FaultProxy]:
    with FaultProxy(chain.url) as running:
        yield running


def assert_indexed_exactly(db_url: str, node: Anvil) -> None:
    assert check_invariants(db_url, "dev") == HEIGHT
    assert_equals_node(db_url, "dev", node.url, receipts=True)  # anvil itself, not a proxy


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def records(caplog: pytest.LogCaptureFixture, action: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "action", None) == action]


def assert_no_secret(caplog: pytest.LogCaptureFixture, *also: str) -> None:
    for text in [caplog.text, *messages(caplog), *also]:
        assert SECRET_PATH not in text and SECRET_QUERY not in text, text


async def refused_reason(server: HttpServer) -> str | None:
    """The chain's readiness reason while it is stuck on a refused answer (else None)."""
    body = await server.readiness()
    reason = body["chains"]["dev"]["reason"]
    return str(reason) if reason and str(reason).startswith("refused answer") else None


# -- 1. A connect that never completes


async def test_a_black_holed_endpoint_is_timed_out_and_the_other_one_syncs(
    db_url: str, chain: Anvil, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with BlackHole() as hole:
        hole.assert_swallows()
        cfg = make_config(db_url, [hole.url(), chain.url], request_timeout_secs=1.0, **BATCHES)

        assert await sync_to(cfg, HEIGHT, timeout_secs=30) == errors.EXIT_OK

    assert_indexed_exactly(db_url, chain)
    # Named for what it is, bounded by request_timeout_secs (not the system's minutes).
    said = [m for m in messages(caplog) if hole.url() in m]
    assert any("no connection within 1s (connect timeout)" in m for m in said), said


async def test_rechecking_a_black_holed_endpoint_holds_up_no_request(
    chain: Anvil, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An endpoint that did not answer at start is asked again now and then; while that
    # question hangs in the hole (up to the connect timeout), requests go on elsewhere.
    monkeypatch.setattr(rpc, "RECHECK_INTERVAL_SECS", 0.0)
    with BlackHole() as hole:
        async with rpc.RpcClient([hole.url(), chain.url], timeout_secs=30.0,
                                 label="dev") as client:  # fmt: skip
            client.set_verified(hole.url(), False)
            rechecked = asyncio.Event()

            async def recheck(url: str) -> None:
                try:
                    await client.call("eth_chainId", url=url, attempts=1)
                except errors.SourceError:
                    pass
                finally:
                    rechecked.set()

            client.verifier = recheck
            head = await asyncio.wait_for(client.call("eth_blockNumber"), 30)

            assert int(head, 16) == HEIGHT
            assert not rechecked.is_set(), "the request waited for the recheck"


async def test_an_endpoint_that_falls_into_a_black_hole_is_waited_out(
    db_url: str, anvil: Anvil, caplog: pytest.LogCaptureFixture
) -> None:
    fill_blocks(anvil, 8, txs_per_block=(1, 2), seed=12)
    caplog.set_level(logging.INFO)
    upstream = urllib.parse.urlsplit(anvil.url)
    with TcpProxy(LOOPBACK, int(upstream.port or 0)) as front:
        url = f"http://{LOOPBACK}:{front.port}"
        cfg = make_config(db_url, url, request_timeout_secs=1.0, batch_size=4)
        async with running_sync(cfg) as (task, runtime):
            state = runtime.chains[0].state
            await eventually(lambda: state.tip is not None and state.tip.number == 8,
                             what="the tip 8")  # fmt: skip
            caplog.clear()
            front.cut()
            with BlackHole(front.port) as hole:
                anvil.mine(4)  # the node moves on where we cannot see it
                hole.assert_swallows()
                # The sync loop gave up on one round of attempts, each a connect timeout,
                # and tries again (with capped backoff): no exit.
                retry = await eventually(
                    lambda: records(caplog, "retry"),
                    timeout_secs=30,
                    what="the sync loop's retry",
                )
                assert f"{url}: no connection within 1s (connect timeout)" in retry[0].getMessage()
                assert not task.done()
                assert state.tip is not None and state.tip.number == 8
                # Not ready, whatever the head last seen says, once it keeps failing.
                reason = await eventually(
                    lambda: state.not_ready(max_lag_blocks=10**6), timeout_secs=60,
                    what="a readiness reason",
                )  # fmt: skip
                assert reason.startswith("waiting: node: ") and "connect timeout" in reason
            front.start()  # the node is reachable again: the sync takes up by itself
            await eventually(lambda: state.tip is not None and state.tip.number == 12,
                             timeout_secs=30, what="the tip 12")  # fmt: skip
            await eventually(
                lambda: state.not_ready(max_lag_blocks=10**6) is None, what="ready again"
            )
    assert check_invariants(db_url, "dev") == 12
    assert_equals_node(db_url, "dev", anvil.url, receipts=True)


def electrum_config(db_url: str, urls: list[str]) -> config.Config:
    chain = {
        "name": "btc",
        "kind": "electrum",
        "urls": urls,
        "genesis_hash": regtest.GENESIS_HASH_HEX,
        "batch_size": 100,
        "request_timeout_secs": 1.0,
        "poll_interval_secs": 0.2,
    }
    return config.build({"database": {"url": db_url}, "chains": [chain]}, {})


async def test_a_black_holed_electrum_server_is_timed_out_and_the_other_one_syncs(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    tip = len(REGTEST_CHAIN) - 1
    with BlackHole() as hole:
        async with FakeElectrum(REGTEST_CHAIN) as fake:
            cfg = electrum_config(db_url, [hole.url("tcp"), fake.url])

            assert await sync_to(cfg, tip, timeout_secs=30) == errors.EXIT_OK

    assert check_invariants(db_url, "btc") == tip
    assert_equals_hashes(db_url, hashes_of(REGTEST_CHAIN))
    said = [m for m in messages(caplog) if hole.url("tcp") in m]
    assert any("no connection within 1s" in m for m in said), said


async def test_an_electrum_server_that_falls_into_a_black_hole_is_waited_out(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    tip = len(REGTEST_CHAIN) - 1
    async with FakeElectrum(REGTEST_CHAIN) as fake:
        with TcpProxy(LOOPBACK, int(urllib.parse.urlsplit(fake.url).port or 0)) as front:
            url = f"tcp://{LOOPBACK}:{front.port}"
            async with running_sync(electrum_config(db_url, [url])) as (task, runtime):
                state, servers = runtime.chains[0].state, runtime.chains[0].rpc
                await eventually(lambda: state.tip is not None and state.tip.number == tip,
                                 what=f"the tip {tip}")  # fmt: skip
                caplog.clear()
                front.cut()
                with BlackHole(front.port) as hole:
                    hole.assert_swallows()
                    # Idle at the head, the loop checks its tip: the server is gone.
                    retry = await eventually(
                        lambda: records(caplog, "retry"),
                        timeout_secs=30,
                        what="the sync loop's retry",
                    )
                    assert f"{url}: no connection within 1s" in retry[0].getMessage()
                    assert not task.done()
                front.start()  # back: the next check of the tip goes through
                await eventually(lambda: servers.endpoints[0].circuit == "closed",
                                 timeout_secs=30, what="the server answering again")  # fmt: skip
                assert not task.done()
    assert check_invariants(db_url, "btc") == tip
    assert_equals_hashes(db_url, hashes_of(REGTEST_CHAIN))


def assert_equals_hashes(db_url: str, hashes: list[bytes]) -> None:
    with psycopg.connect(db_url) as conn:
        stored = [bytes(h) for (h,) in conn.execute("SELECT hash FROM blocks ORDER BY number")]
    assert stored == hashes


# -- 2. HTTP 401 / 403: a wrong API key


@pytest.mark.parametrize("kind", ["http_401", "http_403"])
async def test_a_wrong_api_key_is_failed_over_and_said_plainly(
    db_url: str, chain: Anvil, proxy: FaultProxy, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    caplog.set_level(logging.DEBUG)
    keyed = f"{proxy.url}/v3/{SECRET_PATH}?apikey={SECRET_QUERY}"
    fault = proxy.add_fault(kind, method=BLOCK, times=1_000_000)
    cfg = make_config(db_url, [keyed, chain.url], **BATCHES)

    assert await sync_to(cfg, HEIGHT, timeout_secs=20) == errors.EXIT_OK

    assert fault.applied >= 1
    assert_indexed_exactly(db_url, chain)
    said = [m for m in messages(caplog) if MEANING[kind] in m]
    assert said and f"{proxy.url}/***/***?apikey=***: {MEANING[kind]}" in said[0], said
    assert_no_secret(caplog)


# -- 3. JSON-RPC -32700 / -32600 in answer to a valid request


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        pytest.param("rpc_parse_error", {}, id="parse_error"),  # to the whole batch
        # to one item of the batch
        pytest.param("rpc_error", {"code": -32600, "message": "invalid request"}, id="invalid"),
    ],
)
async def test_a_parse_error_or_invalid_request_from_one_endpoint_is_failed_over(
    db_url: str, chain: Anvil, proxy: FaultProxy, kind: str, params: dict[str, Any]
) -> None:
    fault = proxy.add_fault(kind, method=BLOCK, times=1_000_000, **params)
    cfg = make_config(db_url, [proxy.url, chain.url], **BATCHES)

    assert await sync_to(cfg, HEIGHT, timeout_secs=20) == errors.EXIT_OK

    assert fault.applied >= 1
    assert_indexed_exactly(db_url, chain)


# -- 2 and 3 with no other endpoint: a refused answer, waited out, never an exit


@pytest.mark.parametrize(
    ("kind", "meaning"),
    [
        pytest.param("http_401", MEANING["http_401"], id="http_401"),
        pytest.param("rpc_parse_error", "JSON-RPC -32700 (parse error)", id="parse_error"),
    ],
)
async def test_the_only_endpoint_refusing_us_is_said_and_waited_out(
    db_url: str,
    chain: Anvil,
    proxy: FaultProxy,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    meaning: str,
) -> None:
    keyed = f"{proxy.url}/v3/{SECRET_PATH}?apikey={SECRET_QUERY}"
    cfg = make_config(db_url, keyed, **BATCHES)
    assert await sync_to(cfg, RESUME_AT, timeout_secs=20) == errors.EXIT_OK
    before = table_counts(db_url)
    caplog.set_level(logging.INFO)
    proxy.add_fault(kind, method=BLOCK, times=1_000_000)
    async with running_sync(cfg) as (task, runtime):
        state = runtime.chains[0].state
        server = HttpServer(runtime, listen=f"{LOOPBACK}:0", ready_max_lag_blocks=10**6)

        said = await eventually(lambda: refused_reason(server), timeout_secs=30,
                                what="a refused-answer reason")  # fmt: skip

        assert said.startswith(f"refused answer at {RESUME_AT + 1:,d}: "), said
        assert meaning in said, said
        assert not (await server.readiness())["ready"]  # /health/ready answers 503
        # Tried again with capped backoff, said once at error level; no exit.
        await eventually(lambda: state.refused_answers >= 2, what="a second refusal")
        assert not task.done()
        refused = records(caplog, "refused_answer")
        assert len(refused) == 1 and refused[0].levelno == logging.ERROR, refused
        assert checkpoint(db_url) == RESUME_AT and table_counts(db_url) == before
        assert_no_secret(caplog, said)

        proxy.clear()  # the endpoint answers properly again: the chain moves on
        await eventually(lambda: state.tip is not None and state.tip.number == HEIGHT,
                         what="the chain to catch up")  # fmt: skip
        assert await refused_reason(server) is None
    assert_indexed_exactly(db_url, chain)


async def test_a_node_without_a_method_we_need_halts_the_chain_instead_of_exiting(
    db_url: str, anvil: Anvil, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Following (no --to): -32601 for eth_getBlockByNumber from the only endpoint halts the
    # chain, said, tried again now and then; restarting would not help, exiting would loop.
    from indexer.sync import syncer

    monkeypatch.setattr(syncer, "DENIED_RECHECK_SECS", 0.5)
    fill_blocks(anvil, 6, txs_per_block=(1, 2), seed=14)
    caplog.set_level(logging.INFO)
    with FaultProxy(anvil.url) as proxy:
        fault = proxy.add_fault("rpc_error", method="eth_getBlockByNumber", times=1_000_000,
                                code=-32601, message="method not found")  # fmt: skip
        cfg = make_config(db_url, proxy.url, batch_size=4)
        async with running_sync(cfg) as (task, runtime):
            state = runtime.chains[0].state
            reason = await eventually(
                lambda: (
                    (state.not_ready(max_lag_blocks=10**6) or "").startswith("halted: ")
                    and state.not_ready(max_lag_blocks=10**6)
                ),
                what="a halted reason",
            )
            assert "method not found" in reason, reason
            await eventually(lambda: fault.applied >= 3, what="tried again")
            assert not task.done()
            assert len(records(caplog, "halted")) == 1
            proxy.clear()  # the operator fixed the node
            await eventually(
                lambda: state.tip is not None and state.tip.number == 6, what="the tip 6"
            )
            assert state.halted is None
    assert check_invariants(db_url, "dev") == 6
