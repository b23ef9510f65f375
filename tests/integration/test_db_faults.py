"""The database as a fault source (RELIABILITY.md E4, E6, E8-E10, F2, F3, I2, J8, J9).

Each fault is injected into a real Postgres under a running sync, and each test waits for a
state (a readiness reason, a checkpoint, a lock holder, a queued lock) with a generous
deadline, never for a time. What must hold:

- what waiting cures (read-only, statement timeout, deadlock, an exhausted pool, a database
  that is down) is waited out: readiness 503 naming the cause, sync resumes by itself, and
  only an outage longer than `max_outage_secs` exits 1;
- a missing privilege halts the chain, naming it, without exiting (no restart loop), and it
  resumes once granted;
- the writer lock is never left lost: a killed session is noticed while idle and the lock
  taken again; while another session holds it nothing is written and readiness says so; a
  checkpoint moved meanwhile is read again; `rewind` is refused while sync holds the chain;
- benign races (two first starts registering chains, two repairers) both succeed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import urllib.error
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg
import pytest

from indexer import daemon as daemon_mod
from indexer import errors
from indexer.config import Config
from indexer.devnet.traffic import fill_blocks
from indexer.http.app import HttpServer
from indexer.runtime import Runtime
from indexer.store import LOCK_NS_CHAIN_TX
from indexer.sync import syncer as syncer_mod
from indexer.sync.progress import Progress
from tests.integration.helpers import (
    checkpoint,
    eventually,
    make_config,
    run_cli,
    running_sync,
    sync_to,
    terminate,
    wait_for,
    write_config,
    writer_lock_pid,
)
from tests.integration.test_gaps import punch
from tests.integration.test_service import (
    NotifySocket,
    daemon,
    free_port,
    http_get,
    with_http,
)
from tests.support.faultproxy import FaultProxy
from tests.support.oracle import assert_equals_node, check_invariants
from tests.support.tcpproxy import TcpProxy

# -- Helpers


def admin(db_url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(db_url, autocommit=True)


def with_database(cfg: Config, **changes: Any) -> Config:
    return cfg.model_copy(update={"database": cfg.database.model_copy(update=changes)})


def via_proxy(db_url: str, proxy: TcpProxy) -> str:
    parts = urlsplit(db_url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))


def set_database(db_url: str, setting: str, value: str | None) -> None:
    """ALTER DATABASE ... SET (or RESET) for sessions that start from now on."""
    dbname = urlsplit(db_url).path.lstrip("/")
    with admin(db_url) as conn:
        conn.execute("SET default_transaction_read_only = off")  # this session, whatever else
        if value is None:
            conn.execute(f'ALTER DATABASE "{dbname}" RESET {setting}')
        else:
            conn.execute(f"ALTER DATABASE \"{dbname}\" SET {setting} = '{value}'")


def end_indexer_sessions(db_url: str) -> None:
    """What a failover or a server restart does: every indexer session ends at once."""
    with admin(db_url) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name LIKE 'indexer%%'"
        )


def waiting_locks(db_url: str, *, advisory_ns: int | None = None) -> int:
    """Lock requests of this database's sessions that wait (optionally: on one namespace)."""
    query = (
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE NOT l.granted AND a.datname = current_database()"
    )
    with admin(db_url) as conn:
        if advisory_ns is None:
            row = conn.execute(query).fetchone()
        else:
            row = conn.execute(
                query + " AND l.locktype = 'advisory' AND l.classid::bigint = %s", (advisory_ns,)
            ).fetchone()
    assert row is not None
    return int(row[0])


