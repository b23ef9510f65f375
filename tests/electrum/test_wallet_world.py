"""The wallet test world: simulated wallet activity, its ledger, real ElectrumX, and a liar.

The first tests pin the simulator's wallet semantics (`pay`, `spend`, `replace`, `reorg`
drop/delay, `ledger`) without ElectrumX; the next ones check that a real ElectrumX indexing
the simulator agrees with `ledger` for every standard script type, across reorgs and
replacements; the last ones check that `LyingElectrum` really lies, and only when told.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from embit import bip32, bip39
from embit.descriptor import Descriptor
from embit.networks import NETWORKS

from tests.electrum import lying_electrum, regtest, wallet_keys
from tests.electrum.bitcoind_sim import PAY_FEE_SATS, BitcoindSim
from tests.electrum.electrumx_proc import (
    CLIENT_NAME,
    LOOPBACK,
    PROTOCOL_VERSION,
    ElectrumXProc,
    LineClient,
)
from tests.electrum.lying_electrum import LyingElectrum
from tests.electrum.wallet_keys import Kind

COIN = regtest.COIN_SATS
SUBSIDY = 50 * COIN
OUTSIDER = bytes([regtest.OP_TRUE, regtest.OP_TRUE, regtest.OP_TRUE])  # no wallet's script


@pytest.fixture
def wallet() -> dict[Kind, bytes]:
    """One receive script of each standard type, plus a 1-of-2 multisig."""
    kinds = (*wallet_keys.STANDARD_KINDS, Kind.WSH_SORTEDMULTI)
    return {kind: wallet_keys.address(kind, 0).script_pubkey for kind in kinds}


@pytest.fixture
def lying(electrumx: ElectrumXProc) -> Iterator[LyingElectrum]:
    with LyingElectrum(electrumx.tcp_port) as proxy:
        yield proxy
    assert not proxy.internal_errors, f"the proxy failed: {proxy.internal_errors!r}"


def rpc(port: int, method: str, *params: Any) -> Any:
    """Call `method` on a fresh connection (so ElectrumX never holds the reply to pad it)."""
    with LineClient(port) as client:
        client.call("server.version", CLIENT_NAME, PROTOCOL_VERSION)
        return client.call(method, *params)


def by_outpoint(utxos: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(utxos, key=lambda utxo: (utxo["tx_hash"], utxo["tx_pos"]))


def electrum_view(port: int, scripts: list[bytes]) -> dict[str, Any]:
    """What the Electrum server at `port` says about `scripts`: tip, history, balance, UTXOs."""
    tip = rpc(port, "blockchain.headers.subscribe")
    view: dict[str, Any] = {
        "tip": (tip["height"], regtest.Header.parse(bytes.fromhex(tip["hex"])).hash_hex)
    }
    for script in scripts:
        scripthash = wallet_keys.electrum_scripthash(script)
        view[scripthash] = (
            rpc(port, "blockchain.scripthash.get_history", scripthash),
            rpc(port, "blockchain.scripthash.get_balance", scripthash),
            by_outpoint(rpc(port, "blockchain.scripthash.listunspent", scripthash)),
        )
    return view


def expected_view(ledger: regtest.Ledger, scripts: list[bytes]) -> dict[str, Any]:
    view: dict[str, Any] = {"tip": (ledger.tip_height, ledger.tip_hash_hex)}
    for script in scripts:
        view[wallet_keys.electrum_scripthash(script)] = (
            ledger.electrum_history(script),
            ledger.electrum_balance(script),
            by_outpoint(ledger.electrum_listunspent(script)),
        )
    return view


def wait_agreement(
    sim: BitcoindSim, port: int, scripts: list[bytes], *, timeout_secs: float = 30.0
) -> regtest.Ledger:
    """Wait until the Electrum server at `port` says what `sim.ledger` says; return the ledger."""
    deadline = time.monotonic() + timeout_secs
    while True:
        ledger = sim.ledger(scripts)
        want = expected_view(ledger, scripts)
        got = electrum_view(port, scripts)
        if got == want:
            return ledger
        if time.monotonic() > deadline:
            assert got == want, "ElectrumX never agreed with the ledger"
        time.sleep(0.1)


# -- Keys and addresses


def test_wallet_keys_are_the_bip32_test_vectors_and_derive_regtest_addresses() -> None:
    root = bip32.HDKey.from_seed(
        bytes.fromhex(wallet_keys.ROOT_SEED_HEX), version=NETWORKS["test"]["xprv"]
    )
    assert root.to_base58() == wallet_keys.ROOT_TPRV
    assert root.my_fingerprint.hex() == wallet_keys.ROOT_FINGERPRINT_HEX
    cosigner = bip32.HDKey.from_string(wallet_keys.COSIGNER_TPRV)
    assert cosigner.my_fingerprint.hex() == wallet_keys.COSIGNER_FINGERPRINT_HEX

    prefixes = {
        Kind.P2PKH: ("m", "n"),
        Kind.P2SH_P2WPKH: ("2",),
        Kind.P2WPKH: ("bcrt1q",),
        Kind.P2WSH: ("bcrt1q",),
        Kind.P2TR: ("bcrt1p",),
    }
    script_lengths = {
        Kind.P2PKH: 25,
        Kind.P2SH_P2WPKH: 23,
        Kind.P2WPKH: 22,
        Kind.P2WSH: 34,
        Kind.P2TR: 34,
    }
    scripts = set()
    for kind, address in wallet_keys.standard_addresses(3).items():
        assert address.address.startswith(prefixes[kind])
        assert len(address.script_pubkey) == script_lengths[kind]
        assert wallet_keys.address_script(address.address) == address.script_pubkey
        assert wallet_keys.derive(wallet_keys.descriptor(kind), 3) == (
            address.address,
            address.script_pubkey,
        )
        scripts.add(address.script_pubkey)
    assert len(scripts) == 5

    receive = wallet_keys.descriptor(Kind.P2WPKH)
    assert receive.startswith(f"wpkh([{wallet_keys.ROOT_FINGERPRINT_HEX}/84h/1h/0h]tpub")
    assert receive.endswith("/0/*)")
    assert wallet_keys.descriptor(Kind.P2WPKH, change=True).endswith("/1/*)")
    assert wallet_keys.derive(wallet_keys.descriptor(Kind.P2WPKH, checksum=True), 0) == (
        wallet_keys.derive(receive, 0)
    )
    for kind in (Kind.WSH_SORTEDMULTI, Kind.SH_MULTI):
        text = wallet_keys.descriptor(kind)
        assert wallet_keys.COSIGNER_FINGERPRINT_HEX in text
        assert wallet_keys.address(kind, 0).address.startswith(
            "bcrt1q" if kind == Kind.WSH_SORTEDMULTI else "2"
        )
    assert wallet_keys.address(Kind.P2WPKH, 0) != wallet_keys.address(Kind.P2WPKH, 1)
    with pytest.raises(ValueError, match="ranged"):
        wallet_keys.derive(receive.replace("/0/*", "/0/0"), 0)


def test_embit_derives_the_bip84_and_bip86_test_vectors() -> None:
    """The derivations above are only as good as embit's: check it on published vectors."""
    root = bip32.HDKey.from_seed(bip39.mnemonic_to_seed("abandon " * 11 + "about"))
    for path, template, expected in (
        ("84h/0h/0h", "wpkh({})", "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"),
        ("86h/0h/0h", "tr({})", "bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr"),
    ):
        xpub = root.derive(f"m/{path}").to_public().to_base58()
        derived = Descriptor.from_string(template.format(f"{xpub}/0/*")).derive(0)
        assert derived.address(NETWORKS["main"]) == expected


