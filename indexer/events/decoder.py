"""Turn one event's logs into its column values, with a decoder compiled once per event.

`EventDecoder(event).decode(topics, data)` returns the values of `event.columns`, in order: an
`int` for numeric, `bytes` for bytea (20 for an address, N for bytesN, the raw topic for an
indexed reference type), `bool`, `str` for text, and for jsonb the JSON text as a `str` (shape
in `abi`). It raises `Undecodable` when the log is not an instance of the event: wrong topic
count or topic0, a topic that is not 32 bytes, or data that is not the ABI encoding of the
non-indexed parameters.

What counts as the encoding is eth-abi's strict decoding (`eth_abi.decode(types, data,
strict=True)`) with two intended differences, both refusals:

- the data must be the canonical encoding: each offset points exactly where the previous value
  ends (the first one right after its head), and the data ends where the last value ends. That
  refuses trailing bytes, gaps, shared or reordered tails and offsets into a head, which
  eth-abi accepts; Solidity and Vyper emit only canonical encodings. It also makes decoding
  one-to-one: re-encoding the values gives back the data;
- a string may not contain U+0000: Postgres text and jsonb cannot hold it.

Speed is the point (eth-abi manages ~60k logs/s; a node hands us far more). The top level is
generated Python source, compiled once: static values are read at fixed offsets with slicing
and `int.from_bytes`, topics and offsets checked by straight-line code, with no per-log type
dispatch. Dynamic values and static arrays or tuples go through small reader closures built
once per type. Only constants we computed enter the generated source (offsets, widths, names of
our own variables); operator text stays in the namespace as data (messages).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, cast

from indexer.events import abi

Value = int | bytes | bool | str
Decode = Callable[[Sequence[bytes], bytes], tuple[Value, ...]]
# A static reader gets a position whose `head_size` bytes are known to be in bounds.
_Static = Callable[[bytes, int], object]
# A tail reader gets the position a dynamic value starts at and returns (value, its end).
_Tail = Callable[[bytes, int], tuple[object, int]]

_int = int.from_bytes  # big-endian unsigned by default since Python 3.11
_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode
_BOOLS: dict[bytes, bool] = {bytes(32): False, bytes(31) + b"\x01": True}


class Undecodable(ValueError):
    """The log has the event's topic0 but not its shape; the message says what is wrong."""


class EventDecoder:
    """Decode the logs of one event into its parameter columns; build it once per event.

    `decode(topics, data)` is the compiled function itself (bind it once in a loop);
    `source` is its generated Python source, for reading and debugging.
    """

    __slots__ = ("decode", "event", "source")

    def __init__(self, event: abi.Event) -> None:
        self.event = event
        self.source, namespace = _Generator(event).generate()
        exec(compile(self.source, f"<decoder of {event.signature}>", "exec"), namespace)
        self.decode = cast(Decode, namespace["decode"])


# -- The generated top level


