"""Secret canaries: real code paths run with CANARY in every secret part of every configured URL,
and the word must come out nowhere (stdout, stderr, /metrics, /health/ready, exception text).

Every secret part here holds CANARY, and every piece of a raw password between the characters
libpq splits on (``: / @ ? #``) holds it too, so a leaked fragment is caught as well. User names
of the Postgres URL are shown by design (`indexer.redact`), so they never hold it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg
import pydantic
import pytest

from indexer import config, errors, redact, store
from tests.integration.helpers import REPO, checkpoint, run_cli, wait_for
from tests.support.faultproxy import FaultProxy

CANARY = "CANARY"
BTC_REGTEST_GENESIS = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"


def leaked(text: str) -> list[str]:
    """The lines of `text` that hold the canary (for the failure message)."""
    return [line for line in text.splitlines() if CANARY in line]


def free_port() -> int:
    """A loopback port nothing listens on (bound once, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rpc_urls(host_port: str) -> list[str]:
    """RPC URLs with a key in the path (with - _ . ~), in the query, in the userinfo."""
    return [
        f"http://{host_port}/v2/abc-{CANARY}_123.x~y/{CANARY}seg?apikey={CANARY}q&{CANARY}flag",
        f"http://{CANARY}u:{CANARY}p@{host_port}/{CANARY}k#{CANARY}frag",
    ]


def electrum_urls(host_port: str) -> list[str]:
    return [
        f"ssl://{CANARY}eu:{CANARY}ep@{host_port}/{CANARY}epath?k={CANARY}eq",
        f"tcp://{CANARY}tok@{host_port}",
    ]


def write_toml(path: Path, db_url: str, evm: list[str], electrum: list[str] | None = None,
               extra: str = "") -> Path:  # fmt: skip
    def strings(urls: list[str]) -> str:
        return "[" + ", ".join(f'"{u}"' for u in urls) + "]"

    text = f"""[database]
url = "{db_url}"
connect_timeout_secs = 1
{extra}
[[chains]]
name = "dev"
kind = "evm"
urls = {strings(evm)}
chain_id = 31337
poll_interval_secs = 0.2
request_timeout_secs = 2
"""
    if electrum:
        text += f"""
[[chains]]
name = "btc"
kind = "electrum"
urls = {strings(electrum)}
genesis_hash = "{BTC_REGTEST_GENESIS}"
request_timeout_secs = 2
"""
    path.write_text(text)
    return path


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("INDEXER_")}


def with_password(dsn: str, password: str, *, dbname: str | None = None, query: str = "") -> str:
    parts = urlsplit(dsn)
    netloc = f"{parts.username or 'postgres'}:{password}@{parts.hostname}:{parts.port or 5432}"
    path = f"/{dbname}" if dbname else parts.path
    return urlunsplit((parts.scheme, netloc, path, query, ""))


# -- The CLI against a database and nodes that are not there


def database_shapes(closed: int, server_dsn: str) -> dict[str, str]:
    here = f"127.0.0.1:{closed}"
    return {
        "percent-encoded % / @ : ?": (
            f"postgresql://operator:{CANARY}1%25%2F%40%3A%3F{CANARY}2@{here}/{CANARY}db"
            f"?application_name={CANARY}app"
        ),
        "raw @ : / ?": (
            f"postgresql://operator:{CANARY}1@{CANARY}2:{CANARY}3/{CANARY}4?{CANARY}5@{here}"
            f"/{CANARY}db"
        ),
        "raw / after %25": f"postgresql://operator:{CANARY}1%25{CANARY}2/{CANARY}3@{here}/{CANARY}db",
        "raw #": f"postgresql://operator:{CANARY}1#{CANARY}2@{here}/{CANARY}db",
        "bad percent escape": f"postgresql://operator:{CANARY}1%zz{CANARY}2@{here}/{CANARY}db",
        "no such database": with_password(server_dsn, f"{CANARY}pw", dbname=f"{CANARY}nodb"),
    }


