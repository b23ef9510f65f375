"""Backfill throughput: `indexer sync --to N` against the replay node, into a fresh database.

Each run starts the replay node (its own process) and `python -m indexer sync --to N` as a
subprocess (honest RSS and CPU: nothing of the benchmark runs inside it), samples its VmRSS
and the checkpoint every 0.5 s, and reports blocks/s and rows/s, both over the whole run
(start-up included) and steady (from the first committed batch). Beside the rate it reports
where the machine's two cores went: the indexer's CPU seconds (wait4 rusage), the node's,
and the Postgres backends' (from /proc), so a reader can tell which process bounds the run.

`--profile` wraps the run in py-spy and classifies every sample (JSON parse, validation and
mapping, COPY adaptation, HTTP, event loop, ...). `--limits` measures the limit on the same
data: JSON parse alone, parse + our validation/mapping alone, and the same rows written with
raw binary COPY alone (with psycopg's adaptation, and pre-encoded: Postgres alone).

Usage: `python -m benchmarks.backfill --variant full --blocks 3000 --batch-size 100
--prefetch 4 [--profile] [--limits]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
import psycopg

from benchmarks.replay_node import REPO, ReplayChain, ReplayNode, ReplayServer, Shape
from indexer import tables
from indexer.chain import evm_rows
from indexer.chain.evm import EvmSource
from indexer.config import DatabaseConfig, EvmChainConfig
from indexer.models import Block
from indexer.store import sinks
from indexer.store.migrate import migrate

T = TypeVar("T")
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
_CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE_SECS = 0.5


# -- Databases and configs


def with_db(dsn: str, name: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{name}"


@contextlib.contextmanager
def fresh_database(dsn: str, prefix: str = "bench") -> Iterator[str]:
    """Create an empty database for one run; drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_db(dsn, name)
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(frozen=True, slots=True)
class Settings:
    batch_size: int = 100
    prefetch_batches: int = 4
    endpoint_concurrency: int = 8
    poll_interval_secs: float = 2.0
    extra: tuple[tuple[str, Any], ...] = ()  # more [[chains]] keys, e.g. a store mode
    events: tuple[tuple[str, str], ...] = ()  # [[events]] of the chain: (table, signature)

    def label(self) -> str:
        text = f"batch {self.batch_size}, prefetch {self.prefetch_batches}"
        text += "".join(f", {k}={v}" for k, v in self.extra)
        return text + (f", events={'+'.join(t for t, _ in self.events)}" if self.events else "")


def write_config(path: Path, *, db_url: str, node_url: str, settings: Settings) -> Path:
    chain: dict[str, Any] = {
        "name": "bench",
        "kind": "evm",
        "urls": [node_url],
        "chain_id": 1,
        "batch_size": settings.batch_size,
        "prefetch_batches": settings.prefetch_batches,
        "endpoint_concurrency": settings.endpoint_concurrency,
        "request_timeout_secs": 300.0,
        "poll_interval_secs": settings.poll_interval_secs,
        "repair_interval_secs": 0.0,
        **dict(settings.extra),
    }

    def value(v: Any) -> str:
        return orjson.dumps(v).decode() if not isinstance(v, bool) else str(v).lower()

    lines = ["[database]", f"url = {value(db_url)}", "[service]", "stall_timeout_secs = 900.0"]
    lines += ["[[chains]]", *(f"{k} = {value(v)}" for k, v in chain.items())]
    for table, signature in settings.events:
        lines += ["[[events]]", 'chain = "bench"', f"table = {value(table)}"]
        lines.append(f"signature = {value(signature)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def steady_rate(
    blocks: int, *, wall: float, started_at: float, first_block_at: float | None
) -> tuple[float, float]:
    """(start-up secs, blocks/s after it) of a run that began at `started_at` (unix time).

    Start-up (imports, migrations check, connections, chain id) lasts until the first block
    request reaches the node; the rate after it is the pipeline's own.
    """
    startup = max(0.0, (first_block_at or started_at) - started_at)
    return startup, blocks / (wall - startup)


