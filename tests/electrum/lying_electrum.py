"""An Electrum server that lies: a loopback proxy in front of a real ElectrumX.

`LyingElectrum` forwards newline-delimited JSON-RPC both ways, remembers which method each
request id asked for, and rewrites the answers it was told to lie about:
* `blockchain.transaction.get`: one byte of the raw transaction (the first output's value
  changes by 1 sat, so the transaction still parses but its hash no longer matches);
* `blockchain.transaction.get_merkle`: one branch hash, or the position, so the branch no
  longer reaches the header's merkle root;
* `blockchain.scripthash.get_history` and `get_mempool`: a transaction left out; optionally
  `blockchain.scripthash.subscribe` statuses (answers and notifications) are recomputed
  from the censored history, so the lie is self-consistent.
The history lies apply to protocol 1.7's `blockchain.scriptpubkey.*` the same way (a client
that negotiates 1.7 with ElectrumX 2.0 has no `blockchain.scripthash.*`): those take the
scriptPubKey itself, matched to the targets by its script hash (sha256, reversed), and
`get_history`/`get_mempool` answer `{"history": [...]}`; their notifications (method
`blockchain.scriptpubkey.subscribe`) carry the script hash, as ElectrumX 2.0 sends it.
Everything else passes through byte for byte; `listunspent` and `get_balance` tell the
truth. `lies_told()` counts the rewritten answers per method (the name the client used).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
from collections.abc import AsyncIterator, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from tests.electrum import regtest
from tests.support.tcpproxy import TcpProxy

LOOPBACK = "127.0.0.1"
STREAM_LIMIT_BYTES = 16 * 1024 * 1024
CHUNK_BYTES = 65536
TX_GET = "blockchain.transaction.get"
GET_MERKLE = "blockchain.transaction.get_merkle"
GET_HISTORY = "blockchain.scripthash.get_history"
GET_MEMPOOL = "blockchain.scripthash.get_mempool"
SUBSCRIBE = "blockchain.scripthash.subscribe"
# Protocol 1.7: the same by scriptPubKey (histories wrapped in {"history": [...]}).
SPK_GET_HISTORY = "blockchain.scriptpubkey.get_history"
SPK_GET_MEMPOOL = "blockchain.scriptpubkey.get_mempool"
SPK_SUBSCRIBE = "blockchain.scriptpubkey.subscribe"
HISTORY_METHODS = frozenset({GET_HISTORY, GET_MEMPOOL, SPK_GET_HISTORY, SPK_GET_MEMPOOL})
SUBSCRIBE_METHODS = frozenset({SUBSCRIBE, SPK_SUBSCRIBE})
SCRIPTPUBKEY_METHODS = frozenset({SPK_GET_HISTORY, SPK_GET_MEMPOOL, SPK_SUBSCRIBE})

MerkleTarget = Literal["branch", "pos"]


# -- Pure helpers: Electrum facts and the lies themselves


def electrum_status(history: Iterable[Mapping[str, Any]]) -> str | None:
    """Return the Electrum status of a history: sha256 of "txid:height:"…, hex; None if empty."""
    text = "".join(f"{entry['tx_hash']}:{entry['height']:d}:" for entry in history)
    return hashlib.sha256(text.encode()).hexdigest() if text else None


def merkle_root_from_branch(txid_hex: str, branch_hex: Sequence[str], pos: int) -> str:
    """Return the merkle root (display hex) a `get_merkle` branch leads to, as Electrum does."""
    node = regtest.hex_to_hash(txid_hex)
    for level, sibling_hex in enumerate(branch_hex):
        sibling = regtest.hex_to_hash(sibling_hex)
        pair = sibling + node if (pos >> level) & 1 else node + sibling
        node = regtest.double_sha256(pair)
    return regtest.hash_to_hex(node)


def corrupt_raw_tx(raw: bytes) -> bytes:
    """Flip the lowest bit of the first output's value (legacy or segwit serialization)."""
    offset = 4
    if raw[4:6] == b"\x00\x01":  # segwit marker and flag
        offset = 6
    n_inputs, offset = _read_varint(raw, offset)
    for _ in range(n_inputs):
        script_len, offset = _read_varint(raw, offset + 36)
        offset += script_len + 4
    n_outputs, offset = _read_varint(raw, offset)
    if n_outputs == 0 or offset + 8 > len(raw):
        raise ValueError("no output to corrupt")
    corrupted = bytearray(raw)
    corrupted[offset] ^= 0x01
    return bytes(corrupted)


