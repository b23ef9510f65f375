"""The local devnet against a real anvil: managed node, traffic, reorg/rollback, demo parts.

No skips: without anvil these tests fail, naming scripts/install-anvil.sh.
"""

from __future__ import annotations

import collections
import signal
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from indexer import config
from indexer.devnet import anvil, demo, traffic


@pytest.fixture
def node() -> Iterator[anvil.Anvil]:
    with anvil.Anvil() as started:
        yield started


def _word(data: bytes, index: int) -> str:
    """Return the 32-byte word `index` of `data` as CALLDATALOAD reads it (zero-padded)."""
    return "0x" + data[32 * index : 32 * (index + 1)].ljust(32, b"\0").hex()


def _send_and_mine(node: anvil.Anvil, tx: dict[str, object]) -> dict[str, Any]:
    tx_hash = node.rpc("eth_sendTransaction", [tx])
    node.mine()
    receipt = node.rpc("eth_getTransactionReceipt", [tx_hash])
    assert isinstance(receipt, dict)
    return receipt


def _check_emitter_logs(receipt: dict[str, Any], *, address: str, calldata: bytes) -> None:
    logs = receipt["logs"]
    assert len(logs) == traffic.expected_logs(calldata)
    note = logs[0]
    assert note["address"] == address
    assert note["topics"] == ["0x" + traffic.NOTE_TOPIC.hex(), _word(calldata, 0)]
    assert note["data"] == "0x" + calldata.hex()
    if len(logs) == 2:
        pair = logs[1]
        assert pair["address"] == address
        assert pair["topics"] == [
            "0x" + traffic.PAIR_TOPIC.hex(),
            _word(calldata, 0),
            _word(calldata, 1),
        ]
        assert pair["data"] == "0x"


# -- The managed node


def test_anvil_starts_on_loopback_and_stops() -> None:
    node = anvil.Anvil(chain_id=1337)
    with node:
        assert node.url.startswith(f"http://{anvil.LOOPBACK}:")
        assert anvil.hex_to_int(node.rpc("eth_chainId")) == 1337
        assert node.block_number() == 0
        node.mine(3)
        assert node.block_number() == 3
        pid = node.pid
        assert pid is not None
    with pytest.raises(anvil.DevnetError):
        _ = node.url
    node.stop()  # idempotent
    assert not Path(f"/proc/{pid}").exists(), "anvil was stopped and reaped"


def test_anvil_without_block_time_mines_only_on_demand(node: anvil.Anvil) -> None:
    accounts = node.accounts()
    node.rpc("eth_sendTransaction", [{"from": accounts[0], "to": accounts[1], "value": "0x1"}])
    time.sleep(0.3)
    assert node.block_number() == 0
    node.mine()
    assert len(node.get_block(1)["transactions"]) == 1


def test_find_anvil_names_what_to_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(anvil.AnvilNotFound, match="ANVIL_BIN"):
        anvil.find_anvil({"ANVIL_BIN": str(tmp_path / "missing")})
    monkeypatch.setattr(anvil, "TOOLS_ANVIL", tmp_path / "missing")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(anvil.AnvilNotFound, match=r"scripts/install-anvil\.sh"):
        anvil.find_anvil({})


def test_find_anvil_prefers_the_pinned_install() -> None:
    assert anvil.find_anvil({}) == str(anvil.TOOLS_ANVIL)


# -- The Emitter contract


def test_emitter_logs_follow_calldata(node: anvil.Anvil) -> None:
    deployer, caller = node.accounts()[:2]
    created = _send_and_mine(node, {"from": deployer, "data": "0x" + traffic.EMITTER_INIT.hex()})
    emitter = traffic.create_address(deployer, 0)
    assert created["contractAddress"] == emitter
    assert created["logs"] == []
    assert node.rpc("eth_getCode", [emitter, "latest"]) == "0x" + traffic.EMITTER_RUNTIME.hex()

    cases = [
        b"",  # Note with tag 0 and empty data
        b"\x01\x02",  # short: the tag is zero-padded
        bytes(range(1, 41)),  # first byte < 0x80: Note only
        bytes([0x80]) + bytes(range(50)),  # first byte >= 0x80: Note and Pair
        bytes([0xFF]) * 5,  # Pair whose second word is all padding
    ]
    for calldata in cases:
        receipt = _send_and_mine(
            node, {"from": caller, "to": emitter, "data": "0x" + calldata.hex()}
        )
        assert receipt["status"] == "0x1"
        _check_emitter_logs(receipt, address=emitter, calldata=calldata)


def test_create_address_matches_the_node_for_large_nonces(node: anvil.Anvil) -> None:
    sender = node.accounts()[3]
    node.rpc("anvil_setNonce", [sender, hex(0x1234)])
    receipt = _send_and_mine(node, {"from": sender, "data": "0x" + traffic.EMITTER_INIT.hex()})
    assert receipt["contractAddress"] == traffic.create_address(sender, 0x1234)


# -- Traffic


