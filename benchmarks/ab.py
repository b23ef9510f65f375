"""A/B backfill: two source trees of the indexer on the same machine, runs alternating.

Each tree is a checkout of this repository with its C extension built in place (e.g.
`git worktree add ../before <commit>`, then `make venv` there or build `indexer/_rows.c`
in place). Every round runs the same backfill cases on A, then on B (then B, A on the
next round, so that drift in the machine's speed does not favour one side), each as
`python -m benchmarks.backfill` with that tree first on PYTHONPATH. It prints the steady
blocks/s of every run and the range per side.

Usage: `python -m benchmarks.ab --a ../before --b . [--rounds 3] [--quick]`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from benchmarks.backfill import DEFAULT_DSN

# (name, backfill arguments): the three shapes the throughput targets are about.
CASES: list[tuple[str, list[str]]] = [
    ("headers", ["--variant", "headers", "--blocks", "200000", "--batch-size", "2016"]),
    ("blocks_only", ["--variant", "full", "--store", "blocks", "--blocks", "50000",
                     "--batch-size", "2016"]),
    ("full", ["--variant", "full", "--blocks", "2000", "--batch-size", "100"]),
]  # fmt: skip
QUICK_BLOCKS = {"headers": "50000", "blocks_only": "20000", "full": "600"}


def _run(tree: Path, args: list[str], dsn: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.backfill", "--dsn", dsn, *args],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    result: dict[str, Any] = orjson.loads(lines[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="tree A (e.g. before)")
    parser.add_argument("--b", type=Path, required=True, help="tree B (e.g. after)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="+", default=[], help="cases to run")
    parser.add_argument("--dsn", default=os.environ.get("INDEXER_TEST_DSN") or DEFAULT_DSN)
    args = parser.parse_args(argv)
    rates: dict[tuple[str, str], list[int]] = {}
    for round_ in range(args.rounds):
        sides = [("A", args.a), ("B", args.b)]
        if round_ % 2:
            sides.reverse()
        for name, case in CASES:
            if args.only and name not in args.only:
                continue
            if args.quick:
                case = [*case]
                case[case.index("--blocks") + 1] = QUICK_BLOCKS[name]
            for side, tree in sides:
                result = _run(tree, case, args.dsn)
                rate = int(result["steady_blocks_per_sec"])
                rates.setdefault((name, side), []).append(rate)
                print(f"round {round_ + 1} {name:12s} {side}: {rate:,d} blocks/s", flush=True)
    print()
    for name, _ in CASES:
        a, b = rates.get((name, "A")), rates.get((name, "B"))
        if a and b:
            print(f"{name:12s} A {min(a):,d}-{max(a):,d}   B {min(b):,d}-{max(b):,d} blocks/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