def test_electrum_scripthash_matches_the_protocol_docs() -> None:
    # The example of the Electrum protocol docs: the genesis coinbase's P2PKH address.
    script = wallet_keys.address_script("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa")
    assert (
        wallet_keys.electrum_scripthash(script)
        == "8b01df4e368ea28f8dc0423bcf7a4923e3a12d307c875e47a0cfbf90b5c39161"
    )


# -- The simulator's wallet semantics (no ElectrumX)


def test_pay_and_spend_make_the_ledger_and_its_balances() -> None:
    sim = BitcoindSim()
    sim.generate(3)
    a, b = (wallet_keys.address(Kind.P2WPKH, i).script_pubkey for i in (0, 1))
    paid, vout = sim.pay(a, 70_000, extra_outputs=[(b, 5_000), (OUTSIDER, 1)])
    assert vout == 0
    tx = sim.transaction(paid)
    assert [(o.script_pubkey, o.value_sats) for o in tx.outputs[:3]] == [
        (a, 70_000),
        (b, 5_000),
        (OUTSIDER, 1),
    ]
    assert tx.outputs[3].value_sats == SUBSIDY - 75_001 - PAY_FEE_SATS  # change to the sim
    assert tx.inputs[0].prev_txid_bytes == sim.block(1).txs[0].txid_bytes  # oldest coinbase
    second, _ = sim.pay(a, 1_000)
    assert sim.transaction(second).inputs[0].prev_txid_bytes == sim.block(2).txs[0].txid_bytes

    ledger = sim.ledger({a, b})
    assert ledger.balances == {
        a: regtest.Balance(0, 71_000),
        b: regtest.Balance(0, 5_000),
    }
    assert set(ledger.transactions) == {paid, second}
    assert ledger.transactions[paid].scripts == {a, b}
    assert ledger.transactions[paid].height is None
    assert ledger.transactions[paid].fee_sats == PAY_FEE_SATS

    sim.generate(1)  # mines the mempool
    spent = sim.spend([(paid, 0), (paid, 1)], [(b, 50_000), (OUTSIDER, 20_000)])
    ledger = sim.ledger({a, b})
    assert ledger.balances == {
        a: regtest.Balance(71_000, -70_000),  # confirmed outputs spent in the mempool
        b: regtest.Balance(5_000, 50_000 - 5_000),
    }
    mined = ledger.transactions[paid]
    assert (mined.height, mined.block_hash_hex, mined.position) == (4, sim.block_hash(4), 1)
    assert ledger.outputs[(paid, 0)] == regtest.LedgerOutput(
        txid_hex=paid,
        vout=0,
        script_pubkey=a,
        value_sats=70_000,
        height=4,
        spent_txid_hex=spent,
        spent_height=None,
    )
    assert ledger.transactions[spent].fee_sats == 75_000 - 70_000
    assert ledger.electrum_history(b) == [
        {"tx_hash": paid, "height": 4},
        {"tx_hash": spent, "height": 0, "fee": 5_000},
    ]
    chained = sim.spend([(spent, 0)], [(a, 49_000)])
    ledger = sim.ledger({a, b})
    assert ledger.transactions[chained].has_unconfirmed_inputs
    assert ledger.balances[b] == regtest.Balance(5_000, -5_000)  # created and spent unconfirmed
    assert ledger.total().confirmed_sats + ledger.total().unconfirmed_sats == sum(
        out.value_sats for out in ledger.utxos()
    )

    with pytest.raises(ValueError, match="not an unspent output"):
        sim.spend([(paid, 0)], [(a, 1)])  # already spent in the mempool
    with pytest.raises(ValueError, match="exceed inputs"):
        sim.spend([(chained, 0)], [(a, 49_001)])
    with pytest.raises(ValueError, match="no unspent coin"):
        sim.pay(a, 100 * COIN)