def chain_id(db_url: str, name: str = "dev") -> int:
    with admin(db_url) as conn:
        row = conn.execute("SELECT id FROM chains WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def probe(runtime: Runtime) -> HttpServer:
    """/health/ready of the running daemon (the handler's logic, without a socket)."""
    return HttpServer(runtime, listen="127.0.0.1:0", ready_max_lag_blocks=20)


async def readiness_when(server: HttpServer, check: Any, *, what: str, timeout_secs: float = 60
                         ) -> dict[str, Any]:  # fmt: skip
    async def body() -> dict[str, Any] | None:
        found = await server.readiness()
        return found if check(found) else None

    result: dict[str, Any] = await eventually(body, timeout_secs=timeout_secs, what=what)
    return result


def chain_reason(body: dict[str, Any]) -> str:
    return str(body["chains"]["dev"]["reason"] or "")


# -- E9: a read-only database (a failover to a hot standby, default_transaction_read_only)


async def test_read_only_database_is_waited_out_naming_it_then_sync_resumes(
    db_url: str, anvil: Any
) -> None:
    fill_blocks(anvil, 10, txs_per_block=(1, 2), seed=61)
    cfg = make_config(db_url, anvil.url, repair_interval_secs=0)
    async with running_sync(cfg) as (task, runtime):
        await eventually(lambda: checkpoint(db_url) == 10, what="sync to 10")
        server = probe(runtime)
        set_database(db_url, "default_transaction_read_only", "on")
        try:
            end_indexer_sessions(db_url)  # they come back read-only
            anvil.mine(5)
            body = await readiness_when(
                server, lambda b: "read-only" in chain_reason(b), what="read-only reason"
            )
            assert not body["ready"] and "SQLSTATE 25006" in chain_reason(body), body
            assert not task.done(), "a read-only database must be waited out, not exit"
            assert checkpoint(db_url) == 10
        finally:
            set_database(db_url, "default_transaction_read_only", None)
        # Writable again (for new sessions): sync reconnects and resumes by itself.
        await eventually(lambda: checkpoint(db_url) == 15, what="resume after read-only")
        await readiness_when(server, lambda b: b["ready"], what="ready again")
    assert task.result() == errors.EXIT_OK
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url)


async def test_read_only_longer_than_max_outage_exits_1_naming_it(db_url: str, anvil: Any) -> None:
    fill_blocks(anvil, 10, txs_per_block=(1, 2), seed=62)
    cfg = with_database(make_config(db_url, anvil.url, repair_interval_secs=0), max_outage_secs=3)
    async with running_sync(cfg) as (task, runtime):
        await eventually(lambda: checkpoint(db_url) == 10, what="sync to 10")
        set_database(db_url, "default_transaction_read_only", "on")
        try:
            end_indexer_sessions(db_url)
            anvil.mine(3)
            await readiness_when(
                probe(runtime), lambda b: "read-only" in chain_reason(b), what="waiting"
            )
            with pytest.raises(errors.StoreError) as info:
                await asyncio.wait_for(asyncio.shield(task), 60)
        finally:
            set_database(db_url, "default_transaction_read_only", None)
    text = str(info.value)
    assert "database unavailable for" in text and "max_outage_secs 3" in text, text
    assert "read-only" in text, text
    assert checkpoint(db_url) == 10
    check_invariants(db_url, "dev")


# -- 42501: a missing privilege needs an operator: halt the chain, do not exit