def test_fill_blocks_matches_the_chain(node: anvil.Anvil) -> None:
    summary = traffic.fill_blocks(node, 50, txs_per_block=(1, 5), seed=7)

    assert summary.blocks_mined == 50
    assert [block.number for block in summary.blocks] == list(range(1, 51))
    assert node.block_number() == 50
    assert all(1 <= len(block.txs) <= 5 for block in summary.blocks)
    all_txs = [tx for block in summary.blocks for tx in block.txs]
    kinds = collections.Counter(tx.kind for tx in all_txs)
    assert set(kinds) == set(traffic.TxKind), kinds
    assert summary.contracts_created

    with anvil.RpcClient(node.url) as client:
        blocks = client.batch(
            [("eth_getBlockByNumber", [hex(b.number), False]) for b in summary.blocks]
        )
        for mined, block in zip(summary.blocks, blocks, strict=True):
            assert sorted(block["transactions"]) == sorted(tx.hash_hex for tx in mined.txs)
        receipts = client.batch([("eth_getTransactionReceipt", [tx.hash_hex]) for tx in all_txs])
        codes = client.batch(
            [("eth_getCode", [address, "latest"]) for address in summary.contracts_created]
        )
        all_logs = client.call("eth_getLogs", [{"fromBlock": "0x1", "toBlock": "latest"}])
        note_logs = client.call(
            "eth_getLogs",
            [
                {
                    "fromBlock": "0x1",
                    "toBlock": "latest",
                    "topics": ["0x" + traffic.NOTE_TOPIC.hex()],
                }
            ],
        )

    for tx, receipt in zip(all_txs, receipts, strict=True):
        assert receipt["status"] == "0x1", tx
        assert len(receipt["logs"]) == tx.expected_logs, tx
        if tx.kind is traffic.TxKind.CREATE:
            assert receipt["to"] is None
            assert receipt["contractAddress"] == tx.contract_address
        elif tx.kind is traffic.TxKind.TRANSFER:
            assert tx.input_hex == "0x"
        else:
            assert tx.to is not None
            assert tx.expected_logs == (2 if tx.kind is traffic.TxKind.PAIR else 1)
            _check_emitter_logs(receipt, address=tx.to, calldata=bytes.fromhex(tx.input_hex[2:]))
    assert codes == ["0x" + traffic.EMITTER_RUNTIME.hex()] * len(codes)
    assert len(all_logs) == summary.log_count
    assert len(note_logs) == kinds[traffic.TxKind.NOTE] + kinds[traffic.TxKind.PAIR]
    assert summary.tx_count == len(all_txs)


def test_fill_blocks_is_deterministic() -> None:
    runs = []
    for _ in range(2):
        with anvil.Anvil() as fresh:
            runs.append(traffic.fill_blocks(fresh, 20, seed=3))
    assert runs[0] == runs[1]
    with anvil.Anvil() as fresh:
        other = traffic.fill_blocks(fresh, 20, seed=4)
    assert other.blocks != runs[0].blocks


def test_fill_blocks_is_fast(node: anvil.Anvil) -> None:
    started = time.monotonic()
    summary = traffic.fill_blocks(node, 500, txs_per_block=(2, 4), seed=1)
    elapsed_secs = time.monotonic() - started
    assert summary.tx_count >= 1000
    # About 2 s here; minutes would mean per-tx round trips or gas estimation crept back in.
    assert elapsed_secs < 30, f"500 blocks took {elapsed_secs:.1f} s"


def test_fill_blocks_restores_automine(node: anvil.Anvil) -> None:
    node.set_automine(True)
    traffic.fill_blocks(node, 3, seed=1)
    assert node.rpc("anvil_getAutomine") is True
    assert node.block_number() == 3


def test_fill_blocks_rejects_more_txs_than_accounts(node: anvil.Anvil) -> None:
    with pytest.raises(anvil.DevnetError, match="--accounts"):
        traffic.fill_blocks(node, 1, txs_per_block=(11, 11))


