"""/health/ready reasons, in process: an exhausted pool and a halted chain make it unready."""

from __future__ import annotations

import asyncio
from typing import Any

import prometheus_client

from indexer import daemon
from indexer.http.app import HttpServer
from indexer.runtime import Runtime
from indexer.sync.progress import Progress
from tests.integration.helpers import make_config


async def test_ready_turns_unready_when_the_pool_is_exhausted(db_url: str, anvil: Any) -> None:
    anvil.mine(5)
    cfg = make_config(db_url, anvil.url)
    cfg = cfg.model_copy(
        update={"database": cfg.database.model_copy(update={"pool_min_size": 1,
                                                            "pool_max_size": 1})}
    )  # fmt: skip
    stop = asyncio.Event()
    ready: asyncio.Future[Runtime] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        daemon.run_sync(cfg, stop=stop, progress=Progress(tty=False), on_ready=ready.set_result)
    )
    runtime = await asyncio.wait_for(ready, 30)
    server = HttpServer(runtime, listen="127.0.0.1:0", ready_max_lag_blocks=5)
    for _ in range(100):
        body = await server.readiness()
        if body["ready"]:
            break
        await asyncio.sleep(0.05)
    assert body["ready"], body

    async with runtime.store.connection("hold the only connection"):
        body = await server.readiness()
    assert not body["ready"]
    assert "no database connection available" in body["database"]["reason"]

    runtime.chains[0].state.halted = "reorg of depth 99 exceeds max_reorg_depth 64"
    body = await server.readiness()
    assert body["database"]["ready"] and not body["chains"]["dev"]["ready"]
    assert body["chains"]["dev"]["reason"].startswith("halted: reorg of depth 99")
    # The repairer's findings reach /metrics (the same objects the collector reads).
    runtime.chains[0].repairer.failed_ranges = 2
    runtime.chains[0].repairer.missing_blocks = 17
    text = prometheus_client.generate_latest(server._registry).decode()
    assert 'indexer_gap_failed_ranges{chain="dev"} 2.0' in text
    assert 'indexer_missing_blocks{chain="dev"} 17.0' in text
    stop.set()
    assert await asyncio.wait_for(task, 20) == 0