# -- Watching a process


def _proc_cpu_secs(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _proc_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@dataclass
class Watch:
    """Samples of one indexer run: RSS, checkpoint height, Postgres backend CPU."""

    rss_mb: list[tuple[float, float]] = field(default_factory=list)
    cpu_secs: float = 0.0  # the indexer's, last sampled (py-spy runs: rusage is py-spy's)
    heights: list[tuple[float, int]] = field(default_factory=list)
    backend_cpu: dict[int, float] = field(default_factory=dict)


def _sample(conn: psycopg.Connection[Any], db_name: str, watch: Watch, now: float) -> None:
    row = conn.execute("SELECT number FROM checkpoints ORDER BY chain LIMIT 1").fetchone()
    if row is not None and row[0] is not None:
        watch.heights.append((now, int(row[0])))
    pids = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (db_name,),
    ).fetchall()
    for (pid,) in pids:
        cpu = _proc_cpu_secs(int(pid))
        if cpu is not None:
            watch.backend_cpu[int(pid)] = cpu


def _pg_background_cpu(conn: psycopg.Connection[Any]) -> float:
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE backend_type IN "
        "('checkpointer', 'background writer', 'walwriter', 'autovacuum launcher')"
    ).fetchall()
    return sum(_proc_cpu_secs(int(pid)) or 0.0 for (pid,) in rows)


def indexer_command(config: Path, *args: str) -> list[str]:
    """`python -m indexer --config CONFIG ARGS`, quiet, text logs."""
    return [sys.executable, "-m", "indexer", "--config", str(config), "--log-level", "warning",
            "--log-text", *args]  # fmt: skip


def run_indexer(
    args: Sequence[str],
    *,
    config: Path,
    db_url: str,
    log_path: Path,
    profile_path: Path | None = None,
    timeout_secs: float = 1800.0,
) -> dict[str, Any]:
    """Run `python -m indexer --config CONFIG ARGS` to completion while sampling it."""
    cmd = indexer_command(config, *args)
    if profile_path is not None:
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
        cmd = [
            spy,
            "record",
            "--nonblocking",
            "--subprocesses",
            "-r",
            "100",
            "-f",
            "raw",
            "-o",
            str(profile_path),
            "--",
            *cmd,
        ]
    db_name = db_url.rpartition("/")[2]
    watch = Watch()
    with (
        psycopg.connect(db_url, autocommit=True) as conn,
        log_path.open("wb") as log,
    ):
        bg_before = _pg_background_cpu(conn)
        started_at = time.time()
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        status: int | None = None
        rusage = None
        while status is None:
            now = time.perf_counter() - started
            target = proc.pid if profile_path is None else next(iter(_children(proc.pid)), 0)
            rss = _proc_rss_mb(target) if target else None
            if rss is not None:
                watch.rss_mb.append((now, rss))
                watch.cpu_secs = _proc_cpu_secs(target) or watch.cpu_secs
            with contextlib.suppress(psycopg.Error):
                _sample(conn, db_name, watch, now)
            if now > timeout_secs:
                proc.kill()
            deadline = time.perf_counter() + SAMPLE_SECS
            while time.perf_counter() < deadline:
                pid, wait_status, rusage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    status = os.waitstatus_to_exitcode(wait_status)
                    proc.returncode = status
                    break
                time.sleep(0.01)
        wall = time.perf_counter() - started
        with contextlib.suppress(psycopg.Error):
            _sample(conn, db_name, watch, wall)
        bg_after = _pg_background_cpu(conn)
    assert rusage is not None
    cpu = rusage.ru_utime + rusage.ru_stime
    if profile_path is not None:
        cpu = watch.cpu_secs  # misses at most the last 0.5 s
    if status != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"indexer {' '.join(args)} exited {status}:\n{tail}")
    return {
        "started_at": started_at,
        "wall_secs": wall,
        "indexer_cpu_secs": cpu,
        "pg_backend_cpu_secs": sum(watch.backend_cpu.values()),
        "pg_background_cpu_secs": bg_after - bg_before,
        "watch": watch,
    }