def test_replace_evicts_the_original_and_its_descendants() -> None:
    sim = BitcoindSim()
    sim.generate(2)
    script = wallet_keys.address(Kind.P2TR, 0).script_pubkey
    original, _ = sim.pay(script, 10_000)
    child = sim.spend([(original, 0)], [(script, 9_000)])
    other, _ = sim.pay(script, 3_000)
    original_inputs = sim.transaction(original).inputs
    replacement = sim.replace(original, [(OUTSIDER, 40 * COIN)])
    assert sim.mempool() == [other, replacement]
    assert sim.transaction(replacement).inputs == original_inputs  # a double spend
    ledger = sim.ledger({script})
    assert set(ledger.transactions) == {other}
    assert child not in sim.mempool()
    with pytest.raises(ValueError, match="not in the mempool"):
        sim.replace(original, [(script, 1)])


def test_reorg_drops_and_delays_transactions() -> None:
    sim = BitcoindSim()
    sim.generate(5)
    script = wallet_keys.address(Kind.P2PKH, 0).script_pubkey
    kept, _ = sim.pay(script, 1_000)
    dropped, _ = sim.pay(script, 2_000)
    dropped_child = sim.spend([(dropped, 0)], [(script, 1_500)])
    delayed, _ = sim.pay(script, 3_000)
    delayed_child = sim.spend([(delayed, 0)], [(script, 2_500)])
    sim.generate(1)  # all five at height 6
    unconfirmed, _ = sim.pay(script, 4_000)

    with pytest.raises(ValueError, match="both dropped and delayed"):
        sim.reorg(1, 3, drop={kept}, delay={kept})
    with pytest.raises(ValueError, match="at least two new blocks"):
        sim.reorg(1, 1, delay={delayed})
    with pytest.raises(ValueError, match="not in the mempool"):
        sim.reorg(1, 3, drop={sim.block(5).txs[0].txid_hex})  # a coinbase never returns
    with pytest.raises(ValueError, match="would stay at height 6"):
        sim.reorg(2, 2, delay={delayed})
    assert sim.height == 6 and sim.mempool() == [unconfirmed]  # errors change nothing

    hashes = sim.reorg(1, 3, drop={dropped}, delay={delayed})
    assert len(hashes) == 3 and sim.height == 8
    ledger = sim.ledger({script})
    heights = {txid: tx.height for txid, tx in ledger.transactions.items()}
    assert heights == {kept: 6, unconfirmed: 6, delayed: 8, delayed_child: 8}
    assert dropped not in sim.mempool() and dropped_child not in sim.mempool()
    assert sim.mempool() == []


