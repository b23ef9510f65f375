"""Side by side with Ponder: the same ERC-20 Transfers from the same node into Postgres.

The replay node (`benchmarks.replay_node`, its own process) serves `--blocks` blocks of the
mainnet-shaped chain with realistic logs (`Shape(events=True)`: of 300 logs a block, about
50% ERC-20 `Transfer`, 5% ERC-721 `Transfer` with the same topic0, the rest Approval, Swap
and random events). Each round runs both sides against it, each into a fresh database, in
alternating order (ours first, then Ponder first, ...):

- **ours**: `indexer migrate` then `indexer sync --to N-1` (`benchmarks.backfill`'s config:
  batch 100, prefetch 4) with one `[[events]]` table, `transfers`, for
  `Transfer(address indexed from, address indexed to, uint256 value)` of any contract, and
  `store = "logs"` (blocks, transactions and every log from the node; the Transfers are
  decoded from each batch) unless `--our-store` says otherwise.
- **Ponder** (`benchmarks/ponder/`, pinned there; `npm ci` there first): `ponder start` with
  one chain (the node's chain id), one contract `ERC20` with a Transfer-only ABI, no address
  (any contract), blocks 0..N-1, and a handler that inserts one row per event into its
  `onchainTable` `transfer`. Timed until its `/ready` answers 200 (historical indexing done,
  which with an `endBlock` is everything) and `/status` says block N-1.

Ponder asks `eth_getLogs` with a `topics` filter; the replay node serves only
fromBlock/toBlock. So Ponder talks to a thin filtering proxy (`proxy`, its own process):
it forwards every request unchanged except such an `eth_getLogs`, which it asks the node
without the filter and answers with the matching logs (address and topics, as a node
filters). Its CPU is reported apart. `--our-store blocks` runs ours through the same proxy
too (event tables filled by topic-filtered `eth_getLogs`, as Ponder's are).

Each side's rate: Transfer rows / seconds, both over the whole run (process start to done:
start-up, build, migrations included) and steady (from the first block or log request at
the node to done). Then the rows: for every (block_number, log_index), address, from, to and
value must be equal in both; counts and differences are printed.

Usage: `python -m benchmarks.ponder_compare [--blocks 2000] [--rounds 2] [--json out.json]`
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg

from benchmarks.backfill import (
    DEFAULT_DSN,
    Settings,
    _proc_cpu_secs,
    fresh_database,
    indexer_command,
    run_indexer,
    steady_rate,
    write_config,
)
from benchmarks.replay_blocks import EVENT_SIGNATURES
from benchmarks.replay_node import REPO, ReplayNode, Shape

PONDER_DIR = Path(__file__).resolve().parent / "ponder"
PONDER_SCHEMA = "ponder_bench"
SHAPE = Shape(variant="full", events=True)
TABLE = "transfers"
SIGNATURE = EVENT_SIGNATURES[TABLE]
_READY_PREFIX = "filter proxy listening on "
Row = tuple[str, str, str, int]  # address, from, to, value
_children: list[subprocess.Popen[Any]] = []


# -- Child processes: every one is killed (its whole process group) at exit


def _spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    proc: subprocess.Popen[Any] = subprocess.Popen(cmd, start_new_session=True, **kwargs)
    _children.append(proc)
    return proc


def _stop(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    else:  # the leader is gone; its group may not be
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    if proc in _children:
        _children.remove(proc)


@atexit.register
def _stop_all() -> None:
    for proc in list(_children):
        _stop(proc, timeout=5.0)


def _on_signal(signum: int, _frame: Any) -> None:
    _stop_all()
    sys.exit(128 + signum)


# -- The filtering proxy (Ponder's eth_getLogs filters; the replay node serves ranges only)


def _matches(log: dict[str, Any], addresses: set[str] | None, topics: list[Any]) -> bool:
    if addresses is not None and log["address"].lower() not in addresses:
        return False
    have = log["topics"]
    for i, want in enumerate(topics):
        if want is None:
            continue
        if i >= len(have):
            return False
        options = want if isinstance(want, list) else [want]
        if have[i].lower() not in {t.lower() for t in options}:
            return False
    return True


async def _proxy(upstream: str, port: int) -> None:
    import aiohttp
    from aiohttp import web

    stats: dict[str, Any] = {"requests": {}, "first_at": {}, "filtered_logs": 0}
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=300), connector=aiohttp.TCPConnector(limit=64)
    )

    async def post(body: bytes) -> bytes:
        async with session.post(
            upstream, data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            return await resp.read()

    async def get_logs(call: dict[str, Any]) -> bytes:
        query = dict(call["params"][0])
        if "blockHash" in query:
            error = {"code": -32602, "message": "eth_getLogs by blockHash is not served"}
            return orjson.dumps({"jsonrpc": "2.0", "id": call.get("id"), "error": error})
        address = query.pop("address", None)
        topics = query.pop("topics", None) or []
        addresses = None
        if address is not None:
            addresses = {a.lower() for a in (address if isinstance(address, list) else [address])}
        plain = {"jsonrpc": "2.0", "id": call.get("id"), "method": "eth_getLogs",
                 "params": [query]}  # fmt: skip
        reply = orjson.loads(await post(orjson.dumps(plain)))
        if "result" in reply:
            reply["result"] = [log for log in reply["result"] if _matches(log, addresses, topics)]
            stats["filtered_logs"] += len(reply["result"])
        return orjson.dumps(reply)

    def filtered(call: Any) -> bool:
        return (
            isinstance(call, dict)
            and call.get("method") == "eth_getLogs"
            and isinstance(call.get("params"), list)
            and bool(call["params"])
            and isinstance(call["params"][0], dict)
            and bool(set(call["params"][0]) - {"fromBlock", "toBlock"})
        )

    async def one(call: Any) -> bytes:
        if filtered(call):
            return await get_logs(call)
        return await post(orjson.dumps(call))

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            payload = None
        calls = payload if isinstance(payload, list) else [payload]
        for call in calls:
            if isinstance(call, dict):
                method = str(call.get("method"))
                if method == "replay_proxyStats":
                    times = os.times()
                    result = {**stats, "cpu_secs": times.user + times.system}
                    reply = {"jsonrpc": "2.0", "id": call.get("id"), "result": result}
                    return web.Response(body=orjson.dumps(reply), content_type="application/json")
                stats["requests"][method] = stats["requests"].get(method, 0) + 1
                params = call.get("params") or [None]
                if method == "eth_getBlockByNumber" and str(params[0]).startswith("0x"):
                    method = "eth_getBlockByNumber(number)"
                stats["first_at"].setdefault(method, time.time())
        if isinstance(payload, list):
            if any(filtered(c) for c in payload):
                answers = await asyncio.gather(*(one(c) for c in payload))
                out = b"[" + b",".join(answers) + b"]"
            else:
                out = await post(body)
        elif filtered(payload):
            out = await get_logs(payload)
        else:
            out = await post(body)
        return web.Response(body=out, content_type="application/json")

    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(f"{_READY_PREFIX}http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await session.close()
        await runner.cleanup()


class FilterProxy:
    """`python -m benchmarks.ponder_compare proxy UPSTREAM` in its own process."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> FilterProxy:
        cmd = [sys.executable, "-m", "benchmarks.ponder_compare", "proxy", self.upstream]
        self._proc = _spawn(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.startswith(_READY_PREFIX):
            self.__exit__()
            raise RuntimeError(f"filter proxy did not start: {line!r}")
        self.url = line[len(_READY_PREFIX) :].strip()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._proc is not None:
            _stop(self._proc)
            self._proc = None

    def stats(self) -> dict[str, Any]:
        body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "replay_proxyStats"})
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            result: dict[str, Any] = orjson.loads(resp.read())["result"]
        return result


