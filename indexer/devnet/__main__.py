"""`python -m indexer.devnet`: a standalone devnet (anvil plus live traffic), no indexer.

Prints the node's URL on stdout, then runs until SIGINT or SIGTERM. Handy for pointing an
indexer, or `curl`, at a chain that moves.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from indexer.devnet import anvil, traffic


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m indexer.devnet", description="Run anvil with live traffic."
    )
    parser.add_argument("--history-blocks", type=int, default=0, help="blocks to pre-mine (0)")
    parser.add_argument("--block-time-secs", type=int, default=1, help="seconds per block (1)")
    parser.add_argument("--seed", type=int, default=0, help="traffic seed (0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s devnet %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with anvil.Anvil() as node:
            if args.history_blocks:
                traffic.fill_blocks(node, args.history_blocks, seed=args.seed)
            node.set_interval_mining(args.block_time_secs)
            print(node.url, flush=True)
            traffic.run_forever(
                node.url,
                interval_secs=args.block_time_secs,
                stop_event=threading.Event(),
                seed=args.seed + 1,
            )
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