def _rss_summary(samples: list[tuple[float, float]]) -> dict[str, Any]:
    if len(samples) < 8:
        return {"max_mb": max((r for _, r in samples), default=None)}
    values = [r for _, r in samples]
    quarter = len(values) // 4
    second, last = (
        statistics.median(values[quarter : 2 * quarter]),
        statistics.median(values[-quarter:]),
    )
    return {
        "max_mb": round(max(values), 1),
        "median_2nd_quarter_mb": round(second, 1),
        "median_last_quarter_mb": round(last, 1),
        "growth_mb": round(last - second, 1),
        "samples": len(values),
    }


def count_rows(db_url: str, more: Sequence[str] = ()) -> dict[str, int]:
    """Rows of blocks, transactions, logs and receipts, and of the tables in `more`."""
    with psycopg.connect(db_url) as conn:
        return {
            table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
            for table in ("blocks", "transactions", "logs", "receipts", *more)
        }


# -- One backfill


def backfill(
    node: ReplayNode,
    *,
    dsn: str,
    blocks: int,
    settings: Settings,
    profile_path: Path | None = None,
) -> dict[str, Any]:
    """Sync blocks 0..blocks-1 from `node` into a fresh database; return the measurements."""
    to = blocks - 1
    node.call("replay_resetStats")
    node_before = node.stats()["cpu_secs"]
    with fresh_database(dsn) as db_url, tempfile.TemporaryDirectory() as tmp:
        asyncio.run(migrate(DatabaseConfig(url=db_url)))  # schema first: sampled from t=0
        config = write_config(
            Path(tmp, "indexer.toml"), db_url=db_url, node_url=node.url, settings=settings
        )
        if settings.events:  # `indexer migrate` makes the event tables
            subprocess.run(indexer_command(config, "migrate"), cwd=REPO, check=True,
                           capture_output=True)  # fmt: skip
        run = run_indexer(
            ["sync", "--to", str(to)],
            config=config,
            db_url=db_url,
            log_path=Path(tmp, "indexer.log"),
            profile_path=profile_path,
        )
        event_tables = [t for t, _ in settings.events]
        rows = count_rows(db_url, [*event_tables, "event_undecodable"] if event_tables else [])
    node_stats = node.stats()
    node_cpu = node_stats["cpu_secs"] - node_before
    watch: Watch = run.pop("watch")
    assert rows["blocks"] == blocks, rows
    wall = run["wall_secs"]
    startup, steady = steady_rate(
        blocks, wall=wall, started_at=run["started_at"], first_block_at=node_stats["first_block_at"]
    )
    per_block = {k: v / blocks for k, v in rows.items()}
    result: dict[str, Any] = {
        "variant": node.shape.variant,
        "settings": settings.label(),
        "blocks": blocks,
        "rows": rows,
        "wall_secs": round(wall, 2),
        "blocks_per_sec": round(blocks / wall),
        "startup_secs": round(startup, 2),
        "steady_blocks_per_sec": round(steady),
        "tx_rows_per_sec": round(steady * per_block["transactions"]),
        "log_rows_per_sec": round(steady * per_block["logs"]),
        "cpu_secs": {
            "indexer": round(run["indexer_cpu_secs"], 2),
            "node": round(node_cpu, 2),
            "pg_backends": round(run["pg_backend_cpu_secs"], 2),
            "pg_background": round(run["pg_background_cpu_secs"], 2),
        },
        "indexer_cpu_share": round(run["indexer_cpu_secs"] / wall, 2),
        # VmRSS sampled every 0.5 s (wait4's ru_maxrss would count the harness's own memory,
        # copied into the child between fork and exec).
        "peak_rss_mb": round(max((r for _, r in watch.rss_mb), default=0.0), 1),
        "rss": _rss_summary(watch.rss_mb),
    }
    return result


# -- Profile summary (py-spy raw output: "frame;frame;... count" per line)

