"""Decoded event tables against a real node (anvil with the devnet's Emitter contracts).

The Emitter (indexer/devnet/traffic.py) logs `Note(bytes32 indexed tag, bytes data)` with its
raw calldata as data (the ABI encoding of `bytes` only when the calldata happens to be one)
and `Pair(bytes32 indexed a, bytes32 indexed b)` with empty data. The oracle decodes the
node's own logs (eth_getLogs) with eth-abi; the tables must hold exactly those rows, and the
registry must count exactly the logs eth-abi refuses as undecodable.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import prometheus_client
import psycopg
import pytest
from eth_abi import abi as eth_abi

from indexer import config, errors
from indexer.devnet.traffic import fill_blocks
from indexer.events.decoder import Undecodable
from indexer.http.app import HttpServer
from indexer.store.migrate import migrate_events
from tests.integration.helpers import (
    eventually,
    run_cli,
    running_sync,
    spawn_cli,
    sync_to,
    wait_for,
    write_config,
)
from tests.support.faultproxy import FaultProxy
from tests.support.oracle import check_invariants

PAIR = "Pair(bytes32 indexed a, bytes32 indexed b)"
NOTE = "Note(bytes32 indexed tag, bytes data)"
PAIR_TOPIC = (
    "0x"
    + __import__("indexer._proof", fromlist=["keccak256"]).keccak256(b"Pair(bytes32,bytes32)").hex()
)
NOTE_TOPIC = (
    "0x"
    + __import__("indexer._proof", fromlist=["keccak256"]).keccak256(b"Note(bytes32,bytes)").hex()
)
EVENTS = [
    {"chain": "dev", "table": "pairs", "signature": PAIR},
    {"chain": "dev", "table": "notes", "signature": NOTE},
]


def make_cfg(db_url: str, urls: list[str], *, events: list[dict[str, Any]] = EVENTS,
             **chain: Any) -> config.Config:  # fmt: skip
    return config.build(
        {
            "database": {"url": db_url},
            "chains": [
                {"name": "dev", "kind": "evm", "urls": urls, "chain_id": 31337,
                 "poll_interval_secs": 0.2, "batch_size": 10, **chain}
            ],
            "events": events,
        },
        {},
    )  # fmt: skip


def send_decodable_notes(anvil: Any, emitters: tuple[str, ...], count: int) -> None:
    """Calls whose calldata is the ABI encoding of `bytes`: Notes that decode."""
    sender = anvil.rpc("eth_accounts")[0]
    for i in range(count):
        payload = bytes([i % 251]) * (i * 7 % 70)
        data = "0x" + eth_abi.encode(["bytes"], [payload]).hex()
        to = emitters[i % len(emitters)]
        anvil.rpc("eth_sendTransaction",
                  [{"from": sender, "to": to, "data": data, "gas": hex(300_000)}])  # fmt: skip
        if i % 3 == 2:
            anvil.mine(1)
    anvil.mine(1)


def traffic(anvil: Any, blocks: int, *, seed: int) -> None:
    """Seeded devnet traffic with decodable Notes among it."""
    summary = fill_blocks(anvil, blocks, txs_per_block=(1, 4), seed=seed)
    send_decodable_notes(anvil, summary.contracts_created, 12)


def node_logs(url: str, topic: str, high: int) -> list[dict[str, Any]]:
    import urllib.request

    import orjson

    body = orjson.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs",
         "params": [{"fromBlock": "0x0", "toBlock": hex(high), "topics": [topic]}]}
    )  # fmt: skip
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return list(orjson.loads(answer.read())["result"])


def _b(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text[2:])


def expected_pairs(url: str, high: int) -> list[tuple[Any, ...]]:
    rows = []
    for lg in node_logs(url, PAIR_TOPIC, high):
        if len(lg["topics"]) != 3 or _b(lg["data"]):
            continue
        rows.append(
            (int(lg["blockNumber"], 16), int(lg["logIndex"], 16), int(lg["transactionIndex"], 16),
             _b(lg["transactionHash"]), _b(lg["address"]), _b(lg["topics"][1]),
             _b(lg["topics"][2]))
        )  # fmt: skip
    return rows


def expected_notes(url: str, high: int) -> tuple[list[tuple[Any, ...]], int]:
    """The Note rows eth-abi decodes (strictly), and how many it refuses."""
    rows, refused = [], 0
    for lg in node_logs(url, NOTE_TOPIC, high):
        try:
            if len(lg["topics"]) != 2:
                raise Undecodable("topics")
            (data,) = eth_abi.decode(["bytes"], _b(lg["data"]), strict=True)
            if eth_abi.encode(["bytes"], [data]) != _b(lg["data"]):
                raise Undecodable("not canonical")  # our decoder takes canonical encodings only
        except Exception:
            refused += 1
            continue
        rows.append(
            (int(lg["blockNumber"], 16), int(lg["logIndex"], 16), int(lg["transactionIndex"], 16),
             _b(lg["transactionHash"]), _b(lg["address"]), _b(lg["topics"][1]), data)
        )  # fmt: skip
    return rows, refused


def heights_asked(items: tuple[dict[str, Any], ...]) -> list[int]:
    """The block heights JSON-RPC calls asked for (blocks, receipts, logs)."""
    found = []
    for item in items:
        method, params = item.get("method"), item.get("params") or []
        if method in ("eth_getBlockByNumber", "eth_getBlockReceipts") and params:
            if isinstance(params[0], str) and params[0].startswith("0x"):
                found.append(int(params[0], 16))
        elif method == "eth_getLogs" and params:
            found.append(int(params[0]["fromBlock"], 16))
    return found


def table_rows(db_url: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return [
            tuple(bytes(v) if isinstance(v, memoryview) else v for v in row[1:])
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY block_number, log_index")
        ]


def skipped_logs(db_url: str, table: str) -> list[tuple[int, int]]:
    """The logs `table` skipped, each still a stored log with the event's topic."""
    with psycopg.connect(db_url) as conn:
        found = conn.execute(
            "SELECT u.block_number, u.log_index, l.topics[1] FROM event_undecodable u "
            "LEFT JOIN logs l ON l.chain = u.chain AND l.block_number = u.block_number "
            "AND l.log_index = u.log_index WHERE u.table_name = %s ORDER BY 1, 2",
            (table,),
        ).fetchall()
    topic = {"notes": NOTE_TOPIC, "pairs": PAIR_TOPIC}[table]
    assert all(t is not None and "0x" + bytes(t).hex() == topic for _, _, t in found), found
    return [(int(n), int(i)) for n, i, _ in found]


