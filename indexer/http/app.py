"""/health/live, /health/ready and /metrics over aiohttp.

Live: the event loop answers. Ready: the database answers within a short timeout (a pool with
no free connection counts as not answering), and every chain is within `ready_max_lag_blocks`
of its node and not halted; the JSON body says why not, per chain.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
import prometheus_client
from aiohttp import web
from prometheus_client import CollectorRegistry

from indexer import errors
from indexer.http.metrics import RuntimeCollector
from indexer.runtime import Runtime

logger = logging.getLogger(__name__)

DB_CHECK_TIMEOUT_SECS = 2.0
DB_SIZE_REFRESH_SECS = 60.0


class HttpServer:
    def __init__(self, runtime: Runtime, *, listen: str, ready_max_lag_blocks: int) -> None:
        self.runtime = runtime
        host, _, port = listen.rpartition(":")
        self._host = host.strip("[]")
        self._port = int(port)
        self._max_lag = ready_max_lag_blocks
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(RuntimeCollector(runtime))
        self._runner: web.AppRunner | None = None
        self._db_size_at = 0.0

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._runner is not None
        return int(self._runner.addresses[0][1])

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/health/live", self.live)
        app.router.add_get("/health/ready", self.ready)
        app.router.add_get("/metrics", self.metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise errors.ConfigError(
                f"http.listen: cannot listen on {self._host}:{self._port}: {exc.strerror}"
            ) from None
        logger.info("serving health and metrics on %s:%d", self._host, self.port,
                    extra={"action": "http"})  # fmt: skip

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- Handlers

    async def live(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "live"})

    async def ready(self, request: web.Request) -> web.Response:
        body = await self.readiness()
        return web.Response(
            body=orjson.dumps(body),
            status=200 if body["ready"] else 503,
            content_type="application/json",
        )

    async def metrics(self, request: web.Request) -> web.Response:
        await self._refresh_database_size()
        return web.Response(
            body=prometheus_client.generate_latest(self._registry),
            headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST},
        )

    # -- Checks

    async def _database_reason(self) -> str | None:
        """None when the database answers now, else why not."""
        try:
            async with asyncio.timeout(DB_CHECK_TIMEOUT_SECS):
                # Waiting for a pooled connection gets half the time, so an exhausted pool
                # is told apart from a database that does not answer.
                await self.runtime.store.ping(pool_timeout_secs=DB_CHECK_TIMEOUT_SECS / 2)
        except TimeoutError:
            self.runtime.database_errors += 1
            return f"database did not answer within {DB_CHECK_TIMEOUT_SECS:g}s"
        except errors.StoreError as exc:
            self.runtime.database_errors += 1
            return str(exc)
        return None

    async def readiness(self) -> dict[str, Any]:
        db_reason = await self._database_reason()
        chains: dict[str, Any] = {}
        for chain in self.runtime.chains:
            s = chain.state
            tip = s.tip.number if s.tip else None
            lag = None if s.head is None else s.head - (tip if tip is not None else -1)
            reason = s.not_ready(max_lag_blocks=self._max_lag)
            chains[chain.name] = {
                "ready": reason is None,
                "reason": reason,
                "tip": tip,
                "node_head": s.head,
                "lag": lag,
                "reorgs": s.reorgs.count,
                "missing_blocks": chain.repairer.missing_blocks,
            }
        ready = db_reason is None and all(c["ready"] for c in chains.values())
        return {
            "ready": ready,
            "database": {"ready": db_reason is None, "reason": db_reason},
            "chains": chains,
        }

    async def _refresh_database_size(self) -> None:
        now = time.monotonic()
        if now - self._db_size_at < DB_SIZE_REFRESH_SECS:
            return
        self._db_size_at = now
        try:
            async with asyncio.timeout(DB_CHECK_TIMEOUT_SECS):
                size = await self.runtime.store.database_size(
                    pool_timeout_secs=DB_CHECK_TIMEOUT_SECS
                )
            self.runtime.database_size_bytes = size
        except (TimeoutError, errors.StoreError):
            self.runtime.database_errors += 1
