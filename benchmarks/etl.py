"""ethereum-etl against the same replay node: its blocks+transactions and its full export.

ethereum-etl is batch-JSON-RPC Python like us, so it is the honest peer on the same node:
it fetches `eth_getBlockByNumber(n, true)` in batches on a thread pool and writes CSV; we
also validate and write Postgres. It is installed, pinned, into its own venv at
`.tools/etl-venv` (it needs Python 3.10: its web3 5 / eth-abi 2 / parsimonious 0.8 stack
imports `inspect.getargspec`, which Python 3.11 removed; see ethereum-etl issues #460, #494).

Each setting runs ethereum-etl's full export, the two steps its docs chain:

1. `export_blocks_and_transactions` (blocks.csv, transactions.csv): timed alone, this is the
   "blocks + transactions" rate;
2. the transaction hashes from transactions.csv into hashes.txt (not timed into any rate,
   reported apart), then `export_receipts_and_logs --transaction-hashes hashes.txt`
   (receipts.csv, logs.csv): batches of `eth_getTransactionReceipt` on the same thread pool.

The full export's rate is blocks / (time of steps 1 and 2 together). "Steady" rates leave
out each step's start-up (imports, until its first request reaches the node): for step 1
the node's `first_block_at`, for step 2 the first `eth_getTransactionReceipt` the node
counts (polled every 20 ms, so a step-2 start-up reads up to ~25 ms long, in ethereum-etl's
favour). Every output's row count is checked against what the node serves: blocks, and
transactions, receipts and logs summed over the blocks' templates.

Both steps run against the replay node unchanged: the first needs only batched
`eth_getBlockByNumber` with full transactions, ids echoed (it numbers them from 0) and the
usual header and transaction fields; the second batched `eth_getTransactionReceipt` with the
usual receipt and log fields. The node's transaction hashes repeat across blocks built from
the same template, so it places each run of requested hashes in a block it served recently
(`ReplayChain.transaction_receipts`), which is cheap for hashes in block order and costly
otherwise. transactions.csv is in the order ethereum-etl's workers finished their batches, and
in that order (`hash_order="csv"`: `ethereumetl extract_csv_column --column hash`, as its docs
chain the steps) the node spent 60 s of CPU on the receipts of 2,000 blocks (200 us a
receipt, 80% of a core; 4.6 s in block order) and took the CPU ethereum-etl needed on these
two cores (its receipts step, one run each: 26-27 blocks/s at 59-64% CPU, against 41 at 91%).
So by default (`hash_order="block"`) hashes.txt holds the same hashes sorted by block and
index: the same requests, and the same answers but for the block hash and number in them,
with the node out of the way. `receipts_elsewhere` counts receipts whose (block, index) is
not an exported transaction's (runs the node placed in another block of the same template:
same rows and sizes, other block hash and number).

Usage: `python -m benchmarks.etl --blocks 2000 [--workers 5] [--batch-size 100]
[--blocks-only] [--hash-order block|csv]`.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from benchmarks.backfill import steady_rate
from benchmarks.replay_chain import ReplayChain
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
POLL_SECS = 0.02  # how often step 2's start-up watches the node for its first receipt call
HashOrder = Literal["block", "csv"]


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


def expected_rows(shape: Shape, blocks: int) -> dict[str, int]:
    """What the node serves for blocks 0..blocks-1 (the same deterministic chain, rebuilt
    here): transactions (= receipts) and logs, summed over each block's template."""
    chain = ReplayChain(shape, head=blocks, cache_bytes=0)
    templates = [chain.template_of(n) for n in range(blocks)]
    txs = sum(t.tx_count for t in templates)
    return {
        "blocks": blocks,
        "transactions": txs,
        "receipts": txs,
        "logs": sum(t.log_count for t in templates),
    }


@dataclass(frozen=True, slots=True)
class _Step:
    wall: float  # seconds, process start to exit
    started_at: float  # unix time of the start
    cpu_secs: float  # the process's user + system CPU


