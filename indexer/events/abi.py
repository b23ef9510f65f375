"""The event model: ABI types, checked `Event`s, their canonical signature, topic0 and columns.

`declarations` builds an `Event` from what an operator writes (a human-readable signature, or
an ABI JSON entry); both paths end in `make_event`, which enforces the rules below, so an
`Event` is always valid. Its columns are the operator contract of INTERFACE.md "Event tables":

- a column per parameter, in declaration order, after the six `FIXED_COLUMNS`;
- its name: the parameter name in snake_case (`amount0In` -> `amount0_in`), `arg<i>` when the
  i-th parameter (0-based) is unnamed, with a trailing `_` when it equals a fixed column
  (`address` -> `address_`). After that, names must be unique, letters, digits and `_` only,
  and at most 63 bytes (Postgres truncates longer identifiers silently). Names may be SQL
  keywords (`from`, `to`): the table layer must quote identifiers;
- its type: `uintN`/`intN` -> numeric, `address`, `bytesN`, `bytes`, `function` -> bytea,
  `bool` -> boolean, `string` -> text, an indexed reference type (string, bytes, any array or
  tuple: the log carries only the keccak256 of its encoding) -> bytea holding that 32-byte
  topic, a non-indexed array or tuple -> jsonb.

The jsonb shape: an array is a JSON array, a tuple a JSON object keyed by its components'
snake_case names (`arg<i>` when unnamed; no `_` suffix rule inside objects), an integer a JSON
number (exact: jsonb numbers are Postgres numerics), an address, `bytesN`, `bytes` or
`function` a lowercase "0x..." string, a string a JSON string, a bool a JSON boolean.

Every mistake raises `AbiError` with a message meant for the operator; the caller adds the key.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from indexer import _proof


class AbiError(ValueError):
    """The event declaration is invalid; the message says what to change."""


class Column(NamedTuple):
    """One column of an event table."""

    name: str
    pg_type: str


FIXED_COLUMNS: tuple[Column, ...] = (
    Column("chain", "smallint"),
    Column("block_number", "bigint"),
    Column("log_index", "integer"),
    Column("tx_index", "integer"),
    Column("tx_hash", "bytea"),
    Column("address", "bytea"),
)
_FIXED_NAMES = frozenset(column.name for column in FIXED_COLUMNS)
_PG_TYPES = {
    "uint": "numeric",
    "int": "numeric",
    "address": "bytea",
    "bool": "boolean",
    "bytes": "bytea",
    "function": "bytea",
    "string": "text",
}
_MAX_TOPICS = 4
_MAX_IDENTIFIER_BYTES = 63  # Postgres NAMEDATALEN - 1
IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")  # Solidity's
_COLUMN = re.compile(r"[a-z_][a-z0-9_]*")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SIZED = re.compile(r"(uint|int|bytes)([1-9][0-9]*)")


# -- Types


@dataclass(frozen=True, slots=True)
class Elementary:
    """A value type, `bytes` or `string`; `function` is 24 bytes on the wire, like bytes24."""

    base: str  # uint, int, address, bool, bytes, string, function
    size: int = 0  # bits of uintN/intN, bytes of bytesN; 0 otherwise (so `bytes` is dynamic)

    @property
    def canonical(self) -> str:
        return f"{self.base}{self.size}" if self.size else self.base

    @property
    def dynamic(self) -> bool:
        return self.base == "string" or (self.base == "bytes" and not self.size)

    @property
    def head_size(self) -> int:
        return 32


@dataclass(frozen=True, slots=True)
class Array:
    """`T[k]` (`length` k >= 1) or `T[]` (`length` None)."""

    item: AbiType
    length: int | None

    @property
    def canonical(self) -> str:
        return f"{self.item.canonical}[{'' if self.length is None else self.length}]"

    @property
    def dynamic(self) -> bool:
        return self.length is None or self.item.dynamic

    @property
    def head_size(self) -> int:
        """Bytes taken in the enclosing head: the value itself if static, else an offset."""
        return 32 if self.length is None or self.item.dynamic else self.length * self.item.head_size


@dataclass(frozen=True, slots=True)
class Component:
    """One member of a tuple; `key` is its key in the jsonb object."""

    name: str  # as declared; "" when unnamed
    key: str
    type: AbiType


@dataclass(frozen=True, slots=True)
class TupleType:
    """A tuple (a Solidity struct): at least one component, keys unique."""

    components: tuple[Component, ...]

    @property
    def canonical(self) -> str:
        return "(" + ",".join(c.type.canonical for c in self.components) + ")"

    @property
    def dynamic(self) -> bool:
        return any(c.type.dynamic for c in self.components)

    @property
    def head_size(self) -> int:
        return 32 if self.dynamic else sum(c.type.head_size for c in self.components)


AbiType = Elementary | Array | TupleType


# -- Events


@dataclass(frozen=True, slots=True)
class Param:
    """One event parameter and the column it fills."""

    name: str  # as declared; "" when unnamed
    type: AbiType
    indexed: bool
    column: str

    @property
    def hashed(self) -> bool:
        """True when the log carries only keccak256 of the value (an indexed reference type)."""
        return self.indexed and (not isinstance(self.type, Elementary) or self.type.dynamic)

    @property
    def pg_type(self) -> str:
        if self.hashed:
            return "bytea"
        if isinstance(self.type, Elementary):
            return _PG_TYPES[self.type.base]
        return "jsonb"


@dataclass(frozen=True, slots=True)
class Event:
    """A checked event declaration; build it with `make_event` or through `declarations`."""

    name: str
    params: tuple[Param, ...]
    anonymous: bool = False

    @property
    def signature(self) -> str:
        """The canonical signature, e.g. `Transfer(address,address,uint256)`."""
        return f"{self.name}({','.join(p.type.canonical for p in self.params)})"

    @property
    def topic0(self) -> bytes:
        """keccak256 of the signature; an anonymous event's logs do not carry it."""
        return _proof.keccak256(self.signature.encode())

    @property
    def declaration(self) -> str:
        """The human-readable form; `declarations.parse_signature` reads it back to this `Event`."""
        params = ", ".join(_declare_param(p) for p in self.params)
        return f"{self.name}({params}){' anonymous' if self.anonymous else ''}"

    @property
    def topic_count(self) -> int:
        return sum(p.indexed for p in self.params) + (0 if self.anonymous else 1)

    @property
    def columns(self) -> tuple[Column, ...]:
        """The parameter columns, in the order the decoder returns their values."""
        return tuple(Column(p.column, p.pg_type) for p in self.params)

    @property
    def table_columns(self) -> tuple[Column, ...]:
        return FIXED_COLUMNS + self.columns