def test_cli_against_an_unreachable_database_and_nodes(tmp_path: Path, pg_server_dsn: str) -> None:
    closed = free_port()
    here = f"127.0.0.1:{closed}"
    runs: dict[tuple[str, str], subprocess.Popen[str]] = {}
    for index, (shape, db_url) in enumerate(database_shapes(closed, pg_server_dsn).items()):
        # `sync` waits for a database that does not answer at start-up: not for long here.
        path = write_toml(tmp_path / f"c{index}.toml", db_url, rpc_urls(here), electrum_urls(here),
                          extra="max_outage_secs = 1")  # fmt: skip
        for args in (["stats"], ["sync", "--to", "0"]):
            runs[shape, " ".join(args)] = subprocess.Popen(
                [sys.executable, "-m", "indexer", "--config", str(path), *args],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                env=clean_env(),
            )  # fmt: skip
    problems = []
    for (shape, command), proc in runs.items():
        out, err = proc.communicate(timeout=120)
        # Either the connection fails (exit 1) and the error names the database, redacted, or
        # the config refuses a URL libpq would misread (exit 2) and names the key.
        named = re.search(r"error: .*postgresql://\w+:\*\*\*@127\.0\.0\.1:\d+/\*\*\*", err)
        if proc.returncode == errors.EXIT_USAGE:
            named = re.search(r"error: invalid config: database\.url: ", err)
        if CANARY in out + err:
            problems.append(f"{shape} / {command}: leaked\n" + "\n".join(leaked(out + err)))
        elif proc.returncode not in (errors.EXIT_FAILURE, errors.EXIT_USAGE) or not named:
            problems.append(f"{shape} / {command}: exit {proc.returncode}\n{out}{err}")
    assert not problems, "\n\n".join(problems)


@pytest.fixture
def canary_db_url(pg_server_dsn: str, template_db: str) -> Iterator[str]:
    """A fresh migrated database whose name, password (trust auth ignores it) and query hold
    the canary."""
    name = f"indexer_{CANARY}db_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    try:
        yield with_password(pg_server_dsn, f"{CANARY}%2F%40pw", dbname=name,
                            query=f"application_name={CANARY}app")  # fmt: skip
    finally:
        with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_cli_on_a_live_database_with_unreachable_nodes(tmp_path: Path, canary_db_url: str) -> None:
    closed = free_port()
    path = write_toml(tmp_path / "c.toml", canary_db_url, rpc_urls(f"127.0.0.1:{closed}"))
    env = clean_env()
    result = run_cli("--config", str(path), "migrate", env=env)
    assert result.returncode == errors.EXIT_OK, result.stderr
    assert CANARY not in result.stdout + result.stderr
    result = run_cli("--config", str(path), "--log-level", "debug", "sync", "--to", "0", env=env)
    assert result.returncode == errors.EXIT_FAILURE, result.stderr
    assert f"http://127.0.0.1:{closed}/***/***/***?apikey=***&***" in result.stderr
    assert CANARY not in result.stdout + result.stderr
    result = run_cli("--config", str(path), "stats", env=env)
    assert result.returncode == errors.EXIT_OK, result.stderr
    assert "dev (evm): not synced yet" in result.stdout
    assert CANARY not in result.stdout + result.stderr


# -- Config errors and usage errors


def test_config_errors_name_the_key_and_echo_no_value(tmp_path: Path) -> None:
    closed = free_port()
    here = f"127.0.0.1:{closed}"
    good_db = f"postgresql://operator:{CANARY}pw@{here}/{CANARY}db"
    cases = {
        "unknown key": (good_db, rpc_urls(here), "passwrd = 'x'", "database.passwrd: unknown key"),
        "not a postgres URL": (f"mysql://operator:{CANARY}pw@{here}/{CANARY}db", rpc_urls(here),
                               "", "database.url"),
        "pool sizes": (good_db, rpc_urls(here), "pool_min_size = 5\npool_max_size = 2",
                       "pool_min_size"),
        "wrong RPC scheme": (good_db, [f"ftp://{CANARY}u:{CANARY}p@{here}/{CANARY}k?x={CANARY}q"],
                             "", "urls"),
        "bad IPv6 host": (f"postgresql://operator:{CANARY}pw@[::1/{CANARY}db", rpc_urls(here), "",
                          "database.url"),
    }  # fmt: skip
    for name, (db_url, urls, extra, named) in cases.items():
        path = write_toml(tmp_path / "c.toml", db_url, urls, extra=extra)
        with pytest.raises(errors.ConfigError) as info:
            config.load(str(path), {})
        assert CANARY not in str(info.value), name
        result = run_cli("--config", str(path), "stats", env=clean_env())
        assert result.returncode == errors.EXIT_USAGE, (name, result.stderr)
        assert named in result.stderr, (name, result.stderr)
        assert CANARY not in result.stdout + result.stderr, name
    # The database URL from the environment, the same.
    path = write_toml(tmp_path / "c.toml", good_db, rpc_urls(here))
    env = {**clean_env(), "INDEXER_DATABASE_URL": f"mysql://u:{CANARY}pw@{here}/{CANARY}db"}
    result = run_cli("--config", str(path), "stats", env=env)
    assert result.returncode == errors.EXIT_USAGE and "database.url" in result.stderr
    assert CANARY not in result.stdout + result.stderr