_CATEGORIES = (
    "JSON parse (orjson.loads, checked path)",
    "freeing the parsed JSON (RpcClient._send returns)",
    "validation + mapping (chain/evm.py)",
    "RPC bookkeeping (request body, id matching)",
    "link check (sync/validate.py)",
    "COPY adaptation (sinks, psycopg)",
    "HTTP read (aiohttp, rpc._post)",
    "psycopg other",
    "event loop / asyncio",
    "other",
    "fast path: msgspec decode (evm_rows)",
    "fast path: C row encoder (indexer._rows)",
    "fast path: identity checks + glue (evm_rows)",
    "decode pool IPC (pickling, queues, pipes)",
)
_MAPPING_FUNCS = {"_map_block", "_map_tx", "_map_log", "_attach_logs", "parse"}
_source_cache: dict[str, list[str]] = {}


def _source_line(path: str, line: int) -> str:
    if path not in _source_cache:
        candidates = [Path(path), REPO / path]
        text = next((p.read_text() for p in candidates if p.is_file()), "")
        _source_cache[path] = text.splitlines()
    lines = _source_cache[path]
    return lines[line - 1] if 0 < line <= len(lines) else ""


def _frame(frame: str) -> tuple[str, str, int]:
    func, _, rest = frame.partition(" (")
    path, _, line = rest.rstrip(")").rpartition(":")
    return func, path, int(line) if line.isdigit() else 0


def _category(frames: list[str]) -> str:
    """Which stage a sample belongs to: decided by the frame nearest the leaf that tells.

    Samples from decode worker processes are marked "[worker]".
    """
    worker = any(_frame(f)[0] == "_process_worker" for f in frames)
    return ("[worker] " if worker else "") + _stage(frames)


def _stage(frames: list[str]) -> str:
    leaf_func, leaf_path, leaf_line = _frame(frames[-1])
    leaf_source = _source_line(leaf_path, leaf_line)
    if leaf_path.endswith("chain/evm_rows.py"):
        if ".decode(" in leaf_source:
            return _CATEGORIES[10]
        if "_rows." in leaf_source:
            return _CATEGORIES[11]
        return _CATEGORIES[12]
    if "orjson.loads" in leaf_source:
        return _CATEGORIES[0]
    if leaf_path.endswith("chain/rpc.py") and leaf_func.endswith("batch_parsed"):
        # Its only work after `await self._send(...)` is the callee's frame teardown, which
        # frees the whole parsed answer (millions of objects for a full batch).
        return _CATEGORIES[1]
    for frame in reversed(frames):
        func, path, _ = _frame(frame)
        parts = set(func.replace("<locals>.", "").split("."))
        if path.endswith("chain/evm_rows.py"):
            return _CATEGORIES[12]
        if "multiprocessing/" in path or "concurrent/futures" in path:
            return _CATEGORIES[13]
        if path.endswith("chain/evm.py") and (
            parts & _MAPPING_FUNCS or any(p.startswith("require") for p in parts)
        ):
            return _CATEGORIES[2]
        if path.endswith(("chain/rpc.py", "chain/evm.py")) and (
            "_match" in parts or "<listcomp>" in parts or func.endswith("_send")
        ):
            return _CATEGORIES[3]
        if path.endswith("sync/validate.py"):
            return _CATEGORIES[4]
        if (func == "write" and path.endswith("store/sinks.py")) or (
            "psycopg/" in path
            and ("copy" in path or "dbapi20" in path or "types" in path or func == "copy_to")
        ):
            return _CATEGORIES[5]
        if func.endswith("_post") or "aiohttp" in path:
            return _CATEGORIES[6]
        if "psycopg" in path:
            return _CATEGORIES[7]
        if "asyncio" in path or "selectors" in path:
            return _CATEGORIES[8]
    return _CATEGORIES[9]


