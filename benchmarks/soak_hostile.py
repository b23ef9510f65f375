"""Soak, hostile world: a node that alternates good answers with huge or endless bodies, values
no column holds, and lies.

Starts anvil mining a block every second with traffic, plus a burst of `BURST_BLOCKS` empty
blocks every `BURST_SECS` (so that the indexer keeps backfilling in batches as well as
following the head); a `HostileNode` in front of it that answers, instead of the node, with a
300 MB body (announced, chunked with no Content-Length, delimited by the connection's end, or
never ending), or with its own answer made to hold a value no column holds or to lie (a
changed transaction value, a flipped receipt status): every request for more than one block,
and each single-block request with probability `--hostile`; and `indexer sync` (a
subprocess, default settings: batches of 100, four prefetched, the 512 MiB budget) following
the head through it into a fresh database. Batches shrink to one block, grow back after 16
whole ones, are refused again; single blocks are refused now and then. For `--minutes` it
samples the indexer's RSS every 0.2 s; then the node turns honest, the indexer catches up with
the head, and the stored chain is checked against the node. Reports RSS (first-minute median,
last-minute median, peak), the hostile answers of each kind and the bytes thrown at it, and
the stored tip that equals the node's. `python -m benchmarks.soak_hostile --minutes 10`.
"""

from __future__ import annotations

import argparse
import atexit
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg

from indexer.devnet import traffic
from indexer.devnet.anvil import Anvil, DevnetError
from tests.support.hostile_node import KINDS, MUTATIONS, HostileNode
from tests.support.oracle import assert_equals_node, check_invariants

PREFILL_BLOCKS = 500
BURST_BLOCKS = 300
BURST_SECS = 30.0


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


def rss_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def stored_tip(db_url: str) -> int:
    try:
        with psycopg.connect(db_url) as conn:
            row = conn.execute("SELECT max(number) FROM checkpoints").fetchone()
    except psycopg.Error:
        return -1
    return -1 if row is None or row[0] is None else int(row[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument(
        "--hostile", type=float, default=0.25, help="share of single-block requests refused"
    )
    parser.add_argument("--log", default="/tmp/soak-hostile-indexer.log", help="its stderr")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database")
    args = parser.parse_args(argv)
    name = f"soak_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    db_url = args.dsn.rsplit("/", 1)[0] + "/" + name
    stop = threading.Event()
    samples: list[tuple[float, int]] = []
    try:
        with Anvil() as node:
            traffic.fill_blocks(node, PREFILL_BLOCKS, txs_per_block=(1, 6), seed=9)
            node.set_interval_mining(1)
            feeder = threading.Thread(
                target=traffic.run_forever,
                args=(node.url,),
                kwargs={"interval_secs": 1.0, "stop_event": stop, "txs_per_block": (1, 6)},
                daemon=True,
            )
            feeder.start()
            hostile = HostileNode(
                node.url, kinds=KINDS + MUTATIONS, over_blocks=1, probability=args.hostile, seed=5
            )
            with hostile, tempfile.TemporaryDirectory() as tmp, open(args.log, "wb") as log:
                config = Path(tmp) / "soak.toml"
                config.write_text(
                    f'[database]\nurl = "{db_url}"\n[[chains]]\nname = "dev"\nkind = "evm"\n'
                    f'urls = ["{hostile.url}"]\nchain_id = 31337\npoll_interval_secs = 0.5\n'
                )
                proc = subprocess.Popen(
                    [sys.executable, "-m", "indexer", "--config", str(config), "sync"],
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
                atexit.register(_kill, proc)  # the indexer never outlives a failed soak
                started = time.monotonic()
                next_burst = started + BURST_SECS
                bursts_missed = 0
                while time.monotonic() - started < args.minutes * 60 and proc.poll() is None:
                    samples.append((time.monotonic() - started, rss_kib(proc.pid)))
                    if time.monotonic() >= next_burst:
                        next_burst += BURST_SECS
                        try:
                            node.mine(BURST_BLOCKS)
                        except DevnetError as exc:  # anvil, not the indexer, too busy
                            bursts_missed += 1
                            print(f"burst not mined ({exc}); going on", file=sys.stderr)
                    time.sleep(0.2)
                hostile_answers, sent = hostile.hostile_answers, hostile.hostile_bytes_sent
                by_kind = dict(hostile.by_kind)
                hostile.set_hostile(False)
                stop.set()
                feeder.join(timeout=30)
                head = node.block_number()
                honest_at = time.monotonic()
                while stored_tip(db_url) < head and proc.poll() is None:
                    if time.monotonic() - honest_at > 300:
                        raise AssertionError(f"no catch-up to {head:,d} within 300 s")
                    time.sleep(0.5)
                catch_up_secs = time.monotonic() - honest_at
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(timeout=90)
            tip = check_invariants(db_url, "dev")
            assert tip is not None and tip >= head, f"stored tip {tip} below the head {head}"
            assert_equals_node(db_url, "dev", node.url, end=tip)
    finally:
        if args.keep_db:
            print(f"database kept: {db_url}")
        else:
            with psycopg.connect(args.dsn, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    end = samples[-1][0]
    first = statistics.median(r for t, r in samples if t < 60)
    last = statistics.median(r for t, r in samples if t >= end - 60)
    peak = max(r for _, r in samples)
    print(
        f"hostile soak {args.minutes:g} min, {hostile_answers:,d} hostile answers "
        f"({', '.join(f'{k} {n:,d}' for k, n in sorted(by_kind.items()))}; "
        f"{sent / 1e9:.1f} GB), exit {code}, stored tip {tip:,d} = node's "
        f"(caught up in {catch_up_secs:.0f}s): RSS first-minute median {first / 1024:.0f} MiB, "
        f"last-minute median {last / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB; "
        f"{bursts_missed} burst(s) anvil did not mine in time"
    )
    return 0 if code == 0 and peak < 1024 * 1024 else 1


if __name__ == "__main__":
    sys.exit(main())