def corrupt_merkle_proof(
    txid_hex: str, proof: Mapping[str, Any], *, target: MerkleTarget
) -> dict[str, Any]:
    """Return `proof` (a `get_merkle` result) with its branch or position changed.

    The result never reaches the true root: a changed branch hash changes every hash above
    it; a changed position flips the lowest level whose two hashes differ, or, where no
    level does (a lone coinbase), points past the tree, which Electrum rejects.
    """
    branch, pos = list(proof["merkle"]), int(proof["pos"])
    if target == "branch" and branch:
        last = int(branch[0][-2:], 16) ^ 0x01
        branch[0] = f"{branch[0][:-2]}{last:02x}"
        return {**proof, "merkle": branch}
    node = regtest.hex_to_hash(txid_hex)
    for level, sibling_hex in enumerate(branch):
        sibling = regtest.hex_to_hash(sibling_hex)
        if sibling != node:
            return {**proof, "pos": pos ^ (1 << level)}
        node = regtest.double_sha256(node + sibling)
    return {**proof, "pos": pos | (1 << len(branch))}


def scripthash_of(script_hex: str) -> str:
    """Return the Electrum script hash (sha256 of the script, reversed, hex) of a script."""
    return hashlib.sha256(bytes.fromhex(script_hex)).digest()[::-1].hex()


def _read_varint(raw: bytes, offset: int) -> tuple[int, int]:
    first = raw[offset]
    if first < 0xFD:
        return first, offset + 1
    size = {0xFD: 2, 0xFE: 4, 0xFF: 8}[first]
    return int.from_bytes(raw[offset + 1 : offset + 1 + size], "little"), offset + 1 + size


# -- The proxy


@dataclass(frozen=True)
class _Targets:
    keys: frozenset[str] | None  # txids or scripthashes; None: every one

    def cover(self, key: Any) -> bool:
        return self.keys is None or key in self.keys

    @classmethod
    def of(cls, keys: Iterable[str] | None) -> _Targets:
        return cls(None if keys is None else frozenset(keys))


@dataclass(frozen=True)
class _MerkleLie:
    txids: _Targets
    target: MerkleTarget


@dataclass(frozen=True)
class _HistoryLie:
    txid_hex: str
    scripthashes: _Targets
    rewrite_status: bool