@pytest.fixture
def limited_url(db_url: str) -> Iterator[str]:
    """`db_url` as a role that may only read and write rows (no superuser to bypass grants)."""
    role = f"indexer_limited_{uuid.uuid4().hex[:8]}"
    with admin(db_url) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(
            f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"'
        )
        conn.execute(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
    parts = urlsplit(db_url)
    host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    try:
        yield urlunsplit(parts._replace(netloc=f"{role}@{host}"))
    finally:
        with admin(db_url) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


def rollbacks(db_url: str) -> int:
    with admin(db_url) as conn:
        row = conn.execute(
            "SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_permission_denied_halts_the_chain_without_exiting_until_granted(
    db_url: str, limited_url: str, anvil: Any, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(syncer_mod, "DENIED_RECHECK_SECS", 0.3, raising=False)
    caplog.set_level(logging.INFO)
    fill_blocks(anvil, 10, txs_per_block=(1, 2), seed=63)
    role = urlsplit(limited_url).username
    cfg = make_config(limited_url, anvil.url, repair_interval_secs=0)
    async with running_sync(cfg) as (task, runtime):
        await eventually(lambda: checkpoint(db_url) == 10, what="sync to 10 as the role")
        server = probe(runtime)
        with admin(db_url) as conn:
            conn.execute(f'REVOKE INSERT ON blocks FROM "{role}"')
        anvil.mine(3)
        body = await readiness_when(
            server, lambda b: chain_reason(b).startswith("halted: "), what="halted"
        )
        reason = chain_reason(body)
        assert "permission denied" in reason and "SQLSTATE 42501" in reason, reason
        # It keeps trying (slowly), and neither exits nor logs the cause every time.
        seen = rollbacks(db_url)
        await eventually(lambda: rollbacks(db_url) >= seen + 3, what="writes tried again")
        assert not task.done(), "a missing privilege must halt the chain, not end the process"
        halted = [r for r in caplog.records if getattr(r, "action", None) == "halted"]
        assert len(halted) == 1 and "permission denied" in halted[0].getMessage(), halted
        assert checkpoint(db_url) == 10
        with admin(db_url) as conn:
            conn.execute(f'GRANT INSERT ON blocks TO "{role}"')
        await eventually(lambda: checkpoint(db_url) == 13, what="resume after the grant")
        await readiness_when(server, lambda b: b["ready"], what="ready again")
        assert any(getattr(r, "action", None) == "resumed" for r in caplog.records)
    assert task.result() == errors.EXIT_OK
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url)


# -- E6, E8, E10: faults that leave the session alive are retried on it (lock kept)


async def test_statement_timeout_is_waited_out_on_the_same_session(db_url: str, anvil: Any) -> None:
    fill_blocks(anvil, 10, txs_per_block=(1, 2), seed=64)
    set_database(db_url, "statement_timeout", "500ms")
    try:
        cfg = make_config(db_url, anvil.url, repair_interval_secs=0)
        async with running_sync(cfg) as (task, runtime):
            await eventually(lambda: checkpoint(db_url) == 10, what="sync to 10")
            server = probe(runtime)
            writer = writer_lock_pid(db_url)
            # Hold the checkpoint row: the next batch's checkpoint update waits, and times out.
            with psycopg.connect(db_url) as hold:
                hold.execute("SET statement_timeout = 0")
                hold.execute("SELECT 1 FROM checkpoints FOR UPDATE")
                anvil.mine(3)
                body = await readiness_when(
                    server, lambda b: "statement_timeout" in chain_reason(b), what="timeouts"
                )
                assert "SQLSTATE 57014" in chain_reason(body) and not body["ready"], body
                assert checkpoint(db_url) == 10 and not task.done()
                hold.rollback()
            await eventually(lambda: checkpoint(db_url) == 13, what="written after the lock")
            await readiness_when(server, lambda b: b["ready"], what="ready again")
            assert writer_lock_pid(db_url) == writer, "a timeout must not cost the writer lock"
        assert task.result() == errors.EXIT_OK
    finally:
        set_database(db_url, "statement_timeout", None)
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url)


