"""The C commitment primitives (`indexer._proof`) against the pure-Python reference
(`indexer.chain.mpt`, itself checked against the `rlp` package, a naive trie and real
blocks): equal answers on random inputs, the same refusals."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer import _proof
from indexer.chain import evm_encoding, mpt

items: st.SearchStrategy[Any] = st.recursive(
    st.binary(max_size=80) | st.integers(min_value=0, max_value=2**300),
    lambda children: st.lists(children, max_size=6),
    max_leaves=30,
)


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=600))
def test_keccak256_equals_the_reference(data: bytes) -> None:
    assert _proof.keccak256(data) == mpt.keccak256(data)


# Lengths around the 136-byte block: 0, 1, 135, 136, 137, 271, 272, ... (padding cases).
_MESSAGES = st.lists(
    st.integers(min_value=0, max_value=6).flatmap(
        lambda blocks: st.binary(min_size=max(0, 136 * blocks - 2), max_size=136 * blocks + 2)
    ),
    max_size=40,
)


@settings(max_examples=400, deadline=None)
@given(_MESSAGES)
def test_many_digests_at_once_equal_one_at_a_time(messages: list[bytes]) -> None:
    # Eight at a time (where the CPU can), grouped by size, mixed sizes in a group: each
    # digest in its message's place.
    one_by_one = [mpt.keccak256(m) for m in messages]
    assert _proof.keccak256_many(messages) == one_by_one
    assert _proof.keccak256_many(messages, 8) == one_by_one
    assert _proof.keccak256_many(messages, 1) == one_by_one


def test_many_digests_use_the_vector_unit_where_the_cpu_has_one() -> None:
    flags = set()
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
    assert _proof.SIMD_LANES == (8 if "avx512f" in flags else 1)


@settings(max_examples=1500, deadline=None)
@given(items)
def test_rlp_equals_the_reference(item: Any) -> None:
    assert _proof.rlp(item) == mpt.rlp_encode(item)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=120), max_size=300))
def test_ordered_trie_root_equals_the_reference(values: list[bytes]) -> None:
    assert _proof.ordered_trie_root(values) == mpt.ordered_trie_root(values)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=900), max_size=200))
def test_roots_of_large_values_equal_the_reference(values: list[bytes]) -> None:
    # Leaves of several blocks each, hashed together with their siblings.
    assert _proof.ordered_trie_root(values) == mpt.ordered_trie_root(values)


def test_roots_of_many_items_cross_the_one_byte_keys() -> None:
    # rlp(127) is one byte, rlp(128) two: the key order is not the index order there.
    for count in (0, 1, 2, 16, 17, 127, 128, 129, 300, 1025):
        values = [bytes([i % 251 + 1]) * (1 + i % 40) for i in range(count)]
        assert _proof.ordered_trie_root(values) == mpt.ordered_trie_root(values), count


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=40), max_size=40))
def test_bloom_equals_the_reference(entries: list[bytes]) -> None:
    bloom = bytearray(256)
    for entry in entries:
        digest = mpt.keccak256(entry)
        for pair in (0, 2, 4):
            bit = ((digest[pair] << 8) | digest[pair + 1]) & 2047
            bloom[255 - bit // 8] |= 1 << (bit % 8)
    assert _proof.bloom(entries) == bytes(bloom)


_VALUES = st.sampled_from(["0x" + f"{i:02x}" * 32 for i in range(6)])  # few: repeats, as in blocks
logs_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "address": st.sampled_from(["0x" + f"{i:02x}" * 20 for i in range(4)]),
            "topics": st.lists(_VALUES, max_size=4),
        }
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(logs_strategy, max_size=5))
def test_logs_bloom_equals_the_reference(receipts: list[list[dict[str, Any]]]) -> None:
    for logs in receipts:  # few values: most entries repeat (hashed once by the C side)
        assert _proof.logs_bloom(logs) == evm_encoding.logs_bloom(logs)
    every = [log for logs in receipts for log in logs]
    assert _proof.logs_bloom(every) == evm_encoding.logs_bloom(every)


def test_a_repeated_entry_is_still_checked_for_its_length() -> None:
    """Repeats are hashed once, keyed by their bytes and length: a topic's 32 bytes seen
    before never pass as an address, and the same bytes as a topic and as an address
    prefix are two entries."""
    topic = "0x" + "ab" * 32
    with pytest.raises(ValueError, match="address"):
        _proof.logs_bloom([{"address": "0x" + "11" * 20, "topics": [topic]},
                           {"address": topic, "topics": []}])  # fmt: skip
    logs = [{"address": "0x" + "ab" * 20, "topics": [topic]}]
    assert _proof.logs_bloom(logs) == evm_encoding.logs_bloom(logs)


@pytest.mark.parametrize("item", [True, -1, "text", 1.5, None, [[-5]]])
def test_rlp_refuses_what_is_not_an_rlp_item(item: Any) -> None:
    with pytest.raises(ValueError):
        _proof.rlp(item)
    with pytest.raises(mpt.RlpError):
        mpt.rlp_encode(item)


def test_the_trie_refuses_empty_values() -> None:
    with pytest.raises(ValueError):
        _proof.ordered_trie_root([b"x", b""])


def test_known_answers() -> None:
    assert _proof.keccak256(b"").hex() == (
        "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    )
    assert _proof.ordered_trie_root([]) == mpt.EMPTY_TRIE_ROOT
