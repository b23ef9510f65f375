"""FaultProxy: pass-through, `times` counting, and one test per fault kind against real anvil."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import socket
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.support import faultproxy
from tests.support.faultproxy import FaultProxy, Served

ANVIL = (
    Path(__file__).resolve().parents[2]
    / ".tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
)
# Init code that emits one LOG0 (PUSH1 0 PUSH1 0 LOG0 STOP), so the chain holds a log.
LOG_INIT_CODE = "0x60006000a000"
HEAD = 6  # blocks 1-5 mined empty, block 6 holds the log
JSON_HEADERS = {"Content-Type": "application/json"}  # anvil rejects requests without it


# -- Helpers


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _rpc_sync(url: str, method: str, *params: Any) -> Any:
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    request = urllib.request.Request(url, body, JSON_HEADERS)
    with urllib.request.urlopen(request, timeout=5) as resp:
        return orjson.loads(resp.read())["result"]


def _wait_until_up(url: str, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            _rpc_sync(url, "eth_chainId")
        except OSError:
            time.sleep(0.05)
        else:
            return True
    return False


@pytest.fixture(scope="module")
def anvil_url() -> Iterator[str]:
    """Run anvil on a free loopback port with HEAD blocks, the last one holding a log."""
    for _ in range(3):  # the port may be taken between _free_port() and anvil's bind
        port = _free_port()
        proc = subprocess.Popen(
            [str(ANVIL), "--port", str(port), "--silent"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            if _wait_until_up(url, proc):
                _rpc_sync(url, "anvil_mine", hex(HEAD - 1))
                sender = _rpc_sync(url, "eth_accounts")[0]
                tx = {"from": sender, "data": LOG_INIT_CODE}
                tx_hash = _rpc_sync(url, "eth_sendTransaction", tx)
                while _rpc_sync(url, "eth_getTransactionReceipt", tx_hash) is None:
                    time.sleep(0.01)  # anvil mines the transaction right after answering
                assert int(_rpc_sync(url, "eth_blockNumber"), 16) == HEAD
                yield url
                return
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    raise RuntimeError("anvil did not start")


@pytest.fixture
def proxy(anvil_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(anvil_url) as proxy:
        yield proxy


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@dataclasses.dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


async def post(
    session: aiohttp.ClientSession, url: str, payload: Any, *, timeout_secs: float = 5.0
) -> Reply:
    timeout = aiohttp.ClientTimeout(total=timeout_secs)
    body = orjson.dumps(payload)
    async with session.post(url, data=body, headers=JSON_HEADERS, timeout=timeout) as resp:
        return Reply(resp.status, resp.headers, await resp.read())


def req(method: str, *params: Any, rid: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": list(params)}


def get_block(height: int) -> dict[str, Any]:
    return req("eth_getBlockByNumber", hex(height), False, rid=height)


def get_blocks(start: int, count: int) -> list[dict[str, Any]]:
    return [get_block(h) for h in range(start, start + count)]


ALL_LOGS = req("eth_getLogs", {"fromBlock": "0x0", "toBlock": hex(HEAD)})
NO_LOGS = req("eth_getLogs", {"fromBlock": "0x1", "toBlock": hex(HEAD - 1)})


# -- Pass-through, counting, lifecycle


async def test_single_passes_through(
    anvil_url: str, proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    direct = await post(session, anvil_url, get_block(3))
    via = await post(session, proxy.url, get_block(3))
    assert via.status == 200
    assert via.json() == direct.json()
    assert via.json()["result"]["number"] == "0x3"
    assert proxy.served == [Served(("eth_getBlockByNumber",), False, None, 200)]


async def test_batch_passes_through(
    anvil_url: str, proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    batch = [*get_blocks(1, 3), req("eth_blockNumber", rid=99)]
    via = await post(session, proxy.url, batch)
    assert via.json() == (await post(session, anvil_url, batch)).json()
    assert [item["id"] for item in via.json()] == [1, 2, 3, 99]
    assert proxy.served == [
        Served(("eth_getBlockByNumber",) * 3 + ("eth_blockNumber",), True, None, 200)
    ]


def test_works_from_plain_threads_without_an_event_loop(proxy: FaultProxy) -> None:
    fault = proxy.add_fault("lag", blocks=2)
    assert _rpc_sync(proxy.url, "eth_blockNumber") == hex(HEAD - 2)
    assert _rpc_sync(proxy.url, "eth_blockNumber") == hex(HEAD)
    assert fault.wait(timeout_secs=0)


async def test_times_counts_down_and_method_filters(
    proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    fault = proxy.add_fault("rpc_error", method="eth_chainId", times=2)
    assert (await post(session, proxy.url, req("eth_blockNumber"))).json()["result"] == hex(HEAD)
    assert (fault.applied, fault.remaining, fault.wait(timeout_secs=0)) == (0, 2, False)
    answers = [(await post(session, proxy.url, req("eth_chainId"))).json() for _ in range(3)]
    assert [("error" in a, "result" in a) for a in answers] == [(True, False)] * 2 + [(False, True)]
    assert (fault.applied, fault.remaining, fault.wait(timeout_secs=0)) == (2, 0, True)
    assert [s.fault for s in proxy.served] == [None, "rpc_error", "rpc_error", None]


async def test_oldest_matching_fault_wins_and_one_applies_per_request(
    proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    first = proxy.add_fault("null_result")
    second = proxy.add_fault("http_503")  # answers before upstream, so it goes first
    assert (await post(session, proxy.url, req("eth_chainId"))).status == 503
    assert (await post(session, proxy.url, req("eth_chainId"))).json()["result"] is None
    assert (first.applied, second.applied) == (1, 1)


async def test_clear_disarms_faults_and_empties_the_log(
    proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    fault = proxy.add_fault("http_500")
    proxy.clear()
    assert (await post(session, proxy.url, req("eth_chainId"))).status == 200
    assert fault.applied == 0
    proxy.clear()
    assert proxy.served == []


async def test_upstream_down_answers_502(session: aiohttp.ClientSession) -> None:
    with FaultProxy(f"http://127.0.0.1:{_free_port()}") as proxy:
        fault = proxy.add_fault("null_result")
        reply = await post(session, proxy.url, req("eth_chainId"))
        assert reply.status == 502
        assert b"upstream failed" in reply.body
        assert fault.remaining == 1  # nothing to rewrite, so the fault stays armed
        assert proxy.served == [Served(("eth_chainId",), False, None, 502)]


async def test_request_body_is_bounded(anvil_url: str, session: aiohttp.ClientSession) -> None:
    with FaultProxy(anvil_url, max_body_bytes=1024) as proxy:
        reply = await post(session, proxy.url, [req("eth_chainId", "x" * 2000)])
        assert reply.status == 413
        assert proxy.served == [Served((), False, None, 413)]


async def test_restart_rebinds_the_same_port(
    proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    url = proxy.url
    proxy.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(session, url, req("eth_chainId"))
    proxy.start()
    assert proxy.url == url
    assert (await post(session, url, req("eth_chainId"))).status == 200


def test_add_fault_rejects_bad_arguments(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        proxy.add_fault("http_418")
    with pytest.raises(ValueError, match="unknown params"):
        proxy.add_fault("timeout", secs=1)
    with pytest.raises(ValueError, match="should be int"):
        proxy.add_fault("lag", blocks="2")
    with pytest.raises(ValueError, match="only applies to eth_getLogs"):
        proxy.add_fault("drop_logs", method="eth_getBlockByNumber")
    with pytest.raises(ValueError, match="times"):
        proxy.add_fault("http_500", times=0)
    with pytest.raises(ValueError, match="must be >= 1"):
        proxy.add_fault("slow_body", chunk_bytes=0)
    with pytest.raises(ValueError, match="break_first_link"):
        proxy.add_fault("break_link", index=0)
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy("http://192.0.2.1:8545")
    assert faultproxy.FAULT_KINDS >= {"http_500", "lag", "break_first_link"}


# -- Faults answered without upstream


@pytest.mark.parametrize(
    ("kind", "status", "content_type", "snippet"),
    [
        ("http_500", 500, "text/html", b"<html>"),
        ("http_503", 503, "text/plain", b"503 Service Unavailable"),
    ],
)
async def test_http_errors(
    proxy: FaultProxy,
    session: aiohttp.ClientSession,
    kind: str,
    status: int,
    content_type: str,
    snippet: bytes,
) -> None:
    fault = proxy.add_fault(kind, method="eth_getBlockByNumber")
    assert (await post(session, proxy.url, req("eth_chainId"))).status == 200
    reply = await post(session, proxy.url, get_blocks(1, 2))
    assert (reply.status, reply.headers["Content-Type"]) == (status, content_type)
    assert snippet in reply.body
    assert fault.applied == 1
    assert proxy.served[-1] == Served(("eth_getBlockByNumber",) * 2, True, kind, status)


async def test_http_429_sends_retry_after(
    proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    proxy.add_fault("http_429", retry_after=7)
    reply = await post(session, proxy.url, req("eth_chainId"))
    assert (reply.status, reply.headers["retry-after"]) == (429, "7")
    assert (await post(session, proxy.url, req("eth_chainId"))).status == 200


async def test_timeout_holds_until_the_client_gives_up(
    proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    proxy.add_fault("timeout")  # 60 s: only the client's disconnect ends it
    pending = asyncio.ensure_future(post(session, proxy.url, req("eth_chainId"), timeout_secs=0.3))
    await asyncio.sleep(0.1)
    assert proxy.pending == 1
    with pytest.raises(TimeoutError):
        await pending
    for _ in range(100):
        if proxy.pending == 0:
            break
        await asyncio.sleep(0.02)
    assert proxy.pending == 0
    assert proxy.served == [Served(("eth_chainId",), False, "timeout", None)]


async def test_timeout_drops_the_connection_after_delay(
    proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    proxy.add_fault("timeout", delay=0.2)
    started = time.monotonic()
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(session, proxy.url, req("eth_chainId"))
    assert time.monotonic() - started >= 0.2


async def test_stop_releases_held_requests_at_once(
    proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    proxy.add_fault("timeout")
    pending = asyncio.ensure_future(post(session, proxy.url, req("eth_chainId")))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await asyncio.to_thread(proxy.stop)
    assert time.monotonic() - started < 1.0
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await pending


async def test_malformed_json(proxy: FaultProxy, session: aiohttp.ClientSession) -> None:
    proxy.add_fault("malformed_json")
    reply = await post(session, proxy.url, req("eth_chainId"))
    assert reply.status == 200
    with pytest.raises(orjson.JSONDecodeError):
        reply.json()


# -- Faults that rewrite upstream's answer


async def test_slow_body_trickles_the_real_body(
    anvil_url: str, proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    real = (await post(session, anvil_url, req("eth_chainId"))).body
    chunk_bytes = len(real) // 3 + 1  # three chunks
    proxy.add_fault("slow_body", delay=0.1, chunk_bytes=chunk_bytes)
    started = time.monotonic()
    async with session.post(proxy.url, data=orjson.dumps(req("eth_chainId"))) as resp:
        headers_secs = time.monotonic() - started
        body = await resp.read()
    body_secs = time.monotonic() - started
    assert body == real
    assert headers_secs < 0.1  # headers go out at once ...
    assert body_secs >= 0.3  # ... then each of the three chunks waits 0.1 s


async def test_slow_body_trips_a_client_deadline(
    proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    proxy.add_fault("slow_body", delay=0.1)
    with pytest.raises(TimeoutError):
        await post(session, proxy.url, req("eth_chainId"), timeout_secs=0.3)


async def test_truncated_json_cuts_the_real_body_in_half(
    anvil_url: str, proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    real = (await post(session, anvil_url, get_blocks(1, 2))).body
    proxy.add_fault("truncated_json")
    reply = await post(session, proxy.url, get_blocks(1, 2))
    assert (reply.status, reply.body) == (200, real[: len(real) // 2])


async def test_rpc_error_replaces_one_matching_item(
    anvil_url: str, proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    batch = [req("eth_chainId", rid=100), *get_blocks(1, 3)]
    real = (await post(session, anvil_url, batch)).json()
    proxy.add_fault("rpc_error", method="eth_getBlockByNumber", index=1, message="header not found")
    answer = (await post(session, proxy.url, batch)).json()
    assert answer[2] == {
        "jsonrpc": "2.0",
        "id": 2,
        "error": {"code": -32000, "message": "header not found"},
    }
    assert answer[:2] + answer[3:] == real[:2] + real[3:]


async def test_wrong_id(proxy: FaultProxy, session: aiohttp.ClientSession) -> None:
    proxy.add_fault("wrong_id")
    answer = (await post(session, proxy.url, req("eth_chainId", rid=7))).json()
    assert answer["id"] not in (7, None)
    assert answer["result"] == "0x7a69"
    proxy.add_fault("wrong_id", method="eth_getBlockByNumber", new_id="nope")
    answer = (await post(session, proxy.url, [req("eth_chainId", rid=7), get_block(1)])).json()
    assert [item["id"] for item in answer] == [7, "nope"]


async def test_missing_item_drops_one_batch_item(
    proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    fault = proxy.add_fault("missing_item", index=-1)
    single = await post(session, proxy.url, req("eth_chainId"))
    assert single.json()["result"] == "0x7a69"  # batch-only: a single is left alone
    assert fault.remaining == 1
    answer = (await post(session, proxy.url, get_blocks(1, 3))).json()
    assert [item["id"] for item in answer] == [1, 2]


async def test_null_result(proxy: FaultProxy, session: aiohttp.ClientSession) -> None:
    proxy.add_fault("null_result", method="eth_getBlockByNumber")
    answer = (await post(session, proxy.url, get_block(2))).json()
    assert answer == {"jsonrpc": "2.0", "id": 2, "result": None}


async def test_wrong_block_number(
    anvil_url: str, proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    real = (await post(session, anvil_url, get_block(2))).json()["result"]
    proxy.add_fault("wrong_block_number")
    block = (await post(session, proxy.url, get_block(2))).json()["result"]
    assert block["number"] == "0x3"
    assert {**block, "number": "0x2"} == real


def _link_breaks(blocks: list[dict[str, Any]]) -> list[str]:
    """Heights (hex) whose parentHash is not the hash of the block before them in the batch."""
    pairs = itertools.pairwise(blocks)
    return [cur["number"] for prev, cur in pairs if cur["parentHash"] != prev["hash"]]


async def test_break_link_breaks_the_batch_inside(
    anvil_url: str, proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    real = [item["result"] for item in (await post(session, anvil_url, get_blocks(1, 4))).json()]
    assert _link_breaks(real) == []
    fault = proxy.add_fault("break_link")
    await post(session, proxy.url, get_block(1))  # a single block has no inner link ...
    await post(session, proxy.url, [get_block(1)])  # ... nor has a batch of one
    assert fault.remaining == 1
    answer = [item["result"] for item in (await post(session, proxy.url, get_blocks(1, 4))).json()]
    assert _link_breaks(answer) == ["0x4"]
    assert answer[0]["parentHash"] == real[0]["parentHash"]
    assert answer[3]["parentHash"] == faultproxy.flip_hash(real[3]["parentHash"])


async def test_break_first_link(
    anvil_url: str, proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    real = [item["result"] for item in (await post(session, anvil_url, get_blocks(1, 3))).json()]
    proxy.add_fault("break_first_link")
    answer = [item["result"] for item in (await post(session, proxy.url, get_blocks(1, 3))).json()]
    assert answer[0]["parentHash"] != real[0]["parentHash"]
    assert answer[1:] == real[1:]
    assert _link_breaks(answer) == []


async def test_foreign_log_waits_for_a_log_then_rehomes_it(
    anvil_url: str, proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    real = (await post(session, anvil_url, ALL_LOGS)).json()["result"]
    assert len(real) == 1
    fault = proxy.add_fault("foreign_log")
    assert (await post(session, proxy.url, NO_LOGS)).json()["result"] == []
    assert fault.remaining == 1
    (log,) = (await post(session, proxy.url, ALL_LOGS)).json()["result"]
    assert log["blockHash"] == faultproxy.flip_hash(real[0]["blockHash"])
    assert {**log, "blockHash": real[0]["blockHash"]} == real[0]
    assert fault.applied == 1


async def test_drop_logs(proxy: FaultProxy, session: aiohttp.ClientSession) -> None:
    proxy.add_fault("drop_logs")
    assert (await post(session, proxy.url, ALL_LOGS)).json()["result"] == []
    assert len((await post(session, proxy.url, ALL_LOGS)).json()["result"]) == 1


async def test_lag(proxy: FaultProxy, session: aiohttp.ClientSession) -> None:
    proxy.add_fault("lag", blocks=2)
    batch = [req("eth_blockNumber", rid=1), req("eth_chainId", rid=2)]
    answer = (await post(session, proxy.url, batch)).json()
    assert [item["result"] for item in answer] == [hex(HEAD - 2), "0x7a69"]
