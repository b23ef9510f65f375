"""A bitcoind stand-in for tests: regtest blocks behind a real JSON-RPC server on loopback.

`BitcoindSim` answers the RPCs ElectrumX 2.0 makes (and a few more), with bitcoind's answer
shapes, error codes, basic auth and batches, from a chain of valid regtest blocks that the
test drives: `generate`, `reorg`, `invalidate`, `add_to_mempool`. The server runs on its own
event loop in its own thread, so a test can drive the chain from any thread or loop; every
chain access holds one lock and never awaits while holding it.

Like bitcoind, it keeps the blocks of abandoned branches (`getblock` still serves them) and
returns the non-coinbase transactions of disconnected blocks to the mempool, except those
spending a disconnected coinbase (evicted with their descendants, as `removeForReorg`). Unlike
bitcoind, it never switches branches by itself: after `invalidate` the active chain is simply
shorter.

Wallet activity: `pay`, `spend` and `replace` put transactions in the mempool that spend real
outputs (never a spent one, so ElectrumX accepts every block and mempool transaction; no
signature is made or checked), `reorg` can drop or delay some of them, and `ledger` says what
a set of scripts holds on the active chain plus mempool. The mempool stays in topological
order (parents first), so a block made from it is valid.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import hmac
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

from tests.electrum import regtest

LOOPBACK = "127.0.0.1"
# Bitcoin Core 31.0: ElectrumX 2.0 refuses older daemons (Coin.MIN_REQUIRED_DAEMON_VERSION).
NETWORK_VERSION = 310000
SUBVERSION = "/Satoshi:31.0.0/"
RELAY_FEE_BTC_PER_KVB = 0.00001
REGTEST_DIFFICULTY = 4.656542373906925e-10
BLOCK_INTERVAL_SECS = 600
PAY_FEE_SATS = 1_000  # the fee of every `pay`
RBF_SEQUENCE = 0xFFFFFFFD  # BIP125: replaceable

# bitcoind's error codes (src/rpc/protocol.h).
RPC_MISC_ERROR = -1
RPC_TYPE_ERROR = -3
RPC_INVALID_ADDRESS_OR_KEY = -5
RPC_INVALID_PARAMETER = -8
RPC_IN_WARMUP = -28
RPC_INVALID_REQUEST = -32600
RPC_METHOD_NOT_FOUND = -32601
RPC_PARSE_ERROR = -32700

JsonObject = dict[str, Any]


class RpcFault(Exception):
    """A JSON-RPC error answer, as bitcoind would give it."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ChainTip:
    height: int
    hash_hex: str


# -- Parameter checks


def _param(params: Sequence[Any], index: int, default: Any = None) -> Any:
    return params[index] if len(params) > index else default


