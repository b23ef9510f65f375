"""Decoding off the event loop: a decode thread, or worker processes.

A full EVM batch (blocks with transactions, plus logs) takes milliseconds of CPU per block
to decode and encode. Run on the event loop, that holds up everything else (HTTP reads, the
writer's COPY and commit, health checks) for the whole batch, and Postgres waits for data.

`Decoder(workers=0)` (the default) decodes on one thread of the main process. The decoder
holds the GIL, but the event loop gets it back every switch interval, which the first decode
thread lowers from Python's 5 ms to 1 ms for the process (full blocks: +8-15% measured), so
bytes keep moving to Postgres and from the nodes while a batch decodes, and nothing is
copied between processes. Measured on 2 cores (benchmarks/README.md), this beats worker
processes, whose pickling and pipes cost more CPU per block (~2 ms) than decoding itself
(~1.5 ms).

`Decoder(workers=N)` decodes in N worker processes: for machines with cores to spare,
where one Python thread is the limit. The pool is made on first use, its workers started
with spawn (fresh interpreters: the parent has threads, and each worker must be a direct
child so that it can die with it); they import the decoding module once. A worker that
dies (OOM killer) breaks the pool: the call is run on the decode thread instead, with a
warning, and the next call gets a new pool.

Workers leave signals to the main process (SIGINT and SIGTERM are ignored: the main process
shuts the pool down on its way out) and die with it: the kernel kills a worker whose parent
exits (PR_SET_PDEATHSIG), even on SIGKILL, so no orphan outlives a killed daemon.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

_SWITCH_INTERVAL_SECS = 0.001


class Decoder:
    """Runs decode functions inline or in a pool of `workers` processes."""

    def __init__(self, workers: int, *, label: str) -> None:
        assert workers >= 0
        self.workers = workers
        self._label = label
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    async def run_here(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` on the decode thread (for what does not pickle)."""
        if self._thread is None:
            if sys.getswitchinterval() > _SWITCH_INTERVAL_SECS:
                sys.setswitchinterval(_SWITCH_INTERVAL_SECS)
            self._thread = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"decode-{self._label}"
            )
        calls = [functools.partial(fn, *args, **kwargs)]

        def call() -> T:
            # The thread lets go of the arguments before the result is set: the executor's
            # work item lives on until its thread gets the GIL back, which may be after the
            # caller has resumed; a read buffer it still held would not be kept for reuse.
            return calls.pop()()

        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)`; `fn` and its arguments must pickle when workers > 0."""
        if self.workers == 0:
            return await self.run_here(fn, *args, **kwargs)
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(os.getpid(),),
            )
        call = functools.partial(fn, *args, **kwargs)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, call)
        except BrokenProcessPool:
            logger.warning(
                "%s: a decode worker process died; decoding this batch in the main process "
                "and starting new workers",
                self._label,
                extra={"chain": self._label, "action": "decode_pool_broken"},
            )
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            return await self.run_here(fn, *args, **kwargs)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._thread is not None:
            self._thread.shutdown(wait=False, cancel_futures=True)
            self._thread = None


_PR_SET_PDEATHSIG = 1


def _worker_init(parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.platform == "linux":
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            logger.warning("decode worker: prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
