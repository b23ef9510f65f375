"""The fault kinds of `faultproxy.FaultProxy`: what each one does to a JSON-RPC exchange.

Each kind is one entry in `KINDS`. A kind acts at one of two stages:

* `before`: answer without asking upstream (HTTP errors, a held request, garbage);
* `after`: take upstream's answer and return a rewritten one, or None when the answer holds
  nothing the fault could change. Such a fault stays armed until it can change something,
  so `Fault.applied` always counts answers that were really altered.

Everything here is pure data and pure functions over decoded bodies; the server that applies
them (threads, sockets, ordering of armed faults) lives in `faultproxy`.
"""

from __future__ import annotations

import dataclasses
import threading
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import orjson

_T = TypeVar("_T")

_HTML_500 = "<html><head><title>500 Internal Server Error</title></head><body>oops</body></html>"
_JSON_401 = '{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Must be authenticated!"}}'


# -- Armed faults


class Fault:
    """An armed fault. The proxy counts it down each time it alters an answer."""

    def __init__(
        self,
        *,
        kind: str,
        method: str | None,
        times: int,
        params: Mapping[str, Any],
        cond: threading.Condition,
    ) -> None:
        self.kind = kind
        self.method = method
        self.times = times
        self.params: Mapping[str, Any] = types.MappingProxyType(dict(params))
        self._cond = cond
        self._applied = 0

    @property
    def applied(self) -> int:
        """How many answers this fault has altered so far."""
        with self._cond:
            return self._applied

    @property
    def remaining(self) -> int:
        """How many more answers this fault will alter."""
        with self._cond:
            return self.times - self._applied

    def wait(self, timeout_secs: float = 5.0) -> bool:
        """Block until the fault is used up; return False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._applied >= self.times, timeout_secs)

    def consume(self) -> None:
        """Count one altered answer. The caller holds the condition passed as `cond`."""
        self._applied += 1
        self._cond.notify_all()

    def __repr__(self) -> str:
        return (
            f"Fault({self.kind!r}, method={self.method!r}, applied={self._applied}/"
            f"{self.times}, params={dict(self.params)!r})"
        )


def flip_hash(hash_hex: str) -> str:
    """Return a different hash of the same length (every byte inverted)."""
    raw = bytes.fromhex(hash_hex.removeprefix("0x"))
    return "0x" + bytes(b ^ 0xFF for b in raw).hex()


# -- Requests and answers


@dataclasses.dataclass(frozen=True)
class Call:
    """A parsed request body: its JSON-RPC items (empty if the body is not JSON-RPC)."""

    items: tuple[dict[str, Any], ...]
    batch: bool

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(str(item.get("method")) for item in self.items)

    @classmethod
    def parse(cls, body: bytes) -> Call:
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError:
            return cls(items=(), batch=False)
        if isinstance(decoded, list):
            return cls(items=tuple(i for i in decoded if isinstance(i, dict)), batch=True)
        return cls(items=(decoded,) if isinstance(decoded, dict) else (), batch=False)


@dataclasses.dataclass(frozen=True)
class Answer:
    """What to send back; the proxy turns it into HTTP."""

    status: int | None  # None: hold the request `hold_secs`, then drop the connection
    body: bytes = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    hold_secs: float = 0.0
    trickle_secs: float = 0.0  # pause before each chunk of the body; 0 sends it at once
    chunk_bytes: int = 1


@dataclasses.dataclass
class _Exchange:
    """Upstream's decoded answer next to the request items it answers."""

    calls: tuple[dict[str, Any], ...]
    replies: list[Any]
    batch: bool

    @classmethod
    def parse(cls, call: Call, body: bytes) -> _Exchange | None:
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not call.items or call.batch != isinstance(decoded, list):
            return None
        return cls(calls=call.items, replies=decoded if call.batch else [decoded], batch=call.batch)

    def dump(self) -> bytes:
        return orjson.dumps(self.replies if self.batch else self.replies[0])

    def items(self, method: str | None) -> list[dict[str, Any]]:
        """Return answer items in request order, only those answering `method` (all if None)."""
        by_id = {_id_key(r.get("id")): r for r in self.replies if isinstance(r, dict)}
        found = []
        for call in self.calls:
            if method is not None and call.get("method") != method:
                continue
            reply = by_id.get(_id_key(call.get("id")))
            if reply is not None:
                found.append(reply)
        return found

    def results(self, method: str | None, kind: type) -> list[Any]:
        """Return the `result` of each item answering `method` whose result is a `kind`."""
        return [i["result"] for i in self.items(method) if isinstance(i.get("result"), kind)]


def _id_key(value: object) -> bytes:
    return orjson.dumps(value)


def _pick(seq: Sequence[_T], index: int) -> _T | None:
    return seq[index] if -len(seq) <= index < len(seq) else None