def _int_param(params: Sequence[Any], index: int, default: int | None = None) -> int:
    value = _param(params, index, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RpcFault(RPC_TYPE_ERROR, f"JSON value of type {type(value).__name__} is not an int")
    return value


def _verbosity(params: Sequence[Any], index: int, default: int) -> int:
    value = _param(params, index, default)
    return int(value) if isinstance(value, bool | int) else default


def _hash_param(params: Sequence[Any], index: int) -> bytes:
    value = _param(params, index)
    try:
        return regtest.hex_to_hash(value)
    except (TypeError, ValueError):
        raise RpcFault(RPC_INVALID_PARAMETER, "must be hexadecimal string of length 64") from None


# -- The node


class BitcoindSim:
    """A simulated regtest bitcoind serving JSON-RPC on 127.0.0.1 (a free port by default)."""

    def __init__(
        self,
        *,
        user: str = "user",
        password: str = "pass",
        port: int = 0,
        script_pubkey: bytes = regtest.OP_TRUE_SCRIPT,
    ) -> None:
        self.user = user
        self.password = password
        self.script_pubkey = script_pubkey
        self.feerate_btc_per_kvb: float | None = None  # estimatesmartfee: None = no estimate
        self.warming_up = False  # answer every call with RPC_IN_WARMUP (-28)
        # Bugs in the simulator itself, answered as RPC_MISC_ERROR: a test should assert none.
        self.internal_errors: list[Exception] = []
        self._requested_port = port
        self._port: int | None = None
        self._expected_auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self._lock = threading.Lock()
        genesis = regtest.genesis_block()
        self._active: list[regtest.Block] = [genesis]
        self._known: dict[bytes, tuple[int, regtest.Block]] = {genesis.hash_bytes: (0, genesis)}
        self._tx_index: dict[bytes, tuple[regtest.Tx, bytes]] = {}
        self._mempool: dict[bytes, regtest.Tx] = {}
        self._branches = 0
        self._calls: collections.Counter[str] = collections.Counter()
        self._thread: threading.Thread | None = None
        self._server_failures: list[BaseException] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        # Like bitcoind, the genesis coinbase is in no index: getrawtransaction can't find it.
        self._methods: dict[str, Callable[[Sequence[Any]], Any]] = {
            "getbestblockhash": lambda p: self._active[-1].hash_hex,
            "getblock": self._rpc_getblock,
            "getblockchaininfo": self._rpc_getblockchaininfo,
            "getblockcount": lambda p: len(self._active) - 1,
            "getblockhash": self._rpc_getblockhash,
            "getblockheader": self._rpc_getblockheader,
            "getindexinfo": self._rpc_getindexinfo,
            "getmempoolinfo": self._rpc_getmempoolinfo,
            "getnetworkinfo": self._rpc_getnetworkinfo,
            "getrawmempool": lambda p: [regtest.hash_to_hex(txid) for txid in self._mempool],
            "getrawtransaction": self._rpc_getrawtransaction,
            "getzmqnotifications": lambda p: [],
            "estimatesmartfee": self._rpc_estimatesmartfee,
            "ping": lambda p: None,
        }

    # -- Lifecycle

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the simulator is not running")
        return self._port

    @property
    def url(self) -> str:
        """The DAEMON_URL for ElectrumX, credentials included."""
        return f"http://{self.user}:{self.password}@{LOOPBACK}:{self.port}/"

    def start(self) -> None:
        """Serve on a thread of our own; return once the port is bound."""
        if self._thread is not None:
            raise RuntimeError("already started")
        ready = threading.Event()
        self._server_failures.clear()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="bitcoind-sim", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout=10):
            raise RuntimeError("bitcoind simulator did not start within 10 s")
        if self._server_failures:
            self._thread.join()
            self._thread = None
            error = self._server_failures[0]
            raise RuntimeError(f"bitcoind simulator failed to start: {error!r}") from error

    def stop(self) -> None:
        """Stop serving and join the thread (idempotent)."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None and thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=15)
        if thread.is_alive():
            raise RuntimeError("bitcoind simulator thread did not stop within 15 s")
        self._thread = self._loop = self._stop = None
        self._port = None
        if self._server_failures:
            error = self._server_failures[0]
            raise RuntimeError(f"bitcoind simulator server failed: {error!r}") from error

    def __enter__(self) -> BitcoindSim:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(ready))
        except BaseException as exc:  # re-raised by start() or stop(), in the caller's thread
            self._server_failures.append(exc)
            ready.set()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self, ready: threading.Event) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle_http)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, LOOPBACK, self._requested_port)
            await site.start()
            self._port = int(runner.addresses[0][1])
            self._stop = asyncio.Event()
            ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()

    # -- Chain controls (any thread)

    def generate(self, count: int, *, script_pubkey: bytes | None = None) -> list[str]:
        """Mine `count` valid blocks on the tip (the mempool goes into the first); return hashes."""
        with self._lock:
            return self._mine(count, script_pubkey=script_pubkey, tag=self._branch_tag())

    def reorg(
        self,
        depth: int,
        new_blocks: int,
        *,
        drop: Collection[str] = frozenset(),
        delay: Collection[str] = frozenset(),
    ) -> list[str]:
        """Replace the top `depth` blocks with a new branch of `new_blocks`; return its hashes.

        The transactions of the disconnected blocks go back to the mempool (see the module
        docstring), and the mempool is mined into the first new block, except:
        * `drop` (txids): removed from the mempool with their descendants; never mined again.
        * `delay` (txids): held, with their descendants, until the LAST new block (height
          fork + new_blocks - 1), so a delayed mined transaction changes height.
        Each txid must be in the mempool once the blocks are disconnected (a mined
        transaction of the old branch, or an unconfirmed one). Nothing changes on an error.

        ElectrumX, like any bitcoind client, only notices once the new branch is longer than
        the old one (`new_blocks > depth`).
        """
        with self._lock:
            height = len(self._active) - 1
            if not 1 <= depth <= height:
                raise ValueError(f"reorg depth {depth} outside 1..{height}")
            if new_blocks < 1:
                raise ValueError("a reorg needs at least one new block")
            fork = height - depth + 1
            dropped = {regtest.hex_to_hash(txid) for txid in drop}
            delayed = {regtest.hex_to_hash(txid) for txid in delay}
            self._check_reorg(fork=fork, new_blocks=new_blocks, drop=dropped, delay=delayed)
            self._disconnect_from(fork)
            self._branches += 1
            self._evict(dropped)
            tag = self._branch_tag()
            if not delayed:
                return self._mine(new_blocks, script_pubkey=None, tag=tag)
            held = _with_descendants(self._mempool, delayed)
            hashes = self._mine(new_blocks - 1, script_pubkey=None, tag=tag, held=held)
            return hashes + self._mine(1, script_pubkey=None, tag=tag)

    def invalidate(self, hash_hex: str) -> ChainTip:
        """Disconnect the active block `hash_hex` and all its descendants, as `invalidateblock`."""
        with self._lock:
            height = self._active_height_of(regtest.hex_to_hash(hash_hex))
            if height is None:
                raise ValueError(f"block {hash_hex} is not on the active chain")
            if height == 0:
                raise ValueError("cannot invalidate the genesis block")
            self._disconnect_from(height)
            self._branches += 1
            return self._tip()

    def add_to_mempool(self, tx: regtest.Tx) -> str:
        """Put `tx` in the mempool (no validation); the next mined block includes it."""
        with self._lock:
            self._mempool[tx.txid_bytes] = tx
            return tx.txid_hex

    # -- Wallet activity (any thread)

    def pay(
        self,
        script_pubkey: bytes,
        value_sats: int,
        *,
        extra_outputs: Sequence[tuple[bytes, int]] = (),
    ) -> tuple[str, int]:
        """Pay `value_sats` to `script_pubkey` from the sim's own coins; return (txid, vout).

        The mempool transaction pays `script_pubkey` at vout 0, then `extra_outputs`
        ((script, sats) pairs), then change to the sim's `script_pubkey`, with a fee of
        `PAY_FEE_SATS`. It spends one unspent output of the sim's `script_pubkey` (height
        above 0): the lowest confirmed one that is large enough, else the newest unconfirmed
        one. So pays are independent of each other (and a deep reorg is needed to lose their
        funding) while the active chain holds enough mined coinbases: one per block.
        """
        outputs = [(script_pubkey, value_sats), *extra_outputs]
        with self._lock:
            needed_sats = sum(_checked_sats(value) for _, value in outputs) + PAY_FEE_SATS
            view = self._view()
            funding = self._funding(view, needed_sats)
            change_sats = view.outputs[funding].value_sats - needed_sats
            if change_sats:
                outputs.append((self.script_pubkey, change_sats))
            tx = regtest.Tx(
                inputs=(regtest.TxIn(*funding, b"", RBF_SEQUENCE),),
                outputs=tuple(regtest.TxOut(value, script) for script, value in outputs),
            )
            self._mempool[tx.txid_bytes] = tx
            return tx.txid_hex, 0

    def spend(
        self, outpoints: Sequence[tuple[str, int]], outputs: Sequence[tuple[bytes, int]]
    ) -> str:
        """Put a transaction spending `outpoints` ((txid, vout)) to `outputs` in the mempool.

        Every outpoint must be unspent on the active chain plus mempool, and the outputs
        ((script, sats) pairs) may not exceed the inputs (the rest is the fee).
        """
        with self._lock:
            view = self._view()
            prevouts = [(regtest.hex_to_hash(txid), vout) for txid, vout in outpoints]
            if not prevouts or len(set(prevouts)) != len(prevouts):
                raise ValueError(f"spend needs distinct outpoints, got {list(outpoints)}")
            for (txid, vout), prevout in zip(outpoints, prevouts, strict=True):
                if not view.is_unspent(prevout) or view.height_of(prevout[0]) == 0:
                    raise ValueError(f"{txid}:{vout} is not an unspent output")
            tx = regtest.Tx(
                inputs=tuple(regtest.TxIn(*prevout, b"", RBF_SEQUENCE) for prevout in prevouts),
                outputs=_tx_outputs(outputs),
            )
            _check_fee(view, tx)
            self._mempool[tx.txid_bytes] = tx
            return tx.txid_hex

    def replace(self, txid: str, outputs: Sequence[tuple[bytes, int]]) -> str:
        """Double-spend the inputs of mempool transaction `txid` to `outputs`, as RBF does.

        `txid` and its mempool descendants leave the mempool; the replacement joins it.
        Return the replacement's txid (its outputs must differ from the original's).
        """
        with self._lock:
            original = self._mempool.get(regtest.hex_to_hash(txid))
            if original is None:
                raise ValueError(f"{txid} is not in the mempool")
            replacement = dataclasses.replace(original, outputs=_tx_outputs(outputs))
            if replacement.txid_bytes == original.txid_bytes:
                raise ValueError("a replacement needs different outputs")
            _check_fee(self._view(), replacement)
            self._evict({original.txid_bytes})
            self._mempool[replacement.txid_bytes] = replacement
            return replacement.txid_hex

    def ledger(self, scripts: Collection[bytes]) -> regtest.Ledger:
        """Return what `scripts` hold on the active chain plus mempool.

        See `regtest.wallet_ledger` for the transactions, outputs and balances it lists.
        """
        with self._lock:
            return regtest.wallet_ledger(self._view(), scripts)

    def mempool(self) -> list[str]:
        """Return the mempool's txids, parents first."""
        with self._lock:
            return [regtest.hash_to_hex(txid) for txid in self._mempool]

    def transaction(self, txid: str) -> regtest.Tx:
        """Return the active-chain or mempool transaction `txid`."""
        txid_bytes = regtest.hex_to_hash(txid)
        with self._lock:
            if txid_bytes in self._mempool:
                return self._mempool[txid_bytes]
            if txid_bytes in self._tx_index:
                return self._tx_index[txid_bytes][0]
            raise KeyError(txid)

    def tip(self) -> ChainTip:
        with self._lock:
            return self._tip()

    @property
    def height(self) -> int:
        with self._lock:
            return len(self._active) - 1

    def block(self, height: int) -> regtest.Block:
        with self._lock:
            return self._active[height]

    def header(self, height: int) -> bytes:
        """The raw 80-byte header of the active block at `height`."""
        return self.block(height).header.serialize()

    def block_hash(self, height: int) -> str:
        return self.block(height).hash_hex

    def calls(self) -> dict[str, int]:
        """How many times each RPC method was called so far (batch items count singly)."""
        with self._lock:
            return dict(self._calls)

    # -- Chain internals (lock held)

    def _tip(self) -> ChainTip:
        return ChainTip(len(self._active) - 1, self._active[-1].hash_hex)

    def _branch_tag(self) -> bytes:
        return b"" if self._branches == 0 else f"branch {self._branches}".encode()

    def _mine(
        self,
        count: int,
        *,
        script_pubkey: bytes | None,
        tag: bytes,
        held: Collection[bytes] = frozenset(),
    ) -> list[str]:
        """Mine `count` blocks; the mempool but `held` goes into the first."""
        hashes = []
        for _ in range(count):
            prev = self._active[-1]
            txs = tuple(tx for txid, tx in self._mempool.items() if txid not in held)
            self._mempool = {txid: tx for txid, tx in self._mempool.items() if txid in held}
            block = regtest.make_block(
                prev_hash_bytes=prev.hash_bytes,
                height=len(self._active),
                time=prev.header.time + BLOCK_INTERVAL_SECS,
                script_pubkey=self.script_pubkey if script_pubkey is None else script_pubkey,
                txs=txs,
                tag=tag,
            )
            self._known[block.hash_bytes] = (len(self._active), block)
            self._active.append(block)
            self._index_block(block)
            hashes.append(block.hash_hex)
        return hashes

    def _index_block(self, block: regtest.Block) -> None:
        for tx in block.txs:
            self._tx_index[tx.txid_bytes] = (tx, block.hash_bytes)
            self._mempool.pop(tx.txid_bytes, None)

    def _disconnect_from(self, height: int) -> None:
        disconnected, self._active = self._active[height:], self._active[:height]
        for block in disconnected:
            for tx in block.txs:
                del self._tx_index[tx.txid_bytes]
        self._mempool = _mempool_after_disconnect(disconnected, self._mempool)

    def _check_reorg(
        self, *, fork: int, new_blocks: int, drop: set[bytes], delay: set[bytes]
    ) -> None:
        """Raise ValueError unless `reorg` can drop and delay these transactions."""
        if drop & delay:
            raise ValueError("a transaction cannot be both dropped and delayed")
        if delay and new_blocks < 2:
            raise ValueError("delaying a transaction needs at least two new blocks")
        disconnected = self._active[fork:]
        mempool = _mempool_after_disconnect(disconnected, self._mempool)
        if missing := (drop | delay) - mempool.keys():
            hexes = sorted(regtest.hash_to_hex(txid) for txid in missing)
            raise ValueError(f"not in the mempool after disconnecting: {hexes}")
        last_height = fork + new_blocks - 1
        for offset, block in enumerate(disconnected):
            if fork + offset == last_height and delay & {tx.txid_bytes for tx in block.txs}:
                raise ValueError(f"a delayed transaction would stay at height {last_height}")

    def _evict(self, txids: Collection[bytes]) -> None:
        """Remove `txids` and their descendants from the mempool."""
        gone = _with_descendants(self._mempool, txids)
        self._mempool = {txid: tx for txid, tx in self._mempool.items() if txid not in gone}

    def _view(self) -> regtest.ChainView:
        return regtest.ChainView(self._active, tuple(self._mempool.values()))

    def _funding(self, view: regtest.ChainView, needed_sats: int) -> regtest.Outpoint:
        """Pick the sim's coin for a pay of `needed_sats` (see `pay`)."""
        confirmed: list[tuple[int, regtest.Outpoint]] = []
        unconfirmed: list[regtest.Outpoint] = []
        for outpoint, txout in view.outputs.items():  # chain order, then mempool order
            if txout.script_pubkey != self.script_pubkey or txout.value_sats < needed_sats:
                continue
            if not view.is_unspent(outpoint):
                continue
            height = view.height_of(outpoint[0])
            if height is None:
                unconfirmed.append(outpoint)
            elif height > 0:
                confirmed.append((height, outpoint))
        if confirmed:
            return confirmed[0][1]
        if unconfirmed:
            return unconfirmed[-1]
        raise ValueError(f"no unspent coin of {needed_sats:,d} sats to pay from: mine blocks")

    def _active_height_of(self, hash_bytes: bytes) -> int | None:
        entry = self._known.get(hash_bytes)
        if entry is None:
            return None
        height = entry[0]
        on_active = height < len(self._active) and self._active[height].hash_bytes == hash_bytes
        return height if on_active else None

    # -- HTTP and JSON-RPC

    async def _handle_http(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        if not hmac.compare_digest(header.encode(), self._expected_auth.encode()):
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="jsonrpc"'})
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _json_response(_error_reply(None, RPC_PARSE_ERROR, "Parse error"), status=500)
        if isinstance(body, list):
            return _json_response([self._dispatch(item)[0] for item in body])
        reply, status = self._dispatch(body)
        return _json_response(reply, status=status)

    def _dispatch(self, request: Any) -> tuple[JsonObject, int]:
        """Answer one request object; the status is bitcoind's for a non-batch reply."""
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return _error_reply(None, RPC_INVALID_REQUEST, "Invalid Request object"), 400
        request_id, method = request.get("id"), request["method"]
        params = request.get("params") or []
        # JSON-RPC 2.0 requests get HTTP 200 and a "jsonrpc" member even for errors (Core 28+).
        v2 = request.get("jsonrpc") == "2.0"
        try:
            with self._lock:
                self._calls[method] += 1
                if self.warming_up:
                    raise RpcFault(RPC_IN_WARMUP, "Loading block index…")
                handler = self._methods.get(method)
                if handler is None:
                    raise RpcFault(RPC_METHOD_NOT_FOUND, "Method not found")
                if not isinstance(params, list):
                    raise RpcFault(RPC_TYPE_ERROR, "params must be an array")
                result = handler(params)
        except RpcFault as fault:
            code, message = fault.code, fault.message
        except Exception as exc:  # a simulator bug: answer as bitcoind does, and record it
            self.internal_errors.append(exc)
            code, message = RPC_MISC_ERROR, repr(exc)
        else:
            if v2:
                return {"jsonrpc": "2.0", "result": result, "id": request_id}, 200
            return {"result": result, "error": None, "id": request_id}, 200
        status = 200 if v2 else 404 if code == RPC_METHOD_NOT_FOUND else 500
        reply = _error_reply(request_id, code, message)
        return ({"jsonrpc": "2.0", **reply} if v2 else reply), status

    # -- RPC methods (lock held)

    def _rpc_getblockhash(self, params: Sequence[Any]) -> str:
        height = _int_param(params, 0)
        if not 0 <= height < len(self._active):
            raise RpcFault(RPC_INVALID_PARAMETER, "Block height out of range")
        return self._active[height].hash_hex

    def _lookup(self, hash_bytes: bytes) -> tuple[int, regtest.Block]:
        entry = self._known.get(hash_bytes)
        if entry is None:
            raise RpcFault(RPC_INVALID_ADDRESS_OR_KEY, "Block not found")
        return entry

    def _rpc_getblock(self, params: Sequence[Any]) -> str | JsonObject:
        height, block = self._lookup(_hash_param(params, 0))
        verbosity = _verbosity(params, 1, 1)
        if verbosity == 0:
            return block.serialize().hex()
        info = self._header_info(height, block)
        raw_size = len(block.serialize())
        info |= {"strippedsize": raw_size, "size": raw_size, "weight": 4 * raw_size}
        if verbosity == 1:
            info["tx"] = [tx.txid_hex for tx in block.txs]
        else:
            info["tx"] = [_tx_info(tx) for tx in block.txs]
        return info

    def _rpc_getblockheader(self, params: Sequence[Any]) -> str | JsonObject:
        height, block = self._lookup(_hash_param(params, 0))
        if not _verbosity(params, 1, 1):
            return block.header.serialize().hex()
        return self._header_info(height, block)

    def _header_info(self, height: int, block: regtest.Block) -> JsonObject:
        header, on_active = block.header, self._active_height_of(block.hash_bytes) is not None
        times = [self._active[h].header.time for h in range(max(0, height - 10), height + 1)]
        info: JsonObject = {
            "hash": block.hash_hex,
            "confirmations": len(self._active) - height if on_active else -1,
            "height": height,
            "version": header.version,
            "versionHex": f"{header.version & 0xFFFFFFFF:08x}",
            "merkleroot": regtest.hash_to_hex(header.merkle_root_bytes),
            "time": header.time,
            "mediantime": sorted(times)[len(times) // 2] if on_active else header.time,
            "nonce": header.nonce,
            "bits": f"{header.bits:08x}",
            "difficulty": REGTEST_DIFFICULTY,
            "chainwork": f"{2 * (height + 1):064x}",  # regtest: 2 hashes of work per block
            "nTx": len(block.txs),
        }
        if height > 0:
            info["previousblockhash"] = header.prev_hash_hex
        if on_active and height + 1 < len(self._active):
            info["nextblockhash"] = self._active[height + 1].hash_hex
        return info

    def _rpc_getblockchaininfo(self, params: Sequence[Any]) -> JsonObject:
        height, tip = len(self._active) - 1, self._active[-1]
        info = self._header_info(height, tip)
        return {
            "chain": "regtest",
            "blocks": height,
            "headers": height,
            "bestblockhash": tip.hash_hex,
            "bits": info["bits"],
            "target": f"{regtest.bits_to_target(regtest.REGTEST_BITS):064x}",
            "difficulty": REGTEST_DIFFICULTY,
            "time": tip.header.time,
            "mediantime": info["mediantime"],
            "verificationprogress": 1.0,
            "initialblockdownload": False,
            "chainwork": info["chainwork"],
            "size_on_disk": sum(len(b.serialize()) for _, b in self._known.values()),
            "pruned": False,
            "warnings": [],
        }

    def _rpc_getnetworkinfo(self, params: Sequence[Any]) -> JsonObject:
        return {
            "version": NETWORK_VERSION,
            "subversion": SUBVERSION,
            "protocolversion": 70016,
            "localservices": "0000000000000c09",
            "localservicesnames": ["NETWORK", "WITNESS", "NETWORK_LIMITED", "P2P_V2"],
            "localrelay": True,
            "timeoffset": 0,
            "networkactive": True,
            "connections": 0,
            "connections_in": 0,
            "connections_out": 0,
            "networks": [],
            "relayfee": RELAY_FEE_BTC_PER_KVB,
            "incrementalfee": RELAY_FEE_BTC_PER_KVB,
            "localaddresses": [],
            "warnings": [],
        }

    def _rpc_getindexinfo(self, params: Sequence[Any]) -> JsonObject:
        status = {"synced": True, "best_block_height": len(self._active) - 1}
        indexes = {"txindex": status, "txospenderindex": dict(status)}
        name = _param(params, 0)
        return indexes if name is None else {k: v for k, v in indexes.items() if k == name}

    def _rpc_getmempoolinfo(self, params: Sequence[Any]) -> JsonObject:
        size_bytes = sum(len(tx.serialize()) for tx in self._mempool.values())
        return {
            "loaded": True,
            "size": len(self._mempool),
            "bytes": size_bytes,
            "usage": size_bytes,
            "total_fee": 0.0,
            "maxmempool": 300_000_000,
            "mempoolminfee": RELAY_FEE_BTC_PER_KVB,
            "minrelaytxfee": RELAY_FEE_BTC_PER_KVB,
            "incrementalrelayfee": RELAY_FEE_BTC_PER_KVB,
            "unbroadcastcount": 0,
            "fullrbf": True,
        }

    def _rpc_getrawtransaction(self, params: Sequence[Any]) -> str | JsonObject:
        txid = _hash_param(params, 0)
        block_hash: bytes | None = None
        if txid in self._mempool:
            tx = self._mempool[txid]
        elif txid in self._tx_index:
            tx, block_hash = self._tx_index[txid]
        else:
            raise RpcFault(
                RPC_INVALID_ADDRESS_OR_KEY,
                "No such mempool or blockchain transaction. "
                "Use gettransaction for wallet transactions.",
            )
        if not _verbosity(params, 1, 0):
            return tx.serialize().hex()
        info = _tx_info(tx)
        if block_hash is not None:
            height, block = self._known[block_hash]
            info |= {
                "blockhash": block.hash_hex,
                "confirmations": len(self._active) - height,
                "time": block.header.time,
                "blocktime": block.header.time,
            }
        return info

    def _rpc_estimatesmartfee(self, params: Sequence[Any]) -> JsonObject:
        target = _int_param(params, 0)
        if self.feerate_btc_per_kvb is None:
            return {"errors": ["Insufficient data or no feerate found"], "blocks": 0}
        return {"feerate": self.feerate_btc_per_kvb, "blocks": max(target, 2)}


# -- Mempool helpers (pure)


def _with_descendants(mempool: Mapping[bytes, regtest.Tx], txids: Collection[bytes]) -> set[bytes]:
    """Return `txids` and every mempool transaction that spends their outputs, transitively."""
    found = set(txids)
    for txid, tx in mempool.items():  # parents come first: one pass suffices
        if any(txin.prev_txid_bytes in found for txin in tx.inputs):
            found.add(txid)
    return found


def _mempool_after_disconnect(
    disconnected: Sequence[regtest.Block], mempool: Mapping[bytes, regtest.Tx]
) -> dict[bytes, regtest.Tx]:
    """Return the mempool once `disconnected` blocks are undone, as bitcoind rebuilds it.

    Their transactions come first, in chain order (so parents still precede children);
    those spending their coinbases, which no longer exist, are evicted with descendants.
    """
    returned = {tx.txid_bytes: tx for block in disconnected for tx in block.txs[1:]}
    merged = returned | dict(mempool)
    coinbases = {block.txs[0].txid_bytes for block in disconnected}
    orphans = {
        txid
        for txid, tx in merged.items()
        if any(txin.prev_txid_bytes in coinbases for txin in tx.inputs)
    }
    gone = _with_descendants(merged, orphans)
    return {txid: tx for txid, tx in merged.items() if txid not in gone}


def _checked_sats(value_sats: int) -> int:
    if isinstance(value_sats, bool) or not isinstance(value_sats, int) or value_sats < 0:
        raise ValueError(f"an output value is a non-negative int of sats, got {value_sats!r}")
    return value_sats


def _tx_outputs(outputs: Sequence[tuple[bytes, int]]) -> tuple[regtest.TxOut, ...]:
    if not outputs:
        raise ValueError("a transaction needs at least one output")
    return tuple(regtest.TxOut(_checked_sats(value), script) for script, value in outputs)


def _check_fee(view: regtest.ChainView, tx: regtest.Tx) -> None:
    in_sats = view.input_value_sats(tx)
    out_sats = sum(txout.value_sats for txout in tx.outputs)
    if out_sats > in_sats:
        raise ValueError(f"outputs of {out_sats:,d} sats exceed inputs of {in_sats:,d}")


def _tx_info(tx: regtest.Tx) -> JsonObject:
    raw = tx.serialize()
    vin: list[JsonObject] = []
    for txin in tx.inputs:
        if tx.is_coinbase:
            vin.append({"coinbase": txin.script_sig.hex(), "sequence": txin.sequence})
        else:
            vin.append(
                {
                    "txid": regtest.hash_to_hex(txin.prev_txid_bytes),
                    "vout": txin.prev_index,
                    "scriptSig": {"asm": "", "hex": txin.script_sig.hex()},
                    "sequence": txin.sequence,
                }
            )
    vout = [
        {
            "value": out.value_sats / regtest.COIN_SATS,
            "n": n,
            "scriptPubKey": {"asm": "", "hex": out.script_pubkey.hex(), "type": "nonstandard"},
        }
        for n, out in enumerate(tx.outputs)
    ]
    return {
        "txid": tx.txid_hex,
        "hash": tx.txid_hex,
        "version": tx.version,
        "size": len(raw),
        "vsize": len(raw),
        "weight": 4 * len(raw),
        "locktime": tx.locktime,
        "vin": vin,
        "vout": vout,
        "hex": raw.hex(),
    }


def _error_reply(request_id: Any, code: int, message: str) -> JsonObject:
    return {"result": None, "error": {"code": code, "message": message}, "id": request_id}


def _json_response(payload: Any, *, status: int = 200) -> web.Response:
    # Exactly "application/json", no charset: ElectrumX compares the header verbatim.
    return web.Response(
        body=orjson.dumps(payload), status=status, headers={"Content-Type": "application/json"}
    )
