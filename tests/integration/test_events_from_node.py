"""Event tables of a chain that stores no logs (`store = "blocks"`): filled from the node's
topic-filtered `eth_getLogs`, ranges split when the node refuses one, each log's block
checked against the block stored at its height, exact under reorgs, following the head."""

from __future__ import annotations

from typing import Any

import psycopg

from indexer import errors
from indexer.store.migrate import migrate_events
from tests.integration.helpers import eventually, running_sync, sync_to
from tests.integration.test_events import (
    expected_notes,
    expected_pairs,
    make_cfg,
    registry,
    table_rows,
    traffic,
)
from tests.support.faultproxy import FaultProxy
from tests.support.oracle import check_invariants


def undecodable(db_url: str, table: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM event_undecodable WHERE table_name = %s", (table,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def expect_exact(db_url: str, url: str, head: int) -> None:
    """Both tables hold exactly the node's logs decoded, and the registry says so (no
    `logs` table to join the skipped logs with: they are counted)."""
    pairs = expected_pairs(url, head)
    notes, refused = expected_notes(url, head)
    assert table_rows(db_url, "pairs") == pairs
    assert table_rows(db_url, "notes") == notes
    seen = registry(db_url)
    assert (seen["notes"]["rows"], seen["pairs"]["rows"]) == (len(notes), len(pairs))
    assert seen["notes"]["undecodable"] == refused == undecodable(db_url, "notes")
    assert seen["pairs"]["undecodable"] == 0 == undecodable(db_url, "pairs")
    assert seen["pairs"]["synced_to"] == head and seen["notes"]["synced_to"] == head
    check_invariants(db_url, "dev", transactions=False)


def get_logs_ranges(proxy: FaultProxy) -> list[tuple[int, int]]:
    spans = []
    for served in proxy.served:
        for item in served.items:
            if item.get("method") == "eth_getLogs":
                query = item["params"][0]
                spans.append((int(query["fromBlock"], 16), int(query["toBlock"], 16)))
    return spans


async def test_a_chain_without_logs_fills_its_event_tables_from_the_node(
    db_url: str, anvil: Any
) -> None:
    traffic(anvil, 40, seed=101)
    head = anvil.block_number()
    with FaultProxy(anvil.url) as proxy:
        cfg = make_cfg(db_url, [proxy.url], store="blocks")
        await migrate_events(cfg.database, cfg.events)
        # A provider that refuses the first ranges it is asked for ("too many results").
        proxy.add_fault("rpc_error", method="eth_getLogs", times=3, code=-32005,
                        message="query returned more than 10000 results")  # fmt: skip
        assert await sync_to(cfg, head) == errors.EXIT_OK
        ranges = get_logs_ranges(proxy)
    expect_exact(db_url, anvil.url, head)
    assert {r["fill"] for r in registry(db_url).values()} == {"node"}
    assert ranges, "the node was never asked for logs"
    assert min(high - low for low, high in ranges) < max(high - low for low, high in ranges)
    assert table_rows(db_url, "notes") and table_rows(db_url, "pairs")


async def test_a_reorg_and_the_head_are_followed(db_url: str, anvil: Any) -> None:
    traffic(anvil, 30, seed=103)
    cfg = make_cfg(db_url, [anvil.url], store="blocks")
    await migrate_events(cfg.database, cfg.events)
    head = anvil.block_number()
    assert await sync_to(cfg, head) == errors.EXIT_OK
    before = table_rows(db_url, "notes") + table_rows(db_url, "pairs")
    depth = head - max(r[0] for r in before) + 4
    anvil.reorg(depth, [({"from": anvil.accounts()[1], "to": anvil.accounts()[2],
                          "value": "0x1"}, 0)])  # fmt: skip
    async with running_sync(cfg):
        traffic(anvil, 8, seed=107)  # the new branch has events of its own, while following
        head = anvil.block_number()

        def caught_up() -> bool:
            seen = registry(db_url)
            return all(r["synced_to"] >= head for r in seen.values())

        await eventually(caught_up, what="event tables following the head")
    expect_exact(db_url, anvil.url, head)
    gone = [r for r in before if r not in table_rows(db_url, "notes") + table_rows(db_url, "pairs")]
    assert gone, "the reorg removed no event: the test tests nothing"