# -- Fault kinds: `before` answers without upstream


def _http_error(status: int, content_type: str) -> Callable[[Fault], Answer]:
    def before(fault: Fault) -> Answer:
        retry_after = fault.params.get("retry_after")
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        body = fault.params["body"].encode()
        return Answer(status, body, content_type=content_type, headers=headers)

    return before


def _timeout(fault: Fault) -> Answer:
    return Answer(None, hold_secs=fault.params["delay"])


def _malformed_json(fault: Fault) -> Answer:
    return Answer(200, fault.params["body"].encode())


def _parse_error(fault: Fault) -> Answer:
    """What a node answers a body it cannot parse: one error object with id null for the whole
    request, as geth does and JSON-RPC 2.0 (section 5) requires: a server that cannot parse
    the body cannot know its ids, nor whether it was a batch. Our request was valid, so
    something between us and the node (a proxy, a load balancer) mangled it, or the endpoint
    is broken."""
    error = {"code": -32700, "message": fault.params["message"]}
    return Answer(200, orjson.dumps({"jsonrpc": "2.0", "id": None, "error": error}))


# -- Fault kinds: `after` rewrites upstream's answer


def _batch_limit(fault: Fault, answer: Answer, call: Call) -> Answer | None:
    """A node with a batch limit: a batch over `max_items` gets one error object."""
    if len(call.items) <= fault.params["max_items"]:
        return None
    error = {"code": -32600, "message": f"batch limit {fault.params['max_items']} exceeded"}
    return Answer(200, orjson.dumps({"jsonrpc": "2.0", "id": None, "error": error}))


def _slow_body(fault: Fault, answer: Answer, call: Call) -> Answer | None:
    return dataclasses.replace(
        answer, trickle_secs=fault.params["delay"], chunk_bytes=fault.params["chunk_bytes"]
    )