class _Generator:
    """Write the source of `decode(topics, data)` for one event."""

    def __init__(self, event: abi.Event) -> None:
        self.event = event
        self.lines = ["def decode(topics, data):"]
        self.namespace: dict[str, Any] = {
            "_int": _int,
            "_U": Undecodable,
            "_json": _json,
            "_BOOLS": _BOOLS,
        }

    def generate(self) -> tuple[str, dict[str, Any]]:
        event = self.event
        count = event.topic_count
        self.emit(f"if len(topics) != {count}:")
        self.emit(
            f"    raise _U({self.const(f'expected {count} topics, got ')} + str(len(topics)))"
        )
        topic = 0
        if not event.anonymous:
            self.check(
                f"topics[0] != {self.const(event.topic0)}", "topic 0 is not the event's topic0"
            )
            topic = 1
        values: list[str] = []
        in_data: list[tuple[int, abi.Param]] = []
        for i, param in enumerate(event.params):
            if not param.indexed:
                in_data.append((i, param))
                values.append(f"v{i}")
                continue
            name = f"t{topic}"
            self.emit(f"{name} = topics[{topic}]")
            self.check(f"len({name}) != 32", f"topic {topic} is not 32 bytes")
            if param.hashed:
                values.append(name)
            else:
                assert isinstance(param.type, abi.Elementary)  # not hashed: a value type
                label = f"topic {topic} (parameter {i}, {param.column})"
                values.append(self.word(name, 0, param.type, var=f"v{i}", label=label))
            topic += 1
        expressions = self.data(in_data)
        values = [expressions.get(value, value) for value in values]
        self.emit(f"return ({''.join(value + ', ' for value in values)})")
        return "\n".join(self.lines) + "\n", self.namespace

    def data(self, params: list[tuple[int, abi.Param]]) -> dict[str, str]:
        """Emit the checks of the data; return the expression of each `v<i>` in it."""
        head = sum(param.type.head_size for _, param in params)
        dynamic = any(param.type.dynamic for _, param in params)
        if dynamic:
            self.emit(f"if len(data) < {head}:")
            message = f"data is shorter than the {head} bytes of its head: "
        else:
            self.emit(f"if len(data) != {head}:")
            message = f"data is not {head} bytes long: "
        self.emit(f"    raise _U({self.const(message)} + str(len(data)))")
        if dynamic:
            self.emit(f"end = {head}")
        expressions: dict[str, str] = {}
        at = 0
        for i, param in params:
            var, kind = f"v{i}", param.type
            label = f"parameter {i} ({param.column})"
            if kind.dynamic:
                message = f"{label}: its offset does not point where the previous value ends"
                self.check(f"_int(data[{at}:{at + 32}]) != end", message)
                reader = self.const(tail_reader(kind, as_json=not isinstance(kind, abi.Elementary)))
                self.emit(f"{var}, end = {reader}(data, end)")
                if not isinstance(kind, abi.Elementary):
                    self.emit(f"{var} = _json({var})")
            elif isinstance(kind, abi.Elementary):
                expressions[var] = self.word("data", at, kind, var=var, label=label)
            else:
                expressions[var] = f"_json({self.const(static_reader(kind))}(data, {at}))"
            at += kind.head_size
        if dynamic:
            self.check("end != len(data)", "data does not end where its last value ends")
        return expressions

    def word(self, buffer: str, at: int, kind: abi.Elementary, *, var: str, label: str) -> str:
        """Emit the checks of one 32-byte word at `buffer[at:]`; return its value's expression."""
        word, base, size = f"{buffer}[{at}:{at + 32}]", kind.base, kind.size
        problem = f"{label}: {kind.canonical} word {_PROBLEMS.get(base, 'has dirty padding')}"
        if base == "uint":
            if size == 256:
                return f"_int({word})"
            self.emit(f"{var} = _int({word})")
            self.check(f"{var} >> {size}", problem)
        elif base == "int":
            if size == 256:
                return f"_int({word}, signed=True)"
            self.emit(f"{var} = _int({word}, signed=True)")
            self.check(f"not {-(1 << (size - 1))} <= {var} < {1 << (size - 1)}", problem)
        elif base == "address":
            self.check(f"{buffer}[{at}:{at + 12}] != {self.const(bytes(12))}", problem)
            return f"{buffer}[{at + 12}:{at + 32}]"
        elif base == "bool":
            self.emit(f"{var} = _BOOLS.get({word})")
            self.check(f"{var} is None", problem)
        else:  # bytesN and function: left-aligned
            width = _width(kind)
            if width < 32:
                zeros = self.const(bytes(32 - width))
                self.check(f"{buffer}[{at + width}:{at + 32}] != {zeros}", problem)
            return f"{buffer}[{at}:{at + width}]"
        return var

    def check(self, condition: str, message: str) -> None:
        self.emit(f"if {condition}:")
        self.emit(f"    raise _U({self.const(message)})")

    def emit(self, line: str) -> None:
        self.lines.append("    " + line)

    def const(self, value: object) -> str:
        name = f"_c{len(self.namespace)}"
        self.namespace[name] = value
        return name


_PROBLEMS = {
    "uint": "has non-zero high bits",
    "int": "is not sign-extended",
    "address": "has non-zero high 12 bytes",
    "bool": "is neither 0 nor 1",
}


def _width(kind: abi.Elementary) -> int:
    return 24 if kind.base == "function" else kind.size


# -- Readers of nested and dynamic values, built once per type


def static_reader(kind: abi.AbiType) -> _Static:
    """Return a reader of static `kind` as its JSON value (see `abi`), in bounds by contract."""
    if isinstance(kind, abi.Elementary):
        return _word_reader(kind)
    if isinstance(kind, abi.Array):
        assert kind.length is not None and not kind.item.dynamic
        item, step, count = static_reader(kind.item), kind.item.head_size, kind.length

        def read_array(data: bytes, at: int) -> object:
            return [item(data, at + k * step) for k in range(count)]

        return read_array
    members: list[tuple[str, _Static, int]] = []
    at = 0
    for component in kind.components:
        members.append((component.key, static_reader(component.type), at))
        at += component.type.head_size

    def read_tuple(data: bytes, at: int) -> object:
        return {key: read(data, at + offset) for key, read, offset in members}

    return read_tuple


