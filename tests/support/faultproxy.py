"""A fault-injecting JSON-RPC proxy for tests (RELIABILITY.md section 8.C).

`FaultProxy` listens on 127.0.0.1, forwards every POST body (single request or batch) to a
loopback upstream such as anvil, and rewrites chosen answers. It runs its own event loop in
its own thread, so a test drives it through a plain synchronous API whether the indexer runs
in-process under pytest-asyncio or as a subprocess.

What each fault kind does to an exchange is in `faultkinds`; this module is the server that
arms faults and applies them. At most one fault is applied per request: the oldest armed one
that matches (`before` kinds, which answer instead of upstream, are tried first).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import threading
import urllib.parse
from typing import Any

import aiohttp
from aiohttp import web

from tests.support.faultkinds import (
    FAULT_KINDS,
    KINDS,
    Answer,
    Call,
    Fault,
    check_params,
    flip_hash,
)

__all__ = ["FAULT_KINDS", "MAX_BODY_BYTES", "Fault", "FaultProxy", "Served", "flip_hash"]

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 2**20
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclasses.dataclass(frozen=True)
class Served:
    """One request the proxy answered: its methods, the fault applied, the status sent."""

    methods: tuple[str, ...]
    batch: bool
    fault: str | None
    status: int | None  # None: the connection was dropped without an answer
    # The JSON-RPC calls, with their params (not compared: tests compare what was served).
    items: tuple[dict[str, Any], ...] = dataclasses.field(default=(), compare=False)


# -- HTTP


async def _pause(stopping: asyncio.Event, secs: float) -> bool:
    """Sleep `secs`; return True at once if the proxy starts stopping."""
    try:
        async with asyncio.timeout(secs):
            await stopping.wait()
    except TimeoutError:
        return False
    return True


def _drop(request: web.Request) -> web.StreamResponse:
    """Close the client's connection; aiohttp then gives up writing the returned response."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=499)


async def _send(
    request: web.Request, answer: Answer, stopping: asyncio.Event
) -> web.StreamResponse:
    if answer.status is None:
        await _pause(stopping, answer.hold_secs)
        return _drop(request)
    headers = {"Content-Type": answer.content_type, **answer.headers}
    if not answer.trickle_secs:
        return web.Response(status=answer.status, body=answer.body, headers=headers)
    response = web.StreamResponse(status=answer.status, headers=headers)
    response.content_length = len(answer.body)
    await response.prepare(request)
    step = answer.chunk_bytes
    for start in range(0, len(answer.body), step):
        if await _pause(stopping, answer.trickle_secs):
            return _drop(request)
        try:
            await response.write(answer.body[start : start + step])
        except ConnectionError:
            return response  # the client gave up; aiohttp sees the closed transport
    await response.write_eof()
    return response


