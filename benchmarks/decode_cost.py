"""What decoding costs per block: the fast path alone (`evm_rows.decode_full_batch`), in one
process, on the mainnet-shaped replay node's answers (150 transactions and 300 logs a
block), with `verify = "full"`.

The answers are fetched once (batches of `--batch` blocks, as the daemon asks them: every
`eth_getBlockByNumber(n, true)` then every `eth_getBlockReceipts(n)`, or one `eth_getLogs`
for `store = "logs"`), then decoded `--rounds` times; the CPU time of the best round is
reported per block (the daemon's GC thresholds, as `indexer.daemon` sets them). This is the
decode thread's work per block, which bounds a backfill (benchmarks/README.md).

Usage: `python -m benchmarks.decode_cost [--blocks 500] [--batch 100] [--rounds 5]`.
"""

from __future__ import annotations

import argparse
import gc
import time
import urllib.request
from typing import Any

import orjson

from benchmarks.replay_node import ReplayNode, Shape
from indexer import tables
from indexer.chain.evm_rows import LogSource, decode_full_batch
from indexer.chain.evm_verify import Verifier


def _calls(start: int, count: int, logs: LogSource) -> list[dict[str, Any]]:
    numbers = range(start, start + count)
    calls = [("eth_getBlockByNumber", [hex(n), True]) for n in numbers]
    if logs == "receipts":
        calls += [("eth_getBlockReceipts", [hex(n)]) for n in numbers]
    else:
        calls.append(
            ("eth_getLogs", [{"fromBlock": hex(start), "toBlock": hex(start + count - 1)}])
        )
    return [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]


def measure(*, blocks: int, batch: int, rounds: int, logs: LogSource) -> float:
    """The best round's CPU milliseconds per block."""
    with ReplayNode(Shape(variant="full"), head=blocks + 10) as node:
        answers = []
        for start in range(1, blocks + 1, batch):
            calls = _calls(start, batch, logs)
            request = urllib.request.Request(
                node.url, data=orjson.dumps(calls), headers={"content-type": "application/json"}
            )
            with urllib.request.urlopen(request) as response:  # the node is on loopback
                answers.append((start, response.read(), [c["id"] for c in calls]))
    prefixes = tables.copy_prefixes(1)
    verifier = Verifier(level="full", rules="ethereum", label="bench")

    def decode_all() -> None:
        for start, body, ids in answers:
            decoded = decode_full_batch(
                body, ids, start=start, count=batch, prefixes=prefixes, logs=logs,
                verifier=verifier,
            )  # fmt: skip
            assert decoded is not None, "the fast path refused the replay node's answer"

    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    decode_all()  # warm
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        decode_all()
        best = min(best, time.process_time() - started)
    return best / (len(answers) * batch) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=500)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    for logs, label in (("receipts", 'store = "receipts"'), ("getLogs", 'store = "logs"')):
        ms = measure(blocks=args.blocks, batch=args.batch, rounds=args.rounds, logs=logs)  # type: ignore[arg-type]
        print(f'{label}, verify = "full": {ms:.2f} ms of CPU per block (best of {args.rounds})')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
