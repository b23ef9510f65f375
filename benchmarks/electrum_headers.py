"""Bitcoin headers/s from a real ElectrumX on loopback, end to end into Postgres.

Mines N regtest blocks in the test simulator, lets ElectrumX index them, then times
`indexer sync --to N` (in process) for an electrum chain: fetch (concurrent chunks), header
validation, COPY and checkpoint. `python -m benchmarks.electrum_headers --blocks 50000`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from indexer import config, daemon
from indexer.sync.progress import Progress
from tests.electrum import electrumx_proc, regtest
from tests.electrum.bitcoind_sim import BitcoindSim


async def timed_sync(cfg: config.Config, height: int) -> float:
    started = time.perf_counter()
    code = await daemon.run_sync(
        cfg, to_height=height, stop=asyncio.Event(), progress=Progress(tty=False)
    )
    assert code == 0
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--blocks", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=2016)
    parser.add_argument("--prefetch", type=int, default=4)
    args = parser.parse_args(argv)
    name = f"bench_btc_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    db_url = args.dsn.rsplit("/", 1)[0] + "/" + name
    try:
        with BitcoindSim() as sim, tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            sim.generate(args.blocks)
            mined = time.perf_counter() - started
            proc = electrumx_proc.ElectrumXProc(
                daemon_url=sim.url,
                db_dir=Path(tmp) / "electrumx",
                server_path=electrumx_proc.find_electrumx_server(),
            )
            with proc:
                started = time.perf_counter()
                proc.wait_synced(args.blocks, hash_hex=sim.tip().hash_hex, timeout_secs=1800)
                indexed = time.perf_counter() - started
                cfg = config.build(
                    {
                        "database": {"url": db_url},
                        "chains": [
                            {
                                "name": "btc",
                                "kind": "electrum",
                                "urls": [proc.tcp_url],
                                "genesis_hash": regtest.GENESIS_HASH_HEX,
                                "batch_size": args.batch_size,
                                "prefetch_batches": args.prefetch,
                                "repair_interval_secs": 0,
                            }
                        ],
                    },
                    {},
                )
                secs = asyncio.run(timed_sync(cfg, args.blocks))
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    rate = (args.blocks + 1) / secs
    print(
        f"electrum headers: {args.blocks + 1:,d} headers in {secs:.2f}s = {rate:,.0f} headers/s "
        f"end to end into Postgres (batch {args.batch_size}, prefetch {args.prefetch}); "
        f"setup: mined in {mined:.1f}s, ElectrumX indexed in {indexed:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
