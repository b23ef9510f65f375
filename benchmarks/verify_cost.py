"""What verification costs per block: `evm_verify.Verifier` (C layouts) on real blocks.

For each fixture block with receipts (tests/data/evm): the time to check the header
("headers") and everything ("full": transaction hashes, the three roots, every bloom), on
the fast path's msgspec structs, and the pure-Python reference (`evm_proof.verify_block`)
for comparison. Several rounds; prints the range.

Usage: `python -m benchmarks.verify_cost [--rounds 5]`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import msgspec

from indexer.chain import evm_proof, evm_rows
from indexer.chain.evm_verify import Verifier

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "evm"
BLOCKS = ["ethereum-18000000", "ethereum-18500000", "polygon-50000000", "arbitrum-150000000"]
RULES = {"ethereum": "ethereum", "polygon": "polygon", "arbitrum": "arbitrum"}


def _per_block_us(fn: object, repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        fn()  # type: ignore[operator]
    return (time.perf_counter() - started) / repeat * 1e6


def _measure(name: str, rounds: int) -> str:
    block = json.loads((DATA / name / "block.json").read_text())
    receipts = json.loads((DATA / name / "receipts.json").read_text())
    rules = RULES[name.split("-")[0]]
    raw = msgspec.convert(block, evm_rows._Block)
    structs = msgspec.convert(receipts, list[evm_rows._Receipt])  # type: ignore[valid-type]
    headers = Verifier(level="headers", rules=rules, label=name)
    full = Verifier(level="full", rules=rules, label=name)
    runs = {
        "headers": (lambda: headers.check(raw), 2000),
        "full": (lambda: full.check(raw, receipts=structs), 50),
        "python": (lambda: evm_proof.verify_block(block, receipts, chain=rules), 3),
    }
    samples: dict[str, list[float]] = {key: [] for key in runs}
    for _ in range(rounds):
        for key, (fn, repeat) in runs.items():
            samples[key].append(_per_block_us(fn, repeat))
    logs = sum(len(r["logs"]) for r in receipts)
    return f"{name} ({len(block['transactions'])} txs, {logs} logs): " + "; ".join(
        f"{k} {min(v):,.0f}-{max(v):,.0f} us" for k, v in samples.items()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    for name in BLOCKS:
        print(_measure(name, args.rounds), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