def test_run_forever_mines_until_stopped(node: anvil.Anvil) -> None:
    stop = threading.Event()
    sent: list[int] = []
    thread = threading.Thread(
        target=lambda: sent.append(
            traffic.run_forever(node.url, interval_secs=0.01, stop_event=stop, mine=True)
        )
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while node.block_number() < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert node.block_number() >= 10
    mined = sum(len(node.get_block(n)["transactions"]) for n in range(1, node.block_number() + 1))
    assert sent and sent[0] == mined > 0


def test_run_forever_feeds_an_interval_mining_node() -> None:
    with anvil.Anvil(block_time_secs=0.25) as node:
        stop = threading.Event()
        thread = threading.Thread(
            target=traffic.run_forever,
            kwargs={"url": node.url, "interval_secs": 0.1, "stop_event": stop},
        )
        thread.start()
        time.sleep(1.5)
        stop.set()
        thread.join(timeout=10)
        tip = node.block_number()
        time.sleep(0.6)  # let the last sends be mined
        assert tip >= 3
        assert sum(len(node.get_block(n)["transactions"]) for n in range(1, tip + 1)) > 0
        assert node.rpc("txpool_status") == {"pending": "0x0", "queued": "0x0"}


# -- Reorg and rollback


def test_reorg_replaces_blocks_at_the_same_height(node: anvil.Anvil) -> None:
    summary = traffic.fill_blocks(node, 10, seed=1)
    before = {n: node.get_block(n)["hash"] for n in range(1, 11)}
    first, second = node.accounts()[:2]
    raw = node.rpc(
        "eth_signTransaction",
        [
            {
                "from": second,
                "to": first,
                "value": "0x2",
                "gas": hex(21_000),
                # Its nonce at the fork point: the replaced blocks' txs are dropped.
                "nonce": node.rpc("eth_getTransactionCount", [second, hex(7)]),
                "maxFeePerGas": hex(50 * 10**9),
                "maxPriorityFeePerGas": hex(10**9),
            }
        ],
    )

    node.reorg(3, txs=[({"from": first, "to": second, "value": "0x1"}, 0), (raw, 2)])

    assert node.block_number() == 10
    assert all(node.get_block(n)["hash"] == before[n] for n in range(1, 8))
    after = {n: node.get_block(n) for n in range(8, 11)}
    assert all(after[n]["hash"] != before[n] for n in range(8, 11))
    assert after[8]["parentHash"] == before[7]
    assert after[9]["parentHash"] == after[8]["hash"]
    assert after[10]["parentHash"] == after[9]["hash"]
    assert [len(after[n]["transactions"]) for n in range(8, 11)] == [1, 0, 1]
    # The replaced blocks' transactions are gone, not re-queued.
    dropped = [tx.hash_hex for block in summary.blocks[7:] for tx in block.txs]
    assert all(node.rpc("eth_getTransactionReceipt", [h]) is None for h in dropped)
    assert node.rpc("txpool_status") == {"pending": "0x0", "queued": "0x0"}


def test_reorg_deeper_than_the_chain_is_refused(node: anvil.Anvil) -> None:
    node.mine(2)
    with pytest.raises(anvil.RpcCallError, match="depth"):
        node.reorg(3)


def test_rollback_lowers_the_tip(node: anvil.Anvil) -> None:
    traffic.fill_blocks(node, 10, seed=2)
    kept = node.get_block(7)["hash"]

    node.rollback(3)

    assert node.block_number() == 7
    assert node.get_block(7)["hash"] == kept
    with pytest.raises(anvil.DevnetError):
        node.get_block(8)
    # Traffic resumes on the shorter chain (nonces are read again from the node).
    traffic.fill_blocks(node, 2, seed=3)
    assert node.block_number() == 9
    assert node.get_block(8)["parentHash"] == kept


# -- Demo parts (the full demo needs a terminal; see demo.py)


def test_demo_config_is_valid_and_private(tmp_path: Path) -> None:
    database_url = 'postgresql://user:p"a\\ss@localhost:5432/db'
    path = demo.write_config(
        tmp_path / "demo" / "indexer.toml",
        anvil_url="http://127.0.0.1:8545",
        database_url=database_url,
        chain_id=31337,
    )
    loaded = config.load(str(path), env={})
    assert loaded.database.url == database_url
    (chain,) = loaded.chains
    assert isinstance(chain, config.EvmChainConfig)
    assert (chain.name, chain.kind, chain.urls, chain.chain_id) == (
        "devnet",
        "evm",
        ("http://127.0.0.1:8545",),
        31337,
    )
    assert (chain.start_block, chain.confirmations, chain.max_reorg_depth, chain.batch_size) == (
        0,
        0,
        64,
        100,
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [(e.table, e.decl.signature) for e in loaded.events] == [
        ("pairs", "Pair(bytes32,bytes32)"), ("notes", "Note(bytes32,bytes)"),
    ]  # fmt: skip


def test_demo_shows_urls_without_passwords() -> None:
    assert "s3cret" not in demo.display_url("postgresql://me:s3cret@db:5432/x")
    embedded = "postgresql://postgres:@/indexer?host=/work/.demo/pgdata"
    assert demo.display_url(embedded) == embedded


def test_demo_forwards_the_stop_signal_to_the_indexer() -> None:
    # Stands in for the indexer: exits 0 on SIGTERM, 3 if never signalled.
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
        "sys.exit(3)\n"
    )
    signals = demo.StopSignals()
    timer = threading.Timer(1.0, signals.request, args=(signal.SIGTERM,))
    timer.start()
    try:
        code, stopped = demo.run_indexer([sys.executable, "-c", script], signals)
    finally:
        timer.cancel()
    assert (code, stopped) == (0, True)


def test_demo_kills_an_indexer_that_ignores_the_signal() -> None:
    script = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(30)\n"
    signals = demo.StopSignals()
    timer = threading.Timer(1.0, signals.request, args=(signal.SIGINT,))
    timer.start()
    started = time.monotonic()
    try:
        code, stopped = demo.run_indexer([sys.executable, "-c", script], signals, grace_secs=0.5)
    finally:
        timer.cancel()
    assert (code, stopped) == (-signal.SIGKILL, True)
    assert time.monotonic() - started < 10
