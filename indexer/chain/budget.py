"""The memory budget of one chain: bytes in flight, counted in bytes, bounded, given back.

A node's answers are untrusted in size as much as in content: one that answers with bodies of
hundreds of megabytes, or with a body that never ends, must cost a bounded amount of memory,
however often it does so and however many batches are prefetched. So memory is budgeted in
bytes, per chain (`ByteBudget`), not in batches:

- an answer being read is charged as its bytes arrive, by the transport (`rpc.RpcClient`),
  including the moment its read buffer is copied into one `bytes`. Reading stops, and the
  answer is refused (`errors.BatchTooLarge`, so the pipeline asks for smaller batches), when
  it would take more than `max_answer_bytes` (a quarter of the budget) or more than the budget
  has left. A refused answer, and one that fails to decode, is given back at once: its buffer
  is emptied, its connection closed, and the frames of the exception cleared
  (`forget_frames`), so that an exception kept for a retry or a log line keeps no bytes;
- a prefetched batch stays charged at the size of the answer it was made from until the
  writer is done with it: the transport puts the answer's `Charge` in the `Hold` of the fetch
  (a context variable the prefetcher sets for each of its fetch tasks), and the prefetcher
  releases the hold when the next batch is asked for, when it drops the batch, or when the
  fetch ends in a failure;
- an answer outside a prefetch (the head, block hashes, the chain id) is given back once
  it is decoded.

Nothing here waits: a charge is taken or refused at once. A read that waited for memory
while holding some could deadlock with the writer it waits for; a refused one only makes the
batches smaller. The prefetcher uses `available_bytes` to start fewer fetches ahead when the
budget runs low.
"""

from __future__ import annotations

import contextvars
import traceback

MIB = 1024 * 1024
# 512 MiB: a 100-block batch of mainnet receipts (~66 MB) fits one answer (128 MiB).
DEFAULT_MAX_BYTES_IN_FLIGHT = 512 * MIB
MIN_MAX_BYTES_IN_FLIGHT = 16 * MIB
MAX_MAX_BYTES_IN_FLIGHT = 64 * 1024 * MIB
ANSWER_SHARE = 4  # one answer may take at most a quarter of the budget


def max_answer_bytes(max_bytes_in_flight: int) -> int:
    """The largest answer a budget of `max_bytes_in_flight` takes."""
    return max_bytes_in_flight // ANSWER_SHARE


class ByteBudget:
    """Bytes in flight for one chain: charged by the transport, held by the prefetcher."""

    def __init__(
        self, capacity_bytes: int = DEFAULT_MAX_BYTES_IN_FLIGHT, *, label: str = ""
    ) -> None:
        assert capacity_bytes > 0
        self.label = label
        self.capacity_bytes = capacity_bytes
        self.max_answer_bytes = max_answer_bytes(capacity_bytes)
        self.in_use_bytes = 0
        self.peak_bytes = 0
        self.refused = 0  # answers refused for their size or for want of room

    @property
    def available_bytes(self) -> int:
        return self.capacity_bytes - self.in_use_bytes

    def charge(self) -> Charge:
        """A new, empty charge against this budget."""
        return Charge(self)

    def _take(self, count: int) -> bool:
        if self.in_use_bytes + count > self.capacity_bytes:
            return False
        self.in_use_bytes += count
        self.peak_bytes = max(self.peak_bytes, self.in_use_bytes)
        return True

    def _give_back(self, count: int) -> None:
        assert 0 <= count <= self.in_use_bytes, "gave back more than was charged"
        self.in_use_bytes -= count

    def __repr__(self) -> str:
        return (
            f"ByteBudget({self.label!r}, {self.in_use_bytes:,d}/{self.capacity_bytes:,d} bytes"
            f" in use, peak {self.peak_bytes:,d})"
        )


class Charge:
    """Bytes charged to one budget for one answer (and the batch made from it).

    `resize` moves the charge to a new size, all or nothing; `release` gives it all back and
    may be called any number of times.
    """

    __slots__ = ("budget", "bytes")

    def __init__(self, budget: ByteBudget) -> None:
        self.budget = budget
        self.bytes = 0

    def resize(self, count: int) -> bool:
        """Charge `count` bytes in all; False (and nothing changed) if the budget lacks room."""
        assert count >= 0
        if count > self.bytes:
            if not self.budget._take(count - self.bytes):
                return False
        else:
            self.budget._give_back(self.bytes - count)
        self.bytes = count
        return True

    def release(self) -> None:
        self.budget._give_back(self.bytes)
        self.bytes = 0


class Hold:
    """The charges of one prefetched batch, released together when the writer is done."""

    __slots__ = ("_charges",)

    def __init__(self) -> None:
        self._charges: list[Charge] = []

    def keep(self, charge: Charge) -> None:
        self._charges.append(charge)

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in self._charges)

    @property
    def budget(self) -> ByteBudget | None:
        """The budget charged (None while nothing is)."""
        return self._charges[0].budget if self._charges else None

    def release(self) -> None:
        charges, self._charges = self._charges, []
        for charge in charges:
            charge.release()


_HOLD: contextvars.ContextVar[Hold | None] = contextvars.ContextVar("indexer_hold", default=None)


def current_hold() -> Hold | None:
    """The hold of the prefetched batch being fetched in this task, if any."""
    return _HOLD.get()


def context_holding(hold: Hold) -> contextvars.Context:
    """A copy of the current context in which `current_hold()` is `hold` (for a task)."""
    context = contextvars.copy_context()
    context.run(_HOLD.set, hold)
    return context


def forget_frames(exc: BaseException) -> None:
    """Clear the local variables of the finished frames `exc` and its causes went through.

    An exception outlives the call that raised it (a retry waits with it, a log line formats
    it, a task keeps it until it is awaited); its traceback must not keep an answer's bytes,
    or a read buffer, alive meanwhile. Frames still running are left alone.
    """
    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        traceback.clear_frames(item.__traceback__)
        todo.extend(e for e in (item.__cause__, item.__context__) if e is not None)
