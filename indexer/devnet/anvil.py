"""A managed anvil node on loopback, and a small synchronous JSON-RPC client to drive it.

Test and demo tooling only: the daemon never imports `indexer.devnet`. Everything here is
synchronous on purpose, so that tests and the demo can call it from any thread without an
event loop; one `RpcClient` (and so one `Anvil`) must be used from one thread at a time.
"""

from __future__ import annotations

import collections
import http.client
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import urlsplit

import orjson

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
ANVIL_VERSION = "1.7.1"
ANVIL_ENV = "ANVIL_BIN"
TOOLS_ANVIL = REPO_ROOT / ".tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
DEFAULT_CHAIN_ID = 31337
LOOPBACK = "127.0.0.1"
_LISTENING_PREFIX = "Listening on "
_OUTPUT_TAIL_LINES = 40

# A transaction for `Anvil.reorg`: a request object sent from an unlocked dev account
# (`{"from": ..., "to": ..., "value": "0x1"}`), or a raw signed transaction as 0x-hex.
ReorgTx = Mapping[str, object] | str


class DevnetError(RuntimeError):
    """Local devnet failed."""


class AnvilNotFound(DevnetError):
    """The anvil binary was not found."""


class AnvilStartError(DevnetError):
    """Anvil did not start or did not answer in time."""


class RpcCallError(DevnetError):
    """The node answered a JSON-RPC call with an error."""

    def __init__(self, method: str, code: int, message: str) -> None:
        self.method = method
        self.code = code
        self.message = message
        super().__init__(f"{method}: JSON-RPC error {code}: {message}")


def find_anvil(env: Mapping[str, str] | None = None) -> str:
    """Return the anvil binary: $ANVIL_BIN, then the repo's `.tools` install, then PATH."""
    env = os.environ if env is None else env
    configured = env.get(ANVIL_ENV)
    if configured:
        if not _is_executable(Path(configured)):
            raise AnvilNotFound(f"{ANVIL_ENV}={configured} is not an executable file")
        return configured
    if _is_executable(TOOLS_ANVIL):
        return str(TOOLS_ANVIL)
    on_path = shutil.which("anvil")
    if on_path:
        return on_path
    raise AnvilNotFound(
        f"anvil not found: run scripts/install-anvil.sh (installs anvil {ANVIL_VERSION} into "
        f"{REPO_ROOT / '.tools'}), put anvil on PATH, or set {ANVIL_ENV}"
    )


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def hex_to_int(value: object) -> int:
    """Parse a JSON-RPC quantity (`"0x1a"`); raise `DevnetError` on anything else."""
    if not isinstance(value, str) or not value.startswith("0x"):
        raise DevnetError(f"expected a 0x-hex quantity, got {value!r}")
    return int(value, 16)


# -- JSON-RPC client


class RpcClient:
    """JSON-RPC over one keep-alive HTTP/1.1 connection (stdlib only; not thread-safe)."""

    def __init__(self, url: str, *, timeout_secs: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected an http:// URL, got {url!r}")
        self.url = url
        self._host = parts.hostname
        self._port = parts.port or 80
        self._path = parts.path or "/"
        self._timeout_secs = timeout_secs
        self._conn: http.client.HTTPConnection | None = None
        self._next_id = 1

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def call(self, method: str, params: Sequence[object] = ()) -> Any:
        """Call `method` and return its result; raise `RpcCallError` on a JSON-RPC error."""
        request = self._request(method, params)
        return _result(self._post(orjson.dumps(request)), method)

    def batch(self, calls: Sequence[tuple[str, Sequence[object]]]) -> list[Any]:
        """Send `calls` as one JSON-RPC batch; return results in order, raising on any error."""
        if not calls:
            return []
        requests = [self._request(method, params) for method, params in calls]
        replies = self._post(orjson.dumps(requests))
        if not isinstance(replies, list) or len(replies) != len(requests):
            raise DevnetError(f"batch of {len(requests)} got a malformed reply: {replies!r:.200}")
        by_id = {reply.get("id"): reply for reply in replies if isinstance(reply, dict)}
        return [_result(by_id.get(req["id"]), str(req["method"])) for req in requests]

    def _request(self, method: str, params: Sequence[object]) -> dict[str, object]:
        request_id = self._next_id
        self._next_id += 1
        return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}

    def _post(self, body: bytes) -> Any:
        for attempt in (1, 2):
            reused = self._conn is not None
            conn = self._conn or self._connect()
            try:
                conn.request("POST", self._path, body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                # A server may drop an idle keep-alive connection: retry once on a fresh one.
                if reused and attempt == 1:
                    continue
                raise DevnetError(f"{self.url}: {exc!r}") from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise DevnetError(f"{self.url}: {exc!r}") from exc
            if response.will_close:
                self.close()
            if response.status != 200:
                raise DevnetError(f"{self.url}: HTTP {response.status}: {data[:200]!r}")
            return orjson.loads(data)
        raise AssertionError("unreachable: the loop returns or raises")

    def _connect(self) -> http.client.HTTPConnection:
        self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_secs)
        return self._conn