class FaultProxy:
    """Forward JSON-RPC over HTTP to a loopback upstream, injecting armed faults."""

    def __init__(
        self,
        upstream_url: str,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        upstream_timeout_secs: float = 30.0,
    ) -> None:
        host = urllib.parse.urlsplit(upstream_url).hostname
        if host not in _LOOPBACK_HOSTS:
            raise ValueError(f"upstream must be on loopback, got host {host!r}")
        self.upstream_url = upstream_url
        self._max_body_bytes = max_body_bytes
        self._upstream_timeout_secs = upstream_timeout_secs
        self._cond = threading.Condition()
        self._faults: list[Fault] = []
        self._served: list[Served] = []
        self._pending = 0
        self._port = 0  # 0 until first bound; a restart rebinds the same port
        self._thread: threading.Thread | None = None
        self._started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- Lifecycle (any thread)

    def start(self) -> None:
        """Bind and serve in a background thread; return once listening."""
        if self._thread is not None:
            raise RuntimeError("FaultProxy already started")
        self._started = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, name="faultproxy", daemon=True)
        self._thread.start()
        try:
            self._started.result(timeout=10)
        except BaseException:
            self._thread.join(timeout=10)
            self._thread = None
            raise

    def stop(self) -> None:
        """Drop held requests, close the listener and the upstream session, join the thread."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None:
            loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=10)
        if thread.is_alive():
            raise RuntimeError("FaultProxy thread did not stop within 10 s")
        self._thread = None

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("FaultProxy not started")
        return f"http://127.0.0.1:{self._port}"

    # -- Faults (any thread)

    def add_fault(
        self, kind: str, *, method: str | None = None, times: int = 1, **params: Any
    ) -> Fault:
        """Arm a fault for the next `times` requests that contain `method` (any if None)."""
        spec = KINDS.get(kind)
        if spec is None:
            raise ValueError(f"unknown fault kind {kind!r}; known: {sorted(KINDS)}")
        if spec.method is not None and method not in (None, spec.method):
            raise ValueError(f"{kind} only applies to {spec.method}, not {method}")
        if times < 1:
            raise ValueError(f"times must be >= 1, got {times}")
        fault = Fault(
            kind=kind,
            method=method or spec.method,
            times=times,
            params=check_params(kind, params),
            cond=self._cond,
        )
        with self._cond:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Disarm every fault and empty the `served` log."""
        with self._cond:
            self._faults.clear()
            self._served.clear()

    @property
    def served(self) -> list[Served]:
        """A copy of the log of answered requests, oldest first."""
        with self._cond:
            return list(self._served)

    @property
    def pending(self) -> int:
        """How many requests are in progress right now (forwarded, held or trickling)."""
        with self._cond:
            return self._pending

    # -- The proxy thread

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to start(); the thread must not die loudly
            if not self._started.done():
                self._started.set_exception(exc)
            else:
                logger.exception("FaultProxy crashed", extra={"action": "faultproxy_crashed"})

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=self._max_body_bytes)
        app.router.add_post("/{path:.*}", self._handle)
        # handler_cancellation: a held or trickling request ends when its client goes away.
        runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        timeout = aiohttp.ClientTimeout(total=self._upstream_timeout_secs)
        async with contextlib.AsyncExitStack() as stack:
            # Unwound in reverse: stop serving first, then close the upstream session.
            self._session = await stack.enter_async_context(aiohttp.ClientSession(timeout=timeout))
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            await web.TCPSite(runner, "127.0.0.1", self._port).start()
            self._port = runner.addresses[0][1]
            self._started.set_result(None)
            await self._stopping.wait()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._cond:
            self._pending += 1
        try:
            return await self._answer(request)
        finally:
            with self._cond:
                self._pending -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        assert self._stopping is not None
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self._record(Call(items=(), batch=False), None, 413)
            raise
        call = Call.parse(body)
        fault, answer = self._answer_before(call)
        if answer is None:
            answer = await self._forward(body)
            if answer.status == 200:
                fault, answer = self._rewrite(call, answer)
        self._record(call, fault, answer.status)
        return await _send(request, answer, self._stopping)

    async def _forward(self, body: bytes) -> Answer:
        assert self._session is not None
        headers = {"Content-Type": "application/json"}
        try:
            async with self._session.post(self.upstream_url, data=body, headers=headers) as resp:
                return Answer(resp.status, await resp.read(), content_type=resp.content_type)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Answer(502, f"upstream failed: {exc!r}\n".encode(), content_type="text/plain")

    def _matches(self, fault: Fault, call: Call) -> bool:
        spec = KINDS[fault.kind]
        # Used-up faults are already out of self._faults (see _use).
        return (fault.method is None or fault.method in call.methods) and (
            call.batch or not spec.batch_only
        )

    def _answer_before(self, call: Call) -> tuple[Fault | None, Answer | None]:
        """Apply the oldest matching `before` fault, if any: it answers instead of upstream."""
        with self._cond:
            for fault in self._faults:
                before = KINDS[fault.kind].before
                if before is not None and self._matches(fault, call):
                    self._use(fault)
                    return fault, before(fault)
        return None, None

    def _rewrite(self, call: Call, answer: Answer) -> tuple[Fault | None, Answer]:
        """Apply the oldest matching `after` fault that can change `answer`."""
        with self._cond:
            for fault in self._faults:
                after = KINDS[fault.kind].after
                if after is None or not self._matches(fault, call):
                    continue
                rewritten = after(fault, answer, call)
                if rewritten is not None:
                    self._use(fault)
                    return fault, rewritten
        return None, answer

    def _use(self, fault: Fault) -> None:
        # Caller holds self._cond.
        fault.consume()
        if fault.remaining == 0:
            self._faults.remove(fault)
        logger.debug("injected %r", fault, extra={"action": "fault_injected"})

    def _record(self, call: Call, fault: Fault | None, status: int | None) -> None:
        entry = Served(call.methods, call.batch, fault.kind if fault else None, status, call.items)
        with self._cond:
            self._served.append(entry)