def test_disconnecting_a_coinbase_evicts_its_spenders() -> None:
    sim = BitcoindSim()
    sim.generate(1)
    (coinbase_block,) = sim.generate(1)
    spends_old = sim.spend([(sim.block(1).txs[0].txid_hex, 0)], [(OUTSIDER, 1_000)])
    spends_new = sim.spend([(sim.block(2).txs[0].txid_hex, 0)], [(OUTSIDER, 2_000)])
    child = sim.spend([(spends_new, 0)], [(OUTSIDER, 1_000)])
    sim.invalidate(coinbase_block)
    assert sim.mempool() == [spends_old]  # `spends_new` and its `child` are evicted
    assert {spends_new, child}.isdisjoint(sim.mempool())


# -- ElectrumX agrees with the ledger


def test_electrumx_agrees_with_the_ledger_for_every_script_type(
    bitcoind_sim: BitcoindSim, electrumx: ElectrumXProc, wallet: dict[Kind, bytes]
) -> None:
    sim, scripts = bitcoind_sim, list(wallet.values())
    sim.generate(10)
    paid = {
        kind: sim.pay(script, 100_000 + n * 1_000)
        for n, (kind, script) in enumerate(wallet.items())
    }
    wait_agreement(sim, electrumx.tcp_port, scripts)  # all in the mempool

    sim.generate(1)
    ledger = wait_agreement(sim, electrumx.tcp_port, scripts)
    assert {tx.height for tx in ledger.transactions.values()} == {11}

    # Spend between the wallet's scripts and out of it, with an unconfirmed chain.
    move = sim.spend([paid[Kind.P2PKH], paid[Kind.P2TR]], [(wallet[Kind.P2WSH], 150_000)])
    sim.spend([(move, 0)], [(wallet[Kind.P2SH_P2WPKH], 140_000), (OUTSIDER, 9_000)])
    sim.spend([paid[Kind.P2WPKH]], [(OUTSIDER, 90_000)])
    ledger = wait_agreement(sim, electrumx.tcp_port, scripts)
    assert ledger.balances[wallet[Kind.P2PKH]] == regtest.Balance(100_000, -100_000)
    assert any(tx.has_unconfirmed_inputs for tx in ledger.transactions.values())

    sim.generate(2, script_pubkey=wallet[Kind.P2TR])  # a wallet mines, too
    ledger = wait_agreement(sim, electrumx.tcp_port, scripts)
    assert all(balance.unconfirmed_sats == 0 for balance in ledger.balances.values())
    assert ledger.balances[wallet[Kind.P2TR]].confirmed_sats == 2 * SUBSIDY


