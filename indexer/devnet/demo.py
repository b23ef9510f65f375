"""`make demo`: a local EVM devnet with live traffic, indexed into Postgres. No setup needed.

1. Postgres: $INDEXER_DATABASE_URL if set, else an embedded server (pgserver) in .demo/pgdata.
   Each run starts a new chain, so the embedded demo database is recreated empty each time,
   and a database from $INDEXER_DATABASE_URL must not already hold the demo chain.
2. anvil on a free loopback port, mining on demand; `fill_blocks` pre-mines some history so
   that the backfill is visible.
3. anvil switches to interval mining (a block every second), and a traffic thread keeps
   sending transactions.
4. .demo/indexer.toml is written (with two event tables of the devnet's contracts),
   `python -m indexer --config .demo/indexer.toml migrate` makes the schema and the event
   tables, and `... sync` runs with the terminal's stdout and stderr, so its progress shows.
5. SIGINT (Ctrl-C), SIGTERM or SIGHUP, or the indexer exiting on its own, stops everything in
   reverse order: the indexer (the signal is forwarded, then it is waited for), the traffic,
   anvil, the embedded Postgres. A stop by signal exits 0, unless the indexer failed while
   stopping; otherwise the demo exits with the indexer's code.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from indexer import config, redact
from indexer.devnet import anvil, traffic

logger = logging.getLogger(__name__)

DEMO_DIR = anvil.REPO_ROOT / ".demo"
CHAIN_NAME = "devnet"
INDEXER_GRACE_SECS = 60.0
# Exit codes of an indexer that stopped because we forwarded it a signal.
_STOPPED_CODES = {0, 130, 143, -signal.SIGINT, -signal.SIGTERM}

EXAMPLE_QUERIES = (
    "SELECT number, encode(hash, 'hex') AS hash, tx_count, timestamp\n"
    "  FROM blocks ORDER BY number DESC LIMIT 5;",
    "SELECT encode(address, 'hex') AS contract, count(*) AS logs\n"
    "  FROM logs GROUP BY address ORDER BY logs DESC LIMIT 5;",
    'SELECT "table", synced_to, rows, undecodable FROM event_tables;',
    "SELECT block_number, encode(a, 'hex') AS a, encode(b, 'hex') AS b\n"
    "  FROM pairs ORDER BY block_number DESC LIMIT 5;",
)


# -- The indexer


def indexer_command(config_path: Path, command: str = "sync") -> list[str]:
    """Return the command that runs the indexer on `config_path`."""
    return [sys.executable, "-m", "indexer", "--config", str(config_path), command]


def run_indexer(
    command: Sequence[str], signals: StopSignals, *, grace_secs: float = INDEXER_GRACE_SECS
) -> tuple[int, bool]:
    """Run `command` until it exits, forwarding stop signals; return (exit code, stopped).

    The indexer gets a session of its own, so a Ctrl-C reaches it once, from us, and only
    after we decided to stop; it still writes to our terminal. After the first forwarded
    signal it has `grace_secs` to exit before it is killed.
    """
    signals.raise_during_setup = False
    proc = subprocess.Popen(
        command, cwd=anvil.REPO_ROOT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    logger.info("indexer started (pid %d)", proc.pid, extra={"action": "indexer_start"})
    deadline: float | None = None
    while True:
        try:
            code = proc.wait(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            pass
        for signum in signals.take():
            forward = signal.SIGTERM if signum == signal.SIGHUP else signum
            logger.info("stopping the indexer (%s)", signal.Signals(forward).name)
            proc.send_signal(forward)
            if deadline is None:
                deadline = time.monotonic() + grace_secs
        if deadline is not None and time.monotonic() > deadline:
            logger.warning("indexer still running %.0f s after the signal: killing it", grace_secs)
            proc.kill()
            code = proc.wait()
            break
    logger.info("indexer exited with code %d", code, extra={"action": "indexer_exit"})
    return code, deadline is not None


class StopSignals:
    """Turn SIGINT, SIGTERM and SIGHUP into pending stop requests.

    Until the indexer runs (`raise_during_setup`), the first signal raises KeyboardInterrupt
    so that setup unwinds through its exit stack; later ones only queue, so that cleanup
    itself is never interrupted.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.raise_during_setup = True
        self._pending: list[int] = []

    def install(self) -> None:
        for signum in self.SIGNALS:
            signal.signal(signum, self._handle)

    def request(self, signum: int) -> None:
        """Queue a stop request, as if `signum` had been received."""
        self._pending.append(signum)

    def take(self) -> list[int]:
        """Return the stop requests queued since the last call."""
        taken, self._pending = self._pending, []
        return taken

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.request(signum)
        if self.raise_during_setup:
            self.raise_during_setup = False
            raise KeyboardInterrupt