async def test_deadlock_is_retried_whole_on_the_same_session(
    db_url: str, anvil: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    fill_blocks(anvil, 10, txs_per_block=(1, 2), seed=65)
    cfg = make_config(db_url, anvil.url, repair_interval_secs=0)
    async with running_sync(cfg) as (task, _runtime):
        await eventually(lambda: checkpoint(db_url) == 10, what="sync to 10")
        writer = writer_lock_pid(db_url)
        assert writer is not None
        chain = chain_id(db_url)
        # A second writer that takes the same two locks the other way round. It waits far
        # longer before looking for deadlocks, so the sync's transaction is the victim.
        with psycopg.connect(db_url) as other:
            other.execute("SET deadlock_timeout = '60s'")
            other.execute("SELECT 1 FROM checkpoints WHERE chain = %s FOR UPDATE", (chain,))
            anvil.mine(3)
            # The sync's batch holds the chain's write lock and waits for the checkpoint row.
            await eventually(
                lambda: waiting_locks(db_url) >= 1, what="the batch waiting for the row"
            )
            await asyncio.to_thread(
                other.execute, "SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_NS_CHAIN_TX, chain)
            )  # returns once the sync's transaction was rolled back as the deadlock's victim
            other.rollback()
        await eventually(lambda: checkpoint(db_url) == 13, what="the batch retried whole")
        assert writer_lock_pid(db_url) == writer, "a deadlock must not cost the writer lock"
        retried = [r.getMessage() for r in caplog.records if r.name == "indexer.sync.syncer"]
        assert any("deadlock detected" in m and "SQLSTATE 40P01" in m for m in retried), retried
        assert not task.done()
    assert task.result() == errors.EXIT_OK
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url)


async def test_exhausted_pool_does_not_stop_sync(db_url: str, anvil: Any) -> None:
    fill_blocks(anvil, 10, txs_per_block=(1, 2), seed=66)
    cfg = with_database(make_config(db_url, anvil.url, repair_interval_secs=0),
                        pool_min_size=1, pool_max_size=1)  # fmt: skip
    async with running_sync(cfg) as (task, runtime):
        await eventually(lambda: checkpoint(db_url) == 10, what="sync to 10")
        server = probe(runtime)
        await readiness_when(server, lambda b: b["ready"], what="ready")
        writer = writer_lock_pid(db_url)
        async with runtime.store.connection("hold the only pooled connection"):
            anvil.mine(5)
            # The sync path needs no pooled connection: it goes on.
            await eventually(lambda: checkpoint(db_url) == 15, timeout_secs=30,
                             what="sync while the pool is exhausted")  # fmt: skip
            body = await server.readiness()
            assert not body["ready"], body
            assert "no database connection available" in body["database"]["reason"], body
        await readiness_when(server, lambda b: b["ready"], what="ready again")
        assert writer_lock_pid(db_url) == writer
        assert not task.done()
    assert task.result() == errors.EXIT_OK
    check_invariants(db_url, "dev")


# -- E4: the database down at start-up: no READY=1 until it answers


def test_database_down_at_start_is_waited_for_before_ready(
    db_url: str, anvil: Any, tmp_path: Path
) -> None:
    fill_blocks(anvil, 10, txs_per_block=(1, 2), seed=67)
    parts = urlsplit(db_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)  # not listening yet
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        config = write_config(tmp_path / "c.toml", via_proxy(db_url, proxy), anvil.url)
        with daemon(config, notify) as proc:
            notify.wait_for("STATUS=waiting for the database", timeout_secs=60)
            assert proc.poll() is None, "a database down at start-up is waited for"
            assert not any("READY=1" in m for _, m in notify.drain())
            proxy.start()
            notify.wait_for("READY=1", timeout_secs=60)
            wait_for(lambda: checkpoint(db_url) == 10, what="sync once it answers")
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            assert proc.returncode == errors.EXIT_OK
    finally:
        notify.close()
        proxy.close()
    check_invariants(db_url, "dev")


def test_database_down_at_start_longer_than_allowed_exits_1_never_ready(
    db_url: str, anvil: Any, tmp_path: Path
) -> None:
    parts = urlsplit(db_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)  # never listening
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        config = write_config(tmp_path / "c.toml", via_proxy(db_url, proxy), anvil.url)
        text = config.read_text().replace("[[chains]]", "max_outage_secs = 2.0\n[[chains]]", 1)
        config.write_text(text)
        with daemon(config, notify) as proc:
            _, stderr = proc.communicate(timeout=60)
            assert proc.returncode == errors.EXIT_FAILURE, stderr
        assert not any("READY=1" in m for _, m in notify.drain())
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("error: start-up: database unavailable for"), stderr
        assert "max_outage_secs 2" in last and "Traceback" not in stderr, stderr
    finally:
        notify.close()
        proxy.close()