def test_electrumx_follows_a_reorg_that_drops_a_payment(
    bitcoind_sim: BitcoindSim, electrumx: ElectrumXProc, wallet: dict[Kind, bytes]
) -> None:
    sim, scripts = bitcoind_sim, list(wallet.values())
    sim.generate(5)
    dropped, _ = sim.pay(wallet[Kind.P2WPKH], 50_000)
    kept, _ = sim.pay(wallet[Kind.P2WPKH], 60_000)
    spend = sim.spend([(dropped, 0)], [(wallet[Kind.P2TR], 40_000)])
    sim.generate(2)
    before = wait_agreement(sim, electrumx.tcp_port, scripts)
    assert before.transactions[spend].height == 6

    sim.reorg(2, 3, drop={dropped})
    after = wait_agreement(sim, electrumx.tcp_port, scripts)
    assert set(after.transactions) == {kept}
    assert after.transactions[kept].height == 6
    assert after.transactions[kept].block_hash_hex != before.transactions[kept].block_hash_hex
    assert after.balances[wallet[Kind.P2TR]] == regtest.Balance(0, 0)


def test_electrumx_follows_a_reorg_that_delays_a_payment(
    bitcoind_sim: BitcoindSim, electrumx: ElectrumXProc, wallet: dict[Kind, bytes]
) -> None:
    sim, scripts = bitcoind_sim, list(wallet.values())
    sim.generate(5)
    delayed, _ = sim.pay(wallet[Kind.P2SH_P2WPKH], 50_000)
    other, _ = sim.pay(wallet[Kind.P2PKH], 60_000)
    sim.generate(1)
    unconfirmed, _ = sim.pay(wallet[Kind.P2PKH], 70_000)
    before = wait_agreement(sim, electrumx.tcp_port, scripts)
    assert before.transactions[delayed].height == 6

    sim.reorg(1, 3, delay={delayed})
    after = wait_agreement(sim, electrumx.tcp_port, scripts)
    heights = {txid: tx.height for txid, tx in after.transactions.items()}
    assert heights == {delayed: 8, other: 6, unconfirmed: 6}


def test_electrumx_follows_a_replacement(
    bitcoind_sim: BitcoindSim, electrumx: ElectrumXProc, wallet: dict[Kind, bytes]
) -> None:
    sim, scripts = bitcoind_sim, list(wallet.values())
    sim.generate(3)
    original, _ = sim.pay(wallet[Kind.P2WSH], 80_000)
    child = sim.spend([(original, 0)], [(wallet[Kind.P2TR], 79_000)])
    before = wait_agreement(sim, electrumx.tcp_port, scripts)
    assert set(before.transactions) == {original, child}

    replacement = sim.replace(original, [(wallet[Kind.P2WPKH], 30 * COIN)])
    after = wait_agreement(sim, electrumx.tcp_port, scripts)
    assert set(after.transactions) == {replacement}
    sim.generate(1)
    mined = wait_agreement(sim, electrumx.tcp_port, scripts)
    assert mined.balances[wallet[Kind.P2WPKH]] == regtest.Balance(30 * COIN, 0)


