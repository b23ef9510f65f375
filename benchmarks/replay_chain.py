"""The replay node's chain: branches, the header hash chain, and per-block JSON answers.

Heights use templates (`replay_blocks`); what makes a block its own is its header, whose hash
is keccak(rlp(header)) and whose parentHash is the previous block's: so block n's hash needs
every header below it. `ReplayChain` computes the chain of header hashes incrementally (each
header once, ~5 us) up to the highest block asked for, and keeps it compactly: 32 bytes a
block in one bytearray, plus one byte for its template. A reorg (`reorg`) starts a branch
with a new salt (in extraData, and in what stateRoot and the template choice derive from)
above the fork point, so the hashes above it are dropped and computed again on demand.

Answers are pre-serialised JSON: a template's pieces joined by the block's `separator` (its
hash and number) with one C-level `bytes.join`, cached by size (LRU) under (kind, number,
salt): a salt names one branch segment for good, so a cached answer is never stale.
"""

from __future__ import annotations

import bisect
import functools
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from hashlib import blake2b

from benchmarks.replay_blocks import (
    GENESIS_TIMESTAMP,
    Shape,
    Template,
    build_template,
    derive,
    extra_data,
    keccak_function,
)
from indexer.chain.mpt import rlp_encode

ZERO_HASH = bytes(32)
RECENT_BLOCKS = 2048  # blocks remembered as served, to place eth_getTransactionReceipt hashes
CONTINUATIONS = 64  # where the last runs of placed hashes stopped (block, index)
SCAN_BLOCKS = 4096  # else: how far below the head to look for a block holding a hash


@dataclass
class ServeStats:
    requests: int = 0
    items: int = 0
    blocks: int = 0
    log_ranges: int = 0
    block_receipts: int = 0
    tx_receipts: int = 0
    bytes_out: int = 0
    generated: int = 0
    generate_secs: float = 0.0
    hashed: int = 0  # header hashes computed
    hash_secs: float = 0.0
    first_block_at: float | None = None  # unix time of the first eth_getBlockByNumber


@functools.cache
def shape_templates(shape: Shape) -> tuple[Template, ...]:
    """The shape's templates, built once per process (they are never changed)."""
    return tuple(build_template(shape, i) for i in range(shape.templates))