# -- F2, J9, F3: the writer lock's session ends


def readiness_of(port: int) -> tuple[int, dict[str, Any]] | None:
    """A daemon's /health/ready (None while it does not listen yet)."""
    try:
        status, raw = http_get(port, "/health/ready")
    except urllib.error.URLError:
        return None
    return status, orjson.loads(raw)


def ready(port: int) -> dict[str, Any] | None:
    found = readiness_of(port)
    return found[1] if found is not None and found[0] == 200 else None


def test_writer_session_killed_while_idle_is_noticed_and_rewind_refused(
    db_url: str, anvil: Any, tmp_path: Path
) -> None:
    fill_blocks(anvil, 10, txs_per_block=(1, 2), seed=68)
    port = free_port()
    config = with_http(write_config(tmp_path / "c.toml", db_url, anvil.url), port)
    with daemon(config) as proc:
        wait_for(lambda: checkpoint(db_url) == 10, what="sync")
        wait_for(lambda: ready(port), what="ready")
        first = writer_lock_pid(db_url)
        assert first is not None
        terminate(db_url, first)  # idle at the head: nothing else would notice
        wait_for(lambda: writer_lock_pid(db_url) not in (None, first), timeout_secs=20,
                 what="the lock taken again by a new session")  # fmt: skip
        wait_for(lambda: ready(port), what="ready again")
        rewound = run_cli("--config", str(config), "rewind", "--chain", "dev", "--to", "5",
                          "--yes")  # fmt: skip
        assert rewound.returncode == errors.EXIT_FAILURE, rewound.stderr
        assert "another indexer instance is syncing this chain" in rewound.stderr
        assert checkpoint(db_url) == 10
        anvil.mine(3)
        wait_for(lambda: checkpoint(db_url) == 13, what="sync goes on")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert proc.returncode == errors.EXIT_OK
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url)


def test_checkpoint_moved_while_the_lock_was_lost_is_read_again(
    db_url: str, anvil: Any, tmp_path: Path
) -> None:
    fill_blocks(anvil, 20, txs_per_block=(1, 2), seed=69)
    port = free_port()
    config = with_http(write_config(tmp_path / "c.toml", db_url, anvil.url), port)
    with daemon(config) as proc:
        wait_for(lambda: checkpoint(db_url) == 20, what="sync")
        proc.send_signal(signal.SIGSTOP)  # frozen (a pause, a partition): it notices nothing
        try:
            pid = writer_lock_pid(db_url)
            assert pid is not None
            terminate(db_url, pid)
            wait_for(lambda: writer_lock_pid(db_url) is None, what="the lock released")
            rewound = run_cli("--config", str(config), "rewind", "--chain", "dev", "--to",
                              "12", "--yes")  # fmt: skip
            assert rewound.returncode == errors.EXIT_OK, rewound.stderr
            assert checkpoint(db_url) == 12
        finally:
            proc.send_signal(signal.SIGCONT)
        # No new block: only a sync that read the checkpoint again writes 13..20 again.
        wait_for(lambda: checkpoint(db_url) == 20, timeout_secs=30, what="13..20 synced again")
        body = wait_for_value(lambda: ready(port), what="ready")
        assert body["chains"]["dev"]["tip"] == 20
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert proc.returncode == errors.EXIT_OK
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url)


def wait_for_value(predicate: Any, *, timeout_secs: float = 60, what: str) -> Any:
    """`wait_for`, returning the predicate's truthy value."""
    found: list[Any] = [None]

    def check() -> bool:
        found[0] = predicate()
        return bool(found[0])

    wait_for(check, timeout_secs=timeout_secs, what=what)
    return found[0]


