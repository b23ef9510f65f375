"""Run a real ElectrumX (installed by scripts/install-electrumx.sh) as a subprocess on loopback.

ElectrumX lives in its own venv and is never imported here: it is started as
`electrumx_server` and spoken to over its TCP port with newline-delimited JSON-RPC, exactly as
any Electrum client would. Its log (stdout and stderr) goes to a file in the DB directory and
its tail is quoted in every failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson

from tests.electrum import regtest

REPO_ROOT = Path(__file__).resolve().parents[2]
ELECTRUMX_SERVER = REPO_ROOT / ".tools/electrumx-venv/bin/electrumx_server"
LOOPBACK = "127.0.0.1"
CLIENT_NAME = "indexer-tests"
PROTOCOL_VERSION = "1.4"
# Keep in step with EX_VERSION in scripts/install-electrumx.sh (a test checks).
ELECTRUMX_VERSION = "2.0.0"
_LOG_TAIL_LINES = 40


class ElectrumXError(RuntimeError):
    """ElectrumX failed to start, answer or sync."""


class ElectrumXNotInstalled(ElectrumXError):
    """ElectrumX is not installed."""


def find_electrumx_server() -> Path:
    """Return the `electrumx_server` entry point of the tools venv, or explain how to get it."""
    if not os.access(ELECTRUMX_SERVER, os.X_OK):
        raise ElectrumXNotInstalled(
            f"ElectrumX is not installed at {ELECTRUMX_SERVER}: "
            "run scripts/install-electrumx.sh (it creates .tools/electrumx-venv)"
        )
    return ELECTRUMX_SERVER


def free_ports(count: int) -> list[int]:
    """Return `count` distinct loopback TCP ports that were free a moment ago."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:  # all bound at once, so the ports differ
            sock.bind((LOOPBACK, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


class LineClient:
    """A blocking newline-delimited JSON-RPC client for one Electrum TCP connection."""

    def __init__(self, port: int, *, timeout_secs: float = 10.0) -> None:
        self._sock = socket.create_connection((LOOPBACK, port), timeout=timeout_secs)
        self._buffer = b""
        self._next_id = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> LineClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def call(self, method: str, *params: Any) -> Any:
        """Send one request; return its result (notifications in between are skipped)."""
        self._next_id += 1
        request = {"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params}
        self._sock.sendall(orjson.dumps(request) + b"\n")
        while True:
            message = orjson.loads(self._readline())
            if message.get("id") != self._next_id:
                continue
            if message.get("error") is not None:
                raise ElectrumXError(f"{method}{list(params)}: {message['error']}")
            return message.get("result")

    def _readline(self) -> bytes:
        while b"\n" not in self._buffer:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("ElectrumX closed the connection")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line


class ElectrumXProc:
    """An `electrumx_server` for Bitcoin regtest in front of `daemon_url`, on free ports.

    It polls the daemon every `poll_interval_msec` (bitcoind has no push to ElectrumX), with
    peer discovery, TLS and per-session cost limits off, so tests are fast and stay local.
    """

    def __init__(
        self,
        *,
        daemon_url: str,
        db_dir: Path,
        server_path: Path | None = None,
        poll_interval_msec: int = 100,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.daemon_url = daemon_url
        self.db_dir = db_dir
        self.server_path = server_path
        self.poll_interval_msec = poll_interval_msec
        self.extra_env = dict(extra_env or {})
        self.tcp_port = 0
        self.rpc_port = 0
        self.log_path = db_dir / "electrumx.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def tcp_url(self) -> str:
        return f"tcp://{LOOPBACK}:{self.tcp_port}"

    def environment(self) -> dict[str, str]:
        """The whole environment ElectrumX runs with (nothing else is inherited but PATH)."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.db_dir),
            "COIN": "Bitcoin",
            "NET": "regtest",
            "DB_ENGINE": "leveldb",
            "DB_DIRECTORY": str(self.db_dir / "db"),
            "DAEMON_URL": self.daemon_url,
            "SERVICES": f"tcp://{LOOPBACK}:{self.tcp_port},rpc://{LOOPBACK}:{self.rpc_port}",
            "PEER_DISCOVERY": "off",
            "PEER_ANNOUNCE": "",
            "DAEMON_POLL_INTERVAL_BLOCKS": str(self.poll_interval_msec),
            "DAEMON_POLL_INTERVAL_MEMPOOL": str(self.poll_interval_msec),
            # 0/0 disables aiorpcX's per-session throttling, which would slow a polling test.
            "COST_SOFT_LIMIT": "0",
            "COST_HARD_LIMIT": "0",
            "CACHE_MB": "64",
            "LOG_SESSIONS": "0",
            "ALLOW_ROOT": "1",  # CI and dev machines here run as root
            **self.extra_env,
        }

    def start(self, *, timeout_secs: float = 60.0) -> None:
        """Start ElectrumX; return once its TCP port answers `server.version`."""
        if self._proc is not None:
            raise ElectrumXError("already started")
        server = self.server_path or find_electrumx_server()
        (self.db_dir / "db").mkdir(parents=True, exist_ok=True)
        self.tcp_port, self.rpc_port = free_ports(2)
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [str(server)],
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.db_dir,
        )
        try:
            self._wait_until(
                self._answers_version,
                timeout_secs=timeout_secs,
                describe=lambda: "to sync with the daemon and listen",
            )
        except BaseException:
            self.stop()
            raise

    def stop(self, *, timeout_secs: float = 20.0) -> None:
        """SIGTERM ElectrumX (it flushes its DB), kill it past the timeout; idempotent."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout_secs)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def __enter__(self) -> ElectrumXProc:
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
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def call(self, method: str, *params: Any) -> Any:
        """Make one request on a fresh connection (after the mandatory `server.version`).

        A fresh connection is also a fast one: after a session's first KiB, ElectrumX 2.0 holds
        small replies for up to 1 s to pad them (PaddedRSTransport, against traffic analysis).
        """
        with LineClient(self.tcp_port) as client:
            client.call("server.version", CLIENT_NAME, PROTOCOL_VERSION)
            return client.call(method, *params)

    def wait_synced(
        self, height: int, *, hash_hex: str | None = None, timeout_secs: float = 30.0
    ) -> dict[str, Any]:
        """Wait until ElectrumX's tip is at `height` (and is block `hash_hex`, if given).

        Returns the `blockchain.headers.subscribe` result. The tip is read afresh each time,
        so this also waits out a reorg to a branch of the same height.
        """
        last: dict[str, Any] = {}

        def synced() -> bool:
            nonlocal last
            last = self.call("blockchain.headers.subscribe")
            if last["height"] != height:
                return False
            header_hash = regtest.double_sha256(bytes.fromhex(last["hex"]))
            return hash_hex is None or regtest.hash_to_hex(header_hash) == hash_hex

        self._wait_until(
            synced,
            timeout_secs=timeout_secs,
            describe=lambda: f"to sync to {height:,d} {hash_hex or ''} (its tip: {last or None})",
        )
        return last

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _answers_version(self) -> bool:
        try:
            with LineClient(self.tcp_port, timeout_secs=2.0) as client:
                client.call("server.version", CLIENT_NAME, PROTOCOL_VERSION)
        except (OSError, ElectrumXError):
            return False
        return True

    def _wait_until(
        self, check: Callable[[], bool], *, timeout_secs: float, describe: Callable[[], str]
    ) -> None:
        deadline = time.monotonic() + timeout_secs
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise ElectrumXError(
                    f"ElectrumX exited (code {code}) while waiting {describe()}:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError):
                if check():
                    return
            if time.monotonic() > deadline:
                raise ElectrumXError(
                    f"ElectrumX failed {describe()} within {timeout_secs:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.05)
