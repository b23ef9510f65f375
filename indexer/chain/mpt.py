"""Keccak-256, RLP and the Merkle-Patricia trie root: Ethereum's commitment primitives.

Pure Python, readable before fast: the reference `evm_proof` builds on, and the oracle of
any faster implementation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

from Crypto.Hash import keccak

RlpItem: TypeAlias = "bytes | int | Sequence[RlpItem]"


class RlpError(ValueError):
    """A value cannot be RLP-encoded or put in a trie."""


def keccak256(data: bytes) -> bytes:
    """Return the Keccak-256 digest of `data` (Ethereum's hash, not SHA3-256)."""
    return keccak.new(digest_bits=256, data=data).digest()


# -- RLP ----------------------------------------------------------------------------------


def _length_prefix(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes([offset + length])
    length_bytes = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([offset + 55 + len(length_bytes)]) + length_bytes


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _rlp_list(encoded_items: Sequence[bytes]) -> bytes:
    payload = b"".join(encoded_items)
    return _length_prefix(len(payload), 0xC0) + payload


def rlp_encode(item: RlpItem) -> bytes:
    """Return the RLP encoding of a byte string, a non-negative int or a nested list of them.

    Ints are encoded as minimal big-endian byte strings (0 -> the empty string), as every
    Ethereum consensus object encodes its scalars.
    """
    if isinstance(item, bytes | bytearray | memoryview):
        data = bytes(item)
        if len(data) == 1 and data[0] < 0x80:
            return data
        return _length_prefix(len(data), 0x80) + data
    if isinstance(item, bool):
        # bool is an int subclass; an RLP scalar must be chosen deliberately, never by accident.
        raise RlpError("rlp: a bool is not an RLP item")
    if isinstance(item, int):
        if item < 0:
            raise RlpError(f"rlp: negative integer {item}")
        return rlp_encode(_int_bytes(item))
    if isinstance(item, list | tuple):
        return _rlp_list([rlp_encode(element) for element in item])
    raise RlpError(f"rlp: cannot encode {type(item).__name__}")


# -- Merkle-Patricia trie -----------------------------------------------------------------

EMPTY_TRIE_ROOT = keccak256(rlp_encode(b""))
"""Root of the trie with no entries (0x56e81f...b421): what an empty list commits to."""


def _hex_prefix(nibbles: bytes, *, leaf: bool) -> bytes:
    flag = 2 if leaf else 0
    if len(nibbles) % 2:
        packed = [((flag + 1) << 4) | nibbles[0]]
        rest = nibbles[1:]
    else:
        packed = [flag << 4]
        rest = nibbles
    packed.extend((rest[i] << 4) | rest[i + 1] for i in range(0, len(rest), 2))
    return bytes(packed)


def _child_reference(encoded_node: bytes) -> bytes:
    # A node whose encoding is shorter than a hash is inlined in its parent, else referenced.
    if len(encoded_node) < 32:
        return encoded_node
    return rlp_encode(keccak256(encoded_node))


def _encode_node(pairs: Sequence[tuple[bytes, bytes]], depth: int) -> bytes:
    """Return the RLP of the trie node holding `pairs` (sorted nibble keys) below `depth`."""
    if len(pairs) == 1:
        key, value = pairs[0]
        return _rlp_list([rlp_encode(_hex_prefix(key[depth:], leaf=True)), rlp_encode(value)])
    # Sorted keys: the prefix shared by all is the prefix shared by the first and the last.
    first, last = pairs[0][0], pairs[-1][0]
    shared = 0
    while (
        depth + shared < len(first)
        and depth + shared < len(last)
        and first[depth + shared] == last[depth + shared]
    ):
        shared += 1
    if shared:
        child = _encode_node(pairs, depth + shared)
        extension_key = _hex_prefix(first[depth : depth + shared], leaf=False)
        return _rlp_list([rlp_encode(extension_key), _child_reference(child)])
    slots: list[bytes] = [rlp_encode(b"")] * 17
    index = 0
    if len(pairs[0][0]) == depth:
        # Only one key can end exactly here (keys are unique), and it sorts first.
        slots[16] = rlp_encode(pairs[0][1])
        index = 1
    while index < len(pairs):
        nibble = pairs[index][0][depth]
        end = index
        while end < len(pairs) and pairs[end][0][depth] == nibble:
            end += 1
        slots[nibble] = _child_reference(_encode_node(pairs[index:end], depth + 1))
        index = end
    return _rlp_list(slots)


def trie_root(entries: Mapping[bytes, bytes]) -> bytes:
    """Return the root hash of the Merkle-Patricia trie mapping each key to its value.

    Empty values are not stored in a trie; passing one is an error, not a deletion.
    """
    if not entries:
        return EMPTY_TRIE_ROOT
    pairs = []
    for key, value in entries.items():
        if not value:
            raise RlpError("trie: empty value")
        nibbles = bytes(n for byte in key for n in (byte >> 4, byte & 0x0F))
        pairs.append((nibbles, bytes(value)))
    pairs.sort()
    # The root is always hashed, even when its encoding is shorter than 32 bytes.
    return keccak256(_encode_node(pairs, 0))


def ordered_trie_root(items: Sequence[bytes]) -> bytes:
    """Return the root of the trie keyed by rlp(index) -> item, as blocks commit to lists."""
    return trie_root({rlp_encode(index): item for index, item in enumerate(items)})
