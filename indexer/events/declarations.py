"""Read what operators write into `abi.Event`s: a human-readable signature or an ABI JSON entry.

`parse_signature("Transfer(address indexed from, address indexed to, uint256 value)")`, or
`load_abi_event(Path("abi/erc20.json"), "Transfer")` for the `abi` + `event` form. Both raise
`abi.AbiError` with a message for the operator that says where the problem is.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from pathlib import Path

from indexer.events import abi
from indexer.events.abi import AbiError, AbiType, Event

_TOKEN = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*|[0-9]+|[()\[\],;]|\S")
_JSON_TYPE = re.compile(r"([A-Za-z]+[0-9]*)((?:\[[0-9]*\])*)")


def parse_signature(text: str, *, anonymous: bool = False) -> Event:
    """Parse `Name(type [indexed] [name], ...) [anonymous]`; raise `AbiError` saying where.

    Tuples are written `(type name, ...)` or `tuple(type name, ...)`; arrays `T[]`, `T[k]`,
    nested freely; `uint`, `int` and `byte` mean uint256, int256 and bytes1. A leading `event`
    and a trailing `;` are allowed. `anonymous=True` is the same as the trailing keyword.
    """
    return _Parser(text).event(anonymous=anonymous)


class _Parser:
    """Recursive descent over the tokens of one signature."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = [(m.group(), m.start()) for m in _TOKEN.finditer(text)]
        self.at = 0

    def event(self, *, anonymous: bool) -> Event:
        if self.peek() == "event" and abi.IDENTIFIER.fullmatch(self.peek(1)):
            self.at += 1
        name = self.take()
        if not abi.IDENTIFIER.fullmatch(name):
            raise self.error("expected the event name", at=self.at - 1)
        self.expect("(")
        params = self.members(in_event=True)
        if self.peek() == "anonymous":
            self.at += 1
            anonymous = True
        if self.peek() == ";":
            self.at += 1
        if self.at < len(self.tokens):
            raise self.error("unexpected text after the parameter list")
        return abi.make_event(name, params, anonymous=anonymous)

    def members(self, *, in_event: bool) -> list[tuple[str, AbiType, bool]]:
        """Parse `member, ...)`, the opening parenthesis already taken."""
        found: list[tuple[str, AbiType, bool]] = []
        if self.peek() == ")":
            self.at += 1
            return found
        while True:
            abi_type = self.type()
            indexed = self.peek() == "indexed"
            if indexed:
                if not in_event:
                    raise self.error("'indexed' is allowed on event parameters only")
                self.at += 1
            name = ""
            if abi.IDENTIFIER.fullmatch(self.peek()):
                name = self.take()
            found.append((name, abi_type, indexed))
            separator = self.take()
            if separator == ")":
                return found
            if separator != ",":
                raise self.error("expected ',' or ')' after a parameter", at=self.at - 1)

    def type(self) -> AbiType:
        start = self.at
        word = self.take()
        build: Callable[[], AbiType]
        if word == "(" or (word == "tuple" and self.peek() == "("):
            if word == "tuple":
                self.at += 1
            members = [(name, member) for name, member, _ in self.members(in_event=False)]
            build = functools.partial(abi.make_tuple, members)
        elif abi.IDENTIFIER.fullmatch(word):
            build = functools.partial(abi.elementary, word)
        else:
            raise self.error("expected a type", at=start)
        try:
            abi_type: AbiType = build()
        except AbiError as exc:
            raise self.error(str(exc), at=start) from None
        while self.peek() == "[":
            self.at += 1
            digits = self.peek() if self.peek().isdigit() else ""
            try:
                length = abi.array_length(digits)
            except AbiError as exc:
                raise self.error(str(exc)) from None
            if digits:
                self.at += 1
            self.expect("]")
            abi_type = abi.Array(abi_type, length)
        return abi_type

    def peek(self, ahead: int = 0) -> str:
        at = self.at + ahead
        return self.tokens[at][0] if at < len(self.tokens) else ""

    def take(self) -> str:
        token = self.peek()
        self.at += 1
        return token

    def expect(self, token: str) -> None:
        if self.take() != token:
            raise self.error(f"expected {token!r}", at=self.at - 1)

    def error(self, problem: str, *, at: int | None = None) -> AbiError:
        index = self.at if at is None else at
        if index < len(self.tokens):
            token, position = self.tokens[index]
            where = f"at {token!r} (character {position + 1})"
        else:
            where = "at the end"
        return AbiError(f"{problem}, {where} of {self.text!r}")


# -- ABI JSON


