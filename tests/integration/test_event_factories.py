"""Event tables with a factory on anvil: a pool created after start is picked up, logs of
contracts no factory made are not, and a reorg that takes a pool's creation takes its events.

The factory is hand-assembled (no solc here): every call creates an Emitter (the devnet's
log contract) and emits `PoolCreated(address pool)`. Calls to an Emitter emit
`Note(bytes32 indexed tag, bytes data)`.
"""

from __future__ import annotations

from typing import Any

import psycopg
from eth_abi import abi as eth_abi
from eth_utils.crypto import keccak

from indexer import config, errors
from indexer.devnet import traffic as devnet
from indexer.store.migrate import migrate_events
from tests.integration.helpers import eventually, running_sync, sync_to
from tests.integration.test_events import NOTE, NOTE_TOPIC, _b, node_logs

POOL_CREATED = "PoolCreated(address pool)"
POOL_TOPIC = keccak(text="PoolCreated(address)")
Push, PushLabel, Label = devnet.Push, devnet.PushLabel, devnet.Label

FACTORY_RUNTIME = (
    devnet.assemble(
        [
            # memory[0:L] = the Emitter's init code (appended to this code): CODECOPY(0, init, L)
            Push(len(devnet.EMITTER_INIT)),  # [L]
            "DUP1",  # [L, L]
            PushLabel("init"),  # [init, L, L]
            Push(0),  # [0, init, L, L]
            "CODECOPY",  # [L]
            # CREATE(value=0, offset=0, size=L)
            Push(0),  # [0, L]
            Push(0),  # [0, 0, L]
            "CREATE",  # [pool]
            # memory[0:32] = pool; LOG1(offset=0, size=32, PoolCreated)
            Push(0),  # [0, pool]
            "MSTORE",  # []
            Push(POOL_TOPIC),  # [topic]
            Push(32),  # [32, topic]
            Push(0),  # [0, 32, topic]
            "LOG1",
            "STOP",
            Label("init"),
        ]
    )
    + devnet.EMITTER_INIT
)
FACTORY_INIT = (
    devnet.assemble(
        [
            Push(len(FACTORY_RUNTIME)),
            "DUP1",
            PushLabel("runtime"),
            Push(0),
            "CODECOPY",
            Push(0),
            "RETURN",
            Label("runtime"),
        ]
    )
    + FACTORY_RUNTIME
)

EVENTS = [
    {"chain": "dev", "table": "pools", "signature": POOL_CREATED},
    {"chain": "dev", "table": "pool_notes", "signature": NOTE,
     "factory": {"table": "pools", "column": "pool"}},
]  # fmt: skip


def make_cfg(db_url: str, url: str) -> config.Config:
    return config.build(
        {
            "database": {"url": db_url},
            "chains": [{"name": "dev", "kind": "evm", "urls": [url], "chain_id": 31337,
                        "poll_interval_secs": 0.2, "batch_size": 10}],
            "events": EVENTS,
        },
        {},
    )  # fmt: skip


def send(anvil: Any, to: str | None, data: bytes) -> str:
    sender = anvil.rpc("eth_accounts")[0]
    tx: dict[str, Any] = {"from": sender, "data": "0x" + data.hex(), "gas": hex(1_000_000)}
    if to is not None:
        tx["to"] = to
    txid = anvil.rpc("eth_sendTransaction", [tx])
    anvil.mine(1)
    receipt = anvil.rpc("eth_getTransactionReceipt", [txid])
    assert receipt["status"] == "0x1", receipt
    return str(receipt["contractAddress"] or txid)


def create_pool(anvil: Any, factory: str) -> str:
    txid = send(anvil, factory, b"")
    (log,) = anvil.rpc("eth_getTransactionReceipt", [txid])["logs"]
    return "0x" + str(log["data"])[-40:]


def note(anvil: Any, emitter: str, i: int) -> None:
    send(anvil, emitter, eth_abi.encode(["bytes"], [bytes([i]) * (i + 1)]))


def expected(url: str, high: int, pools: set[str]) -> list[tuple[Any, ...]]:
    rows = []
    for lg in node_logs(url, NOTE_TOPIC, high):
        if lg["address"].lower() not in pools:
            continue
        (data,) = eth_abi.decode(["bytes"], _b(lg["data"]), strict=True)
        rows.append(
            (int(lg["blockNumber"], 16), int(lg["logIndex"], 16), int(lg["transactionIndex"], 16),
             _b(lg["transactionHash"]), _b(lg["address"]), _b(lg["topics"][1]), data)
        )  # fmt: skip
    return rows


def stored(db_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return [
            tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
            for row in conn.execute(
                "SELECT block_number, log_index, tx_index, tx_hash, address, tag, data "
                "FROM pool_notes ORDER BY block_number, log_index"
            )
        ]


def synced_to(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT synced_to, factory FROM event_tables WHERE \"table\" = 'pool_notes'"
        ).fetchone()
    assert row is not None and row[1] == "pools.pool"
    return int(row[0])


async def test_pools_created_after_start_are_picked_up_and_others_are_not(
    db_url: str, anvil: Any
) -> None:
    factory = send(anvil, None, FACTORY_INIT)
    stranger = send(anvil, None, devnet.EMITTER_INIT)  # an Emitter no factory made
    first = create_pool(anvil, factory)
    note(anvil, first, 1)
    note(anvil, stranger, 2)
    cfg = make_cfg(db_url, anvil.url)
    await migrate_events(cfg.database, cfg.events)
    async with running_sync(cfg):
        head = anvil.block_number()
        await eventually(lambda: stored(db_url) == expected(anvil.url, head, {first}),
                         what="the first pool's notes")  # fmt: skip
        second = create_pool(anvil, factory)  # after start
        for i in range(3, 6):
            note(anvil, second, i)
            note(anvil, first, i)
            note(anvil, stranger, i)
        head = anvil.block_number()
        want = expected(anvil.url, head, {first, second})
        await eventually(lambda: stored(db_url) == want and synced_to(db_url) >= head,
                         what="the second pool's notes")  # fmt: skip
    assert {r[4] for r in stored(db_url)} == {_b(first), _b(second)}
    assert len(want) == 7


async def test_a_reorg_that_takes_a_pools_creation_takes_its_events(
    db_url: str, anvil: Any
) -> None:
    factory = send(anvil, None, FACTORY_INIT)
    kept = create_pool(anvil, factory)
    note(anvil, kept, 1)
    anvil.mine(3)
    cfg = make_cfg(db_url, anvil.url)
    await migrate_events(cfg.database, cfg.events)
    assert await sync_to(cfg, anvil.block_number()) == errors.EXIT_OK
    fork = anvil.block_number()
    doomed = create_pool(anvil, factory)
    note(anvil, doomed, 2)
    note(anvil, kept, 3)
    assert await sync_to(cfg, anvil.block_number()) == errors.EXIT_OK
    assert {r[4] for r in stored(db_url)} == {_b(kept), _b(doomed)}
    anvil.reorg(anvil.block_number() - fork, [])  # the new branch has no pool creation
    anvil.mine(4)
    head = anvil.block_number()
    assert await sync_to(cfg, head) == errors.EXIT_OK
    assert stored(db_url) == expected(anvil.url, head, {kept})
    assert synced_to(db_url) == head