# -- The lying proxy


def test_corrupt_raw_tx_changes_one_byte_of_legacy_and_segwit_serializations() -> None:
    tx = regtest.spend_tx(
        prev_txid_bytes=bytes(range(32)),
        prev_index=1,
        outputs=[regtest.TxOut(0x1234, OUTSIDER), regtest.TxOut(7, OUTSIDER)],
        script_sig=b"\x51" * 300,  # a 3-byte varint length
    )
    raw = tx.serialize()
    # The same transaction with a segwit marker, flag and one empty witness.
    segwit = raw[:4] + b"\x00\x01" + raw[4:-4] + b"\x00" + raw[-4:]
    legacy_offset = 4 + 1 + (36 + 3 + 300 + 4) + 1  # version, the input, output count
    for serialized, value_offset in ((raw, legacy_offset), (segwit, legacy_offset + 2)):
        corrupted = lying_electrum.corrupt_raw_tx(serialized)
        changed = [i for i, (x, y) in enumerate(zip(serialized, corrupted, strict=True)) if x != y]
        assert changed == [value_offset]
        assert corrupted[value_offset : value_offset + 8] == (0x1235).to_bytes(8, "little")


def test_lying_proxy_corrupts_transactions(
    bitcoind_sim: BitcoindSim, electrumx: ElectrumXProc, lying: LyingElectrum
) -> None:
    sim = bitcoind_sim
    sim.generate(2)
    victim, _ = sim.pay(OUTSIDER, 10_000)
    bystander, _ = sim.pay(OUTSIDER, 20_000)
    wait_agreement(sim, electrumx.tcp_port, [OUTSIDER])
    truth = rpc(lying.port, "blockchain.transaction.get", victim)
    assert truth == sim.transaction(victim).serialize().hex()
    assert lying.lies_told() == {}

    lying.corrupt_transactions([victim])
    lie = bytes.fromhex(rpc(lying.port, "blockchain.transaction.get", victim))
    assert regtest.hash_to_hex(regtest.double_sha256(lie)) != victim
    assert sum(x != y for x, y in zip(lie, bytes.fromhex(truth), strict=True)) == 1
    verbose = rpc(lying.port, "blockchain.transaction.get", victim, True)
    assert verbose["txid"] == victim and verbose["hex"] != truth
    assert rpc(lying.port, "blockchain.transaction.get", bystander) == (
        sim.transaction(bystander).serialize().hex()
    )
    assert lying.lies_told() == {lying_electrum.TX_GET: 2}

    lying.tell_truth()
    assert rpc(lying.port, "blockchain.transaction.get", victim) == truth