# -- Rows


def _hex(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return "0x" + bytes(value).hex()
    return str(value).lower()


def _rows(db_url: str, query: str) -> dict[tuple[int, int], Row]:
    out: dict[tuple[int, int], Row] = {}
    with psycopg.connect(db_url) as conn:
        for block, index, address, sender, to, value in conn.execute(query):
            number = int(value) if isinstance(value, Decimal | int) else int(str(value))
            out[(int(block), int(index))] = (_hex(address), _hex(sender), _hex(to), number)
    return out


def compare(ours: dict[tuple[int, int], Row], theirs: dict[tuple[int, int], Row]) -> dict[str, Any]:
    only_ours = sorted(set(ours) - set(theirs))
    only_theirs = sorted(set(theirs) - set(ours))
    differ = sorted(k for k in set(ours) & set(theirs) if ours[k] != theirs[k])
    return {
        "ours": len(ours),
        "ponder": len(theirs),
        "only_ours": len(only_ours),
        "only_ponder": len(only_theirs),
        "different": len(differ),
        "same": not (only_ours or only_theirs or differ),
        "examples": {
            "only_ours": [[*k, *ours[k][:3], str(ours[k][3])] for k in only_ours[:5]],
            "only_ponder": [[*k, *theirs[k][:3], str(theirs[k][3])] for k in only_theirs[:5]],
            "different": [[*k, str(ours[k]), str(theirs[k])] for k in differ[:5]],
        },
    }


# -- Our side


def run_ours(
    node: ReplayNode, *, dsn: str, blocks: int, store: str, keep: Callable[[str], None]
) -> dict[str, Any]:
    """`indexer migrate` + `indexer sync --to blocks-1` into a fresh database; `keep` gets
    the database URL while it still exists (to read the rows)."""
    node.call("replay_resetStats")
    settings = Settings(extra=(("store", store),), events=((TABLE, SIGNATURE),))
    with contextlib.ExitStack() as stack:
        proxy = (
            stack.enter_context(FilterProxy(node.url))
            if store in ("blocks", "transactions")
            else None
        )
        db_url = stack.enter_context(fresh_database(dsn, "bench_ours"))
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        config = write_config(
            Path(tmp, "indexer.toml"),
            db_url=db_url,
            node_url=proxy.url if proxy else node.url,
            settings=settings,
        )
        started = time.perf_counter()
        subprocess.run(indexer_command(config, "migrate"), cwd=REPO, check=True,
                       capture_output=True, timeout=300)  # fmt: skip
        migrate_secs = time.perf_counter() - started
        run = run_indexer(
            ["sync", "--to", str(blocks - 1)],
            config=config,
            db_url=db_url,
            log_path=Path(tmp, "indexer.log"),
            timeout_secs=900.0,
        )
        node_stats = node.stats()
        first = node_stats["first_block_at"]
        if proxy is not None:
            first = proxy.stats()["first_at"].get("eth_getBlockByNumber(number)", first)
        with psycopg.connect(db_url) as conn:
            events = int(conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0])  # type: ignore[index]
            undecodable = int(conn.execute("SELECT count(*) FROM event_undecodable").fetchone()[0])  # type: ignore[index]
        keep(db_url)
    wall = run["wall_secs"]
    startup, _ = steady_rate(blocks, wall=wall, started_at=run["started_at"], first_block_at=first)
    return {
        "events": events,
        "undecodable": undecodable,
        "migrate_secs": round(migrate_secs, 2),
        "wall_secs": round(wall, 2),
        "startup_secs": round(startup, 2),
        "steady_secs": round(wall - startup, 2),
        "events_per_sec": round(events / wall),
        "steady_events_per_sec": round(events / (wall - startup)),
        "cpu_secs": round(run["indexer_cpu_secs"], 2),
        "pg_backend_cpu_secs": round(run["pg_backend_cpu_secs"], 2),
    }