def _truncated_json(fault: Fault, answer: Answer, call: Call) -> Answer | None:
    return dataclasses.replace(answer, body=answer.body[: len(answer.body) // 2])


_ItemsFn = Callable[[Fault, _Exchange], bool]
AfterFn = Callable[[Fault, Answer, Call], "Answer | None"]


def _on_items(transform: _ItemsFn) -> AfterFn:
    """Lift a transform of decoded answer items (True if it changed any) to an `after` fault."""

    def after(fault: Fault, answer: Answer, call: Call) -> Answer | None:
        # Decode afresh for each candidate fault, so a transform that finds nothing to change
        # cannot leave half an edit behind for the next one.
        exchange = _Exchange.parse(call, answer.body)
        if exchange is None or not transform(fault, exchange):
            return None
        return dataclasses.replace(answer, body=exchange.dump())

    return after


def _rpc_error(fault: Fault, ex: _Exchange) -> bool:
    item = _pick([i for i in ex.items(fault.method) if "result" in i], fault.params["index"])
    if item is None:
        return False
    del item["result"]
    item["error"] = {"code": fault.params["code"], "message": fault.params["message"]}
    return True


def _wrong_id(fault: Fault, ex: _Exchange) -> bool:
    item = _pick(ex.items(fault.method), fault.params["index"])
    if item is None:
        return False
    new_id = fault.params["new_id"]
    if new_id is None:
        ids = [c["id"] for c in ex.calls if type(c.get("id")) is int]
        new_id = max(ids, default=0) + 1_000_000  # answers no request in this body
    item["id"] = new_id
    return True


def _missing_item(fault: Fault, ex: _Exchange) -> bool:
    item = _pick(ex.items(fault.method), fault.params["index"])
    if item is None:
        return False
    ex.replies = [r for r in ex.replies if r is not item]
    return True


def _null_result(fault: Fault, ex: _Exchange) -> bool:
    items = [i for i in ex.items(fault.method) if i.get("result") is not None]
    item = _pick(items, fault.params["index"])
    if item is None:
        return False
    item["result"] = None
    return True


def _wrong_block_number(fault: Fault, ex: _Exchange) -> bool:
    blocks = [b for b in ex.results(fault.method, dict) if isinstance(b.get("number"), str)]
    block = _pick(blocks, fault.params["index"])
    if block is None:
        return False
    height, offset = int(block["number"], 16), fault.params["offset"]
    block["number"] = hex(height + offset if height + offset >= 0 else height - offset)
    return True


def _linked_blocks(ex: _Exchange, method: str | None) -> list[dict[str, Any]]:
    return [b for b in ex.results(method, dict) if isinstance(b.get("parentHash"), str)]


def _break_link(fault: Fault, ex: _Exchange) -> bool:
    blocks = _linked_blocks(ex, fault.method)
    block = _pick(blocks, fault.params["index"])
    # The first block links to the caller's tip, not inside the batch: leave it alone.
    if block is None or block is blocks[0]:
        return False
    block["parentHash"] = flip_hash(block["parentHash"])
    return True


def _break_first_link(fault: Fault, ex: _Exchange) -> bool:
    blocks = _linked_blocks(ex, fault.method)
    if not blocks:
        return False
    blocks[0]["parentHash"] = flip_hash(blocks[0]["parentHash"])
    return True


def _foreign_log(fault: Fault, ex: _Exchange) -> bool:
    logs = [log for logs in ex.results(fault.method, list) for log in logs]
    log = _pick(
        [g for g in logs if isinstance(g, dict) and "blockHash" in g], fault.params["index"]
    )
    if log is None:
        return False
    log["blockHash"] = fault.params["block_hash"] or flip_hash(log["blockHash"])
    return True


def _drop_logs(fault: Fault, ex: _Exchange) -> bool:
    items = [i for i in ex.items(fault.method) if isinstance(i.get("result"), list) and i["result"]]
    for item in items:
        item["result"] = []
    return bool(items)


def _lag(fault: Fault, ex: _Exchange) -> bool:
    changed = False
    for item in ex.items(fault.method):
        if isinstance(item.get("result"), str):
            height = int(item["result"], 16)
            item["result"] = hex(max(0, height - fault.params["blocks"]))
            changed = changed or height > 0
    return changed


# -- Well-formed lies: answers that parse and link, but say what the chain did not


def _blocks_with_txs(ex: _Exchange) -> list[dict[str, Any]]:
    return [
        b for b in ex.results(_BLOCK, dict)
        if b.get("transactions") and isinstance(b["transactions"][0], dict)
    ]  # fmt: skip


def _change_tx_value(fault: Fault, ex: _Exchange) -> bool:
    block = _pick(_blocks_with_txs(ex), fault.params["index"])
    if block is None:
        return False
    tx = block["transactions"][0]
    tx["value"] = hex(int(tx["value"], 16) + 1)
    return True


def _change_header(fault: Fault, ex: _Exchange) -> bool:
    block = _pick(ex.results(_BLOCK, dict), fault.params["index"])
    if block is None:
        return False
    key = fault.params["field"]
    value = block[key]
    block[key] = hex(int(value, 16) + 1) if len(value) <= 18 else flip_hash(value)
    return True


def _receipts(ex: _Exchange) -> list[dict[str, Any]]:
    return [r for rs in ex.results(_RECEIPTS, list) for r in rs if isinstance(r, dict)]


def _drop_receipt_log(fault: Fault, ex: _Exchange) -> bool:
    receipt = _pick([r for r in _receipts(ex) if r.get("logs")], fault.params["index"])
    if receipt is None:
        return False
    receipt["logs"].pop()
    return True


def _swap_status(fault: Fault, ex: _Exchange) -> bool:
    receipt = _pick([r for r in _receipts(ex) if "status" in r], fault.params["index"])
    if receipt is None:
        return False
    receipt["status"] = "0x0" if receipt["status"] == "0x1" else "0x1"
    return True


def _duplicate_tx(fault: Fault, ex: _Exchange) -> bool:
    """The block lists its first transaction once more, at the end (a well-formed lie)."""
    block = _pick(_blocks_with_txs(ex), fault.params["index"])
    if block is None:
        return False
    txs = block["transactions"]
    txs.append({**txs[0], "transactionIndex": hex(len(txs))})
    return True


def _drop_last_log(fault: Fault, ex: _Exchange) -> bool:
    """eth_getLogs leaves out the last log of the range (what is left still links)."""
    items = [i for i in ex.items(fault.method) if isinstance(i.get("result"), list) and i["result"]]
    for item in items:
        item["result"].pop()
    return bool(items)


def _set_field(fault: Fault, ex: _Exchange) -> bool:
    """Set one field to `value`: "head" (the eth_blockNumber answer), or "block.<key>",
    "tx.<key>", "receipt.<key>" of the `index`-th such item of the answer."""
    target, _, key = fault.params["field"].partition(".")
    value = fault.params["value"]
    if target == "head":
        items = [i for i in ex.items("eth_blockNumber") if isinstance(i.get("result"), str)]
        for item in items:
            item["result"] = value
        return bool(items)
    found: list[dict[str, Any]]
    if target == "block":
        found = ex.results(_BLOCK, dict)
    elif target == "tx":
        found = [b["transactions"][0] for b in _blocks_with_txs(ex)]
    elif target == "receipt":
        found = _receipts(ex)
    else:
        raise AssertionError(f"set_field: unknown target {target!r}")
    picked = _pick(found, fault.params["index"])
    if picked is None:
        return False
    picked[key] = value
    return True


# -- The table


@dataclasses.dataclass(frozen=True)
class Kind:
    """One fault kind: its parameters, the stage it acts at, and what it may target."""

    params: Mapping[str, object]  # accepted parameters and their defaults
    before: Callable[[Fault], Answer] | None = None
    after: AfterFn | None = None
    method: str | None = None  # the one method this kind can alter
    batch_only: bool = False


_BLOCK, _LOGS = "eth_getBlockByNumber", "eth_getLogs"
_RECEIPTS = "eth_getBlockReceipts"
KINDS: Mapping[str, Kind] = {
    "http_500": Kind({"body": _HTML_500}, before=_http_error(500, "text/html")),
    "http_503": Kind({"body": "503 Service Unavailable\n"}, before=_http_error(503, "text/plain")),
    "http_429": Kind(
        {"retry_after": 1, "body": "Too Many Requests\n"}, before=_http_error(429, "text/plain")
    ),
    # A wrong API key: a 401 with a JSON-RPC error body, a 403 with a line of text.
    "http_401": Kind({"body": _JSON_401}, before=_http_error(401, "application/json")),
    "http_403": Kind(
        {"body": "rejected due to project ID settings\n"}, before=_http_error(403, "text/plain")
    ),
    "timeout": Kind({"delay": 60.0}, before=_timeout),
    "malformed_json": Kind({"body": "<html>not json</html>"}, before=_malformed_json),
    "rpc_parse_error": Kind({"message": "parse error"}, before=_parse_error),
    "slow_body": Kind({"delay": 0.1, "chunk_bytes": 1}, after=_slow_body),
    "batch_limit": Kind({"max_items": 10}, after=_batch_limit),
    "truncated_json": Kind({}, after=_truncated_json),
    "rpc_error": Kind(
        {"code": -32000, "message": "injected fault", "index": 0}, after=_on_items(_rpc_error)
    ),
    "wrong_id": Kind({"index": 0, "new_id": None}, after=_on_items(_wrong_id)),
    "missing_item": Kind({"index": 0}, after=_on_items(_missing_item), batch_only=True),
    "null_result": Kind({"index": 0}, after=_on_items(_null_result)),
    "wrong_block_number": Kind(
        {"index": 0, "offset": 1}, after=_on_items(_wrong_block_number), method=_BLOCK
    ),
    "break_link": Kind({"index": -1}, after=_on_items(_break_link), method=_BLOCK, batch_only=True),
    "break_first_link": Kind({}, after=_on_items(_break_first_link), method=_BLOCK),
    "foreign_log": Kind(
        {"index": 0, "block_hash": None}, after=_on_items(_foreign_log), method=_LOGS
    ),
    "drop_logs": Kind({}, after=_on_items(_drop_logs), method=_LOGS),
    "lag": Kind({"blocks": 5}, after=_on_items(_lag), method="eth_blockNumber"),
    "change_tx_value": Kind({"index": 0}, after=_on_items(_change_tx_value), method=_BLOCK),
    "change_header": Kind(
        {"index": 0, "field": "gasUsed"}, after=_on_items(_change_header), method=_BLOCK
    ),
    "drop_receipt_log": Kind({"index": 0}, after=_on_items(_drop_receipt_log), method=_RECEIPTS),
    "swap_status": Kind({"index": 0}, after=_on_items(_swap_status), method=_RECEIPTS),
    "duplicate_tx": Kind({"index": 0}, after=_on_items(_duplicate_tx), method=_BLOCK),
    "drop_last_log": Kind({}, after=_on_items(_drop_last_log), method=_LOGS),
    "set_field": Kind(
        {"field": "block.size", "value": "0xffffffffff", "index": 0}, after=_on_items(_set_field)
    ),
}
FAULT_KINDS: frozenset[str] = frozenset(KINDS)


def check_params(kind: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """Return the kind's defaults overlaid with `given`; raise ValueError on a bad name or type."""
    defaults = KINDS[kind].params
    unknown = set(given) - set(defaults)
    if unknown:
        raise ValueError(f"{kind}: unknown params {sorted(unknown)}; accepted: {sorted(defaults)}")
    for name, value in given.items():
        default = defaults[name]
        wanted = (int, float) if isinstance(default, float) else type(default)
        if default is not None and (isinstance(value, bool) or not isinstance(value, wanted)):
            raise ValueError(f"{kind}: param {name}={value!r} should be {type(default).__name__}")
    if kind == "break_link" and given.get("index") == 0:
        raise ValueError("break_link: index 0 is the first block; use break_first_link")
    if given.get("blocks", 1) < 1 or given.get("chunk_bytes", 1) < 1:
        raise ValueError(f"{kind}: blocks and chunk_bytes must be >= 1")
    if kind == "wrong_block_number" and given.get("offset") == 0:
        raise ValueError("wrong_block_number: offset must not be 0")
    return {**defaults, **given}
