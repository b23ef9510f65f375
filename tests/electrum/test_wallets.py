"""Bitcoin wallets through a real ElectrumX in front of the regtest simulator: transactions,
outputs, spends and balances equal the simulator's ledger, proven against stored headers."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import psycopg

from indexer import config
from indexer.wallets import keys
from tests.electrum import regtest, wallet_keys
from tests.electrum.bitcoind_sim import BitcoindSim
from tests.electrum.electrumx_proc import ElectrumXProc
from tests.integration.helpers import async_wait_for, running_sync, spawn_cli, sync_to, wait_for

TPUB = (
    "tpubD6NzVbkrYhZ4WaWSyoBvQwbpLkojyoTZPRsgXELWz3Popb3qkjcJyJUGLnL4qHHoQvao8ESaAstxYSnhyswJ76"
    "uZPStJRJCTKvosUCJZL5B"
)
DESCRIPTOR = f"wpkh([d34db33f/84h/1h/0h]{TPUB}/0/*)"


def wallet_config(db_url: str, urls: list[str], wallets: list[dict[str, Any]]) -> config.Config:
    return config.build(
        {
            "database": {"url": db_url},
            "chains": [
                {
                    "name": "btc",
                    "kind": "electrum",
                    "urls": urls,
                    "genesis_hash": regtest.GENESIS_HASH_HEX,
                    "batch_size": 500,
                    "poll_interval_secs": 0.2,
                }
            ],
            "wallets": wallets,
        },
        {},
    )


def derived(index: int) -> keys.Script:
    parsed = keys.parse_descriptor(DESCRIPTOR, 0, "regtest")
    return parsed.branches[0].derive(index, "regtest")


def rows(db_url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return [tuple(r) for r in conn.execute(query)]


async def test_coinbase_payments_to_a_descriptor_are_stored_and_proven(
    db_url: str, bitcoind_sim: BitcoindSim, electrumx: ElectrumXProc
) -> None:
    target = derived(3)
    bitcoind_sim.generate(2)
    hashes = bitcoind_sim.generate(3, script_pubkey=target.script)
    bitcoind_sim.generate(4)
    electrumx.wait_synced(9)
    cfg = wallet_config(
        db_url, [electrumx.tcp_url], [{"chain": "btc", "name": "w", "descriptors": [DESCRIPTOR]}]
    )
    assert await sync_to(cfg, 9) == 0
    want = sorted((bytes.fromhex(bitcoind_sim.block(h).txs[0].txid_hex), h) for h in (3, 4, 5))
    got = rows(db_url, "SELECT txid, height, block_hash, position FROM wallet_transactions")
    assert sorted((bytes(t), h) for t, h, _, _ in got) == want
    assert {bytes(b).hex() for _, _, b, _ in got} == set(hashes)
    balance = rows(db_url, "SELECT address, confirmed, unconfirmed FROM wallet_balances")
    assert balance == [(target.address, 3 * regtest.block_subsidy_sats(3), 0)]
    scripts = rows(db_url, "SELECT count(*), count(*) FILTER (WHERE used) FROM wallet_scripts")
    assert scripts == [(3 + 1 + 20, 1)]  # derived up to the used index 3 plus the gap limit


# -- The ledger: what the simulator says the wallet holds, and what we stored


def stored_state(db_url: str, wallet: str) -> dict[str, Any]:
    with psycopg.connect(db_url) as conn:
        txs = {
            bytes(t).hex(): (h, None if b is None else bytes(b).hex(), p)
            for t, h, b, p in conn.execute(
                "SELECT txid, height, block_hash, position FROM wallet_transactions "
                "WHERE wallet = %s", (wallet,))
        }  # fmt: skip
        outs = {
            (bytes(t).hex(), v): (bytes(s), val, h, None if st is None else bytes(st).hex(), sh)
            for t, v, s, val, h, st, sh in conn.execute(
                "SELECT txid, vout, script, value, height, spent_txid, spent_height "
                "FROM wallet_outputs WHERE wallet = %s", (wallet,))
        }  # fmt: skip
        balances = {
            a: (c, u)
            for a, c, u in conn.execute(
                "SELECT address, confirmed, unconfirmed FROM wallet_balances WHERE wallet = %s",
                (wallet,))
        }  # fmt: skip
        utxos = sorted(
            (bytes(t).hex(), v)
            for t, v in conn.execute("SELECT txid, vout FROM wallet_utxos WHERE wallet = %s",
                                     (wallet,))
        )  # fmt: skip
    return {"transactions": txs, "outputs": outs, "balances": balances, "utxos": utxos}


def ledger_state(ledger: regtest.Ledger, addresses: dict[bytes, str]) -> dict[str, Any]:
    txs = {t: (x.height, x.block_hash_hex, x.position) for t, x in ledger.transactions.items()}
    outs = {
        key: (o.script_pubkey, o.value_sats, o.height, o.spent_txid_hex, o.spent_height)
        for key, o in ledger.outputs.items()
    }
    balances = {
        addresses[script]: (b.confirmed_sats, b.unconfirmed_sats)
        for script, b in ledger.balances.items()
        if any(o.script_pubkey == script for o in ledger.outputs.values())
    }
    utxos = sorted((o.txid_hex, o.vout) for o in ledger.utxos())
    return {"transactions": txs, "outputs": outs, "balances": balances, "utxos": utxos}


def watched(db_url: str, wallet: str) -> dict[bytes, str]:
    with psycopg.connect(db_url) as conn:
        return {
            bytes(s): str(a)
            for s, a in conn.execute(
                "SELECT script, address FROM wallet_scripts WHERE wallet = %s", (wallet,)
            )
        }


def assert_equals_ledger(db_url: str, sim: BitcoindSim, wallet: str) -> None:
    scripts = watched(db_url, wallet)
    ours, theirs = stored_state(db_url, wallet), ledger_state(sim.ledger(set(scripts)), scripts)
    for key in ours:
        if isinstance(ours[key], dict):
            only_ours = {k: v for k, v in ours[key].items() if theirs[key].get(k) != v}
            only_theirs = {k: v for k, v in theirs[key].items() if ours[key].get(k) != v}
            assert (only_ours, only_theirs) == ({}, {}), key
        else:
            assert ours[key] == theirs[key], key


def equals_ledger(db_url: str, sim: BitcoindSim, wallet: str) -> bool:
    try:
        assert_equals_ledger(db_url, sim, wallet)
    except AssertionError:
        return False
    return True


EVERY_TYPE = [wallet_keys.address(kind, 0).address for kind in wallet_keys.STANDARD_KINDS]
WPKH = wallet_keys.descriptor(wallet_keys.Kind.P2WPKH)
MULTI = wallet_keys.descriptor(wallet_keys.Kind.WSH_SORTEDMULTI)
SH_MULTI = wallet_keys.descriptor(wallet_keys.Kind.SH_MULTI)
TR = wallet_keys.descriptor(wallet_keys.Kind.P2TR)
FULL_WALLET = {
    "chain": "btc", "name": "full", "addresses": EVERY_TYPE,
    "descriptors": [WPKH, MULTI, SH_MULTI, TR], "gap_limit": 5,
}  # fmt: skip


def make_activity(sim: BitcoindSim) -> None:
    """Payments to every address type and past the first gap-limit window of descriptors,
    spends to outside and back to the wallet, and some of it still in the mempool."""
    sim.generate(30)  # the simulator's own coins
    funded = [sim.pay(wallet_keys.address_script(a), 10_000 + i) for i, a in enumerate(EVERY_TYPE)]
    sim.generate(1)
    # Descriptors: index 3, then 7 (inside 3 + gap 5), then 11: found only as the window grows.
    for index in (3, 7, 11):
        _, script = wallet_keys.derive(WPKH, index)
        sim.pay(script, 50_000 + index)
        sim.generate(1)
    for desc in (MULTI, SH_MULTI, TR):
        sim.pay(wallet_keys.derive(desc, 2)[1], 77_000)
    sim.generate(2)
    # Spend two wallet outputs: to an outside script, change to descriptor index 12.
    outside = regtest.p2pk_script(bytes([2]) + bytes(32))
    change = wallet_keys.derive(WPKH, 12)[1]
    sim.spend(funded[:2], [(outside, 15_000), (change, 5_000)])
    sim.generate(1)
    # In the mempool: a payment, and a spend of a confirmed wallet output.
    sim.pay(wallet_keys.derive(WPKH, 4)[1], 33_000)
    sim.spend([funded[2]], [(outside, 9_000)])


async def test_every_address_type_and_descriptors_past_the_gap_limit_equal_the_ledger(
    db_url: str, bitcoind_sim: BitcoindSim, electrumx: ElectrumXProc
) -> None:
    make_activity(bitcoind_sim)
    height = bitcoind_sim.height
    electrumx.wait_synced(height)
    mempool_script = wallet_keys.derive(WPKH, 4)[1]
    await async_wait_for(
        lambda: bool(electrumx.call("blockchain.scripthash.get_mempool",
                                    keys.scripthash(mempool_script).hex())),
        what="ElectrumX's mempool",
    )  # fmt: skip
    cfg = wallet_config(db_url, [electrumx.tcp_url], [FULL_WALLET])
    assert await sync_to(cfg, height) == 0
    assert_equals_ledger(db_url, bitcoind_sim, "full")
    state = stored_state(db_url, "full")
    assert sum(1 for h, _, _ in state["transactions"].values() if h is None) == 2
    assert any(spent for *_, spent, _ in state["outputs"].values())
    used = rows(db_url, "SELECT derivation_index FROM wallet_scripts WHERE used AND "
                        "descriptor = 0 ORDER BY 1")  # fmt: skip
    assert used == [(3,), (4,), (7,), (11,), (12,)]


async def wait_for_ledger(db_url: str, sim: BitcoindSim, wallet: str, what: str) -> None:
    try:
        await async_wait_for(lambda: equals_ledger(db_url, sim, wallet), timeout_secs=60, what=what)
    except AssertionError:
        assert_equals_ledger(db_url, sim, wallet)  # say what differs
        raise


async def test_following_payments_reorgs_and_replacements(
    db_url: str, bitcoind_sim: BitcoindSim, electrumx: ElectrumXProc
) -> None:
    """While the daemon follows: a payment confirms; a reorg drops a confirmed transaction,
    another moves one to another height; a mempool transaction is replaced (a double
    spend). After each, the tables equal the simulator's ledger."""
    sim = bitcoind_sim
    sim.generate(20)
    electrumx.wait_synced(20)
    wallet = {"chain": "btc", "name": "w", "descriptors": [WPKH], "gap_limit": 5}
    cfg = wallet_config(db_url, [electrumx.tcp_url], [wallet])
    receive = [wallet_keys.derive(WPKH, i)[1] for i in range(4)]
    async with running_sync(cfg) as (task, runtime):
        paid, _ = sim.pay(receive[0], 40_000)
        await wait_for_ledger(db_url, sim, "w", "a mempool payment")
        assert stored_state(db_url, "w")["transactions"][paid][0] is None
        sim.generate(1)
        await wait_for_ledger(db_url, sim, "w", "the payment confirmed")
        assert stored_state(db_url, "w")["transactions"][paid][0] == 21

        dropped, _ = sim.pay(receive[1], 41_000)
        moved, _ = sim.pay(receive[2], 42_000)
        sim.generate(1)  # both at 22
        await wait_for_ledger(db_url, sim, "w", "two payments at 22")
        sim.reorg(1, 3, drop={dropped}, delay={moved})  # 22-24: moved lands at 24
        await wait_for_ledger(db_url, sim, "w", "a reorg that drops one and moves one")
        state = stored_state(db_url, "w")
        assert dropped not in state["transactions"]
        assert state["transactions"][moved][0] == 24

        first, _ = sim.pay(receive[3], 43_000)
        await wait_for_ledger(db_url, sim, "w", "a mempool payment to replace")
        second = sim.replace(first, [(receive[3], 42_000)])
        await wait_for_ledger(db_url, sim, "w", "the replacement")
        state = stored_state(db_url, "w")
        assert first not in state["transactions"] and state["transactions"][second][0] is None
        sim.generate(1)
        await wait_for_ledger(db_url, sim, "w", "the replacement confirmed")
        assert runtime.chains[0].wallets is not None
        assert runtime.chains[0].wallets.proofs_checked >= 4
    assert task.result() == 0