def test_usage_errors_echo_no_config_value(tmp_path: Path) -> None:
    closed = free_port()
    here = f"127.0.0.1:{closed}"
    path = write_toml(tmp_path / "c.toml", f"postgresql://operator:{CANARY}pw@{here}/{CANARY}db",
                      rpc_urls(here), electrum_urls(here))  # fmt: skip
    for args in (["sync", "--to", "notanumber"], ["stats", "--chain", "nosuch"],
                 ["repair-gaps", "--from", "5", "--to", "1"], ["nosuchcommand"]):  # fmt: skip
        result = run_cli("--config", str(path), *args, env=clean_env())
        assert result.returncode == errors.EXIT_USAGE, (args, result.stderr)
        assert CANARY not in result.stdout + result.stderr, args


# -- Exception text and object representations (in process)


def canary_config() -> config.Config:
    here = f"127.0.0.1:{free_port()}"
    return config.build(
        {
            "database": {"url": f"postgresql://operator:{CANARY}pw@{here}/{CANARY}db"},
            "chains": [
                {"name": "dev", "kind": "evm", "urls": rpc_urls(here), "chain_id": 31337},
                {"name": "btc", "kind": "electrum", "urls": electrum_urls(here),
                 "genesis_hash": BTC_REGTEST_GENESIS,
                 "tls_fingerprints": {electrum_urls(here)[0]: "00" * 32}},
            ],
        },
        {},
    )  # fmt: skip


def test_config_objects_show_no_url_in_repr() -> None:
    """Fails until config.py marks the URL fields `repr=False` (see the report)."""
    cfg = canary_config()
    for obj in (cfg, cfg.database, cfg.chains[0], cfg.chains[1]):
        assert CANARY not in repr(obj)
        assert CANARY not in str(obj)


def test_pydantic_validation_errors_hold_no_input() -> None:
    """Fails until config.py sets `hide_input_in_errors` (see the report): a model built
    directly (not through `config.build`) raises pydantic's own error, input included."""
    with pytest.raises(pydantic.ValidationError) as info:
        config.DatabaseConfig(url=f"mysql://operator:{CANARY}pw@127.0.0.1/{CANARY}db")
    assert CANARY not in str(info.value)
    with pytest.raises(pydantic.ValidationError) as info:
        config.DatabaseConfig.model_validate(
            {"url": f"postgresql://operator:{CANARY}pw@127.0.0.1/{CANARY}db", "pool_min_size": 0}
        )
    assert CANARY not in str(info.value)


@pytest.fixture
def registered() -> Iterator[None]:
    yield
    redact.register(())


@pytest.mark.usefixtures("registered")
async def test_store_errors_hold_no_password() -> None:
    """Fails until store `_brief` scrubs what psycopg says (see the report): libpq echoes the
    part of the URL it could not parse, and that text ends up in `StoreError`s, which reach
    /health/ready and the metrics as well as stderr."""
    url = f"postgresql://operator:{CANARY}1%zz{CANARY}2@127.0.0.1:{free_port()}/{CANARY}db"
    db = config.DatabaseConfig.model_construct(url=url, connect_timeout_secs=1.0)
    redact.register(redact.secrets_in_url(url))  # as `indexer` does at start-up
    with pytest.raises(errors.StoreError) as info:
        await store.connect(db, purpose="canary")
    assert "postgresql://operator:***@127.0.0.1:" in str(info.value)
    assert CANARY not in str(info.value)