@pytest.mark.parametrize("target", ["branch", "pos"])
def test_lying_proxy_breaks_merkle_branches(
    target: lying_electrum.MerkleTarget,
    bitcoind_sim: BitcoindSim,
    electrumx: ElectrumXProc,
    lying: LyingElectrum,
) -> None:
    sim = bitcoind_sim
    sim.generate(6)
    txids = [sim.pay(OUTSIDER, 1_000 * n)[0] for n in range(1, 6)]
    sim.generate(1)  # block 7: a coinbase and five payments (odd levels duplicate a hash)
    wait_agreement(sim, electrumx.tcp_port, [OUTSIDER])
    header_root = regtest.hash_to_hex(sim.block(7).header.merkle_root_bytes)
    lying.corrupt_merkle(target=target)
    for txid in [sim.block(7).txs[0].txid_hex, *txids]:
        truth = rpc(electrumx.tcp_port, "blockchain.transaction.get_merkle", txid, 7)
        root = lying_electrum.merkle_root_from_branch(txid, truth["merkle"], truth["pos"])
        assert root == header_root
        lie = rpc(lying.port, "blockchain.transaction.get_merkle", txid, 7)
        assert lie["block_height"] == 7
        assert (lie["merkle"] != truth["merkle"]) == (target == "branch")
        assert (lie["pos"] != truth["pos"]) == (target == "pos")
        assert lying_electrum.merkle_root_from_branch(txid, lie["merkle"], lie["pos"]) != root
    assert lying.lies_told() == {lying_electrum.GET_MERKLE: 6}

    # A block holding only its coinbase has an empty branch: only the position can lie.
    coinbase = sim.block(1).txs[0].txid_hex
    lie = rpc(lying.port, "blockchain.transaction.get_merkle", coinbase, 1)
    assert (lie["merkle"], lie["pos"]) == ([], 1)  # past a one-leaf tree: Electrum rejects it


async def test_lying_proxy_omits_a_transaction_from_history_consistently(
    bitcoind_sim: BitcoindSim, electrumx: ElectrumXProc, lying: LyingElectrum
) -> None:
    sim = bitcoind_sim
    script = wallet_keys.address(Kind.P2WPKH, 0).script_pubkey
    scripthash = wallet_keys.electrum_scripthash(script)
    sim.generate(3)
    first, _ = sim.pay(script, 10_000)
    hidden, _ = sim.pay(script, 20_000)
    sim.generate(1)
    await asyncio.to_thread(wait_agreement, sim, electrumx.tcp_port, [script])
    true_history = sim.ledger([script]).electrum_history(script)

    lying.omit_from_history(hidden, scripthashes=[scripthash], rewrite_status=True)
    history = await asyncio.to_thread(
        rpc, lying.port, "blockchain.scripthash.get_history", scripthash
    )
    assert history == [entry for entry in true_history if entry["tx_hash"] != hidden]
    assert [entry["tx_hash"] for entry in history] == [first]
    assert await asyncio.to_thread(
        rpc, lying.port, "blockchain.scripthash.listunspent", scripthash
    ) == await asyncio.to_thread(
        rpc, electrumx.tcp_port, "blockchain.scripthash.listunspent", scripthash
    )  # only the history lies

    reader, writer = await asyncio.open_connection(LOOPBACK, lying.port)
    try:

        async def call(request_id: int, method: str, *params: Any) -> Any:
            request = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
            writer.write(orjson.dumps(request) + b"\n")
            while True:
                message = orjson.loads(await reader.readline())
                if message.get("id") == request_id:
                    return message["result"]

        await call(1, "server.version", CLIENT_NAME, PROTOCOL_VERSION)
        status = await call(2, "blockchain.scripthash.subscribe", scripthash)
        assert status == lying_electrum.electrum_status(history)
        assert status != lying_electrum.electrum_status(true_history)

        third, _ = sim.pay(script, 30_000)  # the notification carries a censored status too
        ledger = await asyncio.to_thread(wait_agreement, sim, electrumx.tcp_port, [script])
        censored = [e for e in ledger.electrum_history(script) if e["tx_hash"] != hidden]
        assert [entry["tx_hash"] for entry in censored] == [first, third]
        async with asyncio.timeout(10):
            while True:
                message = orjson.loads(await reader.readline())
                if message.get("method") == "blockchain.scripthash.subscribe":
                    assert message["params"][0] == scripthash
                    if message["params"][1] == lying_electrum.electrum_status(censored):
                        break
    finally:
        writer.close()
        await writer.wait_closed()
    assert lying.lies_told()[lying_electrum.GET_HISTORY] == 1
    assert lying.lies_told()[lying_electrum.SUBSCRIBE] >= 2