def make_event(
    name: str, params: Sequence[tuple[str, AbiType, bool]], *, anonymous: bool = False
) -> Event:
    """Check `(name, type, indexed)` parameters and name their columns; raise `AbiError`."""
    if not IDENTIFIER.fullmatch(name):
        raise AbiError(f"{name!r} is not a valid event name")
    indexed = sum(flag for _, _, flag in params)
    limit = _MAX_TOPICS if anonymous else _MAX_TOPICS - 1
    if indexed > limit:
        raise AbiError(
            f"event {name} has {indexed} indexed parameters; a log has room for {limit}"
            f"{'' if anonymous else ' (4 if the event is anonymous)'}"
        )
    columns = _unique_keys([p_name for p_name, _, _ in params], what="parameter", fixed=True)
    return Event(
        name=name,
        params=tuple(
            Param(name=p_name, type=p_type, indexed=flag, column=column)
            for (p_name, p_type, flag), column in zip(params, columns, strict=True)
        ),
        anonymous=anonymous,
    )


def make_tuple(components: Sequence[tuple[str, AbiType]]) -> TupleType:
    """Check `(name, type)` components and key them; raise `AbiError`."""
    if not components:
        raise AbiError("a tuple needs at least one component")
    keys = _unique_keys([c_name for c_name, _ in components], what="tuple component", fixed=False)
    return TupleType(
        tuple(
            Component(name=c_name, key=key, type=c_type)
            for (c_name, c_type), key in zip(components, keys, strict=True)
        )
    )


def snake_case(name: str) -> str:
    """Return `name` in snake_case: `sqrtPriceX96` -> `sqrt_price_x96`, `tokenID` -> `token_id`."""
    return _CAMEL_BOUNDARY.sub("_", name).lower()


def _unique_keys(names: Sequence[str], *, what: str, fixed: bool) -> list[str]:
    keys: list[str] = []
    taken: dict[str, int] = {}
    for position, name in enumerate(names):
        if name and not IDENTIFIER.fullmatch(name):
            raise AbiError(f"{what} name {name!r} is not a valid identifier")
        key = snake_case(name) if name else f"arg{position}"
        if fixed and key in _FIXED_NAMES:
            key += "_"  # the six fixed columns keep their names; the parameter yields
        if not _COLUMN.fullmatch(key):
            raise AbiError(f"{what} name {name!r} cannot name a column: use letters, digits, _")
        if len(key.encode()) > _MAX_IDENTIFIER_BYTES:
            raise AbiError(f"{what} name {name!r} is longer than {_MAX_IDENTIFIER_BYTES} bytes")
        if key in taken:
            first, second = (names[at] or f"unnamed {what} {at}" for at in (taken[key], position))
            raise AbiError(f"{what}s {first!r} and {second!r} both map to the name {key!r}")
        taken[key] = position
        keys.append(key)
    return keys


def _declare(abi_type: AbiType) -> str:
    if isinstance(abi_type, Array):
        length = "" if abi_type.length is None else abi_type.length
        return f"{_declare(abi_type.item)}[{length}]"
    if isinstance(abi_type, TupleType):
        members = (f"{_declare(c.type)} {c.name}".rstrip() for c in abi_type.components)
        return f"({', '.join(members)})"
    return abi_type.canonical


def _declare_param(param: Param) -> str:
    return f"{_declare(param.type)}{' indexed' if param.indexed else ''} {param.name}".rstrip()


def elementary(word: str) -> Elementary:
    """Return the elementary type `word` names (aliases `uint`, `int`, `byte` included)."""
    if word in ("address", "bool", "string", "bytes", "function"):
        return Elementary(word)
    if word in ("uint", "int"):
        return Elementary(word, 256)
    if word == "byte":
        return Elementary("bytes", 1)
    sized = _SIZED.fullmatch(word)
    if sized:
        base, size = sized.group(1), int(sized.group(2))
        if base == "bytes":
            if size <= 32:
                return Elementary(base, size)
            raise AbiError(f"unknown type {word!r}: fixed-size bytes go from bytes1 to bytes32")
        if size % 8 == 0 and size <= 256:
            return Elementary(base, size)
        raise AbiError(f"unknown type {word!r}: integer widths are multiples of 8 from 8 to 256")
    if word.startswith(("fixed", "ufixed")):
        raise AbiError(f"unsupported type {word!r}: fixed-point numbers cannot be decoded")
    hint = " (write a struct as a tuple: (type name, ...))" if word[:1].isupper() else ""
    raise AbiError(f"unknown type {word!r}{hint}")


def array_length(digits: str) -> int | None:
    """Return the length `T[digits]` declares: None for `T[]`; raise `AbiError` for 0 or 007."""
    if not digits:
        return None
    if digits[0] == "0":
        raise AbiError(f"array length {digits} is not a positive integer")
    return int(digits)