def test_second_instance_takes_over_and_the_first_stands_by(
    db_url: str, anvil: Any, tmp_path: Path
) -> None:
    fill_blocks(anvil, 20, txs_per_block=(1, 2), seed=70)
    port_a, port_b = free_port(), free_port()
    config_a = with_http(write_config(tmp_path / "a.toml", db_url, anvil.url), port_a)
    config_b = with_http(write_config(tmp_path / "b.toml", db_url, anvil.url), port_b)
    with daemon(config_a) as first:
        wait_for(lambda: checkpoint(db_url) == 20, what="the first instance syncs")
        first.send_signal(signal.SIGSTOP)  # the first "dies" for the database
        try:
            pid = writer_lock_pid(db_url)
            assert pid is not None
            terminate(db_url, pid)
            wait_for(lambda: writer_lock_pid(db_url) is None, what="the lock released")
            with daemon(config_b) as second:
                wait_for(lambda: ready(port_b), what="the second instance takes over")
                anvil.mine(5)
                wait_for(lambda: checkpoint(db_url) == 25, what="the second one writes")
                first.send_signal(signal.SIGCONT)
                # The first comes back: it must see it lost the chain, write nothing, say so.
                body = wait_for_value(
                    lambda: _unready_because(port_a, "another session"), timeout_secs=30,
                    what="the first instance standing by",
                )  # fmt: skip
                assert "writer lock not held" in body["chains"]["dev"]["reason"], body
                anvil.mine(5)
                wait_for(lambda: checkpoint(db_url) == 30, what="the second one goes on")
                assert _unready_because(port_a, "another session"), "still standing by"
                assert first.poll() is None, "standing by, not exiting (no restart loop)"
                second.send_signal(signal.SIGTERM)
                second.wait(timeout=30)
                assert second.returncode == errors.EXIT_OK
        finally:
            first.send_signal(signal.SIGCONT)
        # The second is gone: the first takes the chain back and goes on.
        wait_for(lambda: ready(port_a), timeout_secs=30, what="the first takes over again")
        anvil.mine(5)
        wait_for(lambda: checkpoint(db_url) == 35, what="the first one writes again")
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
        assert first.returncode == errors.EXIT_OK
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url)


def _unready_because(port: int, words: str) -> dict[str, Any] | None:
    found = readiness_of(port)
    if found is None or found[0] != 503:
        return None
    return found[1] if words in str(found[1]["chains"]["dev"]["reason"] or "") else None


# -- J8: benign races


async def test_first_starts_of_two_chains_register_at_once(db_url: str, anvil: Any) -> None:
    anvil.mine(5)
    cfgs = [make_config(db_url, anvil.url, name=name, repair_interval_secs=0)
            for name in ("one", "two")]  # fmt: skip
    # Hold the registrations back until both are queued, so they really run at once.
    with psycopg.connect(db_url) as hold:
        hold.execute("LOCK TABLE chains IN SHARE MODE")
        runs = [asyncio.create_task(sync_to(cfg, 5)) for cfg in cfgs]
        await eventually(lambda: waiting_locks(db_url) >= 2 or any(r.done() for r in runs),
                         what="both registrations queued")  # fmt: skip
        hold.rollback()
    assert await asyncio.gather(*runs) == [errors.EXIT_OK, errors.EXIT_OK]
    ids = {chain_id(db_url, "one"), chain_id(db_url, "two")}
    assert len(ids) == 2
    for name in ("one", "two"):
        assert check_invariants(db_url, name) == 5
        assert_equals_node(db_url, name, anvil.url)


def gap_rows(db_url: str) -> list[tuple[int, int]]:
    with admin(db_url) as conn:
        return [(int(a), int(b)) for a, b in conn.execute("SELECT gap_start, gap_end FROM gaps")]