def load_abi_event(path: Path, selector: str) -> Event:
    """Read the ABI JSON file at `path` and return its event `selector` (see `event_from_abi`)."""
    try:
        document = json.loads(path.read_bytes())
    except OSError as exc:
        raise AbiError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise AbiError(f"{path} is not JSON: {exc}") from None
    return event_from_abi(document, selector, source=str(path))


def event_from_abi(document: object, selector: str, *, source: str = "the ABI") -> Event:
    """Return the event `selector` names in an ABI (a JSON array, or an object with "abi").

    `selector` is an event name, or a canonical signature (`Transfer(address,address,uint256)`)
    to pick one overload; names and `indexed` always come from the ABI entry. Raise `AbiError`
    when no entry matches, or several differ (overloads, or one signature with different
    indexed parameters). Entries of other events are not checked.
    """
    entries = document.get("abi") if isinstance(document, dict) else document
    if not isinstance(entries, list):
        raise AbiError(f"{source} is not an ABI: expected a JSON array or an object with 'abi'")
    wanted: str | None = None
    name = selector.strip()
    if "(" in name:
        probe = parse_signature(name)
        if probe.anonymous or any(p.indexed or p.name for p in probe.params):
            raise AbiError(
                f"event selector {selector!r}: write a name or a canonical signature like "
                f"{probe.signature!r}; parameter names and 'indexed' come from the ABI"
            )
        name, wanted = probe.name, probe.signature
    elif not abi.IDENTIFIER.fullmatch(name):
        raise AbiError(f"event selector {selector!r} is neither a name nor a signature")
    found: list[Event] = []
    for entry in entries:
        if isinstance(entry, dict) and entry.get("type") == "event" and entry.get("name") == name:
            event = _event_from_entry(entry, source=source)
            if (wanted is None or event.signature == wanted) and event not in found:
                found.append(event)
    if not found:
        names = sorted(
            {
                str(e.get("name"))
                for e in entries
                if isinstance(e, dict) and e.get("type") == "event"
            }
        )
        raise AbiError(
            f"{source} has no event {selector!r}; its events: {', '.join(names) or 'none'}"
        )
    if len(found) > 1:
        listed = "; ".join(e.declaration for e in found)
        if wanted is None and len({e.signature for e in found}) > 1:
            raise AbiError(
                f"event {name!r} is overloaded in {source} ({listed}): set event to the "
                f"canonical signature of one, e.g. {found[0].signature!r}"
            )
        raise AbiError(
            f"{source} declares {found[0].signature!r} more than once, with different indexed "
            f"parameters or names ({listed}): use `signature` instead of `abi`"
        )
    return found[0]


def _event_from_entry(entry: dict[str, object], *, source: str) -> Event:
    name = entry.get("name")
    inputs = entry.get("inputs", [])
    anonymous = entry.get("anonymous", False)
    where = f"event {name!r} in {source}"
    if not isinstance(inputs, list) or not isinstance(anonymous, bool):
        raise AbiError(f"{where}: 'inputs' must be an array and 'anonymous' a boolean")
    params: list[tuple[str, AbiType, bool]] = []
    try:
        for position, item in enumerate(inputs):
            place = f"input {position}"
            if not isinstance(item, dict):
                raise AbiError(f"{place} is not a JSON object")
            indexed = item.get("indexed", False)
            if not isinstance(indexed, bool):
                raise AbiError(f"{place}: 'indexed' must be a boolean")
            params.append((_json_name(item, place), _json_type(item, place), indexed))
        return abi.make_event(str(name), params, anonymous=anonymous)
    except AbiError as exc:
        raise AbiError(f"{where}: {exc}") from None


def _json_name(item: dict[str, object], place: str) -> str:
    name = item.get("name", "")
    if not isinstance(name, str):
        raise AbiError(f"{place}: 'name' must be a string")
    return name


def _json_type(item: dict[str, object], place: str) -> AbiType:
    type_str = item.get("type")
    match = _JSON_TYPE.fullmatch(type_str) if isinstance(type_str, str) else None
    if match is None:
        raise AbiError(f"{place}: {type_str!r} is not an ABI type")
    base, arrays = match.groups()
    components: list[tuple[str, AbiType]] | None = None
    if base == "tuple":
        members = item.get("components")
        if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
            raise AbiError(f"{place}: a tuple needs a 'components' array of objects")
        components = []
        for j, member in enumerate(members):
            at = f"{place} component {j}"
            components.append((_json_name(member, at), _json_type(member, at)))
    try:
        abi_type: AbiType = (
            abi.elementary(base) if components is None else abi.make_tuple(components)
        )
        for digits in re.findall(r"\[([0-9]*)\]", arrays):
            abi_type = abi.Array(abi_type, abi.array_length(digits))
    except AbiError as exc:
        raise AbiError(f"{place}: {exc}") from None
    return abi_type