def _word_reader(kind: abi.Elementary) -> _Static:
    base, size, name = kind.base, kind.size, kind.canonical

    def fail(at: int) -> Undecodable:
        return Undecodable(f"{name} at data byte {at} {_PROBLEMS.get(base, 'has dirty padding')}")

    if base == "uint":
        limit = 1 << size

        def read_uint(data: bytes, at: int) -> object:
            value = _int(data[at : at + 32])
            if value >= limit:
                raise fail(at)
            return value

        return read_uint
    if base == "int":
        low, high = -(1 << (size - 1)), (1 << (size - 1)) - 1

        def read_int(data: bytes, at: int) -> object:
            value = _int(data[at : at + 32], signed=True)
            if not low <= value <= high:
                raise fail(at)
            return value

        return read_int
    if base == "bool":

        def read_bool(data: bytes, at: int) -> object:
            value = _BOOLS.get(data[at : at + 32])
            if value is None:
                raise fail(at)
            return value

        return read_bool
    # address is right-aligned, bytesN and function left-aligned; all become "0x..." strings
    first, last = (12, 32) if base == "address" else (0, _width(kind))
    padding = slice(0, 12) if base == "address" else slice(last, 32)

    def read_hex(data: bytes, at: int) -> object:
        if data[at : at + 32][padding].strip(b"\x00"):
            raise fail(at)
        return "0x" + data[at + first : at + last].hex()

    return read_hex


def tail_reader(kind: abi.AbiType, *, as_json: bool) -> _Tail:
    """Return a reader of dynamic `kind` at its start; bytes as "0x..." if `as_json`."""
    if isinstance(kind, abi.Elementary):
        if kind.base == "string":
            return _read_string
        return _read_bytes_hex if as_json else _read_bytes
    if isinstance(kind, abi.TupleType):
        return _tuple_reader(kind)
    if not kind.item.dynamic:
        assert kind.length is None
        item, step = static_reader(kind.item), kind.item.head_size

        def read_static_items(data: bytes, start: int) -> tuple[object, int]:
            count = _read_count(data, start)
            first = start + 32
            end = first + count * step
            if end > len(data):
                raise Undecodable(f"array at data byte {start} has {count} items: past the end")
            return [item(data, first + k * step) for k in range(count)], end

        return read_static_items
    tail, length = tail_reader(kind.item, as_json=True), kind.length

    def read_dynamic_items(data: bytes, start: int) -> tuple[object, int]:
        if length is None:
            return _heads(data, start + 32, _read_count(data, start), tail)
        return _heads(data, start, length, tail)

    return read_dynamic_items


def _tuple_reader(kind: abi.TupleType) -> _Tail:
    keys = [component.key for component in kind.components]
    members: list[tuple[int, _Static | None, _Tail | None]] = []
    at = 0
    for component in kind.components:
        if component.type.dynamic:
            members.append((at, None, tail_reader(component.type, as_json=True)))
        else:
            members.append((at, static_reader(component.type), None))
        at += component.type.head_size
    head = at

    def read_tuple(data: bytes, start: int) -> tuple[object, int]:
        if start + head > len(data):
            raise Undecodable(f"tuple at data byte {start}: its head runs past the end")
        end = start + head
        values = []
        for offset, read_static, read_tail in members:
            at = start + offset
            if read_tail is None:
                assert read_static is not None
                values.append(read_static(data, at))
                continue
            if start + _int(data[at : at + 32]) != end:
                raise Undecodable(f"offset at data byte {at} is not where the previous value ends")
            value, end = read_tail(data, end)
            values.append(value)
        return dict(zip(keys, values, strict=True)), end

    return read_tuple


def _heads(data: bytes, start: int, count: int, tail: _Tail) -> tuple[object, int]:
    """Read `count` dynamic items whose offsets start at `start`, tails in canonical order."""
    end = start + 32 * count
    if end > len(data):
        raise Undecodable(f"array at data byte {start} has {count} items: past the end")
    items = []
    for at in range(start, start + 32 * count, 32):
        if start + _int(data[at : at + 32]) != end:
            raise Undecodable(f"offset at data byte {at} is not where the previous value ends")
        item, end = tail(data, end)
        items.append(item)
    return items, end


def _read_count(data: bytes, start: int) -> int:
    if start + 32 > len(data):
        raise Undecodable(f"length at data byte {start} is past the end")
    return _int(data[start : start + 32])


def _read_bytes(data: bytes, start: int) -> tuple[bytes, int]:
    size = _read_count(data, start)
    first = start + 32
    end = first + (size + 31) // 32 * 32
    if end > len(data):
        raise Undecodable(f"bytes at data byte {start} claim {size} bytes: past the end")
    if data[first + size : end].strip(b"\x00"):
        raise Undecodable(f"bytes at data byte {start} have dirty padding")
    return data[first : first + size], end


def _read_bytes_hex(data: bytes, start: int) -> tuple[object, int]:
    value, end = _read_bytes(data, start)
    return "0x" + value.hex(), end


def _read_string(data: bytes, start: int) -> tuple[object, int]:
    value, end = _read_bytes(data, start)
    if b"\x00" in value:  # U+0000 is the only character whose UTF-8 holds a zero byte
        raise Undecodable(f"string at data byte {start} holds U+0000, which Postgres refuses")
    try:
        return value.decode(), end
    except UnicodeDecodeError:
        raise Undecodable(f"string at data byte {start} is not UTF-8") from None
