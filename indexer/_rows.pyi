# Types of the C extension indexer/_rows.c (binary COPY rows from JSON-RPC answers).
from collections.abc import Sequence
from typing import Any, Literal

# (kind, attribute, pg type, size, nullable, default zero, max items, column label)
Op = tuple[int, str | None, int, int, bool, bool, int, str]

class FieldTable:
    def __init__(self, ops: Sequence[Op]) -> None: ...
    def rows(
        self,
        prefix: bytes,
        items: list[Any],
        block_hash: str,
        block_number: str,
        number: int,
        tx_hashes: list[str] | None,
        first_position: int = 0,
        tx_index: int = -1,
        /,
    ) -> bytes: ...
    def nested_rows(
        self,
        prefix: bytes,
        parents: list[Any],
        attr: str,
        block_hash: str,
        block_number: str,
        number: int,
        tx_hashes: list[str] | None,
        counted: int,
        /,
    ) -> tuple[bytes, int, int]: ...

def new_buffer(size: int, /) -> bytearray: ...
def resize_buffer(buffer: bytearray, size: int, /) -> None: ...
def copy_into(buffer: bytearray, offset: int, chunk: bytes, /) -> None: ...
def batch_results(
    body: bytes | bytearray, /
) -> list[tuple[int, int, int]] | Literal[False] | None: ...
def plain_json(body: bytes | bytearray, /) -> bool: ...

LogRow = tuple[int, int, int, bytes, bytes, tuple[bytes, ...], bytes]

# (topic0 or None: anonymous, topic count, sorted 20-byte addresses or None, data size,
#  ((kind, topic or -1, data offset, bits or bytes), ...)); see indexer/_rows.c.
EventSpec = tuple[bytes | None, int, bytes | None, int, tuple[tuple[int, int, int, int], ...]]

def event_rows(
    encoded_logs: bytes | memoryview, spec: EventSpec, /
) -> tuple[bytes, int, list[tuple[int, int]], int]: ...
def log_rows(encoded: bytes, topic0s: set[bytes] | frozenset[bytes] | None, /) -> list[LogRow]: ...
