"""Event decoding throughput: the compiled `EventDecoder` against `eth_abi.decode`, in logs/s.

Three events: ERC-20 Transfer and Approval (two address topics, one uint256 word) and Uniswap
V3 Swap (two address topics, five words of int256/uint160/uint128/int24). For each, a fixed set
of synthetic logs with random values, encoded by eth-abi; every run decodes all of them, one
call per log, in one thread, and reports logs/s. eth-abi is measured two ways: one
`decode` call per indexed topic plus one for the data (what a straightforward indexer does),
and a single call over the topics and data joined (possible only when every indexed parameter
is a value type, as here). The first logs are cross-checked between both decoders first.

Usage: `python -m benchmarks.abi_decode [--logs 200000] [--eth-abi-logs 20000] [--runs 5]`.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from eth_abi import abi as eth_abi

from indexer.events import abi, declarations, decoder

EVENTS = {
    "Transfer": "Transfer(address indexed from, address indexed to, uint256 value)",
    "Approval": "Approval(address indexed owner, address indexed spender, uint256 value)",
    "V3 Swap": (
        "Swap(address indexed sender, address indexed recipient, int256 amount0, "
        "int256 amount1, uint160 sqrtPriceX96, uint128 liquidity, int24 tick)"
    ),
}
Log = tuple[list[bytes], bytes]


def _value(rng: random.Random, canonical: str) -> Any:
    if canonical == "address":
        return rng.randbytes(20)
    if canonical.startswith("uint"):
        return rng.getrandbits(min(int(canonical[4:]), 96))  # realistic: most amounts are small
    bits = min(int(canonical[3:]), 128)
    return rng.getrandbits(bits - 1) * rng.choice((1, -1))


def make_logs(event: abi.Event, count: int, *, seed: int = 1) -> list[Log]:
    """Return `count` logs of `event` with random values (every indexed param a value type)."""
    rng = random.Random(seed)
    logs = []
    for _ in range(count):
        topics, types, values = [event.topic0], list[str](), list[Any]()
        for param in event.params:
            value = _value(rng, param.type.canonical)
            if param.indexed:
                topics.append(eth_abi.encode([param.type.canonical], [value]))
            else:
                types.append(param.type.canonical)
                values.append(value)
        logs.append((topics, eth_abi.encode(types, values)))
    return logs


def eth_abi_per_topic(event: abi.Event) -> Callable[[Sequence[bytes], bytes], tuple[Any, ...]]:
    """Return a log decoder that calls eth_abi.decode once per indexed topic and once for data."""
    indexed = [[p.type.canonical] for p in event.params if p.indexed]
    in_data = [p.type.canonical for p in event.params if not p.indexed]
    decode = eth_abi.decode

    def decode_log(topics: Sequence[bytes], data: bytes) -> tuple[Any, ...]:
        values = [decode(kind, topic)[0] for kind, topic in zip(indexed, topics[1:], strict=True)]
        return (*values, *decode(in_data, data))

    return decode_log


def eth_abi_one_call(event: abi.Event) -> Callable[[Sequence[bytes], bytes], object]:
    """Return a log decoder that calls eth_abi.decode once over the topics and data joined."""
    types = [p.type.canonical for p in event.params if p.indexed]
    types += [p.type.canonical for p in event.params if not p.indexed]
    decode = eth_abi.decode

    def decode_log(topics: Sequence[bytes], data: bytes) -> object:
        return decode(types, b"".join(topics[1:]) + data)

    return decode_log


def rate(decode: Callable[[Sequence[bytes], bytes], object], logs: list[Log]) -> float:
    started = time.perf_counter()
    for topics, data in logs:
        decode(topics, data)
    return len(logs) / (time.perf_counter() - started)


def cross_check(event: abi.Event, logs: list[Log]) -> None:
    """Fail loudly unless both decoders give the same values on these logs."""
    ours, theirs = decoder.EventDecoder(event).decode, eth_abi_per_topic(event)
    for topics, data in logs:
        expected = tuple(
            bytes.fromhex(v[2:]) if isinstance(v, str) else v for v in theirs(topics, data)
        )
        if ours(topics, data) != expected:
            raise SystemExit(f"{event.signature}: decoders disagree on {topics}, {data.hex()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logs", type=int, default=200_000, help="logs per run, ours")
    parser.add_argument("--eth-abi-logs", type=int, default=20_000, help="logs per run, eth-abi")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    print(
        f"Python {platform.python_version()} on {platform.machine()}, "
        f"{args.runs} runs; logs/s, min / median / max"
    )
    print(
        f"{'event':<10} {'decoder':<24} {'min':>11} {'median':>11} {'max':>11} {'vs eth-abi':>11}"
    )
    for name, text in EVENTS.items():
        event = declarations.parse_signature(text)
        logs = make_logs(event, max(args.logs, args.eth_abi_logs))
        cross_check(event, logs[:2000])
        contenders = [
            ("compiled (ours)", decoder.EventDecoder(event).decode, logs[: args.logs]),
            ("eth_abi, 1 call", eth_abi_one_call(event), logs[: args.eth_abi_logs]),
            ("eth_abi, per topic+data", eth_abi_per_topic(event), logs[: args.eth_abi_logs]),
        ]
        medians = []
        for label, decode, sample in contenders:
            rates = [rate(decode, sample) for _ in range(args.runs)]
            medians.append(statistics.median(rates))
            ratio = f"{medians[0] / medians[-1]:.1f}x" if len(medians) > 1 else ""
            print(
                f"{name:<10} {label:<24} {min(rates):>11,.0f} {medians[-1]:>11,.0f} "
                f"{max(rates):>11,.0f} {ratio:>11}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
