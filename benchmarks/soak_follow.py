"""Soak: follow a busy devnet for a while with reorgs and JSON-RPC faults; is RSS flat?

Starts anvil mining a block every second with traffic, a fault proxy in front of it, and
`indexer sync` (a subprocess) following the head through the proxy into a fresh database.
Every 20 s it reorgs the devnet (3-6 blocks) and injects a burst of faults. It samples the
indexer's RSS every second and reports the first minute's median, the last minute's median,
the maximum, and the growth, then checks the stored chain against the node.
`python -m benchmarks.soak_follow --minutes 10`.
"""

from __future__ import annotations

import argparse
import random
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
from indexer.devnet.anvil import Anvil
from tests.support.faultproxy import FaultProxy
from tests.support.oracle import assert_equals_node, check_invariants

FAULTS = ["http_500", "http_429", "timeout", "malformed_json", "break_link", "null_result"]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--log", default="/tmp/soak-indexer.log", help="the indexer's stderr")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database")
    args = parser.parse_args(argv)
    name = f"soak_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    db_url = args.dsn.rsplit("/", 1)[0] + "/" + name
    rng = random.Random(5)
    stop = threading.Event()
    samples: list[tuple[float, int]] = []
    try:
        with Anvil(block_time_secs=1) as node, FaultProxy(node.url) as proxy:
            feeder = threading.Thread(
                target=traffic.run_forever,
                args=(node.url,),
                kwargs={"interval_secs": 1.0, "stop_event": stop, "txs_per_block": (1, 6)},
                daemon=True,
            )
            feeder.start()
            with tempfile.TemporaryDirectory() as tmp, open(args.log, "wb") as log_file:
                config = Path(tmp) / "soak.toml"
                config.write_text(
                    f'[database]\nurl = "{db_url}"\n[[chains]]\nname = "dev"\nkind = "evm"\n'
                    f'urls = ["{proxy.url}"]\nchain_id = 31337\npoll_interval_secs = 0.5\n'
                    "request_timeout_secs = 2.0\nrepair_interval_secs = 30\n"
                )
                proc = subprocess.Popen(
                    [sys.executable, "-m", "indexer", "--config", str(config), "sync"],
                    stdout=subprocess.DEVNULL,
                    stderr=log_file,
                )
                started = time.monotonic()
                next_event = started + 20
                accounts = node.accounts()
                while time.monotonic() - started < args.minutes * 60:
                    samples.append((time.monotonic() - started, rss_kib(proc.pid)))
                    if time.monotonic() >= next_event:
                        next_event += 20
                        tx = {"from": accounts[-1], "to": accounts[-2], "value": "0x1"}
                        node.rpc("anvil_reorg", [rng.randint(3, 6), [[tx, 0]]])
                        for _ in range(3):
                            proxy.add_fault(rng.choice(FAULTS), times=rng.randint(1, 3))
                    time.sleep(1.0)
                stop.set()
                feeder.join(timeout=30)
                proxy.clear()
                time.sleep(5)  # let it catch up with the last blocks
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(timeout=60)
            tip = check_invariants(db_url, "dev")
            assert tip is not None
            assert_equals_node(db_url, "dev", node.url, end=tip)
    finally:
        if args.keep_db:
            print(f"database kept: {db_url}")
        else:
            with psycopg.connect(args.dsn, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    first = statistics.median(r for t, r in samples if t < 60)
    last = statistics.median(r for t, r in samples if t >= samples[-1][0] - 60)
    peak = max(r for _, r in samples)
    print(
        f"soak {args.minutes:g} min, exit {code}, stored tip {tip:,d}: RSS first-minute median "
        f"{first / 1024:.1f} MiB, last-minute median {last / 1024:.1f} MiB, peak "
        f"{peak / 1024:.1f} MiB, growth {100 * (last - first) / first:+.1f}%"
    )
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