# -- Postgres


class EmbeddedPostgres:
    """A Postgres server from pgserver's bundled binaries, with its data in `pgdata`.

    As root, pgserver runs postgres as a system user `pgserver` (it creates it with useradd),
    chowns `pgdata` to it and opens read/traverse permissions on the path's parents and on its
    own binaries. The server listens on a Unix socket in `pgdata` only, no TCP. We stop it with
    `pg_ctl stop -m fast` ourselves: pgserver's exit handler skips the stop whenever another
    pid is left in its handle list (as after a demo that was killed).
    """

    def __init__(self, pgdata: Path, *, database: str = "indexer") -> None:
        self.pgdata = pgdata
        self.database = database
        self._system_user: str | None = None
        self._bin_dir: Path | None = None

    def start(self) -> str:
        """Start (or reuse) the server and (re)create an empty database; return its URL."""
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (as for root).
            warnings.simplefilter("ignore")
            from pgserver._commands import POSTGRES_BIN_PATH
            from pgserver.postgres_server import get_server

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        logger.info("starting embedded Postgres in %s", self.pgdata, extra={"action": "pg_start"})
        server = get_server(self.pgdata, cleanup_mode=None)
        self._system_user = server.system_user
        self._bin_dir = POSTGRES_BIN_PATH
        # Every run indexes a brand-new anvil chain, so the previous run's blocks would not
        # link to it: start from an empty database.
        database = sql.Identifier(self.database)
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(database))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(database))
        return server.get_uri(database=self.database)

    @property
    def psql(self) -> Path | None:
        return None if self._bin_dir is None else self._bin_dir / "psql"

    def stop(self) -> None:
        if self._bin_dir is None:
            return
        result = subprocess.run(
            [str(self._bin_dir / "pg_ctl"), "-D", str(self.pgdata), "-w", "-m", "fast", "stop"],
            user=self._system_user,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            logger.warning("pg_ctl stop failed: %s", result.stderr.strip())
        else:
            logger.info("embedded Postgres stopped", extra={"action": "pg_stop"})
        self._bin_dir = None


class DemoError(anvil.DevnetError):
    """The demo cannot run."""


def _refuse_previous_demo(url: str) -> None:
    """Raise `DemoError` if the database at `url` already holds our chain.

    It would be the chain of an earlier run's anvil, which is gone: the indexer would halt
    on the first block of the new chain, which does not link to the stored tip. We do not
    delete data from a database we do not own.
    """
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            if conn.execute("SELECT to_regclass('chains')").fetchone() in (None, (None,)):
                return
            row = conn.execute("SELECT 1 FROM chains WHERE name = %s", (CHAIN_NAME,)).fetchone()
    except psycopg.Error as exc:
        # libpq's messages name the host and the problem, never the password.
        raise DemoError(f"cannot use ${config.ENV_DATABASE_URL}: {exc}") from exc
    if row is not None:
        raise DemoError(
            f"the database at ${config.ENV_DATABASE_URL} already holds chain {CHAIN_NAME!r} "
            "from an earlier demo; every demo starts a new chain, so point "
            f"${config.ENV_DATABASE_URL} at an empty database (or unset it to use an "
            "embedded one)"
        )


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path`; raise `DemoError` if another demo holds it."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DemoError(
                f"another demo is running with {lock_path.parent} (it holds {lock_path})"
            ) from None
        yield


@contextlib.contextmanager
def postgres(pgdata: Path, env: Mapping[str, str]) -> Iterator[tuple[str, Path | None]]:
    """Yield (database URL, psql path or None): $INDEXER_DATABASE_URL, or an embedded server."""
    url = env.get(config.ENV_DATABASE_URL)
    if url:
        logger.info("using the Postgres at $%s", config.ENV_DATABASE_URL)
        _refuse_previous_demo(url)
        yield url, None
        return
    server = EmbeddedPostgres(pgdata)
    try:
        url = server.start()
        yield url, server.psql
    finally:
        server.stop()


# -- Traffic


@contextlib.contextmanager
def _in_background(name: str, run: Callable[[threading.Event], None]) -> Iterator[None]:
    """Run `run(stop)` in a daemon thread; set `stop` and join the thread on exit."""
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(stop,), name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def background_traffic(url: str, *, interval_secs: float, seed: int) -> ContextManager[None]:
    """Run `traffic.run_forever` in a thread; stop and join it on exit."""

    def run(stop: threading.Event) -> None:
        try:
            traffic.run_forever(url, interval_secs=interval_secs, stop_event=stop, seed=seed)
        except Exception:
            logger.exception("traffic stopped on an error", extra={"action": "traffic"})

    return _in_background("demo-traffic", run)


def background_reorgs(url: str, *, every_secs: float, seed: int) -> ContextManager[None]:
    """Now and then replace the top 3-6 blocks with a new branch holding a transaction.

    The point of the demo: a newcomer sees the indexer detect the reorg, find the fork point
    and roll back, in its output and in the `reorgs` table. `every_secs` 0 disables it.
    """

    def run(stop: threading.Event) -> None:
        rng = random.Random(seed)
        with anvil.RpcClient(url) as client:
            while not stop.wait(every_secs):
                accounts = client.call("eth_accounts")
                depth = rng.randint(3, 6)
                tx = {
                    "from": accounts[-1],
                    "to": accounts[-2],
                    "value": hex(rng.randint(1, 10**15)),
                }
                try:
                    client.call("anvil_reorg", [depth, [[tx, 0]]])
                except anvil.DevnetError as exc:
                    logger.warning("devnet reorg failed: %s", exc, extra={"action": "reorg"})
                    continue
                logger.info(
                    "devnet: reorged the top %d blocks (a new branch with a transaction)",
                    depth,
                    extra={"action": "reorg"},
                )

    if every_secs <= 0:
        return contextlib.nullcontext()
    return _in_background("demo-reorgs", run)


# -- Config and banner


def _toml_string(value: str) -> str:
    # A JSON string is a valid TOML basic string (same escapes, unicode ones included).
    return json.dumps(value)


def write_config(path: Path, *, anvil_url: str, database_url: str, chain_id: int) -> Path:
    """Write the demo's indexer config to `path` (mode 0600: the URL may hold a password)."""
    text = f"""\
# Written by `python -m indexer.devnet.demo` on every run; edits are overwritten.

[database]
url = {_toml_string(database_url)}

[[chains]]
name = {_toml_string(CHAIN_NAME)}
kind = "evm"
urls = [{_toml_string(anvil_url)}]
chain_id = {chain_id}
start_block = 0
confirmations = 0
max_reorg_depth = 64
batch_size = 100
poll_interval_secs = 0.5

# Decoded events of the devnet's Emitter contracts (indexer/devnet/traffic.py): every Pair
# decodes; a Note's data is raw calldata, rarely the ABI encoding of `bytes`, so most Notes
# are counted undecodable (see the `event_tables` view).
[[events]]
chain = {_toml_string(CHAIN_NAME)}
table = "pairs"
signature = "Pair(bytes32 indexed a, bytes32 indexed b)"

[[events]]
chain = {_toml_string(CHAIN_NAME)}
table = "notes"
signature = "Note(bytes32 indexed tag, bytes data)"
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    return path


def display_url(url: str) -> str:
    """Return `url` with any password masked; a URL without one is shown as it is."""
    return redact.redact_url(url) if urlsplit(url).password else url


def banner(
    *,
    anvil_url: str,
    config_path: Path,
    database_url: str,
    summary: traffic.FillSummary,
    block_time_secs: int,
    psql: Path | None,
) -> str:
    shown_url = display_url(database_url)
    psql_cmd = f'{psql or "psql"} "{shown_url}"'
    queries = "\n".join("    " + q.replace("\n", "\n    ") for q in EXAMPLE_QUERIES)
    rule = "-" * 78
    return f"""{rule}
indexer demo
  node      {anvil_url}  (anvil, chain "{CHAIN_NAME}", a block every {block_time_secs} s)
  history   {summary.blocks_mined:,d} blocks pre-mined: {summary.tx_count:,d} txs, \
{summary.log_count:,d} logs
  config    {config_path}
  database  {shown_url}
Query it from another terminal:
  {psql_cmd}
{queries}
Ctrl-C stops the indexer, the traffic, anvil and the embedded Postgres.
{rule}"""


# -- Main


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m indexer.devnet.demo",
        description="Run a local devnet with traffic, indexed into Postgres.",
    )
    parser.add_argument("--history-blocks", type=int, default=300, help="blocks to pre-mine (300)")
    parser.add_argument("--block-time-secs", type=int, default=1, help="seconds per block (1)")
    parser.add_argument("--seed", type=int, default=0, help="traffic seed (0)")
    parser.add_argument(
        "--reorg-every-secs",
        type=float,
        default=25.0,
        help="reorg the devnet's top 3-6 blocks this often; 0 disables (25)",
    )
    parser.add_argument("--dir", type=Path, default=DEMO_DIR, help=f"state directory ({DEMO_DIR})")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, signals: StopSignals, env: Mapping[str, str]) -> int:
    """Set everything up, run the indexer, and tear down in reverse order; return the exit code."""
    with contextlib.ExitStack() as stack:
        # One demo per state directory: a second one would recreate the first one's database.
        stack.enter_context(exclusive(args.dir / "demo.lock"))
        database_url, psql = stack.enter_context(postgres(args.dir / "pgdata", env))
        node = stack.enter_context(anvil.Anvil(block_time_secs=None))
        summary = traffic.fill_blocks(node, args.history_blocks, seed=args.seed)
        node.set_interval_mining(args.block_time_secs)
        stack.enter_context(
            background_traffic(node.url, interval_secs=args.block_time_secs, seed=args.seed + 1)
        )
        stack.enter_context(
            background_reorgs(node.url, every_secs=args.reorg_every_secs, seed=args.seed + 2)
        )
        config_path = write_config(
            args.dir / "indexer.toml",
            anvil_url=node.url,
            database_url=database_url,
            chain_id=node.chain_id,
        )
        config.load(str(config_path), env={})  # fail here, not in the indexer, on a bad file
        # The schema and the event tables, as an operator would (`indexer migrate`).
        made = subprocess.run(indexer_command(config_path, "migrate"), check=False)
        if made.returncode != 0:
            raise DemoError(f"indexer migrate failed (exit {made.returncode})")
        print(
            banner(
                anvil_url=node.url,
                config_path=config_path,
                database_url=database_url,
                summary=summary,
                block_time_secs=args.block_time_secs,
                psql=psql,
            ),
            flush=True,
        )
        code, stopped = run_indexer(indexer_command(config_path), signals)
        logger.info("shutting down")
    if stopped and code in _STOPPED_CODES:
        return 0
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s demo %(levelname)s %(message)s")
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    signals = StopSignals()
    signals.install()
    try:
        return run(args, signals, os.environ)
    except KeyboardInterrupt:
        logger.info("interrupted during setup; everything is stopped")
        return 0
    except DemoError as exc:
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