def _result(reply: object, method: str) -> Any:
    if not isinstance(reply, dict):
        raise DevnetError(f"{method}: malformed JSON-RPC reply {reply!r:.200}")
    error = reply.get("error")
    if error is not None:
        if isinstance(error, dict):
            raise RpcCallError(method, int(error.get("code", 0)), str(error.get("message", "")))
        raise RpcCallError(method, 0, str(error))
    return reply.get("result")


# -- The managed node


class Anvil:
    """An anvil subprocess listening on a free loopback port, stopped on exit.

    `block_time_secs=None` starts anvil with `--no-mining`: blocks are mined only on demand
    (`evm_mine`, `anvil_mine`, `mine()`), which is what deterministic tests want. Otherwise
    anvil mines a block every `block_time_secs` on its own.
    """

    def __init__(
        self,
        *,
        block_time_secs: float | None = None,
        chain_id: int = DEFAULT_CHAIN_ID,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout_secs: float = 15.0,
    ) -> None:
        if block_time_secs is not None and block_time_secs <= 0:
            raise ValueError("block_time_secs must be positive, or None to mine on demand")
        self.block_time_secs = block_time_secs
        self.chain_id = chain_id
        self._binary = binary
        self._extra_args = tuple(extra_args)
        self._startup_timeout_secs = startup_timeout_secs
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._listening = threading.Event()
        self._address: str | None = None
        self._output_tail: collections.deque[str] = collections.deque(maxlen=_OUTPUT_TAIL_LINES)
        self._client: RpcClient | None = None

    def __enter__(self) -> Anvil:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._address is None:
            raise DevnetError("anvil is not running")
        return f"http://{self._address}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        """Start anvil and return once it answers `eth_chainId` with our chain id."""
        if self._proc is not None:
            raise DevnetError("anvil is already started")
        binary = self._binary or find_anvil()
        # Port 0: the kernel picks a free port and anvil prints it ("Listening on host:port"),
        # so there is no window in which another process can take a port we chose.
        args = [binary, "--host", LOOPBACK, "--port", "0", "--chain-id", str(self.chain_id)]
        if self.block_time_secs is None:
            args.append("--no-mining")
        else:
            args += ["--block-time", f"{self.block_time_secs:g}"]
        args += self._extra_args
        logger.info("starting %s", " ".join(args), extra={"action": "anvil_start"})
        # A session of its own: a Ctrl-C on the terminal reaches our process only, and we stop
        # anvil after everything that talks to it (see demo.py).
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        assert self._proc.stdout is not None
        self._reader = threading.Thread(
            target=self._drain,
            args=(self._proc.stdout,),
            name=f"anvil-{self._proc.pid}-output",
            daemon=True,
        )
        self._reader.start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        logger.info(
            "anvil %s listening on %s (chain id %d)",
            f"pid={self._proc.pid}",
            self.url,
            self.chain_id,
            extra={"action": "anvil_ready"},
        )

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self._startup_timeout_secs
        while not self._listening.wait(0.05):
            if self._proc.poll() is not None:
                raise AnvilStartError(
                    f"anvil exited with code {self._proc.returncode}:\n{self._output()}"
                )
            if time.monotonic() > deadline:
                raise AnvilStartError(f"anvil did not start listening:\n{self._output()}")
        self._client = RpcClient(self.url, timeout_secs=5.0)
        while True:
            try:
                chain_id = hex_to_int(self._client.call("eth_chainId"))
            except DevnetError as exc:
                if time.monotonic() > deadline:
                    raise AnvilStartError(f"anvil does not answer eth_chainId: {exc}") from exc
                time.sleep(0.05)
                continue
            if chain_id != self.chain_id:
                raise AnvilStartError(f"anvil reports chain id {chain_id}, not {self.chain_id}")
            return

    def _drain(self, stream: IO[str]) -> None:
        # Runs until anvil closes its stdout. Draining keeps anvil from blocking on a full pipe.
        for line in stream:
            line = line.rstrip()
            self._output_tail.append(line)
            if not self._listening.is_set() and line.startswith(_LISTENING_PREFIX):
                self._address = line.removeprefix(_LISTENING_PREFIX).strip()
                self._listening.set()
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("anvil: %s", line)

    def _output(self) -> str:
        return "\n".join(self._output_tail)

    def stop(self, *, timeout_secs: float = 5.0) -> None:
        """Terminate anvil (SIGTERM, then SIGKILL after `timeout_secs`); idempotent."""
        if self._client is not None:
            self._client.close()
            self._client = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_secs)
            except subprocess.TimeoutExpired:
                logger.warning("anvil did not exit on SIGTERM; killing it")
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=timeout_secs)
            self._reader = None
        if proc.stdout is not None:
            proc.stdout.close()
        self._address = None
        self._listening.clear()
        logger.info("anvil stopped (exit code %s)", proc.returncode, extra={"action": "anvil_stop"})

    # -- Control calls for tests and the demo

    def rpc(self, method: str, params: Sequence[object] = ()) -> Any:
        """Call a JSON-RPC method on this node."""
        if self._client is None:
            raise DevnetError("anvil is not running")
        return self._client.call(method, params)

    def block_number(self) -> int:
        return hex_to_int(self.rpc("eth_blockNumber"))

    def get_block(self, number: int | str = "latest", *, full_txs: bool = False) -> dict[str, Any]:
        """Return block `number` (an int or a tag such as "latest"); raise if it doesn't exist."""
        tag = hex(number) if isinstance(number, int) else number
        block = self.rpc("eth_getBlockByNumber", [tag, full_txs])
        if not isinstance(block, dict):
            raise DevnetError(f"no block {number!r}")
        return block

    def accounts(self) -> list[str]:
        return [str(account) for account in self.rpc("eth_accounts")]

    def mine(self, blocks: int = 1) -> None:
        """Mine `blocks` blocks now (`anvil_mine`), the first one taking the pending txs."""
        self.rpc("anvil_mine", [hex(blocks)])

    def set_automine(self, enabled: bool) -> None:
        """Mine a block per transaction (`evm_setAutomine`)."""
        self.rpc("evm_setAutomine", [enabled])

    def set_interval_mining(self, interval_secs: int) -> None:
        """Mine a block every `interval_secs` seconds; 0 turns interval mining off."""
        self.rpc("evm_setIntervalMining", [interval_secs])

    def reorg(self, depth: int, txs: Sequence[tuple[ReorgTx, int]] = ()) -> None:
        """Replace the top `depth` blocks with new ones at the same heights (`anvil_reorg`).

        Verified on anvil 1.7.1: params are `[depth, [[tx, block_offset], ...]]`. `tx` is a
        request object from an unlocked account or a raw signed tx (0x-hex); `block_offset` in
        `[0, depth)` puts it in block `tip - depth + 1 + block_offset`. The tip height stays the
        same, blocks below `tip - depth + 1` keep their hashes, and the transactions of the
        replaced blocks are dropped (not re-queued). `depth` must not exceed the tip height.
        Every replaced block gets a new hash only if something in it changes (a tx, or a new
        timestamp): pass at least one tx when a test needs a different hash.
        """
        self.rpc("anvil_reorg", [depth, [[tx, offset] for tx, offset in txs]])

    def rollback(self, depth: int = 1) -> None:
        """Remove the top `depth` blocks, lowering the tip height (`anvil_rollback`).

        Verified on anvil 1.7.1: params are `[depth]` (`[null]` means 1).
        """
        self.rpc("anvil_rollback", [depth])