def write_config(path: Path, db_url: str, url: str, wallets: list[dict[str, Any]]) -> None:
    text = (
        f'[database]\nurl = "{db_url}"\n[[chains]]\nname = "btc"\nkind = "electrum"\n'
        f'urls = ["{url}"]\ngenesis_hash = "{regtest.GENESIS_HASH_HEX}"\n'
        "poll_interval_secs = 0.2\n"
    )
    for wallet in wallets:
        text += "[[wallets]]\n" + "".join(f"{k} = {v!r}\n" for k, v in wallet.items())
    path.write_text(text.replace("'", '"'))


def test_a_wallet_and_an_address_added_to_a_running_indexer_sync_on_sighup(
    db_url: str, bitcoind_sim: BitcoindSim, electrumx: ElectrumXProc, tmp_path: Path
) -> None:
    sim = bitcoind_sim
    sim.generate(10)
    first = wallet_keys.address(wallet_keys.Kind.P2WPKH, 0)
    later = wallet_keys.address(wallet_keys.Kind.P2TR, 0)
    other = wallet_keys.address(wallet_keys.Kind.P2PKH, 5)
    for target in (first, later, other):
        sim.pay(target.script_pubkey, 20_000)
    sim.generate(2)
    electrumx.wait_synced(12)
    path = tmp_path / "indexer.toml"
    write_config(path, db_url, electrumx.tcp_url,
                 [{"chain": "btc", "name": "a", "addresses": [first.address]}])  # fmt: skip
    proc = spawn_cli("--config", str(path), "sync")
    try:
        wait_for(lambda: equals_ledger(db_url, sim, "a") and bool(stored_state(db_url, "a")
                 ["transactions"]), what="wallet a in sync")  # fmt: skip
        blocks_before = rows(db_url, "SELECT count(*) FROM blocks")
        write_config(path, db_url, electrumx.tcp_url, [
            {"chain": "btc", "name": "a", "addresses": [first.address, later.address]},
            {"chain": "btc", "name": "b", "descriptors": [wallet_keys.descriptor(
                wallet_keys.Kind.P2PKH)], "gap_limit": 6},
        ])  # fmt: skip
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: len(stored_state(db_url, "a")["transactions"]) == 2,
                 what="the address added to wallet a")  # fmt: skip
        wait_for(lambda: len(stored_state(db_url, "b")["transactions"]) == 1,
                 what="wallet b added")  # fmt: skip
        assert_equals_ledger(db_url, sim, "a")
        assert_equals_ledger(db_url, sim, "b")
        assert proc.poll() is None  # nothing restarted
        assert rows(db_url, "SELECT count(*) FROM blocks") == blocks_before
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "reload: watching wallet(s) a, b" in err