def registry(db_url: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(db_url) as conn:
        cur = conn.execute("SELECT * FROM event_tables")
        names = [d.name for d in cur.description or ()]
        return {row[1]: dict(zip(names, row, strict=True)) for row in cur.fetchall()}


async def test_event_tables_hold_the_nodes_logs_decoded(db_url: str, anvil: Any) -> None:
    traffic(anvil, 40, seed=61)
    head = anvil.block_number()
    cfg = make_cfg(db_url, [anvil.url])
    assert await migrate_events(cfg.database, cfg.events) == ["pairs", "notes"]
    assert await sync_to(cfg, head) == errors.EXIT_OK

    pairs = expected_pairs(anvil.url, head)
    notes, refused = expected_notes(anvil.url, head)
    assert pairs and notes and refused, (len(pairs), len(notes), refused)  # the test tests
    assert table_rows(db_url, "pairs") == pairs
    assert table_rows(db_url, "notes") == notes
    seen = registry(db_url)
    assert seen["pairs"]["rows"] == len(pairs) and seen["pairs"]["undecodable"] == 0
    assert seen["notes"]["rows"] == len(notes) and seen["notes"]["undecodable"] == refused
    assert seen["pairs"]["synced_to"] == head and seen["notes"]["synced_to"] == head
    assert len(skipped_logs(db_url, "notes")) == refused
    check_invariants(db_url, "dev")


async def test_sync_refuses_an_event_table_migrate_has_not_made(db_url: str, anvil: Any) -> None:
    anvil.mine(3)
    cfg = make_cfg(db_url, [anvil.url])
    with pytest.raises(errors.ConfigError, match=r"event table 'pairs'.*indexer migrate"):
        await sync_to(cfg, 3)


async def test_a_table_added_later_is_backfilled_from_stored_logs_while_sync_runs(
    db_url: str, anvil: Any
) -> None:
    traffic(anvil, 60, seed=67)
    first = anvil.block_number()
    with FaultProxy(anvil.url) as proxy:
        plain = make_cfg(db_url, [proxy.url], events=[])
        assert await sync_to(plain, first) == errors.EXIT_OK
        cfg = make_cfg(db_url, [proxy.url])
        await migrate_events(cfg.database, cfg.events)
        proxy.clear()  # forget what sync asked so far
        async with running_sync(cfg) as (task, runtime):
            backfiller = runtime.chains[0].backfiller
            assert backfiller is not None
            traffic(anvil, 10, seed=71)  # the head moves on
            head = anvil.block_number()
            await eventually(
                lambda: (
                    registry(db_url)["notes"]["synced_to"] == head
                    and registry(db_url)["pairs"]["synced_to"] == head
                ),
                what="both tables synced to the head",
            )
            assert not task.done()
            server = HttpServer(runtime, listen="127.0.0.1:0", ready_max_lag_blocks=10)
            text = prometheus_client.generate_latest(server._registry).decode()
            assert 'indexer_event_backfill_pending_blocks{chain="dev",table="notes"} 0.0' in text
            backfilled = r'indexer_event_backfill_rows_total\{chain="dev",table="pairs"\} [1-9]'
            assert re.search(backfilled, text), text
            # Nothing below the first sync's tip was asked of the node: the backfill read
            # the stored logs.
            asked = sorted({h for s in proxy.served for h in heights_asked(s.items)})
            assert asked and min(asked) >= first, asked
    assert table_rows(db_url, "pairs") == expected_pairs(anvil.url, head)
    notes, refused = expected_notes(anvil.url, head)
    assert table_rows(db_url, "notes") == notes
    assert registry(db_url)["notes"]["undecodable"] == refused
    check_invariants(db_url, "dev")


def expect_exact(db_url: str, url: str, head: int) -> None:
    """Both tables hold exactly the node's logs decoded, and the registry says so."""
    assert table_rows(db_url, "pairs") == expected_pairs(url, head)
    notes, refused = expected_notes(url, head)
    assert table_rows(db_url, "notes") == notes
    seen = registry(db_url)
    assert seen["notes"]["rows"] == len(notes) and seen["pairs"]["rows"] == len(
        expected_pairs(url, head)
    )
    assert seen["notes"]["undecodable"] == refused == len(skipped_logs(db_url, "notes"))
    assert seen["pairs"]["undecodable"] == 0 == len(skipped_logs(db_url, "pairs"))
    assert seen["pairs"]["synced_to"] == head and seen["notes"]["synced_to"] == head
    check_invariants(db_url, "dev")


async def test_a_reorg_removes_exactly_the_reorged_events(db_url: str, anvil: Any) -> None:
    traffic(anvil, 30, seed=73)
    cfg = make_cfg(db_url, [anvil.url])
    await migrate_events(cfg.database, cfg.events)
    head = anvil.block_number()
    assert await sync_to(cfg, head) == errors.EXIT_OK
    before = table_rows(db_url, "notes") + table_rows(db_url, "pairs")
    depth = head - max(r[0] for r in before) + 4  # the reorg takes events with it
    anvil.reorg(depth, [({"from": anvil.accounts()[1], "to": anvil.accounts()[2],
                          "value": "0x1"}, 0)])  # fmt: skip
    traffic(anvil, 6, seed=79)  # the new branch has events of its own
    head = anvil.block_number()
    assert await sync_to(cfg, head) == errors.EXIT_OK
    expect_exact(db_url, anvil.url, head)
    gone = [r for r in before if r not in table_rows(db_url, "notes") + table_rows(db_url, "pairs")]
    assert gone, "the reorg removed no event: the test tests nothing"


async def test_start_block_moves_are_followed(db_url: str, anvil: Any) -> None:
    traffic(anvil, 30, seed=83)
    head = anvil.block_number()
    late = [{**e, "start_block": 20} for e in EVENTS]
    cfg = make_cfg(db_url, [anvil.url], events=late)
    await migrate_events(cfg.database, cfg.events)
    assert await sync_to(cfg, head) == errors.EXIT_OK
    assert min(r[0] for r in table_rows(db_url, "notes") + table_rows(db_url, "pairs")) >= 20
    # Earlier: backfilled down to it.
    cfg = make_cfg(db_url, [anvil.url])
    assert await sync_to(cfg, head) == errors.EXIT_OK
    await eventually(lambda: registry(db_url)["pairs"]["start_block"] == 0, what="attach")
    # sync --to returns at the head; the backfill runs beside it: give it a running sync.
    async with running_sync(cfg):
        await eventually(
            lambda: all(r["synced_to"] == head and r["backfilled_to"] >= r["live_from"] - 1
                        for r in registry(db_url).values()),
            what="the backfill down to block 0",
        )  # fmt: skip
    expect_exact(db_url, anvil.url, head)
    # Later again: the rows below it go.
    cfg = make_cfg(db_url, [anvil.url], events=late)
    assert await sync_to(cfg, head) == errors.EXIT_OK
    rows = table_rows(db_url, "notes") + table_rows(db_url, "pairs")
    assert rows and min(r[0] for r in rows) >= 20
    seen = registry(db_url)
    assert seen["notes"]["rows"] == len(table_rows(db_url, "notes"))
    assert seen["pairs"]["rows"] == len(table_rows(db_url, "pairs"))


def write_events_config(path: Path, db_url: str, url: str, events: list[dict[str, Any]]) -> Path:
    write_config(path, db_url, url, batch_size=10)
    lines = []
    for entry in events:
        lines.append("[[events]]")
        lines += [
            f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v!r}" for k, v in entry.items()
        ]
    path.write_text(path.read_text() + "\n".join(lines) + "\n")
    return path