def _run_step(cmd: list[str], *, node: ReplayNode | None = None) -> tuple[_Step, float | None]:
    """Run one ethereumetl command; with `node`, also when (unix time) the node first counted
    an eth_getTransactionReceipt (polled while the process starts)."""
    first_receipt_at: float | None = None
    # stderr to a file, not a pipe: nobody reads a pipe while we wait, and a full one would
    # stall ethereum-etl's logging (and so the run).
    with tempfile.TemporaryFile() as stderr:
        started_at, started = time.time(), time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr)
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG if node is not None else 0)
            if pid:
                break
            assert node is not None
            if node.stats()["tx_receipts"] > 0:
                first_receipt_at = time.time()
                node = None  # seen: now just wait for the exit
            else:
                time.sleep(POLL_SECS)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        errors = stderr.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"ethereumetl {cmd[1]} exited {proc.returncode}: {errors[-2000:]}")
    return _Step(wall, started_at, rusage.ru_utime + rusage.ru_stime), first_receipt_at


def _hashes_in_block_order(transactions: Path, hashes: Path) -> None:
    with transactions.open(newline="") as f:
        rows = [
            (int(r["block_number"]), int(r["transaction_index"]), r["hash"])
            for r in csv.DictReader(f)
        ]
    rows.sort()
    hashes.write_text("".join(f"{h}\n" for _, _, h in rows))


def _placed_elsewhere(transactions: Path, receipts: Path) -> int:
    """Receipts whose (block_number, transaction_index) no exported transaction has."""

    def keys(path: Path) -> Counter[tuple[str, str]]:
        with path.open(newline="") as f:
            return Counter((r["block_number"], r["transaction_index"]) for r in csv.DictReader(f))

    return (keys(receipts) - keys(transactions)).total()


