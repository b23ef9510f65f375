"""The daemon as a service: sd_notify, watchdog, health, metrics, shutdown, database outages."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import psycopg

from indexer import errors
from indexer.devnet.traffic import fill_blocks
from indexer.store import LOCK_NS_WRITER
from tests.integration.helpers import REPO, checkpoint, wait_for, write_config
from tests.support.faultproxy import FaultProxy
from tests.support.oracle import assert_equals_node, check_invariants


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NotifySocket:
    """A fake systemd: a thread collects sd_notify datagrams with their arrival times."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), data.decode()))

    def drain(self) -> list[tuple[float, str]]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, text: str, timeout_secs: float = 30, *, after: float = 0.0) -> float:
        deadline = time.monotonic() + timeout_secs
        while time.monotonic() < deadline:
            for at, message in self.drain():
                if text in message and at >= after:
                    return at
            time.sleep(0.02)
        raise AssertionError(f"no {text!r} notification; got {self.drain()}")

    def pings_between(self, start: float, end: float) -> list[float]:
        return [at for at, m in self.drain() if m == "WATCHDOG=1" and start <= at <= end]

    def silent_for(self) -> float:
        """Seconds since the last WATCHDOG=1 (0 before the first)."""
        pings = [at for at, m in self.drain() if m == "WATCHDOG=1"]
        return time.monotonic() - pings[-1] if pings else 0.0

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        self.sock.close()


