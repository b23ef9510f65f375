"""Small helpers shared by the integration tests: configs, running sync, subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg

from indexer import config, daemon
from indexer.runtime import Runtime
from indexer.store import LOCK_NS_WRITER
from indexer.sync.progress import Progress

REPO = Path(__file__).resolve().parents[2]


def make_config(db_url: str, urls: list[str] | str, **chain: Any) -> config.Config:
    urls = [urls] if isinstance(urls, str) else urls
    return config.build(
        {
            "database": {"url": db_url},
            "chains": [
                {
                    "name": "dev",
                    "kind": "evm",
                    "urls": urls,
                    "chain_id": 31337,
                    "poll_interval_secs": 0.2,
                    **chain,
                }
            ],
        },
        {},
    )


def write_config(path: Path, db_url: str, urls: list[str] | str, **chain: Any) -> Path:
    urls = [urls] if isinstance(urls, str) else urls
    lines = [
        "[database]",
        f'url = "{db_url}"',
        "[[chains]]",
        'name = "dev"',
        'kind = "evm"',
        "urls = [" + ", ".join(f'"{u}"' for u in urls) + "]",
        "chain_id = 31337",
        "poll_interval_secs = 0.2",
    ]
    lines += [
        f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"' for k, v in chain.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


async def sync_to(cfg: config.Config, height: int, *, timeout_secs: float = 120) -> int:
    """Run `indexer sync --to height` in-process; return its exit code."""
    stop = asyncio.Event()
    progress = Progress(tty=False)
    async with asyncio.timeout(timeout_secs):
        return await daemon.run_sync(cfg, to_height=height, stop=stop, progress=progress)


def run_cli(*args: str, timeout_secs: float = 120, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "indexer", *args],
        capture_output=True,
        text=True,
        timeout=timeout_secs,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        check=False,
    )


def spawn_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "indexer", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def checkpoint(db_url: str, name: str = "dev") -> int | None:
    try:
        with psycopg.connect(db_url) as conn:
            row = conn.execute(
                "SELECT k.number FROM checkpoints k JOIN chains c ON c.id = k.chain "
                "WHERE c.name = %s",
                (name,),
            ).fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    return None if row is None or row[0] is None else int(row[0])


def wait_for(predicate: Any, *, timeout_secs: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def async_wait_for(predicate: Any, *, timeout_secs: float = 60, what: str = "condition"
                         ) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def running_sync(
    cfg: config.Config, *, ready_timeout_secs: float = 60
) -> AsyncIterator[tuple[asyncio.Task[int], Runtime]]:
    """Run `indexer sync` in-process; yield its task and runtime once it is READY; stop it
    on the way out (its result is left in the task)."""
    stop = asyncio.Event()
    ready: asyncio.Future[Runtime] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        daemon.run_sync(cfg, stop=stop, progress=Progress(tty=False), on_ready=ready.set_result),
        name="sync",
    )
    try:
        waiters: set[asyncio.Future[Any]] = {task, ready}
        done, _ = await asyncio.wait(waiters, timeout=ready_timeout_secs,
                                     return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        if ready not in done:
            raise AssertionError(f"sync never became ready: {task}")
        yield task, ready.result()
    finally:
        stop.set()
        await asyncio.wait({task}, timeout=30)
        if not task.done():
            task.cancel()
            await asyncio.wait({task})


async def eventually(predicate: Any, *, timeout_secs: float = 60, what: str = "condition"
                     ) -> Any:  # fmt: skip
    """Await `predicate()` (sync or async) until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout_secs
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def writer_lock_pid(db_url: str, name: str = "dev") -> int | None:
    """The backend that holds chain `name`'s writer lock now (None: nobody)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT l.pid FROM pg_locks l JOIN chains c ON c.id = l.objid::int "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = %s "
            "AND l.objsubid = 2 AND c.name = %s "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (LOCK_NS_WRITER, name),
        ).fetchone()
    return None if row is None else int(row[0])


def terminate(db_url: str, pid: int) -> None:
    """End one backend, as an operator (or a crash of that session) would."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