def test_verify_rechecks_every_stored_proof_and_stats_show_the_wallet(
    db_url: str, bitcoind_sim: BitcoindSim, electrumx: ElectrumXProc, tmp_path: Path
) -> None:
    import json

    from tests.integration.helpers import run_cli

    sim = bitcoind_sim
    target = wallet_keys.address(wallet_keys.Kind.P2WPKH, 0)
    sim.generate(3)
    sim.generate(2, script_pubkey=target.script_pubkey)  # coinbases at 4 and 5
    sim.pay(target.script_pubkey, 12_345)
    sim.generate(3)
    sim.pay(target.script_pubkey, 999)  # stays in the mempool
    electrumx.wait_synced(8)
    path = tmp_path / "indexer.toml"
    write_config(path, db_url, electrumx.tcp_url,
                 [{"chain": "btc", "name": "w", "addresses": [target.address]}])  # fmt: skip
    wait_for(
        lambda: bool(electrumx.call("blockchain.scripthash.get_mempool", target.scripthash)),
        what="ElectrumX's mempool",
    )
    done = run_cli("--config", str(path), "sync", "--to", "8")
    assert done.returncode == 0, done.stderr
    assert_equals_ledger(db_url, sim, "w")
    ok = run_cli("--config", str(path), "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok (" in ok.stdout and "3 wallet transaction proof(s)" in ok.stdout
    stats = run_cli("--config", str(path), "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    (wallet,) = json.loads(stats.stdout)[0]["wallets"]
    assert (wallet["wallet"], wallet["confirmed_transactions"]) == ("w", 3)
    assert wallet["scripts"] == 1 and wallet["synced_at"] is not None
    text = run_cli("--config", str(path), "stats")
    assert "wallet w: 1 scripts, 3 confirmed and" in text.stdout
    # A stored proof changed by hand, an output's value changed: both found.
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE wallet_transactions SET merkle_branch = ARRAY[%s::bytea] "
                     "WHERE height = 6", (bytes(32),))  # fmt: skip
        conn.execute("UPDATE wallet_outputs SET value = value + 1 WHERE height = 4")
    bad = run_cli("--config", str(path), "verify")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "does not reach the merkle root" in bad.stdout
    assert "not what the stored transaction pays" in bad.stdout
    assert "2 problem(s)" in bad.stdout


async def test_a_burst_of_notifications_is_synced_in_a_few_rounds(
    db_url: str, bitcoind_sim: BitcoindSim, electrumx: ElectrumXProc
) -> None:
    """Thirty scripts paid in one block notify thirty times; the wallet syncs them in a
    handful of rounds (coalesced), not one round per notification."""
    sim = bitcoind_sim
    sim.generate(40)
    electrumx.wait_synced(40)
    wallet = {"chain": "btc", "name": "w", "descriptors": [WPKH], "gap_limit": 40}
    cfg = wallet_config(db_url, [electrumx.tcp_url], [wallet])
    async with running_sync(cfg) as (_, runtime):
        syncer = runtime.chains[0].wallets
        assert syncer is not None
        await async_wait_for(lambda: syncer.in_sync, what="the first full pass")
        rounds = syncer.rounds
        for i in range(30):
            sim.pay(wallet_keys.derive(WPKH, i)[1], 10_000 + i)
        sim.generate(1)
        await wait_for_ledger(db_url, sim, "w", "thirty payments")
        assert len(stored_state(db_url, "w")["transactions"]) == 30
        assert syncer.rounds - rounds <= 6, syncer.rounds - rounds


def test_rewind_turns_wallet_transactions_above_it_unconfirmed_and_sync_proves_them_again(
    db_url: str, bitcoind_sim: BitcoindSim, electrumx: ElectrumXProc, tmp_path: Path
) -> None:
    from tests.integration.helpers import run_cli

    sim = bitcoind_sim
    target = wallet_keys.address(wallet_keys.Kind.P2SH_P2WPKH, 0)
    sim.generate(2)
    sim.generate(4, script_pubkey=target.script_pubkey)  # coinbases at 3..6
    electrumx.wait_synced(6)
    path = tmp_path / "indexer.toml"
    write_config(path, db_url, electrumx.tcp_url,
                 [{"chain": "btc", "name": "w", "addresses": [target.address]}])  # fmt: skip
    assert run_cli("--config", str(path), "sync", "--to", "6").returncode == 0
    assert_equals_ledger(db_url, sim, "w")
    done = run_cli("--config", str(path), "rewind", "--chain", "btc", "--to", "4", "--yes")
    assert done.returncode == 0, done.stderr
    assert "2 wallet transaction(s) turn unconfirmed" in done.stderr + done.stdout
    heights = sorted(h for h, _, _ in stored_state(db_url, "w")["transactions"].values()
                     if h is not None)  # fmt: skip
    assert heights == [3, 4] and len(stored_state(db_url, "w")["transactions"]) == 4
    assert rows(db_url, "SELECT count(*) FROM wallet_scripts WHERE status IS NULL") == [(1,)]
    assert run_cli("--config", str(path), "sync", "--to", "6").returncode == 0
    assert_equals_ledger(db_url, sim, "w")  # proven again on the same branch


async def test_sync_to_a_height_below_the_servers_tip_ends_with_what_it_can_prove(
    db_url: str, bitcoind_sim: BitcoindSim, electrumx: ElectrumXProc
) -> None:
    """`sync --to 8` with a payment at 7 and one at 10: the first is stored, proven; the
    second cannot be proven (no header at 10 is stored): stored as unconfirmed, never as
    confirmed, and its script left to sync again; the run ends."""
    sim = bitcoind_sim
    target = wallet_keys.address(wallet_keys.Kind.P2WPKH, 1)
    sim.generate(6)
    sim.generate(1, script_pubkey=target.script_pubkey)  # 7
    sim.generate(2)
    sim.generate(1, script_pubkey=target.script_pubkey)  # 10
    electrumx.wait_synced(10)
    cfg = wallet_config(db_url, [electrumx.tcp_url],
                        [{"chain": "btc", "name": "w", "addresses": [target.address]}])  # fmt: skip
    assert await sync_to(cfg, 8, timeout_secs=60) == 0
    got = rows(db_url, "SELECT height FROM wallet_transactions ORDER BY height")
    assert got == [(7,), (None,)]
    assert rows(db_url, "SELECT count(*) FROM wallet_scripts WHERE status IS NULL") == [(1,)]
    assert await sync_to(cfg, 10, timeout_secs=60) == 0
    assert_equals_ledger(db_url, sim, "w")