class ReplayChain:
    """The chain itself: hashes, branches, and per-block JSON (LRU-cached by size)."""

    def __init__(self, shape: Shape, *, head: int, cache_bytes: int = 512 << 20) -> None:
        self.shape = shape
        self.head = head
        self._templates = shape_templates(shape)
        self._tx_at = {
            h: (t, i) for t, tpl in enumerate(self._templates) for i, h in enumerate(tpl.tx_hashes)
        }
        # Branch segments: heights >= starts[i] (up to the next start) use salts[i].
        self._starts: list[int] = [0]
        self._salts: list[int] = [0]
        # The current branch's header hashes (32 bytes each) and templates, heights 0.. .
        self._hashes = bytearray()
        self._kinds = bytearray()
        self._keccak = keccak_function()
        self._recent: OrderedDict[int, None] = OrderedDict()  # served in full, latest last
        self._continuations: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._cache: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = cache_bytes
        self.stats = ServeStats()

    # -- Identity

    def _salt(self, number: int) -> int:
        return self._salts[bisect.bisect_right(self._starts, number) - 1]

    def _tail(self, salt: int) -> bytes:
        return salt.to_bytes(4, "big") + self.shape.seed.to_bytes(8, "big")

    def extend(self, upto: int) -> None:
        """Compute the header hashes of every height up to `upto`."""
        number = len(self._kinds)
        if number > upto:
            return
        started = time.perf_counter()
        done = number
        hashes, kinds, templates, keccak = self._hashes, self._kinds, self._templates, self._keccak
        parent = bytes(hashes[-32:]) if number else ZERO_HASH
        while number <= upto:
            segment = bisect.bisect_right(self._starts, number) - 1
            stop = upto + 1
            if segment + 1 < len(self._starts):
                stop = min(stop, self._starts[segment + 1])
            salt = self._salts[segment]
            tail = self._tail(salt)
            extra_a0 = rlp_encode(extra_data(salt)) + b"\xa0"
            count = len(templates)
            encoders = [t.rlp.encode for t in templates]
            for n in range(number, stop):
                derived = blake2b(parent + tail, digest_size=64).digest()  # = derive(parent, tail)
                kind = derived[0] % count
                parent = keccak(encoders[kind](parent, derived, n, extra_a0))
                hashes += parent
                kinds.append(kind)
            number = stop
        self.stats.hashed += number - done
        self.stats.hash_secs += time.perf_counter() - started

    def block_hash(self, number: int) -> bytes:
        if number < 0:
            return ZERO_HASH
        if number >= len(self._kinds):
            self.extend(number)
        return bytes(self._hashes[32 * number : 32 * number + 32])

    def template_of(self, number: int) -> Template:
        if number >= len(self._kinds):
            self.extend(number)
        return self._templates[self._kinds[number]]

    def reorg(self, depth: int, extend: int = 0) -> int:
        """Replace the top `depth` blocks with a new branch, then add `extend`; the fork point."""
        fork = max(self.head - depth, -1)
        keep = bisect.bisect_right(self._starts, fork)
        self._starts = [*self._starts[:keep], fork + 1]
        self._salts = [*self._salts[:keep], max(self._salts) + 1]
        del self._hashes[32 * (fork + 1) :]
        del self._kinds[fork + 1 :]
        self.head += extend
        return fork

    # -- Serialised answers

    def _cached(self, key: tuple[str, int, int], make: Callable[[], bytes]) -> bytes:
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        started = time.perf_counter()
        value = make()
        self.stats.generate_secs += time.perf_counter() - started
        self.stats.generated += 1
        self._cache[key] = value
        self._cache_bytes += len(value)
        while self._cache_bytes > self._cache_limit and self._cache:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= len(old)
        return value

    def _served(self, number: int) -> None:
        recent = self._recent
        recent[number] = None
        recent.move_to_end(number)
        if len(recent) > RECENT_BLOCKS:
            recent.popitem(last=False)

    def separator(self, number: int) -> bytes:
        """What a template's JSON pieces are joined with: `<hash hex>","blockNumber":"<hex>`."""
        return self.block_hash(number).hex().encode() + b'","blockNumber":"' + hex(number).encode()

    def block_json(self, number: int, full: bool) -> bytes:
        if number < 0 or number > self.head:
            return b"null"
        if full:
            self._served(number)
        key = ("full" if full else "hashes", number, self._salt(number))
        return self._cached(key, lambda: self._make_block(number, full))

    def logs_json(self, number: int) -> bytes:
        """The block's logs as comma-separated JSON objects (no brackets; b"" when none)."""
        key = ("logs", number, self._salt(number))
        return self._cached(key, lambda: self.separator(number).join(self.template_of(number).logs))

    def receipts_json(self, number: int) -> bytes:
        """The block's receipts as a JSON array (eth_getBlockReceipts); null above the head."""
        if number < 0 or number > self.head:
            return b"null"
        self._served(number)
        key = ("receipts", number, self._salt(number))
        return self._cached(
            key, lambda: self.separator(number).join(self.template_of(number).receipts)
        )

    def _make_block(self, number: int, full: bool) -> bytes:
        block_hash = self.block_hash(number)
        parent = self.block_hash(number - 1)
        template = self.template_of(number)
        salt = self._salt(number)
        derived = derive(parent, self._tail(salt)).hex().encode()
        values = {
            b"hash": block_hash.hex().encode(),
            b"parentHash": parent.hex().encode(),
            b"number": hex(number).encode(),
            b"timestamp": hex(GENESIS_TIMESTAMP + 12 * number).encode(),
            b"stateRoot": derived[0:64],
            b"mixHash": derived[64:128],
            b"beaconRoot": derived[32:96],
            b"extraData": extra_data(salt).hex().encode(),
            b"transactions": (
                self.separator(number).join(template.txs_full) if full else template.tx_hashes_json
            ),
        }
        pieces = template.header
        parts = [pieces[0]]
        for i in range(1, len(pieces), 2):
            parts.append(values[pieces[i]])
            parts.append(pieces[i + 1])
        return b"".join(parts)

    def logs_range(self, low: int, high: int) -> list[bytes]:
        """The logs of blocks low..high as the pieces of one JSON array."""
        parts = [b"["]
        for number in range(max(low, 0), min(high, self.head) + 1):
            logs = self.logs_json(number)
            if logs:
                if len(parts) > 1:
                    parts.append(b",")
                parts.append(logs)
        parts.append(b"]")
        return parts

    # -- eth_getTransactionReceipt

    def transaction_receipts(self, hashes: Sequence[object]) -> list[bytes]:
        """The receipts of `hashes` (one request's eth_getTransactionReceipt calls, in order).

        A template's transactions are in every block made from it, so a hash alone does not
        name its block. Clients ask for the receipts of blocks they have just fetched, in
        block order (the indexer's fallback: a batch of blocks, then all their transactions
        in chunks), so a run of hashes that are consecutive transactions of the chain is
        placed where such a run can start: where an earlier request's run stopped, else at a
        block recently served in full; the longest run through served blocks wins (on a tie
        the earlier request's continuation, then the most recently served block). A hash in
        no recently served block is placed in the highest block below the head that holds
        it; null for a hash in no block.
        """
        wanted = [h.lower() if isinstance(h, str) else "" for h in hashes]
        out: list[bytes] = []
        i = 0
        while i < len(wanted):
            found = self._tx_at.get(wanted[i])
            place = None if found is None else self._place(wanted, i, *found)
            if place is None:
                out.append(b"null")
                i += 1
                continue
            number, index, run = place
            template, separator = self.template_of(number), self.separator(number)
            for _ in range(run):
                while index >= template.tx_count:
                    number, index = number + 1, 0
                    template, separator = self.template_of(number), self.separator(number)
                out.append(separator.join(template.receipt_pieces[index]))
                index += 1
            i += run
            self._continue_at(number, index)
        return out

    def _continue_at(self, number: int, index: int) -> None:
        if index >= self.template_of(number).tx_count:
            number, index = number + 1, 0
        points = self._continuations
        points[(number, index)] = None
        points.move_to_end((number, index))
        if len(points) > CONTINUATIONS:
            points.popitem(last=False)

    def _place(
        self, wanted: list[str], i: int, kind: int, index: int
    ) -> tuple[int, int, int] | None:
        """(block, index, run length) for the run of `wanted` that starts at `i`."""
        template = self._templates[kind]
        remaining = len(wanted) - i
        to_boundary = template.tx_count - index
        continuations = [n for n, at in reversed(self._continuations) if at == index]
        best: tuple[int, int] | None = None  # (run, number)
        for number in [*continuations, *reversed(self._recent)]:
            if number > self.head or number not in self._recent:
                continue
            if self.template_of(number) is not template:
                continue
            # A run that stops at the block's end cannot beat a best as long: check there.
            reach = remaining
            if to_boundary < remaining and not self._goes_on(number + 1, wanted[i + to_boundary]):
                reach = to_boundary
            if best is not None and reach <= best[0]:
                continue
            run = self._run(wanted, i, number, index, served=True)
            if best is None or run > best[0]:
                best = (run, number)
                if run == remaining:
                    break
        if best is None:
            for number in range(self.head, max(self.head - SCAN_BLOCKS, -1), -1):
                if self.template_of(number) is template:
                    best = (self._run(wanted, i, number, index, served=False), number)
                    break
        return None if best is None else (best[1], index, best[0])

    def _goes_on(self, number: int, tx_hash: str) -> bool:
        """Whether served block `number` starts with transaction `tx_hash`."""
        if number > self.head or number not in self._recent:
            return False
        hashes = self.template_of(number).tx_hashes
        return bool(hashes) and hashes[0] == tx_hash

    def _run(self, wanted: list[str], i: int, number: int, index: int, *, served: bool) -> int:
        """How many of wanted[i:] are the chain's transactions from (number, index) on
        (`served`: through blocks recently served only)."""
        start = i
        template = self.template_of(number)
        while i < len(wanted):
            if index >= template.tx_count:
                number, index = number + 1, 0
                if number > self.head or (served and number not in self._recent):
                    break
                template = self.template_of(number)
                continue
            if wanted[i] != template.tx_hashes[index]:
                break
            i += 1
            index += 1
        return i - start