@contextmanager
def daemon(config: Path, notify: NotifySocket | None = None, *, watchdog_usec: int = 400_000
           ) -> Iterator[subprocess.Popen[str]]:  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDEXER_")}
    if notify is not None:
        env["NOTIFY_SOCKET"] = str(notify.path)
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    proc = subprocess.Popen(
        [sys.executable, "-m", "indexer", "--config", str(config), "sync"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def with_http(path: Path, port: int, extra: str = "") -> Path:
    path.write_text(path.read_text() + f'[http]\nlisten = "127.0.0.1:{port}"\n{extra}')
    return path


def test_notify_ready_watchdog_and_stopping(db_url: str, anvil: Any, tmp_path: Path) -> None:
    fill_blocks(anvil, 30, txs_per_block=(1, 2), seed=31)
    config = write_config(tmp_path / "c.toml", db_url, anvil.url)
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        with daemon(config, notify) as proc:
            notify.wait_for("READY=1")
            # At READY the writer lock is held and the schema is in place.
            with psycopg.connect(db_url) as conn:
                held = conn.execute(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND a.application_name = 'indexer:writer:dev' "
                    "AND l.classid = %s AND a.datname = current_database()",
                    (LOCK_NS_WRITER,),
                ).fetchone()
            assert held == (1,)
            wait_for(lambda: checkpoint(db_url) == 30, what="sync")
            # Pings keep coming while sync progresses (every 0.2 s: WATCHDOG_USEC/2); counted,
            # not timed: a loaded machine may space them out.
            start = time.monotonic()
            wait_for(lambda: len(notify.pings_between(start, time.monotonic())) >= 4,
                     what="four watchdog pings")  # fmt: skip

            # A blocked process sends no pings; they resume when it runs again.
            proc.send_signal(signal.SIGSTOP)
            stopped_at = time.monotonic()
            time.sleep(1.0)
            proc.send_signal(signal.SIGCONT)
            resumed_at = time.monotonic()
            assert notify.pings_between(stopped_at + 0.1, resumed_at - 0.05) == []
            notify.wait_for("WATCHDOG=1", after=resumed_at)

            proc.send_signal(signal.SIGTERM)
            notify.wait_for("STOPPING=1")
            proc.wait(timeout=30)
            assert proc.returncode == 0
    finally:
        notify.close()
    check_invariants(db_url, "dev")


def test_stall_withholds_the_watchdog(db_url: str, anvil: Any, tmp_path: Path) -> None:
    fill_blocks(anvil, 20, txs_per_block=(1, 2), seed=32)
    notify = NotifySocket(tmp_path / "notify.sock")
    with FaultProxy(anvil.url) as proxy:
        config = write_config(tmp_path / "c.toml", db_url, proxy.url)
        config.write_text(config.read_text() + "[service]\nstall_timeout_secs = 1.0\n")
        try:
            with daemon(config, notify) as proc:
                notify.wait_for("READY=1")
                wait_for(lambda: checkpoint(db_url) == 20, what="sync")
                proxy.add_fault("http_500", method="eth_getBlockByNumber", times=100_000)
                anvil.mine(10)  # the node moves on; we cannot fetch
                # Stalled: the pings (every 0.2 s while healthy) stop. A state, not a sleep.
                wait_for(lambda: notify.silent_for() > 2.0, what="pings withheld")
                assert checkpoint(db_url) == 20
                proxy.clear()
                wait_for(lambda: checkpoint(db_url) == 30, what="recovery", timeout_secs=60)
                notify.wait_for("WATCHDOG=1", after=time.monotonic())
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
                assert proc.returncode == 0
        finally:
            notify.close()


def test_wrong_chain_id_is_never_ready(db_url: str, anvil: Any, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", db_url, anvil.url)
    config.write_text(config.read_text().replace("chain_id = 31337", "chain_id = 5"))
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        with daemon(config, notify) as proc:
            proc.wait(timeout=30)
            assert proc.returncode == errors.EXIT_USAGE
        assert not any("READY=1" in m for _, m in notify.drain())
    finally:
        notify.close()


def test_health_and_metrics(db_url: str, anvil: Any, tmp_path: Path) -> None:
    fill_blocks(anvil, 25, txs_per_block=(1, 3), seed=33)
    port = free_port()
    url = anvil.url + "/?apikey=CANARYKEY"
    config = with_http(write_config(tmp_path / "c.toml", db_url, url), port)
    with daemon(config) as proc:
        wait_for(lambda: checkpoint(db_url) == 25, what="sync")
        status, _ = http_get(port, "/health/live")
        assert status == 200
        wait_for(lambda: http_get(port, "/health/ready")[0] == 200, what="ready")
        ready = orjson.loads(http_get(port, "/health/ready")[1])
        assert ready["ready"] and ready["chains"]["dev"]["tip"] == 25
        assert ready["chains"]["dev"]["lag"] == 0

        status, raw = http_get(port, "/metrics")
        text = raw.decode()
        assert status == 200
        assert 'indexer_indexed_tip{chain="dev"} 25.0' in text
        assert 'indexer_node_head{chain="dev"} 25.0' in text
        assert 'indexer_blocks_written_total{chain="dev"} 26.0' in text
        assert 'indexer_missing_blocks{chain="dev"} 0.0' in text
        assert "indexer_db_pool_size" in text and "indexer_process_resident_memory_bytes" in text
        assert 'indexer_rpc_requests_total{chain="dev",endpoint="http://127.0.0.1:' in text
        assert "apikey=***" in text and "CANARY" not in text
        # anvil's full batches all take the fast path (msgspec + the C row encoder).
        assert 'indexer_decoded_batches_total{chain="dev",path="checked"} 0.0' in text
        fast = re.search(r'indexer_decoded_batches_total\{chain="dev",path="fast"\} (\S+)', text)
        assert fast and float(fast.group(1)) >= 1
        # The shipped Grafana dashboard charts only metrics that are exported.
        board = orjson.loads((REPO / "config" / "grafana-dashboard.json").read_bytes())
        for panel in board["panels"]:
            for target in panel["targets"]:
                for name in re.findall(r"indexer_\w+", target["expr"]):
                    assert name.removesuffix("_total") in text, f"{name} is not exported"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert "CANARY" not in stderr


def _block_connections(db_url: str, blocked: bool) -> None:
    dbname = db_url.rsplit("/", 1)[1]
    admin = db_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS {str(not blocked).lower()}')
        if blocked:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND application_name LIKE 'indexer%%'",
                (dbname,),
            )


def test_database_sessions_killed_then_back(db_url: str, anvil: Any, tmp_path: Path) -> None:
    fill_blocks(anvil, 20, txs_per_block=(1, 2), seed=34)
    port = free_port()
    config = with_http(write_config(tmp_path / "c.toml", db_url, anvil.url), port)
    with daemon(config) as proc:
        wait_for(lambda: checkpoint(db_url) == 20, what="sync")
        wait_for(lambda: http_get(port, "/health/ready")[0] == 200, what="ready")
        _block_connections(db_url, True)
        try:
            fill_blocks(anvil, 10, txs_per_block=(1, 2), seed=35)
            wait_for(lambda: http_get(port, "/health/ready")[0] == 503, what="unready")
            body = orjson.loads(http_get(port, "/health/ready")[1])
            assert body["database"]["ready"] is False and body["database"]["reason"]
            assert proc.poll() is None, "a short outage must not end the daemon"
        finally:
            _block_connections(db_url, False)
        wait_for(lambda: checkpoint(db_url) == 30, what="resume by itself", timeout_secs=90)
        wait_for(lambda: http_get(port, "/health/ready")[0] == 200, what="ready again")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        assert proc.returncode == 0
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url)


def test_database_outage_longer_than_allowed_exits(db_url: str, anvil: Any, tmp_path: Path) -> None:
    fill_blocks(anvil, 10, txs_per_block=(1, 2), seed=36)
    config = write_config(tmp_path / "c.toml", db_url, anvil.url)
    config.write_text(
        config.read_text()
        .replace("[[chains]]", "[[chains]]", 1)
        .replace(f'url = "{db_url}"', f'url = "{db_url}"\nmax_outage_secs = 2.0', 1)
    )
    with daemon(config) as proc:
        wait_for(lambda: checkpoint(db_url) == 10, what="sync")
        _block_connections(db_url, True)
        try:
            anvil.mine(5)
            proc.wait(timeout=60)
        finally:
            _block_connections(db_url, False)
        assert proc.returncode == errors.EXIT_FAILURE
    check_invariants(db_url, "dev")


def test_sigterm_mid_backfill_exits_0_with_a_consistent_checkpoint(
    db_url: str, anvil: Any, tmp_path: Path
) -> None:
    fill_blocks(anvil, 50, txs_per_block=(1, 3), seed=37)
    anvil.mine(700)
    config = write_config(tmp_path / "c.toml", db_url, anvil.url, batch_size=2,
                          prefetch_batches=1)  # fmt: skip
    with daemon(config) as proc:
        wait_for(lambda: (checkpoint(db_url) or 0) >= 100, what="backfill under way")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        assert proc.returncode == 0
    stopped_at = checkpoint(db_url)
    assert stopped_at is not None and stopped_at < 750
    check_invariants(db_url, "dev")
    with daemon(config) as proc:
        wait_for(lambda: checkpoint(db_url) == 750, what="resume")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert_equals_node(db_url, "dev", anvil.url)
