"""What decoding events costs while following (issue 14: at most 15% of the full rate).

The replay node serves the mainnet-shaped chain with realistic logs (`Shape(events=True)`,
the node's `--events`: of every log 50% ERC-20 `Transfer`, 10% `Approval`, 10% Uniswap V2
`Swap`, 5% ERC-721 `Transfer`, 25% other; `replay_blocks.EVENT_MIX`). Each round backfills
`--blocks` blocks of it with `indexer sync --to N` (`benchmarks.backfill`: a fresh database,
the node in its own process, the indexer's defaults `store = "receipts"`, `verify = "full"`)
twice: without `[[events]]` (A), and with three (B: `transfers`, `approvals`, `swaps`, the
tables made by `indexer migrate` first), so every checked batch's Transfer/Approval/Swap
logs are decoded and written in its transaction. The order alternates (A B, then B A, ...)
so that drift on a shared machine falls on both. Rows are checked: the event tables must
hold exactly the logs of each kind the node served, and `event_undecodable` the ERC-721
Transfers (same topic0, 4 topics: not an ERC-20 Transfer).

Reports steady blocks/s (from the first block request to exit, `backfill.steady_rate`) of
both, the overhead per round (1 - B/A, the two runs of a round back to back) and of the best
of each, and each run's indexer CPU per block. `--profile PATH` then runs A and B once more
under py-spy and reports the samples of B inside `indexer/events/` and the event tables'
COPY, and the functions that grew most from A to B.

Usage: `python -m benchmarks.events_follow [--blocks 2000] [--rounds 2] [--batch-size 100]
[--prefetch 4] [--profile /tmp/events] [--json out.json]`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from benchmarks.backfill import DEFAULT_DSN, Settings, _ReplayRpc, backfill, summarise_profile
from benchmarks.replay_blocks import EVENT_SIGNATURES
from benchmarks.replay_chain import ReplayChain
from benchmarks.replay_node import ReplayNode, Shape
from indexer import config, tables
from indexer.chain.evm import EvmSource
from indexer.config import EvmChainConfig
from indexer.events.matcher import EventSet
from indexer.models import Block

TARGET_OVERHEAD = 0.15
SHAPE = Shape(variant="full", events=True)
EVENTS = tuple(EVENT_SIGNATURES.items())  # (table, signature): transfers, approvals, swaps


def expected_events(shape: Shape, blocks: int) -> dict[str, int]:
    """Logs of each kind in blocks 0..blocks-1 (the node's chain, rebuilt here)."""
    chain = ReplayChain(shape, head=blocks, cache_bytes=0)
    found: Counter[str] = Counter()
    for number in range(blocks):
        found.update(chain.template_of(number).events)
    return dict(found)


def micro(*, blocks: int = 300, batch_size: int = 100, repeats: int = 3) -> dict[str, Any]:
    """In one process, no database, one core: the fast path's decode of `blocks` blocks of
    the chain (msgspec + C rows + checks + verify = full, as sync decodes them;
    `backfill._ReplayRpc`) and then `EventSet.attach` on them (the three tables' decoding),
    in ms per block; each the best of `repeats` passes (CPU time of this process)."""
    cfg = config.build(
        {
            "database": {"url": "postgresql://unused/unused"},
            "chains": [{"name": "bench", "kind": "evm", "urls": ["http://127.0.0.1:1"],
                        "chain_id": 1}],
            "events": [{"chain": "bench", "table": t, "signature": s} for t, s in EVENTS],
        },
        {},
    )  # fmt: skip
    chain_cfg = cfg.chain("bench")
    assert isinstance(chain_cfg, EvmChainConfig)
    events = EventSet(cfg.events_of("bench"), start_block=0)
    rpc = _ReplayRpc(ReplayChain(SHAPE, head=blocks, cache_bytes=1 << 30))

    async def fetch() -> list[list[Block]]:
        source = EvmSource(chain_cfg, rpc)  # type: ignore[arg-type]
        source.bind(tables.copy_prefixes(1))
        try:
            return [
                await source.blocks(s, min(batch_size, blocks - s))
                for s in range(0, blocks, batch_size)
            ]
        finally:
            assert source.checked_batches == 0, "the fast path refused the replay chain"
            source.close()

    decode: list[float] = []
    attach: list[float] = []
    rows = 0
    for _ in range(repeats):
        rpc.fast_secs = 0.0
        batches = asyncio.run(fetch())
        decode.append(rpc.fast_secs)
        started = time.process_time()
        done = [events.attach(batch) for batch in batches]
        attach.append(time.process_time() - started)
        rows = sum(
            r.count
            for batch in done
            for b in batch
            for n, r in b.rows.items()
            if n in EVENT_SIGNATURES
        )
    return {
        "blocks": blocks,
        "event_rows": rows,
        "decode_ms_per_block": round(1000 * min(decode) / blocks, 2),
        "attach_ms_per_block": round(1000 * min(attach) / blocks, 2),
        "attach_us_per_event_row": round(1e6 * min(attach) / rows, 2),
    }


def _check(result: dict[str, Any], expected: dict[str, int]) -> None:
    rows = result["rows"]
    want = {table: expected.get(table, 0) for table, _ in EVENTS}
    want["event_undecodable"] = expected.get("nft", 0)
    got = {table: rows[table] for table in want}
    if got != want:
        raise AssertionError(f"event rows {got} != served {want}")


def _run(
    node: ReplayNode, *, dsn: str, blocks: int, settings: Settings, profile: Path | None = None
) -> dict[str, Any]:
    result = backfill(node, dsn=dsn, blocks=blocks, settings=settings, profile_path=profile)
    result["indexer_cpu_ms_per_block"] = round(1000 * result["cpu_secs"]["indexer"] / blocks, 2)
    if profile is not None:
        result["profile"] = summarise_profile(profile, wall_secs=result["wall_secs"])
        result["profile"]["events"] = events_share(profile)
    return result


def _samples(path: Path) -> list[tuple[list[str], int]]:
    """py-spy raw output: (frames, root first, "func (file:line)"; count) per line."""
    out = []
    for raw in path.read_text().splitlines():
        stack, _, count_text = raw.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if frames:
            out.append((frames, int(count_text)))
    return out


def _name(frame: str) -> str:
    func, _, rest = frame.partition(" (")
    where = rest.rstrip(")").rpartition(":")[0]
    return f"{func} ({where if where.startswith('<') else Path(where).name})"


def events_share(path: Path) -> dict[str, Any]:
    """Samples (share of all) with a frame in indexer/events/ (inclusive) and in
    `EventSet.attach`; the leaf functions of those samples by share."""
    total = in_events = in_attach = 0
    leaves: Counter[str] = Counter()
    for frames, count in _samples(path):
        total += count
        ours = [f for f in frames if "indexer/events/" in f]
        if ours:
            in_events += count
            leaves[_name(frames[-1])] += count
        if any(f.startswith(("attach (", "EventSet.attach (")) for f in ours):
            in_attach += count
    share = (lambda n: round(n / total, 3)) if total else (lambda n: 0.0)
    return {
        "samples": total,
        "in_indexer_events": share(in_events),
        "in_EventSet_attach": share(in_attach),
        "leaves_under_events": [(k, share(v)) for k, v in leaves.most_common(15)],
    }


def grown(a: Path, b: Path, blocks: int, top: int = 15) -> dict[str, list[tuple[str, float]]]:
    """What grew most from profile A to profile B, in ms per block (100 Hz: a sample is 10 ms
    of one thread): by self time, and inclusive time of the functions under a fifth of B's
    samples (leaving out the roots every sample shares: the loop, the decode thread)."""

    def counts(path: Path) -> tuple[int, Counter[str], Counter[str]]:
        total, own, inclusive = 0, Counter[str](), Counter[str]()
        for frames, count in _samples(path):
            total += count
            own[_name(frames[-1])] += count
            for name in {_name(f) for f in frames}:
                inclusive[name] += count
        return total, own, inclusive

    _, own_a, inc_a = counts(a)
    total_b, own_b, inc_b = counts(b)

    def diff(x: Counter[str], y: Counter[str], keep: set[str]) -> list[tuple[str, float]]:
        ms = {k: (y[k] - x[k]) * 10 / blocks for k in keep}
        return [(k, round(v, 3)) for k, v in sorted(ms.items(), key=lambda kv: -kv[1])[:top]]

    return {
        "self": diff(own_a, own_b, {*own_a, *own_b}),
        "inclusive": diff(inc_a, inc_b, {k for k in {*inc_a, *inc_b} if inc_b[k] < total_b / 5}),
    }


def measure(
    *,
    dsn: str,
    blocks: int,
    rounds: int,
    batch_size: int = 100,
    prefetch: int = 4,
    profile: Path | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """`rounds` pairs of backfills, A without and B with the three event tables (see above)."""
    plain = Settings(batch_size=batch_size, prefetch_batches=prefetch)
    decoded = Settings(batch_size=batch_size, prefetch_batches=prefetch, events=EVENTS)
    expected = expected_events(SHAPE, blocks)
    say(f"served logs by kind over {blocks:,d} blocks: {expected}")
    runs: list[dict[str, Any]] = []
    out: dict[str, Any] = {
        "blocks": blocks,
        "settings": plain.label(),
        "event_tables": [table for table, _ in EVENTS],
        "served": expected,
        "rounds": runs,
    }
    with ReplayNode(SHAPE, head=blocks + 10) as node:
        for i in range(rounds):
            order = (("a", plain), ("b", decoded)) if i % 2 == 0 else (("b", decoded), ("a", plain))
            pair: dict[str, Any] = {"order": " ".join(name.upper() for name, _ in order)}
            for name, settings in order:
                pair[name] = _run(node, dsn=dsn, blocks=blocks, settings=settings)
            _check(pair["b"], expected)
            a, b = pair["a"]["steady_blocks_per_sec"], pair["b"]["steady_blocks_per_sec"]
            pair["overhead"] = round(1 - b / a, 3)
            runs.append(pair)
            say(
                f"round {i + 1} ({pair['order']}): without events {a:,d} blocks/s "
                f"({pair['a']['indexer_cpu_ms_per_block']} ms indexer CPU/block), with 3 event "
                f"tables {b:,d} blocks/s ({pair['b']['indexer_cpu_ms_per_block']} ms/block); "
                f"overhead {pair['overhead']:.1%}"
            )
        if profile is not None:
            profiles, paths = {}, {}
            for name, settings in (("a", plain), ("b", decoded)):
                paths[name] = profile.with_name(f"{profile.name}-{name}.txt")
                profiles[name] = _run(
                    node, dsn=dsn, blocks=blocks, settings=settings, profile=paths[name]
                )
            _check(profiles["b"], expected)
            out["profile"] = {
                "a": profiles["a"],
                "b": profiles["b"],
                "grown_ms_per_block": grown(paths["a"], paths["b"], blocks),
            }
    overheads = [r["overhead"] for r in runs]
    rates_a = [r["a"]["steady_blocks_per_sec"] for r in runs]
    rates_b = [r["b"]["steady_blocks_per_sec"] for r in runs]
    out["summary"] = {
        "without_events_blocks_per_sec": [min(rates_a), max(rates_a)],
        "with_events_blocks_per_sec": [min(rates_b), max(rates_b)],
        "overhead_per_round": overheads,
        "overhead_best_vs_best": round(1 - max(rates_b) / max(rates_a), 3),
        "target": TARGET_OVERHEAD,
        "reached": max(overheads) <= TARGET_OVERHEAD,
    }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--blocks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2, help="pairs of runs (A B, B A, ...)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--prefetch", type=int, default=4)
    parser.add_argument("--profile", type=Path, help="also py-spy A and B: PATH-a.txt, PATH-b.txt")
    parser.add_argument("--json", type=Path, help="write results here")
    parser.add_argument(
        "--micro", action="store_true", help="only the in-process decode vs attach timing"
    )
    args = parser.parse_args(argv)
    if args.micro:
        print(orjson.dumps(micro(batch_size=args.batch_size)).decode())
        return 0
    out = measure(
        dsn=args.dsn,
        blocks=args.blocks,
        rounds=args.rounds,
        batch_size=args.batch_size,
        prefetch=args.prefetch,
        profile=args.profile,
        say=lambda text: print(text, flush=True),
    )
    if "profile" in out:
        b = out["profile"]["b"]["profile"]
        print(f"profile of B: {orjson.dumps(b['events']).decode()}")
        print(f"B's top self: {b['top_self'][:10]}")
        a = out["profile"]["a"]["profile"]
        print(f"samples per block (ms): A {a['samples'] * 10 / args.blocks:.2f}, "
              f"B {b['samples'] * 10 / args.blocks:.2f}")  # fmt: skip
        for kind, found in out["profile"]["grown_ms_per_block"].items():
            print(f"grew most from A to B ({kind}, ms per block):")
            for func, ms in found:
                print(f"  {ms:7.3f}  {func}")
    summary = out["summary"]
    print(
        f"events while following, {args.blocks:,d} blocks, batch {args.batch_size}, prefetch "
        f"{args.prefetch}: without {summary['without_events_blocks_per_sec']}, with "
        f"{summary['with_events_blocks_per_sec']} blocks/s (min, max); overhead per round "
        f"{', '.join(f'{o:.1%}' for o in summary['overhead_per_round'])}, best vs best "
        f"{summary['overhead_best_vs_best']:.1%} (target <= {TARGET_OVERHEAD:.0%})"
    )
    if args.json:
        args.json.write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