def summarise_profile(path: Path, *, wall_secs: float, rate_hz: int = 100) -> dict[str, Any]:
    by_category: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for raw in path.read_text().splitlines():
        stack, _, count_text = raw.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        by_category[_category(frames)] += count
        func, path_, _ = _frame(frames[-1])
        self_time[f"{func} ({Path(path_).name})"] += count
        for name in {f"{_frame(f)[0]} ({Path(_frame(f)[1]).name})" for f in frames}:
            inclusive[name] += count
    share = {k: round(v / total, 3) for k, v in by_category.most_common()} if total else {}
    return {
        "samples": total,
        "busy_share_of_wall": round(total / (wall_secs * rate_hz), 2) if wall_secs else None,
        "categories": share,
        "top_self": [(k, round(v / total, 3)) for k, v in self_time.most_common(15)],
        "top_inclusive": [(k, round(v / total, 3)) for k, v in inclusive.most_common(25)],
    }


# -- The limit on the same data


class _ReplayRpc:
    """Stands in for `RpcClient` under `EvmSource`: answers from the replay chain in memory.

    Building each answer is not timed. Timed separately: `orjson.loads` of it and the
    checked path's validation and mapping (`batch_parsed`), or the fast path's decode and
    encode (`batch_decoded`), and msgspec's decode of the same body alone.
    """

    def __init__(self, chain: ReplayChain) -> None:
        self._server = ReplayServer(chain)
        self.response_bytes = 0
        self.loads_secs = 0.0
        self.map_secs = 0.0
        self.fast_secs = 0.0
        self.msgspec_secs = 0.0

    def _body(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> bytes:
        answers = [
            b"".join(
                self._server._answer(
                    {"jsonrpc": "2.0", "id": i, "method": method, "params": list(params)}
                )
            )
            for i, (method, params) in enumerate(calls)
        ]
        body = b"[" + b",".join(answers) + b"]"
        self.response_bytes += len(body)
        return body

    async def batch_parsed(
        self, calls: Sequence[tuple[str, Sequence[Any]]], parse: Callable[[list[Any]], T]
    ) -> T:
        body = self._body(calls)
        started = time.perf_counter()
        payload = orjson.loads(body)
        loaded = time.perf_counter()
        results = parse([item["result"] for item in payload])
        self.loads_secs += loaded - started
        self.map_secs += time.perf_counter() - loaded
        return results

    async def batch_for_endpoint(
        self,
        build: Callable[[str], Sequence[tuple[str, Sequence[Any]]]],
        decode: Callable[
            [bytes, list[int], Sequence[tuple[str, Sequence[Any]]], str], Awaitable[T]
        ],
        *,
        attempts: int | None = None,
    ) -> T:
        url = "http://127.0.0.1:1"
        calls = build(url)

        async def with_calls(raw: bytes, ids: list[int], where: str) -> T:
            return await decode(raw, ids, calls, url)

        return await self.batch_decoded(calls, with_calls)

    async def batch_decoded(
        self,
        calls: Sequence[tuple[str, Sequence[Any]]],
        decode: Callable[[bytes, list[int], str], Awaitable[T]],
    ) -> T:
        body = self._body(calls)
        started = time.perf_counter()
        items = evm_rows._ENVELOPE.decode(body)
        for (method, _), item in zip(calls, items, strict=True):
            if method == "eth_getBlockByNumber":
                evm_rows._BLOCK.decode(item.result)
            elif method == "eth_getLogs":
                evm_rows._LOGS.decode(item.result)
            elif method == "eth_getBlockReceipts":
                evm_rows._RECEIPTS.decode(item.result)
        self.msgspec_secs += time.perf_counter() - started
        started = time.perf_counter()
        results = await decode(body, list(range(len(calls))), "replay")
        self.fast_secs += time.perf_counter() - started
        return results


def _chain_config(settings: Settings) -> EvmChainConfig:
    return EvmChainConfig(name="bench", kind="evm", urls=("http://127.0.0.1:1",), chain_id=1,
                          **dict(settings.extra))  # fmt: skip


async def _copy_limit(db_url: str, batches: list[list[Block]]) -> dict[str, float]:
    """COPY the mapped rows, one transaction per batch, as `ChainWriter.write_batch` does."""
    conn = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    try:
        await conn.execute(
            "INSERT INTO chains (id, name, kind, chain_id, start_block) "
            "VALUES (1, 'bench', 'evm', 1, 0)"
        )
        started = time.perf_counter()
        cpu = time.process_time()
        for blocks in batches:
            async with conn.transaction():
                await sinks.PLAIN.write_all(conn.cursor(), 1, blocks)
        return {"secs": time.perf_counter() - started, "client_cpu": time.process_time() - cpu}
    finally:
        await conn.close()


_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_COPY_TRAILER = b"\xff\xff"


def _split_binary_copy(data: bytes, batch_size: int) -> dict[int, bytes]:
    """Cut a binary COPY stream into one stream per batch (by the 2nd column, the height)."""
    assert data[:11] == _COPY_HEADER[:11]
    offset = 19 + int.from_bytes(data[15:19], "big")
    rows: dict[int, list[bytes]] = {}
    while True:
        fields = int.from_bytes(data[offset : offset + 2], "big", signed=True)
        if fields == -1:
            break
        pos, height = offset + 2, -1
        for index in range(fields):
            size = int.from_bytes(data[pos : pos + 4], "big", signed=True)
            if index == 1:
                height = int.from_bytes(data[pos + 4 : pos + 4 + size], "big")
            pos += 4 + max(size, 0)
        rows.setdefault(height // batch_size, []).append(data[offset:pos])
        offset = pos
    return {k: _COPY_HEADER + b"".join(v) + _COPY_TRAILER for k, v in rows.items()}


def _raw_copy_limit(db_url: str, batch_size: int) -> float:
    """Postgres alone: the same rows, pre-encoded, COPYed in one transaction per batch."""
    tables = ("blocks", "transactions", "logs")
    with psycopg.connect(db_url, autocommit=True) as conn:
        streams: dict[str, dict[int, bytes]] = {}
        for table in tables:
            buf = bytearray()
            with conn.cursor().copy(f"COPY {table} TO STDOUT (FORMAT BINARY)") as copy:
                for chunk in copy:
                    buf += chunk
            streams[table] = _split_binary_copy(bytes(buf), batch_size)
        conn.execute("TRUNCATE blocks, transactions, logs")
        conn.execute("CHECKPOINT")
        started = time.perf_counter()
        for batch in sorted(streams["blocks"]):
            with conn.transaction():
                for table in tables:
                    stream = streams[table].get(batch)
                    if stream is None:
                        continue
                    with conn.cursor().copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
                        copy.write(stream)
        return time.perf_counter() - started


def measure_limits(*, dsn: str, variant: str, blocks: int, settings: Settings) -> dict[str, Any]:
    """Parse alone, each decode path alone, COPY alone, on the same generated data.

    Full blocks (blocks + transactions + logs) go through both the checked path (orjson +
    mapping) and the fast path (msgspec + the C row encoder, what sync uses); COPY is
    measured on the fast path's rows. Other variants have only the checked path.
    """
    chain = ReplayChain(Shape(variant=variant), head=blocks, cache_bytes=64 << 20)
    rpc = _ReplayRpc(chain)
    cfg = _chain_config(settings)
    checked_source = EvmSource(cfg, rpc)  # type: ignore[arg-type]
    fast_source = EvmSource(cfg, rpc)  # type: ignore[arg-type]
    fast_source.bind(tables.copy_prefixes(1))
    full = cfg.store != "blocks" and variant == "full"
    batch_size = settings.batch_size

    async def fetch_all(source: EvmSource) -> list[list[Block]]:
        try:
            return [
                await source.blocks(s, min(batch_size, blocks - s))
                for s in range(0, blocks, batch_size)
            ]
        finally:
            source.close()

    batches = asyncio.run(fetch_all(checked_source))
    bytes_per_pass = rpc.response_bytes
    if full:
        batches = asyncio.run(fetch_all(fast_source))
        assert fast_source.checked_batches == 0, "the fast path refused the replay chain"
    rows = sum(r.count for batch in batches for b in batch for r in b.rows.values())
    with fresh_database(dsn, "bench_limit") as db_url:
        asyncio.run(migrate(DatabaseConfig(url=db_url)))
        copy = asyncio.run(_copy_limit(db_url, batches))
        raw_secs = _raw_copy_limit(db_url, batch_size)
    parse_map = rpc.loads_secs + rpc.map_secs
    out: dict[str, Any] = {
        "variant": variant,
        "settings": settings.label(),
        "blocks": blocks,
        "rows": rows,
        "response_kb_per_block": round(bytes_per_pass / blocks / 1e3, 1),
        "parse_blocks_per_sec": round(blocks / rpc.loads_secs),
        "parse_mb_per_sec": round(bytes_per_pass / rpc.loads_secs / 1e6),
        "map_only_blocks_per_sec": round(blocks / rpc.map_secs),
        "parse_map_blocks_per_sec": round(blocks / parse_map),
        "copy_blocks_per_sec": round(blocks / copy["secs"]),
        "copy_rows_per_sec": round(rows / copy["secs"]),
        "copy_client_cpu_share": round(copy["client_cpu"] / copy["secs"], 2),
        "raw_copy_blocks_per_sec": round(blocks / raw_secs),
        "raw_copy_rows_per_sec": round(rows / raw_secs),
    }
    decode_secs = parse_map
    if full:
        out["msgspec_blocks_per_sec"] = round(blocks / rpc.msgspec_secs)
        out["fast_blocks_per_sec"] = round(blocks / rpc.fast_secs)
        decode_secs = rpc.fast_secs
    # One Python thread doing it all serially: what sync decodes with + COPY client CPU.
    out["one_core_model_blocks_per_sec"] = round(blocks / (decode_secs + copy["client_cpu"]))
    return out


# -- Command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--variant", choices=("full", "headers"), default="full")
    parser.add_argument("--blocks", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[100])
    parser.add_argument("--prefetch", type=int, nargs="+", default=[4])
    parser.add_argument(
        "--store",
        choices=("blocks", "transactions", "logs"),
        help="the chain's `store` setting (default: the indexer's)",
    )
    parser.add_argument(
        "--decode-workers",
        type=int,
        nargs="+",
        default=[None],
        help="the chain's `decode_workers` setting(s) (default: the indexer's)",
    )
    parser.add_argument("--profile", type=Path, help="py-spy raw output file (first setting)")
    parser.add_argument("--limits", action="store_true", help="also measure parse/COPY limits")
    parser.add_argument("--json", type=Path, help="write results here")
    args = parser.parse_args(argv)
    results: list[dict[str, Any]] = []
    extra: tuple[tuple[str, Any], ...] = (("store", args.store),) if args.store else ()
    with ReplayNode(Shape(variant=args.variant), head=args.blocks + 10) as node:
        for batch, prefetch, workers in itertools.product(
            args.batch_size, args.prefetch, args.decode_workers
        ):
            more = extra + ((("decode_workers", workers),) if workers is not None else ())
            settings = Settings(batch_size=batch, prefetch_batches=prefetch, extra=more)
            result = backfill(node, dsn=args.dsn, blocks=args.blocks, settings=settings)
            results.append(result)
            print(orjson.dumps(result).decode(), flush=True)
        if args.profile:
            workers = args.decode_workers[0]
            more = extra + ((("decode_workers", workers),) if workers is not None else ())
            settings = Settings(
                batch_size=args.batch_size[0], prefetch_batches=args.prefetch[0], extra=more
            )
            result = backfill(
                node, dsn=args.dsn, blocks=args.blocks, settings=settings, profile_path=args.profile
            )
            result["profile"] = summarise_profile(args.profile, wall_secs=result["wall_secs"])
            results.append(result)
            print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode(), flush=True)
    if args.limits:
        limits = measure_limits(
            dsn=args.dsn,
            variant=args.variant,
            blocks=min(args.blocks, 1000 if args.variant == "full" else 50_000),
            settings=Settings(batch_size=args.batch_size[0]),
        )
        results.append(limits)
        print(orjson.dumps(limits).decode(), flush=True)
    if args.json:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