@pytest.mark.parametrize("first", ["cli", "daemon"])
async def test_two_repairers_at_once_both_succeed(
    db_url: str, anvil: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, first: str
) -> None:
    caplog.set_level(logging.WARNING)
    fill_blocks(anvil, 60, txs_per_block=(1, 2), seed=71)
    cfg = make_config(db_url, anvil.url, repair_interval_secs=0)
    assert await sync_to(cfg, 60) == errors.EXIT_OK
    punch(db_url, list(range(20, 30)))
    path = write_config(tmp_path / "c.toml", db_url, anvil.url)
    chain = chain_id(db_url)
    stop = asyncio.Event()
    # Hold the chain's write lock until both repairers have fetched the range and queue to
    # write it: whoever comes second finds it written.
    with psycopg.connect(db_url) as hold:
        hold.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_NS_CHAIN_TX, chain))
        cli = asyncio.create_task(asyncio.to_thread(run_cli, "--config", str(path), "repair-gaps"))
        other: asyncio.Task[Any]
        if first == "cli":
            other = asyncio.create_task(
                asyncio.to_thread(run_cli, "--config", str(path), "repair-gaps")
            )
        else:
            other = asyncio.create_task(running_sync_until(cfg, stop))
        await eventually(
            lambda: waiting_locks(db_url, advisory_ns=LOCK_NS_CHAIN_TX) >= 2
            or cli.done() or other.done(),
            what="both repairers queued to write",
        )  # fmt: skip
        hold.rollback()
    result = await cli
    assert result.returncode == errors.EXIT_OK, result.stdout + result.stderr
    assert "dev: no gaps" in result.stdout
    if first == "cli":
        again = await other
        assert again.returncode == errors.EXIT_OK, again.stdout + again.stderr
    else:
        await eventually(lambda: gap_rows(db_url) == [], what="no gaps")
        stop.set()
        assert await other == errors.EXIT_OK
        failed = [r.getMessage() for r in caplog.records if "gap repair failed" in r.getMessage()]
        assert failed == []
    assert gap_rows(db_url) == []
    assert check_invariants(db_url, "dev") == 60
    assert_equals_node(db_url, "dev", anvil.url)


async def running_sync_until(cfg: Config, stop: asyncio.Event) -> int:
    return await daemon_mod.run_sync(cfg, stop=stop, progress=Progress(tty=False))


# -- I2: backpressure during a long outage


async def test_long_outage_fetches_nothing_more_and_nothing_twice(db_url: str, anvil: Any) -> None:
    anvil.mine(300)
    batch_size, depth = 5, 2
    parts = urlsplit(db_url)
    with (
        TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as db_proxy,
        FaultProxy(anvil.url) as node,
    ):
        cfg = make_config(via_proxy(db_url, db_proxy), node.url, batch_size=batch_size,
                          prefetch_batches=depth, repair_interval_secs=0)  # fmt: skip
        async with running_sync(cfg) as (task, runtime):
            syncer = runtime.chains[0].syncer
            fetched: list[int] = []
            blocks = syncer.source.blocks

            async def recording(start: int, count: int) -> Any:
                fetched.append(start)
                return await blocks(start, count)

            syncer.source.blocks = recording  # type: ignore[method-assign]
            await eventually(lambda: (checkpoint(db_url) or 0) >= 50, what="backfill under way")
            db_proxy.cut()
            await eventually(lambda: syncer._backoff.failures >= 1, what="the outage seen")
            before = len(fetched)
            # Several rounds of backoff (0.5 + 1 + 2 + 4 s) with the database still away.
            await eventually(lambda: syncer._backoff.failures >= 5, timeout_secs=60,
                             what="a long outage")  # fmt: skip
            during = fetched[before:]
            assert len(during) <= depth, f"fetched during the outage: {during}"
            db_proxy.start()
            await eventually(lambda: checkpoint(db_url) == 300, timeout_secs=120,
                             what="caught up after the outage")  # fmt: skip
            assert not task.done()
        assert task.result() == errors.EXIT_OK
    # What was in hand and in flight when the database went away was written after it, not
    # fetched again.
    twice = sorted({s for s in fetched if fetched.count(s) > 1})
    assert twice == [], f"batches fetched twice: {twice}"
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url)
