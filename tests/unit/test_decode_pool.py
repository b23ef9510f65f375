"""The decoder: a decode thread by default, worker processes on request."""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading

import pytest

from indexer.chain.decode_pool import Decoder


def where(value: int) -> tuple[int, str, int]:
    return os.getpid(), threading.current_thread().name, value * 2


def die_in_a_worker(value: int) -> int:
    if multiprocessing.parent_process() is not None:
        os._exit(3)  # what the OOM killer does to a worker
    return value + 1


async def test_default_decodes_on_a_thread_of_this_process() -> None:
    decoder = Decoder(0, label="t")
    try:
        pid, thread, value = await decoder.run(where, 21)
    finally:
        decoder.close()
    assert (pid, value) == (os.getpid(), 42) and thread.startswith("decode-t")
    assert sys.getswitchinterval() <= 0.001  # the event loop gets the GIL back sooner


def length(buffer: bytearray) -> int:
    return len(buffer)


async def test_the_decode_thread_lets_go_of_the_arguments_before_the_caller_resumes() -> None:
    # The read buffer is kept for the next answer only when nothing else refers to it once
    # decoded (rpc._Buffers.give). Another thread competing for the GIL, as the event loop
    # does in the daemon, stalls the decode thread between setting the result and dropping
    # its work item.
    decoder = Decoder(0, label="t")
    stop = threading.Event()

    def compete() -> None:
        while not stop.is_set():
            sum(range(200))

    competitor = threading.Thread(target=compete)
    competitor.start()
    held = 0
    try:
        for _ in range(300):
            buffer = bytearray(16)
            baseline = sys.getrefcount(buffer)
            assert await decoder.run_here(length, buffer) == 16
            held += sys.getrefcount(buffer) > baseline
    finally:
        stop.set()
        competitor.join()
        decoder.close()
    assert held == 0, f"still referred to after {held} of 300 calls"


async def test_workers_decode_in_other_processes() -> None:
    decoder = Decoder(2, label="t")
    try:
        pids = {(await decoder.run(where, 1))[0] for _ in range(6)}
    finally:
        decoder.close()
    assert os.getpid() not in pids


async def test_a_dead_worker_costs_one_batch_on_the_thread_and_a_new_pool(
    caplog: pytest.LogCaptureFixture,
) -> None:
    decoder = Decoder(1, label="t")
    try:
        with caplog.at_level(logging.WARNING):
            assert await decoder.run(die_in_a_worker, 1) == 2
        assert "decode worker process died" in caplog.text
        pid, _, _ = await decoder.run(where, 1)  # a new pool answers
        assert pid != os.getpid()
    finally:
        decoder.close()
