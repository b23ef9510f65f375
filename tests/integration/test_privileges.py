"""Least privilege (config/roles.sql): migrations as the owner, sync as a runtime role that
can change rows but no schema.

config/roles.sql is applied with the real `psql` (Debian: postgresql-client), exactly as the
operator runs it. Roles are cluster-wide and tests may share the server, so each test names
its roles with a unique suffix and drops them afterwards. Each role gets a random password,
so the test works on a server that asks for one as well as with trust authentication.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from indexer.devnet.traffic import fill_blocks
from tests.integration.helpers import REPO, checkpoint, run_cli
from tests.support.oracle import assert_equals_node, check_invariants

ROLES_SQL = REPO / "config" / "roles.sql"


@dataclass(frozen=True)
class Roles:
    owner: str
    runtime: str
    admin_url: str  # superuser, in the test database
    owner_url: str
    runtime_url: str


def _as_user(dsn: str, user: str, password: str) -> str:
    parts = urlsplit(dsn)
    host = parts.hostname or "127.0.0.1"
    assert host in ("127.0.0.1", "localhost", "::1"), "tests only talk to a loopback server"
    netloc = f"{quote(user)}:{quote(password)}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def apply_roles_sql(server_dsn: str, *, dbname: str, owner: str, runtime: str) -> None:
    psql = shutil.which("psql")
    if psql is None:
        pytest.fail("psql is required (Debian/Ubuntu: apt-get install postgresql-client)")
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
    password = urlsplit(server_dsn).password
    if password:
        env["PGPASSWORD"] = password  # for psql's \connect to the target database
    result = subprocess.run(
        [psql, "-X", "-q", "-v", f"dbname={dbname}", "-v", f"owner={owner}",
         "-v", f"runtime={runtime}", "-f", str(ROLES_SQL), server_dsn],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.fixture
def roles(pg_server_dsn: str, empty_db_url: str) -> Iterator[Roles]:
    suffix = uuid.uuid4().hex[:10]
    owner, runtime = f"indexer_owner_{suffix}", f"indexer_rw_{suffix}"
    dbname = urlsplit(empty_db_url).path.lstrip("/")
    passwords = {owner: secrets.token_hex(16), runtime: secrets.token_hex(16)}
    try:
        apply_roles_sql(pg_server_dsn, dbname=dbname, owner=owner, runtime=runtime)
        with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
            for role, password in passwords.items():
                conn.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        sql.Identifier(role), sql.Literal(password)
                    )
                )
        yield Roles(
            owner=owner,
            runtime=runtime,
            admin_url=empty_db_url,
            owner_url=_as_user(empty_db_url, owner, passwords[owner]),
            runtime_url=_as_user(empty_db_url, runtime, passwords[runtime]),
        )
    finally:
        # The database goes first (with every object, grant and default privilege in it);
        # then nothing depends on the roles any more.
        with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(dbname)))  # fmt: skip
            for role in (runtime, owner):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _service_files(tmp_path: Path, *, runtime_url: str, node_url: str) -> tuple[Path, Path]:
    """The config and credential directory as systemd/README.md sets them up."""
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / "database-url").write_text(runtime_url + "\n")
    config = tmp_path / "indexer.toml"
    config.write_text(
        "# no [database] section: the URL is the `database-url` credential\n"
        "[[chains]]\n"
        'name = "dev"\n'
        'kind = "evm"\n'
        f'urls = ["{node_url}"]\n'
        "chain_id = 31337\n"
        "poll_interval_secs = 0.2\n"
    )
    return config, credentials


# Each must fail with InsufficientPrivilege (42501) for the runtime role.
FORBIDDEN = (
    "CREATE TABLE evil (x int)",
    "CREATE TEMPORARY TABLE evil (x int)",
    "CREATE SCHEMA evil",
    "CREATE VIEW evil AS SELECT 1",
    "CREATE FUNCTION evil() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "DROP TABLE blocks",
    "DROP VIEW gaps",
    "TRUNCATE blocks",
    "TRUNCATE block_ranges",
    "ALTER TABLE blocks ADD COLUMN evil int",
    "ALTER TABLE blocks DISABLE TRIGGER ALL",
    "DROP TRIGGER blocks_ranges_insert ON blocks",
    "CREATE INDEX ON blocks (hash)",
    "ALTER TABLE checkpoints OWNER TO CURRENT_USER",
)


def _sqlstates(url: str, statements: tuple[str, ...]) -> dict[str, str | None]:
    """Run each statement in its own transaction; return its SQLSTATE (None: it worked)."""
    states: dict[str, str | None] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            try:
                conn.execute(statement)  # fixed strings above, not input
            except psycopg.Error as exc:
                states[statement] = exc.sqlstate
            else:
                states[statement] = None
    return states


def _owners(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
        ).fetchall()
        rows += conn.execute(
            "SELECT DISTINCT pg_get_userbyid(p.proowner) FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'"
        ).fetchall()
    return {str(row[0]) for row in rows}


def test_owner_migrates_runtime_syncs_and_cannot_change_the_schema(
    roles: Roles, anvil: Any, tmp_path: Path
) -> None:
    config, credentials = _service_files(tmp_path, runtime_url=roles.runtime_url,
                                         node_url=anvil.url)  # fmt: skip
    service_env = {"CREDENTIALS_DIRECTORY": str(credentials)}

    # The runtime role cannot create the schema: a fresh database needs the owner first.
    failed = run_cli("--config", str(config), "migrate", env=service_env)
    assert failed.returncode == 1, failed.stderr
    assert "permission denied" in failed.stderr, failed.stderr
    assert str(urlsplit(roles.runtime_url).password) not in failed.stderr

    # The operator's install and upgrade step: migrate as the owner (INDEXER_DATABASE_URL
    # wins over the credential).
    migrated = run_cli("--config", str(config), "migrate",
                       env={**service_env, "INDEXER_DATABASE_URL": roles.owner_url})  # fmt: skip
    assert migrated.returncode == 0, migrated.stderr
    assert _owners(roles.admin_url) == {roles.owner}

    # The daemon's work as the runtime role, on tables it may use only through the default
    # privileges: sync (COPY, triggers on blocks maintaining block_ranges, checkpoint CAS) ...
    fill_blocks(anvil, 20, txs_per_block=(1, 3), seed=7)
    synced = run_cli("--config", str(config), "sync", "--to", "20", env=service_env)
    assert synced.returncode == 0, synced.stderr
    assert check_invariants(roles.admin_url, "dev") == 20
    assert_equals_node(roles.admin_url, "dev", anvil.url)
    # ... and an operator's rewind (DELETE through the triggers, reorgs identity column).
    rewound = run_cli("--config", str(config), "rewind", "--chain", "dev", "--to", "15", "--yes",
                      env=service_env)  # fmt: skip
    assert rewound.returncode == 0, rewound.stderr
    assert checkpoint(roles.admin_url) == 15
    assert check_invariants(roles.admin_url, "dev") == 15
    # Neither left anything owned by the runtime role behind.
    assert _owners(roles.admin_url) == {roles.owner}

    # roles.sql is idempotent: re-running it after migrations grants nothing more.
    apply_roles_sql(roles.admin_url, dbname=urlsplit(roles.admin_url).path.lstrip("/"),
                    owner=roles.owner, runtime=roles.runtime)  # fmt: skip
    states = _sqlstates(roles.runtime_url, FORBIDDEN)
    assert states == dict.fromkeys(FORBIDDEN, "42501")  # insufficient_privilege
    # The runtime role still reads and writes rows (a no-op update through the trigger).
    assert _sqlstates(roles.runtime_url, ("UPDATE blocks SET tx_count = tx_count",)) == {
        "UPDATE blocks SET tx_count = tx_count": None
    }


def test_runtime_role_is_denied_with_insufficient_privilege(roles: Roles) -> None:
    """The typed error the daemon sees, and roles that carry no special attributes."""
    with psycopg.connect(roles.runtime_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE evil (x int)")
    with psycopg.connect(roles.admin_url) as conn:
        rows = conn.execute(
            "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls "
            "FROM pg_roles WHERE rolname = ANY(%s) ORDER BY rolname",
            ([roles.owner, roles.runtime],),
        ).fetchall()
        public_create = conn.execute(
            "SELECT has_schema_privilege('public', 'public', 'CREATE'),"
            " has_database_privilege('public', current_database(), 'TEMPORARY')"
        ).fetchone()
    assert rows == [(roles.owner, False, False, False, False, False),
                    (roles.runtime, False, False, False, False, False)]  # fmt: skip
    assert public_create == (False, False)
