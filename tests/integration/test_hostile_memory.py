"""Hostile world, memory (RELIABILITY.md J2): huge and endless answers cost bounded, flat memory.

`indexer sync` runs as a subprocess with the default settings (batch_size 100, four batches
prefetched, the default 512 MiB budget) against a loopback node (`HostileNode`, in front of
anvil) that answers every request for more than one block with a 300 MB body, announced,
chunked without a Content-Length, delimited by the connection's end, or one that never ends.
Batches shrink to one block, grow again after 16 whole ones, meet the refusal again: many
hostile answers, read while sync goes on. The daemon's RSS (`/proc/PID/status`) is sampled
throughout and compared by state, not by time: early (while the first hostile answers come)
and late (after many more), with a bound for the peak. Then the node turns honest and the
stored chain must equal the node's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from indexer.devnet.traffic import fill_blocks
from tests.integration.helpers import REPO, write_config
from tests.support.hostile_node import HostileNode
from tests.support.oracle import assert_equals_node, check_invariants

MIB = 1024 * 1024
PEAK_BOUND_MIB = 768  # the default budget (512 MiB) and the process; the issue asks < 1 GiB
GROWTH_BOUND_MIB = 32  # what is left after refusals must not grow
EARLY = (20, 40)  # windows of hostile answers seen: early ...
LATE = (140, 160)  # ... and late


def rss_mib(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return None


class RssSampler:
    """Sample a process's RSS every 10 ms, with the hostile answers seen at the time."""

    def __init__(self, pid: int, node: HostileNode) -> None:
        self.samples: list[tuple[int, int]] = []  # (hostile answers so far, RSS MiB)
        self._pid, self._node = pid, node
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            rss = rss_mib(self._pid)
            if rss is not None:
                self.samples.append((self._node.hostile_answers, rss))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def peak(self) -> int:
        return max((rss for _, rss in self.samples), default=0)

    def window(self, low: int, high: int) -> list[int]:
        return [rss for seen, rss in self.samples if low <= seen <= high]


def test_huge_and_endless_answers_keep_memory_bounded_and_flat(
    db_url: str, anvil: Any, tmp_path: Path
) -> None:
    fill_blocks(anvil, 200, txs_per_block=(1, 3), seed=7)
    anvil.mine(1300)
    head = anvil.block_number()
    with HostileNode(anvil.url, over_blocks=1, seed=3) as node:
        config = write_config(tmp_path / "c.toml", db_url, node.url)
        env = {k: v for k, v in os.environ.items() if not k.startswith("INDEXER_")}
        with open(tmp_path / "indexer.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "indexer", "--config", str(config), "sync", "--to",
                 str(head)],
                stdout=subprocess.DEVNULL, stderr=log, cwd=REPO, env=env,
            )  # fmt: skip
        sampler = RssSampler(proc.pid, node)
        try:
            deadline = time.monotonic() + 180
            enough = False
            while not enough and time.monotonic() < deadline and proc.poll() is None:
                enough = node.wait_hostile_answers(LATE[1], timeout_secs=0.2)
                if sampler.peak() >= PEAK_BOUND_MIB:
                    break  # no need to wait for more
            sampler.stop()
            peak = sampler.peak()
            early, late = sampler.window(*EARLY), sampler.window(*LATE)
            summary = (
                f"{node.hostile_answers} hostile answers ({node.hostile_bytes_sent / 1e9:.1f} GB"
                f" sent), RSS peak {peak} MiB, early {min(early, default=0)}-"
                f"{max(early, default=0)} MiB, late {min(late, default=0)}-"
                f"{max(late, default=0)} MiB"
            )
            print(summary)
            assert peak < PEAK_BOUND_MIB, summary
            assert enough and early and late, (
                f"the node was asked for batches it refuses {node.hostile_answers} times, "
                f"not {LATE[1]}: batches never grew back after shrinking? {summary}"
            )
            # Flat: between refusals memory goes back to where it was (the least RSS of a
            # window is what stays); the spikes are bounded by the peak above.
            assert min(late) <= min(early) + GROWTH_BOUND_MIB, summary
            node.set_hostile(False)
            code = proc.wait(timeout=180)
        finally:
            sampler.stop()
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    log_text = (tmp_path / "indexer.log").read_text(errors="replace")
    assert code == 0, log_text[-3000:]
    assert "answer refused" in log_text
    assert check_invariants(db_url, "dev") == head
    assert_equals_node(db_url, "dev", anvil.url, end=head)