def export(
    node: ReplayNode,
    etl: Path,
    *,
    blocks: int,
    batch_size: int,
    workers: int,
    full: bool = True,
    hash_order: HashOrder = "block",
    expected: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Export blocks 0..blocks-1 (`full`: then their receipts and logs); rates, CPU, rows."""
    expected = expected or expected_rows(node.shape, blocks)
    common = ["-b", str(batch_size), "-w", str(workers), "-p", node.url]
    result: dict[str, Any] = {
        "tool": f"ethereum-etl {ETL_VERSION}",
        "settings": f"batch {batch_size}, workers {workers}",
        "blocks": blocks,
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = {name: Path(tmp, f"{name}.csv") for name in expected}
        hashes = Path(tmp, "hashes.txt")

        # Step 1: blocks and transactions.
        node.call("replay_resetStats")
        node_cpu = node.stats()["cpu_secs"]
        step1, _ = _run_step(
            [
                str(etl),
                "export_blocks_and_transactions",
                "-s",
                "0",
                "-e",
                str(blocks - 1),
                *common,
                "--blocks-output",
                str(out["blocks"]),
                "--transactions-output",
                str(out["transactions"]),
            ]
        )
        stats = node.stats()
        rows = {name: _lines(out[name]) for name in ("blocks", "transactions")}
        for name, count in rows.items():
            assert count == expected[name], (name, count, expected[name])
        startup1, steady1 = steady_rate(
            blocks,
            wall=step1.wall,
            started_at=step1.started_at,
            first_block_at=stats["first_block_at"],
        )
        result |= {
            "rows": rows,
            "wall_secs": round(step1.wall, 2),
            "blocks_per_sec": round(blocks / step1.wall),
            "startup_secs": round(startup1, 2),
            "steady_blocks_per_sec": round(steady1),
            "tx_rows_per_sec": round(steady1 * rows["transactions"] / blocks),
            "cpu_secs": {
                "etl": round(step1.cpu_secs, 2),
                "node": round(stats["cpu_secs"] - node_cpu, 2),
            },
            "etl_cpu_share": round(step1.cpu_secs / step1.wall, 2),
        }
        if not full:
            return result

        # The hashes for step 2 (not counted in any rate).
        extract_started = time.perf_counter()
        if hash_order == "block":
            _hashes_in_block_order(out["transactions"], hashes)
        else:
            _run_step(
                [
                    str(etl),
                    "extract_csv_column",
                    "--input",
                    str(out["transactions"]),
                    "--column",
                    "hash",
                    "--output",
                    str(hashes),
                ]
            )
        extract_secs = time.perf_counter() - extract_started
        assert _lines(hashes) + 1 == rows["transactions"], "hashes.txt"

        # Step 2: receipts and logs, by transaction hash.
        node.call("replay_resetStats")
        node_cpu = node.stats()["cpu_secs"]
        step2, first_receipt_at = _run_step(
            [
                str(etl),
                "export_receipts_and_logs",
                "--transaction-hashes",
                str(hashes),
                *common,
                "--receipts-output",
                str(out["receipts"]),
                "--logs-output",
                str(out["logs"]),
            ],
            node=node,
        )
        stats = node.stats()
        full_rows = {name: _lines(path) for name, path in out.items()}
        for name, count in full_rows.items():
            assert count == expected[name], (name, count, expected[name])
        elsewhere = _placed_elsewhere(out["transactions"], out["receipts"])
    startup2 = max(0.0, (first_receipt_at or step2.started_at) - step2.started_at)
    wall = step1.wall + step2.wall
    steady_secs = (step1.wall - startup1) + (step2.wall - startup2)
    result["full_export"] = {
        "steps": "export_blocks_and_transactions + export_receipts_and_logs",
        "hash_order": hash_order,
        "rows": full_rows,
        "wall_secs": round(wall, 2),
        "blocks_per_sec": round(blocks / wall, 1),
        "startup_secs": round(startup1 + startup2, 2),
        "steady_blocks_per_sec": round(blocks / steady_secs, 1),
        "receipts_step": {
            "wall_secs": round(step2.wall, 2),
            "startup_secs": round(startup2, 2),
            "steady_blocks_per_sec": round(blocks / (step2.wall - startup2)),
            "etl_cpu_share": round(step2.cpu_secs / step2.wall, 2),
            "node_requests": stats["requests"],
            "node_tx_receipts": stats["tx_receipts"],
            "node_cpu_secs": round(stats["cpu_secs"] - node_cpu, 2),
        },
        "extract_hashes_secs": round(extract_secs, 2),
        "cpu_secs": {
            "etl": round(step1.cpu_secs + step2.cpu_secs, 2),
            "node": round(result["cpu_secs"]["node"] + stats["cpu_secs"] - node_cpu, 2),
        },
        "receipts_elsewhere": elsewhere,
    }
    return result


def run(
    *,
    blocks: int,
    settings: list[tuple[int, int]],
    node: ReplayNode | None = None,
    full: bool = True,
    hash_order: HashOrder = "block",
) -> list[dict[str, Any]]:
    """Each (batch_size, workers) setting once; [] when ethereum-etl cannot be installed."""
    etl = ensure_etl()
    if etl is None:
        return []
    if node is None:
        with ReplayNode(Shape(variant="full"), head=blocks + 10) as own:
            return run(blocks=blocks, settings=settings, node=own, full=full, hash_order=hash_order)
    expected = expected_rows(node.shape, blocks)
    return [
        export(
            node,
            etl,
            blocks=blocks,
            batch_size=b,
            workers=w,
            full=full,
            hash_order=hash_order,
            expected=expected,
        )
        for b, w in settings
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--workers", type=int, nargs="+", default=[5])
    parser.add_argument(
        "--blocks-only",
        dest="full",
        action="store_false",
        help="export_blocks_and_transactions alone (no receipts and logs)",
    )
    parser.add_argument(
        "--hash-order",
        choices=("block", "csv"),
        default="block",
        help="hashes.txt sorted by block and index, or as transactions.csv lists them",
    )
    args = parser.parse_args(argv)
    results = run(
        blocks=args.blocks,
        settings=[(args.batch_size, w) for w in args.workers],
        full=args.full,
        hash_order=args.hash_order,
    )
    for result in results:
        print(orjson.dumps(result).decode())
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
