"""Hostile world, item 12 and "no traceback, ever": a chain stuck on an answer every endpoint
gives and we refuse says so (readiness, a metric, an error line at most once a minute) while
it keeps retrying with capped backoff, without making the watchdog restart us; an unexpected
exception in a chain's loop is logged with its type and waited out like a transient fault.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import prometheus_client
import pytest

from indexer import errors
from indexer.chain.evm import EvmSource
from indexer.devnet.traffic import fill_blocks
from indexer.http.app import HttpServer
from tests.integration.helpers import eventually, make_config, running_sync, sync_to
from tests.support.faultproxy import FaultProxy
from tests.support.oracle import assert_equals_node, check_invariants


def _records(caplog: pytest.LogCaptureFixture, action: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "action", None) == action]


async def test_a_refused_answer_every_endpoint_gives_is_reported_and_retried(
    db_url: str, anvil: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fill_blocks(anvil, 12, txs_per_block=(1, 3), seed=47)
    head = anvil.block_number()
    caplog.set_level(logging.INFO)
    with FaultProxy(anvil.url) as liar:
        # Every answer with a transaction lies about its value: verification refuses it.
        liar.add_fault("change_tx_value", times=1_000_000)
        cfg = make_config(db_url, liar.url, batch_size=4, verify="full")
        async with running_sync(cfg) as (task, runtime):
            chain = runtime.chains[0]
            server = HttpServer(runtime, listen="127.0.0.1:0", ready_max_lag_blocks=10**6)

            async def reason() -> str | None:
                body = await server.readiness()
                return str(body["chains"]["dev"]["reason"] or "") or None

            async def refused() -> str | None:
                said = await reason()
                return said if said and said.startswith("refused") else None

            said = await eventually(refused, timeout_secs=30, what="a refused-answer reason")
            assert re.match(r"refused answer at [\d,]+: .*transaction hash", said), said
            # Retried with backoff, said once: an error line, not one per retry.
            await eventually(lambda: chain.state.refused_answers >= 3, what="three retries")
            assert not task.done()
            assert len(_records(caplog, "refused_answer")) == 1
            assert _records(caplog, "refused_answer")[0].levelno == logging.ERROR
            # Restarting would not help: the watchdog is not withheld.
            assert not chain.state.stalled(timeout_secs=0)
            text = prometheus_client.generate_latest(server._registry).decode()
            assert 'indexer_stuck_on_refused_answer{chain="dev"} 1.0' in text
            counted = re.search(r'indexer_refused_answers_total\{chain="dev"\} (\d+)', text)
            assert counted and int(counted.group(1)) >= 3, text

            liar.clear()  # the node tells the truth again: the chain moves on
            await eventually(
                lambda: chain.state.tip is not None and chain.state.tip.number >= head,
                what="the chain to catch up",
            )
            assert await reason() is None
            text = prometheus_client.generate_latest(server._registry).decode()
            assert 'indexer_stuck_on_refused_answer{chain="dev"} 0.0' in text
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url, receipts=True)


async def test_an_unexpected_exception_is_logged_with_its_type_and_waited_out(
    db_url: str, anvil: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_blocks(anvil, 8, txs_per_block=(1, 2), seed=53)
    head = anvil.block_number()
    real = EvmSource.blocks
    calls = 0

    async def flaky(self: EvmSource, start: int, count: int) -> Any:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise KeyError("a bug in a decoder")  # what no except clause names
        return await real(self, start, count)

    monkeypatch.setattr(EvmSource, "blocks", flaky)
    caplog.set_level(logging.INFO)
    cfg = make_config(db_url, anvil.url, batch_size=4)
    assert await sync_to(cfg, head) == errors.EXIT_OK
    unexpected = _records(caplog, "unexpected")
    assert unexpected and all(r.levelno == logging.ERROR for r in unexpected)
    assert "KeyError" in unexpected[0].getMessage()
    assert "Traceback" not in caplog.text
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url, receipts=True)
