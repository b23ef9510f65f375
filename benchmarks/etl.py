"""ethereum-etl against the same replay node: `export_blocks_and_transactions` to CSV, timed.

ethereum-etl is batch-JSON-RPC Python like us, so it is the honest peer on the same node:
it fetches `eth_getBlockByNumber(n, true)` in batches on a thread pool and writes CSV; we
also fetch logs, validate and write Postgres. It is installed, pinned, into its own venv at
`.tools/etl-venv` (it needs Python 3.10: its web3 5 / eth-abi 2 / parsimonious 0.8 stack
imports `inspect.getargspec`, which Python 3.11 removed; see ethereum-etl issues #460, #494).
It runs against the replay node unchanged: it needs only batched `eth_getBlockByNumber`
with full transactions, ids echoed (it numbers them from 0) and the usual header and
transaction fields, which the node serves.

Usage: `python -m benchmarks.etl --blocks 2000 [--workers 5] [--batch-size 100]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.backfill import steady_rate
from benchmarks.replay_node import REPO, ReplayNode, Shape

ETL_VERSION = "2.4.2"
# The versions its own requirements resolved to when we measured (pinned for repeatability).
ETL_PINS = (
    "ethereum-etl==2.4.2",
    "web3==5.31.4",
    "eth-abi==2.2.0",
    "eth-utils==1.10.0",
    "parsimonious==0.8.1",
    "requests==2.34.2",
    "urllib3==1.26.20",
)
ETL_VENV = REPO / ".tools" / "etl-venv"
ETL_BIN = ETL_VENV / "bin" / "ethereumetl"


def _python310() -> str | None:
    candidates = [os.environ.get("ETL_PYTHON"), shutil.which("python3.10")]
    pyenv = Path.home() / ".pyenv" / "versions"
    if pyenv.is_dir():
        candidates += [str(p / "bin" / "python") for p in sorted(pyenv.glob("3.10*"))]
    check = "import sys; sys.exit(sys.version_info[:2] != (3, 10))"
    for candidate in candidates:
        # A pyenv shim exists even when no 3.10 is selected: ask the interpreter itself.
        if candidate and Path(candidate).exists():
            probe = subprocess.run([candidate, "-c", check], capture_output=True, check=False)
            if probe.returncode == 0:
                return candidate
    return None


def ensure_etl() -> Path | None:
    """The `ethereumetl` entry point, installing the pinned venv if needed (None: can't)."""
    if ETL_BIN.exists():
        return ETL_BIN
    python = _python310()
    if python is None:
        print("etl: no Python 3.10 found (set ETL_PYTHON); skipping", file=sys.stderr)
        return None
    subprocess.run([python, "-m", "venv", str(ETL_VENV)], check=True)
    subprocess.run([str(ETL_VENV / "bin" / "pip"), "install", "-q", *ETL_PINS], check=True)
    return ETL_BIN if ETL_BIN.exists() else None


def _lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f) - 1  # header row


def export(
    node: ReplayNode, etl: Path, *, blocks: int, batch_size: int, workers: int
) -> dict[str, Any]:
    """Run one export of blocks 0..blocks-1; return its rate and CPU."""
    node.call("replay_resetStats")
    node_cpu = node.stats()["cpu_secs"]
    with tempfile.TemporaryDirectory() as tmp:
        out_blocks, out_txs = Path(tmp, "blocks.csv"), Path(tmp, "transactions.csv")
        cmd = [
            str(etl),
            "export_blocks_and_transactions",
            "-s",
            "0",
            "-e",
            str(blocks - 1),
            "-b",
            str(batch_size),
            "-w",
            str(workers),
            "-p",
            node.url,
            "--blocks-output",
            str(out_blocks),
            "--transactions-output",
            str(out_txs),
        ]
        started_at, started = time.time(), time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, rusage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        assert proc.stderr is not None
        errors = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        if proc.returncode != 0:
            raise RuntimeError(f"ethereumetl exited {proc.returncode}: {errors[-2000:]}")
        rows = {"blocks": _lines(out_blocks), "transactions": _lines(out_txs)}
    stats = node.stats()
    assert rows["blocks"] == blocks, rows
    startup, steady = steady_rate(
        blocks, wall=wall, started_at=started_at, first_block_at=stats["first_block_at"]
    )
    return {
        "tool": f"ethereum-etl {ETL_VERSION}",
        "settings": f"batch {batch_size}, workers {workers}",
        "blocks": blocks,
        "rows": rows,
        "wall_secs": round(wall, 2),
        "blocks_per_sec": round(blocks / wall),
        "startup_secs": round(startup, 2),
        "steady_blocks_per_sec": round(steady),
        "tx_rows_per_sec": round(steady * rows["transactions"] / blocks),
        "cpu_secs": {
            "etl": round(rusage.ru_utime + rusage.ru_stime, 2),
            "node": round(stats["cpu_secs"] - node_cpu, 2),
        },
        "etl_cpu_share": round((rusage.ru_utime + rusage.ru_stime) / wall, 2),
    }


def run(
    *, blocks: int, settings: list[tuple[int, int]], node: ReplayNode | None = None
) -> list[dict[str, Any]]:
    """Each (batch_size, workers) setting once; [] when ethereum-etl cannot be installed."""
    etl = ensure_etl()
    if etl is None:
        return []
    if node is not None:
        return [export(node, etl, blocks=blocks, batch_size=b, workers=w) for b, w in settings]
    with ReplayNode(Shape(variant="full"), head=blocks + 10) as own:
        return [export(own, etl, blocks=blocks, batch_size=b, workers=w) for b, w in settings]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--workers", type=int, nargs="+", default=[5])
    args = parser.parse_args(argv)
    results = run(blocks=args.blocks, settings=[(args.batch_size, w) for w in args.workers])
    for result in results:
        print(orjson.dumps(result).decode())
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