OURS_QUERY = f'SELECT block_number, log_index, address, "from", "to", value FROM {TABLE}'


# -- Ponder's side


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def ponder_version() -> str:
    package = PONDER_DIR / "node_modules" / "ponder" / "package.json"
    if not package.exists():
        raise RuntimeError(
            f"Ponder is not installed: run `npm ci` in {PONDER_DIR} (needs node >= 18.14 and "
            "the npm registry; the versions are pinned in package-lock.json)"
        )
    version: str = json.loads(package.read_text())["version"]
    return version


def _ponder_cpu(pid: int) -> float:
    """CPU seconds of `pid` and its descendants (node may fork workers)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += _proc_cpu_secs(p) or 0.0
        for task in Path(f"/proc/{p}/task").glob("*") if Path(f"/proc/{p}").exists() else []:
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return total


def run_ponder(
    node: ReplayNode,
    *,
    dsn: str,
    blocks: int,
    chain_id: int,
    keep: Callable[[str], None],
    timeout_secs: float = 900.0,
    log_dir: Path | None = None,
) -> dict[str, Any]:
    """`ponder start` into a fresh database until it has indexed blocks 0..blocks-1."""
    node_bin = shutil.which("node")
    if node_bin is None:
        raise RuntimeError("node is not on PATH (Ponder needs node >= 18.14)")
    ponder_version()
    end = blocks - 1
    node.call("replay_resetStats")
    with contextlib.ExitStack() as stack:
        proxy = stack.enter_context(FilterProxy(node.url))
        db_url = stack.enter_context(fresh_database(dsn, "bench_ponder"))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        log_path = (log_dir or tmp) / "ponder.log"
        port = _free_port()
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "DATABASE_SCHEMA": PONDER_SCHEMA,
            "PONDER_RPC_URL": proxy.url,
            "PONDER_CHAIN_ID": str(chain_id),
            "PONDER_END_BLOCK": str(end),
            "PONDER_TELEMETRY_DISABLED": "true",
            "CI": "true",
            "NODE_ENV": "production",
        }
        cmd = [
            node_bin,
            str(PONDER_DIR / "node_modules" / "ponder" / "dist" / "esm" / "bin" / "ponder.js"),
            "--log-level",
            "warn",
            "--log-format",
            "json",
            "start",
            "--port",
            str(port),
            "--hostname",
            "127.0.0.1",
        ]
        log = stack.enter_context(log_path.open("wb"))
        started_at = time.time()
        started = time.perf_counter()
        proc = _spawn(cmd, cwd=PONDER_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
        stack.callback(_stop, proc)
        base = f"http://127.0.0.1:{port}"
        block = -1
        cpu = 0.0
        while True:
            time.sleep(0.1)
            elapsed = time.perf_counter() - started
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-4000:]
                raise RuntimeError(f"ponder exited {proc.returncode} after {elapsed:.1f}s:\n{tail}")
            if elapsed > timeout_secs:
                tail = log_path.read_text(errors="replace")[-4000:]
                raise RuntimeError(f"ponder not done after {timeout_secs:.0f}s (block {block}):\n"
                                   f"{tail}")  # fmt: skip
            cpu = max(cpu, _ponder_cpu(proc.pid))
            with contextlib.suppress(OSError, ValueError):
                code, _ = _get(f"{base}/ready")
                if code != 200:
                    continue
                wall = time.perf_counter() - started
                status = orjson.loads(_get(f"{base}/status")[1])
                block = max((int(c["block"]["number"]) for c in status.values()), default=-1)
                if block >= end:
                    break
        proxy_stats = proxy.stats()
        with psycopg.connect(db_url) as conn:
            events = int(
                conn.execute(f"SELECT count(*) FROM {PONDER_SCHEMA}.transfer").fetchone()[0]  # type: ignore[index]
            )
        keep(db_url)
    first = proxy_stats["first_at"].get("eth_getLogs", started_at)
    startup = max(0.0, first - started_at)
    return {
        "events": events,
        "status_block": block,
        "wall_secs": round(wall, 2),
        "startup_secs": round(startup, 2),
        "steady_secs": round(wall - startup, 2),
        "events_per_sec": round(events / wall),
        "steady_events_per_sec": round(events / (wall - startup)),
        "cpu_secs": round(cpu, 2),
        "proxy_cpu_secs": round(proxy_stats["cpu_secs"], 2),
        "requests": proxy_stats["requests"],
    }


PONDER_QUERY = (
    f'SELECT block_number, log_index, address, "from", "to", value FROM {PONDER_SCHEMA}.transfer'
)


# -- Rounds


def measure(
    *,
    dsn: str,
    blocks: int,
    rounds: int,
    store: str,
    say: Callable[[str], None] = print,
    log_dir: Path | None = None,
) -> dict[str, Any]:
    version = ponder_version()
    node_version = subprocess.run(["node", "--version"], capture_output=True, text=True,
                                  check=True).stdout.strip()  # fmt: skip
    out: dict[str, Any] = {
        "blocks": blocks,
        "ponder": version,
        "node": node_version,
        "our_store": store,
        "rounds": [],
    }
    with ReplayNode(SHAPE, head=blocks + 500, cache_mb=4096) as node:
        chain_id = int(node.call("eth_chainId"), 16)
        rows: dict[str, dict[tuple[int, int], Row]] = {}  # each side's rows of this round
        for i in range(rounds):
            result: dict[str, Any] = {}
            order = ("ours", "ponder") if i % 2 == 0 else ("ponder", "ours")
            for side in order:
                if side == "ours":
                    result["ours"] = run_ours(
                        node, dsn=dsn, blocks=blocks, store=store,
                        keep=lambda url: rows.__setitem__("ours", _rows(url, OURS_QUERY)),
                    )  # fmt: skip
                else:
                    result["ponder"] = run_ponder(
                        node, dsn=dsn, blocks=blocks, chain_id=chain_id, log_dir=log_dir,
                        keep=lambda url: rows.__setitem__("ponder", _rows(url, PONDER_QUERY)),
                    )  # fmt: skip
                r = result[side]
                say(
                    f"round {i + 1} {side:6s}: {r['events']:,d} events, {r['wall_secs']:.2f} s "
                    f"({r['events_per_sec']:,d} events/s); steady {r['steady_secs']:.2f} s "
                    f"({r['steady_events_per_sec']:,d} events/s), CPU {r['cpu_secs']:.1f} s"
                    + (f", proxy CPU {r['proxy_cpu_secs']:.1f} s" if side == "ponder" else "")
                )
            result["order"] = " ".join(order)
            result["rows"] = compare(rows["ours"], rows["ponder"])
            rows.clear()
            c = result["rows"]
            say(
                f"round {i + 1} rows: ours {c['ours']:,d}, ponder {c['ponder']:,d}, only ours "
                f"{c['only_ours']}, only ponder {c['only_ponder']}, different {c['different']}"
                + (": the same" if c["same"] else f": {orjson.dumps(c['examples']).decode()}")
            )
            out["rounds"].append(result)
    summary: dict[str, Any] = {}
    for side in ("ours", "ponder"):
        runs = [r[side] for r in out["rounds"]]
        summary[side] = {
            key: [min(r[key] for r in runs), max(r[key] for r in runs)]
            for key in ("events", "wall_secs", "events_per_sec", "steady_events_per_sec")
        }
    summary["rows_same"] = all(r["rows"]["same"] for r in out["rounds"])
    out["summary"] = summary
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    proxy = sub.add_parser("proxy", help="(internal) the eth_getLogs filtering proxy")
    proxy.add_argument("upstream")
    proxy.add_argument("--port", type=int, default=0)
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--blocks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--our-store", default="logs", choices=("logs", "receipts", "blocks"))
    parser.add_argument("--log-dir", type=Path, help="keep Ponder's log here")
    parser.add_argument("--json", type=Path, help="write results here")
    args = parser.parse_args(argv)
    if args.command == "proxy":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_proxy(args.upstream, args.port))
        return 0
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        out = measure(dsn=args.dsn, blocks=args.blocks, rounds=args.rounds, store=args.our_store,
                      log_dir=args.log_dir, say=lambda t: print(t, flush=True))  # fmt: skip
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    s = out["summary"]
    print(
        f"{args.blocks:,d} blocks of the realistic-logs chain, {len(out['rounds'])} rounds; "
        f"Ponder {out['ponder']} on node {out['node']}, ours store = {args.our_store!r}"
    )
    for side in ("ours", "ponder"):
        x = s[side]
        print(
            f"{side:6s}: events {x['events'][0]:,d}-{x['events'][1]:,d}, seconds "
            f"{x['wall_secs'][0]:.1f}-{x['wall_secs'][1]:.1f}, events/s "
            f"{x['events_per_sec'][0]:,d}-{x['events_per_sec'][1]:,d} (steady "
            f"{x['steady_events_per_sec'][0]:,d}-{x['steady_events_per_sec'][1]:,d})"
        )
    print(f"rows the same in every round: {s['rows_same']}")
    if args.json:
        args.json.write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))
    return 0 if s["rows_same"] else 2


if __name__ == "__main__":
    sys.exit(main())