class LyingElectrum(TcpProxy):
    """A loopback proxy in front of the Electrum server at 127.0.0.1:`upstream_port`.

    It tells the truth until told otherwise; the lie settings may be changed from any
    thread at any time and apply to answers forwarded from then on. `cut()` (inherited)
    drops every connection and refuses new ones until `start()`.
    """

    def __init__(self, upstream_port: int) -> None:
        super().__init__(LOOPBACK, upstream_port)
        # Bugs of the proxy itself (its connection is then dropped): a test should assert none.
        self.internal_errors: list[Exception] = []
        self._tx_lie: _Targets | None = None
        self._merkle_lie: _MerkleLie | None = None
        self._history_lie: _HistoryLie | None = None
        self._lies: collections.Counter[str] = collections.Counter()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"tcp://{LOOPBACK}:{self.port}"

    def __enter__(self) -> LyingElectrum:
        self.start()
        return self

    # -- What to lie about (any thread)

    def corrupt_transactions(self, txids: Iterable[str] | None = None) -> None:
        """Corrupt `blockchain.transaction.get` answers for `txids` (None: for every tx)."""
        self._tx_lie = _Targets.of(txids)

    def corrupt_merkle(
        self, txids: Iterable[str] | None = None, *, target: MerkleTarget = "branch"
    ) -> None:
        """Corrupt `get_merkle` answers for `txids` (None: every tx) in a branch hash or pos."""
        self._merkle_lie = _MerkleLie(_Targets.of(txids), target)

    def omit_from_history(
        self,
        txid: str,
        *,
        scripthashes: Iterable[str] | None = None,
        rewrite_status: bool = False,
    ) -> None:
        """Leave `txid` out of `get_history`/`get_mempool` of `scripthashes` (None: all),
        by script hash or (1.7) by scriptPubKey.

        With `rewrite_status`, subscribe answers and notifications of those scripthashes
        carry the status of the censored history (fetched afresh from upstream) instead.
        """
        self._history_lie = _HistoryLie(txid, _Targets.of(scripthashes), rewrite_status)

    def tell_truth(self) -> None:
        """Stop every lie (the counts stay)."""
        self._tx_lie, self._merkle_lie, self._history_lie = None, None, None

    def lies_told(self) -> dict[str, int]:
        """How many answers were rewritten, per method."""
        return dict(self._lies)

    # -- Forwarding (the proxy's loop)

    async def _cut(self) -> None:
        await super()._cut()
        # Aborted connections end their handlers within a few loop turns: wait for them.
        pending = [task for task in self._handlers if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(
                *self._target, limit=STREAM_LIMIT_BYTES
            )
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        requests: dict[Any, tuple[str, list[Any]]] = {}  # id -> (method, params)

        async def requests_up() -> None:
            async for line in _lines(reader):
                _remember(requests, line)
                up_writer.write(line + b"\n")
                await up_writer.drain()

        async def answers_down() -> None:
            async for line in _lines(up_reader):
                writer.write(await self._rewrite(requests, line) + b"\n")
                await writer.drain()

        await asyncio.gather(
            self._until_closed(requests_up(), up_writer), self._until_closed(answers_down(), writer)
        )
        self._writers.discard(writer)
        self._writers.discard(up_writer)

    async def _rewrite(self, requests: dict[Any, tuple[str, list[Any]]], line: bytes) -> bytes:
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError:
            return line
        if isinstance(message, list):
            rewritten = [await self._rewrite_one(requests, item) for item in message]
            changed = any(new is not old for new, old in zip(rewritten, message, strict=True))
            return orjson.dumps(rewritten) if changed else line
        new = await self._rewrite_one(requests, message)
        return line if new is message else orjson.dumps(new)

    async def _rewrite_one(self, requests: dict[Any, tuple[str, list[Any]]], message: Any) -> Any:
        """Return `message`, or a lying copy of it."""
        if not isinstance(message, dict):
            return message
        method = message.get("method")
        if method in SUBSCRIBE_METHODS and "id" not in message:  # a notification
            # Both names carry [scripthash, status] (ElectrumX 2.0 keeps the hash for 1.7).
            params = message.get("params")
            if isinstance(params, list) and len(params) == 2:
                status = await self._status_lie(params[0], params[1])
                if status is not params[1]:
                    self._lies[str(method)] += 1
                    return {**message, "params": [params[0], status]}
            return message
        request = requests.pop(message.get("id"), None)
        if request is None or message.get("error") is not None or "result" not in message:
            return message
        method, params = request
        result = message["result"]
        lie = await self._lie(method, params, result)
        if lie is result:
            return message
        self._lies[method] += 1
        return {**message, "result": lie}

    async def _lie(self, method: str, params: list[Any], result: Any) -> Any:
        """Return the lying result for this answer, or `result` itself to tell the truth."""
        key = params[0] if params else None
        tx_lie, merkle_lie, history_lie = self._tx_lie, self._merkle_lie, self._history_lie
        if method == TX_GET and tx_lie is not None and tx_lie.cover(key):
            if isinstance(result, str):
                return corrupt_raw_tx(bytes.fromhex(result)).hex()
            if isinstance(result, dict) and isinstance(result.get("hex"), str):
                return {**result, "hex": corrupt_raw_tx(bytes.fromhex(result["hex"])).hex()}
            return result
        if method == GET_MERKLE and merkle_lie is not None and merkle_lie.txids.cover(key):
            if isinstance(result, dict):
                return corrupt_merkle_proof(str(key), result, target=merkle_lie.target)
            return result
        if history_lie is None or method not in HISTORY_METHODS | SUBSCRIBE_METHODS:
            return result
        if method in SCRIPTPUBKEY_METHODS:
            try:
                key = scripthash_of(str(key))
            except ValueError:
                return result  # not a script: ElectrumX answers an error anyway
        if not history_lie.scripthashes.cover(key):
            return result
        if method in SUBSCRIBE_METHODS:
            return await self._status_lie(key, result)
        wrapped = method in SCRIPTPUBKEY_METHODS
        entries = result.get("history") if wrapped and isinstance(result, dict) else result
        if not isinstance(entries, list):
            return result
        kept = [entry for entry in entries if entry.get("tx_hash") != history_lie.txid_hex]
        if len(kept) == len(entries):
            return result
        return {**result, "history": kept} if wrapped else kept

    async def _status_lie(self, scripthash: Any, status: Any) -> Any:
        """Return the censored history's status for `scripthash`, or `status` if no lie."""
        lie = self._history_lie
        if lie is None or not lie.rewrite_status or not lie.scripthashes.cover(scripthash):
            return status
        history = await self._upstream_call(GET_HISTORY, scripthash)
        kept = [entry for entry in history if entry.get("tx_hash") != lie.txid_hex]
        return status if len(kept) == len(history) else electrum_status(kept)

    async def _until_closed(
        self, pipe: Coroutine[Any, Any, None], dst: asyncio.StreamWriter
    ) -> None:
        """Run one direction of a connection; when it ends (or fails), abort the other side."""
        try:
            await pipe
        except (ConnectionError, OSError):
            pass
        except Exception as exc:  # a proxy bug: record it, drop the connection
            self.internal_errors.append(exc)
        dst.transport.abort()

    async def _upstream_call(self, method: str, *params: Any) -> Any:
        """Ask upstream on a connection of our own (fresh, so ElectrumX answers at once)."""
        reader, writer = await asyncio.open_connection(*self._target, limit=STREAM_LIMIT_BYTES)
        try:
            version = {"id": 1, "method": "server.version", "params": ["lying-electrum", "1.4"]}
            call = {"id": 2, "method": method, "params": list(params)}
            writer.write(orjson.dumps(version) + b"\n" + orjson.dumps(call) + b"\n")
            await writer.drain()
            async with asyncio.timeout(10):
                while line := await reader.readline():
                    answer = orjson.loads(line)
                    if answer.get("id") == 2:
                        if answer.get("error") is not None:
                            raise RuntimeError(f"{method}: {answer['error']}")
                        return answer["result"]
            raise ConnectionError("upstream closed the connection")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _lines(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """Yield complete lines (without the newline) until EOF; a partial tail is dropped."""
    buffer = b""
    while chunk := await reader.read(CHUNK_BYTES):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line


def _remember(requests: dict[Any, tuple[str, list[Any]]], line: bytes) -> None:
    """Note the method of each request (single or batch) in `line`, by id."""
    try:
        message = orjson.loads(line)
    except orjson.JSONDecodeError:
        return
    for item in message if isinstance(message, list) else [message]:
        if isinstance(item, dict) and "id" in item and isinstance(item.get("method"), str):
            params = item.get("params")
            with contextlib.suppress(TypeError):  # an unhashable id is never answered back
                requests[item["id"]] = (item["method"], list(params or []))