def test_migrate_makes_the_tables_and_sigkill_during_a_backfill_ends_exact(
    db_url: str, anvil: Any, tmp_path: Path
) -> None:
    traffic(anvil, 60, seed=89)
    head = anvil.block_number()
    plain = write_events_config(tmp_path / "plain.toml", db_url, anvil.url, [])
    assert run_cli("--config", str(plain), "sync", "--to", str(head)).returncode == 0
    path = write_events_config(tmp_path / "events.toml", db_url, anvil.url, EVENTS)
    refused = run_cli("--config", str(path), "sync", "--to", str(head))
    assert refused.returncode == 2 and "run `indexer migrate`" in refused.stderr, refused.stderr
    made = run_cli("--config", str(path), "migrate")
    assert made.returncode == 0 and "made event table(s): pairs, notes" in made.stdout, made

    # `notes` is locked: its backfill stops at its first chunk, inside its transaction, while
    # `pairs` is backfilled whole; kill the daemon right there.
    with psycopg.connect(db_url) as blocker:
        blocker.execute("LOCK TABLE notes IN SHARE MODE")
        proc = spawn_cli("--config", str(path), "sync")
        try:

            def pairs_done_and_notes_waiting() -> bool:
                with psycopg.connect(db_url, autocommit=True) as conn:
                    waiting = conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                        "'indexer' AND wait_event_type = 'Lock'"
                    ).fetchone()
                return waiting == (1,) and registry(db_url)["pairs"]["synced_to"] == head

            wait_for(pairs_done_and_notes_waiting, what="pairs backfilled, notes blocked")
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
        blocker.rollback()
    assert registry(db_url)["notes"]["backfilled_to"] < head
    assert table_rows(db_url, "notes") == []  # the chunk in flight left nothing

    # Restarted: `sync --to` ends once the backfill is done too, exact.
    again = run_cli("--config", str(path), "sync", "--to", str(head))
    assert again.returncode == 0, again.stderr
    expect_exact(db_url, anvil.url, head)
    stats = run_cli("--config", str(path), "stats")
    assert stats.returncode == 0, stats.stderr
    assert "event table notes: Note(bytes32 indexed tag, bytes data)" in stats.stdout
    assert f"synced to {head:,d}" in stats.stdout, stats.stdout