# -- The daemon: /metrics, /health/ready, stats and stderr while it runs


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def start_daemon(path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "indexer", "--config", str(path), "--log-level", "debug", "sync"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=clean_env(),
    )  # fmt: skip


def stop_daemon(proc: subprocess.Popen[str]) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()


def daemon_config(tmp_path: Path, db_url: str, urls: list[str], http_port: int) -> Path:
    dead = f"http://127.0.0.1:{free_port()}/{CANARY}dead?key={CANARY}dq"
    return write_toml(tmp_path / "c.toml", db_url, [*urls, dead],
                      extra=f'[http]\nlisten = "127.0.0.1:{http_port}"\n')  # fmt: skip


def test_metrics_health_stats_and_logs_of_a_running_daemon(
    tmp_path: Path, canary_db_url: str, anvil: Any
) -> None:
    anvil.mine(5)
    port = free_port()
    with FaultProxy(anvil.url) as proxy:  # answers on any path, as providers do
        urls = rpc_urls(proxy.url.removeprefix("http://"))
        path = daemon_config(tmp_path, canary_db_url, urls, port)
        proc = start_daemon(path)
        try:
            wait_for(lambda: checkpoint(canary_db_url) == 5, what="sync", timeout_secs=60)
            wait_for(lambda: http_get(port, "/health/ready")[0] == 200, what="ready")
            status, metrics = http_get(port, "/metrics")
            assert status == 200
            text = metrics.decode()
            proxied = proxy.url.removeprefix("http://")
            assert f'endpoint="http://{proxied}/***/***/***?apikey=***&***"' in text
            assert f'endpoint="http://***@{proxied}/***#***"' in text
            assert CANARY not in text
            _, ready = http_get(port, "/health/ready")
            assert "dev" in orjson.loads(ready)["chains"] and CANARY not in ready.decode()
            for args in (["stats"], ["stats", "--json"]):
                result = run_cli("--config", str(path), *args, env=clean_env())
                assert result.returncode == errors.EXIT_OK, result.stderr
                assert CANARY not in result.stdout + result.stderr
        finally:
            out, err = stop_daemon(proc)
    assert proc.returncode == errors.EXIT_OK, err
    assert "endpoint_unverified" in err  # the dead endpoint was named (redacted)
    assert CANARY not in out + err, leaked(out + err)


def _allow_connections(server_dsn: str, db_url: str, allowed: bool) -> None:
    name = urlsplit(db_url).path.lstrip("/")
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND application_name LIKE 'indexer%%'",
                (name,),
            )


def test_health_during_a_database_outage(
    tmp_path: Path, pg_server_dsn: str, canary_db_url: str, anvil: Any
) -> None:
    """/health/ready says why the database is not ready, and never with its name or URL."""
    anvil.mine(3)
    port = free_port()
    node = anvil.url.removeprefix("http://")  # anvil answers on "/" only: no path key here
    urls = [f"http://{node}/?apikey={CANARY}q", f"http://{CANARY}u:{CANARY}p@{node}/"]
    path = daemon_config(tmp_path, canary_db_url, urls, port)
    proc = start_daemon(path)
    bodies: list[bytes] = []
    try:
        wait_for(lambda: checkpoint(canary_db_url) == 3, what="sync", timeout_secs=60)
        wait_for(lambda: http_get(port, "/health/ready")[0] == 200, what="ready")
        _allow_connections(pg_server_dsn, canary_db_url, False)
        try:
            anvil.mine(2)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                status, body = http_get(port, "/health/ready")
                if status == 503 and orjson.loads(body)["database"]["reason"]:
                    bodies.append(body)
                    if len(bodies) >= 3:
                        break
                time.sleep(0.2)
        finally:
            _allow_connections(pg_server_dsn, canary_db_url, True)
        wait_for(lambda: checkpoint(canary_db_url) == 5, what="resume", timeout_secs=90)
    finally:
        out, err = stop_daemon(proc)
    assert bodies, "the database outage never showed in /health/ready"
    assert CANARY not in out + err, leaked(out + err)
    for body in bodies:
        assert CANARY not in body.decode(), body
