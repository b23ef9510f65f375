"""Wallet sync against servers that lie, throttle, or are killed mid-sync; bad wallet configs.

Real ElectrumX (protocol 1.7: `blockchain.scriptpubkey.*`) indexes the simulator; the lying
proxy sits in front of it. Every test ends by comparing the wallet tables with the
simulator's ledger, or by checking that what was lied about is not stored.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from indexer import daemon, errors
from indexer.runtime import Runtime
from indexer.sync.progress import Progress
from tests.electrum import electrumx_proc, lying_electrum, regtest, wallet_keys
from tests.electrum.bitcoind_sim import PAY_FEE_SATS, BitcoindSim
from tests.electrum.electrumx_proc import ElectrumXProc
from tests.electrum.lying_electrum import LyingElectrum
from tests.electrum.test_electrum_sync import write_btc_config
from tests.electrum.test_wallets import (
    assert_equals_ledger,
    equals_ledger,
    wait_for_ledger,
    wallet_config,
)
from tests.integration.helpers import (
    async_wait_for,
    checkpoint,
    run_cli,
    running_sync,
    spawn_cli,
)
from tests.support.tcpproxy import TcpProxy

WPKH = wallet_keys.descriptor(wallet_keys.Kind.P2WPKH)


@pytest.fixture
def lying(electrumx: ElectrumXProc) -> Iterator[LyingElectrum]:
    with LyingElectrum(electrumx.tcp_port) as proxy:
        yield proxy
    assert not proxy.internal_errors, f"the proxy failed: {proxy.internal_errors!r}"


def script(index: int) -> bytes:
    return wallet_keys.derive(WPKH, index)[1]


def stored_rows(db_url: str, wallet: str) -> dict[str, tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return {
            bytes(t).hex(): (h, p, [bytes(b).hex() for b in m or ()], bytes(r))
            for t, h, p, m, r in conn.execute(
                "SELECT txid, height, position, merkle_branch, raw FROM wallet_transactions "
                "WHERE wallet = %s", (wallet,))
        }  # fmt: skip


def assert_proofs_and_bytes_true(db_url: str, sim: BitcoindSim, wallet: str) -> None:
    """Every stored transaction is the simulator's, byte for byte, and every stored proof
    reaches the merkle root of the simulator's block at its height."""
    for txid, (height, position, branch, raw) in stored_rows(db_url, wallet).items():
        assert raw == sim.transaction(txid).serialize(), txid
        if height is not None:
            root = regtest.hash_to_hex(sim.block(height).header.merkle_root_bytes)
            assert lying_electrum.merkle_root_from_branch(txid, branch, position) == root, txid


def dropped(caplog: pytest.LogCaptureFixture, url: str, reason: str) -> bool:
    """Whether the server pool logged that it dropped `url` for an answer saying `reason`."""
    return any(
        r.getMessage().startswith(f"btc: dropping endpoint {url} ") and reason in r.getMessage()
        for r in caplog.records
    )


def said(caplog: pytest.LogCaptureFixture, url: str, reason: str) -> bool:
    """Whether a log line names `url` and `reason` (a refused answer of that server)."""
    return any(url in r.getMessage() and reason in r.getMessage() for r in caplog.records)


def make_payments(sim: BitcoindSim) -> tuple[list[str], str]:
    """Payments to descriptor indexes 0..2, all confirmed with blocks on top; return their
    txids and the one to lie about (a second payment to index 1, in its own block)."""
    sim.generate(6)
    paid = [sim.pay(script(i), 10_000 + i)[0] for i in range(3)]
    sim.generate(1)
    hidden, _ = sim.pay(script(1), 20_000)
    sim.generate(1)
    sim.generate(3)  # blocks on top: every server's tip is above the hidden payment
    return [*paid, hidden], hidden


WALLET = {"chain": "btc", "name": "w", "descriptors": [WPKH], "gap_limit": 3}


LIES = {  # what the liar is asked, and what our refusal of its answer says
    "transaction": (lying_electrum.TX_GET, "hash to"),
    "merkle": (lying_electrum.GET_MERKLE, "merkle root"),
    "omission": (lying_electrum.SPK_GET_HISTORY, "omits"),
}


@pytest.mark.parametrize("lie", sorted(LIES))
async def test_a_lie_of_the_first_server_is_refused_and_the_second_server_gives_the_truth(
    lie: str,
    db_url: str,
    bitcoind_sim: BitcoindSim,
    electrumx: ElectrumXProc,
    lying: LyingElectrum,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two servers, the liar asked first: the tables equal the ledger all the same, every
    stored proof and transaction is true, and the liar was caught (its answer refused)."""
    sim = bitcoind_sim
    txids, hidden = make_payments(sim)
    electrumx.wait_synced(sim.height)
    if lie == "transaction":
        lying.corrupt_transactions()
    elif lie == "merkle":
        lying.corrupt_merkle(target="branch")
    else:
        lying.omit_from_history(
            hidden, scripthashes=[wallet_keys.electrum_scripthash(script(1))], rewrite_status=True
        )
    cfg = wallet_config(db_url, [lying.url, electrumx.tcp_url], [WALLET])
    async with running_sync(cfg) as (task, runtime):
        wallets = runtime.chains[0].wallets
        assert wallets is not None
        await wait_for_ledger(db_url, sim, "w", f"the ledger despite the {lie} lie")
        await async_wait_for(lambda: wallets.in_sync, what="wallets in sync")
        liar = next(e for e in runtime.chains[0].rpc.endpoints if e.url == lying.url)
    assert task.result() == 0
    assert_equals_ledger(db_url, sim, "w")
    assert_proofs_and_bytes_true(db_url, sim, "w")
    assert set(stored_rows(db_url, "w")) == set(txids)
    method, refusal = LIES[lie]
    told = lying.lies_told()
    assert told.get(method, 0) > 0, told
    assert liar.errors > 0, liar
    assert dropped(caplog, lying.url, refusal), "the liar was never dropped for its lie"
    if lie == "omission":
        assert wallets.lies_refused > 0


STOP_WITHIN_SECS = 10.0  # a stop is honoured at once: no answer is awaited that long


@pytest.mark.parametrize("lie", ["transaction", "merkle"])
async def test_a_lone_liar_gets_nothing_stored_and_the_daemon_keeps_running(
    lie: str,
    db_url: str,
    bitcoind_sim: BitcoindSim,
    electrumx: ElectrumXProc,
    lying: LyingElectrum,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The liar is the only server: the transaction it lies about is not stored (neither
    its bytes nor its proof are taken), the daemon runs on (headers synced, no crash), and
    a stop ends the run with exit code 0."""
    sim = bitcoind_sim
    _, hidden = make_payments(sim)
    electrumx.wait_synced(sim.height)
    if lie == "transaction":
        lying.corrupt_transactions([hidden])
    else:
        lying.corrupt_merkle([hidden], target="branch")
    method, refusal = LIES[lie]
    cfg = wallet_config(db_url, [lying.url], [WALLET])
    stop = asyncio.Event()
    ready: asyncio.Future[Runtime] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        daemon.run_sync(cfg, stop=stop, progress=Progress(tty=False), on_ready=ready.set_result)
    )
    try:
        runtime = await asyncio.wait_for(asyncio.shield(ready), 60)
        wallets = runtime.chains[0].wallets
        assert wallets is not None
        await async_wait_for(lambda: checkpoint(db_url, "btc") == sim.height, what="headers")
        await async_wait_for(lambda: lying.lies_told().get(method, 0) > 0, what="a lie")
        await asyncio.sleep(2)  # time enough to store it, were it taken
        assert hidden not in stored_rows(db_url, "w")
        assert_proofs_and_bytes_true(db_url, sim, "w")  # whatever is stored is true
        assert not wallets.in_sync and not task.done()
    finally:
        stop.set()
        done, _ = await asyncio.wait({task}, timeout=STOP_WITHIN_SECS)
        if not done:
            task.cancel()
            await asyncio.wait({task})
    assert said(caplog, lying.url, refusal), "the lie was never refused"
    # Stop is honoured at once, even while the round waits out the dropped lone server
    # (bad_server_cooldown_secs, 300 s) in the pool: the round is cancelled, unwritten.
    assert done, f"stop not honoured within {STOP_WITHIN_SECS:g}s"
    assert task.result() == 0
    assert hidden not in stored_rows(db_url, "w")


# -- Throttling: ElectrumX's per-session cost limits (aiorpcX)

# A session's cost grows with every request (a subscription ~0.3, a history ~0.7, a
# transaction ~1, a chunk of headers ~3) and barely decays. aiorpcX looks at it each time
# it moved by 100: past the hard limit, the next request is answered "excessive resource
# usage" (-101) and the session is closed. (Between the soft and the hard limit, requests
# are delayed and fewer run at once; a client that keeps more in flight than that is then
# left waiting until "server busy" (-102) after REQUEST_TIMEOUT: no soft zone here.) So a
# session is cut once its cost passes ~200. The wallet below costs ~280 to sync on one
# session, one full pass of its 220 scripts ~75: the first session is cut, the next one
# has room to finish. Our client mostly sees the cut as a closed connection (ElectrumX
# closes it with a batch of ours unanswered) and reconnects at once; when the -101 itself
# reaches it, the server is left alone for 30 s (THROTTLE_CODES) and the test takes that
# much longer.
COST_HARD_LIMIT = 151
THROTTLE_ENV = {
    "COST_SOFT_LIMIT": str(COST_HARD_LIMIT - 1),
    "COST_HARD_LIMIT": str(COST_HARD_LIMIT),
    # More than the requests our client keeps in flight per connection (8): a request
    # finds a free slot, and is the one refused.
    "INITIAL_CONCURRENT": "10",
}
CUT = "closing session over res usage"  # ElectrumX's log line when it refuses with -101


@pytest.fixture
def throttled_electrumx(
    bitcoind_sim: BitcoindSim, tmp_path: Path
) -> Iterator[electrumx_proc.ElectrumXProc]:
    """A real ElectrumX with small per-session cost limits, synced to `bitcoind_sim`."""
    server = electrumx_proc.find_electrumx_server()
    proc = electrumx_proc.ElectrumXProc(
        daemon_url=bitcoind_sim.url, db_dir=tmp_path / "throttled", server_path=server,
        extra_env=THROTTLE_ENV,
    )  # fmt: skip
    with proc:
        tip = bitcoind_sim.tip()
        proc.wait_synced(tip.height, hash_hex=tip.hash_hex)
        yield proc
    log = proc.log_path.read_text(errors="replace")
    if "terminated normally" not in log or "Traceback" in log:
        pytest.fail(f"ElectrumX did not run cleanly:\n{proc.log_tail()}", pytrace=False)


def requests_until_throttled(port: int, tip: int) -> tuple[int, str]:
    """Ask one fresh 1.7 session for every header again and again until it refuses; return
    how many answers came first, and the refusal."""
    with electrumx_proc.LineClient(port) as client:
        client.call("server.version", "probe", "1.7")
        for answered in range(1000):
            try:
                client.call("blockchain.block.headers", 0, tip + 1)
            except electrumx_proc.ElectrumXError as exc:
                return answered, str(exc)
    raise AssertionError("1000 answers and no refusal: the cost limit never triggered")


def throttle_activity(sim: BitcoindSim) -> None:
    """40 payments to descriptor indexes 0..19 over two blocks, with blocks on top."""
    sim.generate(50)
    for _ in range(2):
        for i in range(20):
            sim.pay(script(i), 10_000 + i)
        sim.generate(1)
    sim.generate(2)


@pytest.mark.parametrize("servers", [1, 2])
async def test_a_throttling_server_slows_wallet_sync_down_but_does_not_break_it(
    servers: int,
    db_url: str,
    bitcoind_sim: BitcoindSim,
    throttled_electrumx: ElectrumXProc,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ElectrumX cuts a session that costs too much ("excessive resource usage"): the wallet
    (gap limit 200: 220 scripts) still ends equal to the ledger, with one server (which is
    waited for) or two (the other is asked meanwhile), and no server is taken for a liar."""
    sim, electrumx = bitcoind_sim, throttled_electrumx
    throttle_activity(sim)
    electrumx.wait_synced(sim.height)
    answered, refusal = await asyncio.to_thread(requests_until_throttled, electrumx.tcp_port,
                                                sim.height)  # fmt: skip
    assert "'code': -101" in refusal and "excessive resource usage" in refusal, refusal
    assert 20 < answered < 200, answered  # a limit of the order of a wallet's sync
    cuts_before = electrumx.log_path.read_text(errors="replace").count(CUT)
    wallet = {"chain": "btc", "name": "w", "descriptors": [WPKH], "gap_limit": 200}
    with TcpProxy(electrumx_proc.LOOPBACK, electrumx.tcp_port) as proxy:
        urls = [electrumx.tcp_url, f"tcp://{electrumx_proc.LOOPBACK}:{proxy.port}"][:servers]
        cfg = wallet_config(db_url, urls, [wallet])
        async with running_sync(cfg) as (task, runtime):
            wallets = runtime.chains[0].wallets
            assert wallets is not None
            await async_wait_for(
                lambda: equals_ledger(db_url, sim, "w") and wallets.in_sync,
                timeout_secs=150, what="the throttled wallet sync",
            )  # fmt: skip
            stats = runtime.chains[0].rpc.endpoints
    assert task.result() == 0
    assert_equals_ledger(db_url, sim, "w")
    assert_proofs_and_bytes_true(db_url, sim, "w")
    assert stored_count(db_url, "SELECT count(*) FROM wallet_scripts") == 220
    # The server did cut us, and we took it for what it is: a throttle, not a lie.
    assert electrumx.log_path.read_text(errors="replace").count(CUT) > cuts_before
    assert sum(e.errors for e in stats) > 0, stats
    assert not any("dropping endpoint" in r.getMessage() for r in caplog.records)


def stored_count(db_url: str, query: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


# -- A kill in the middle of a wallet sync


def many_payments(sim: BitcoindSim) -> int:
    """200 payments to descriptor indexes 0..99 over four blocks; return how many."""
    sim.generate(110)
    for block in range(4):
        for k in range(50):
            n = block * 50 + k
            sim.pay(script(n % 100), 1_000 + n)
        sim.generate(1)
    sim.generate(1)
    return 200


def write_wallet_config(path: Path, db_url: str, url: str, wallet: str) -> Path:
    write_btc_config(path, db_url, url)
    with path.open("a") as out:
        out.write(wallet)
    return path


def wallet_transactions(db_url: str) -> int:
    return stored_count(db_url, "SELECT count(*) FROM wallet_transactions")


async def test_a_sync_killed_mid_wallet_resumes_to_the_ledger(
    db_url: str, bitcoind_sim: BitcoindSim, electrumx: ElectrumXProc, tmp_path: Path
) -> None:
    """SIGKILL once some wallet rows are written (the gap limit makes the sync go in rounds):
    what is stored is true, and `sync --to` afterwards exits 0 with the tables equal to
    the ledger."""
    sim = bitcoind_sim
    payments = many_payments(sim)
    electrumx.wait_synced(sim.height)
    path = write_wallet_config(
        tmp_path / "indexer.toml", db_url, electrumx.tcp_url,
        f'[[wallets]]\nchain = "btc"\nname = "w"\ndescriptors = ["{WPKH}"]\ngap_limit = 20\n',
    )  # fmt: skip
    proc = spawn_cli("--config", str(path), "sync")
    try:
        await async_wait_for(
            lambda: wallet_transactions(db_url) > 0 or proc.poll() is not None,
            timeout_secs=90, what="the first wallet rows",
        )  # fmt: skip
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, stderr[-3000:]
    partial = wallet_transactions(db_url)
    assert 0 < partial < payments, partial  # killed in the middle
    assert_proofs_and_bytes_true(db_url, sim, "w")

    result = await asyncio.to_thread(
        run_cli, "--config", str(path), "sync", "--to", str(sim.height)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_equals_ledger(db_url, sim, "w")
    assert_proofs_and_bytes_true(db_url, sim, "w")
    assert wallet_transactions(db_url) == payments


# -- Wallet configs the CLI refuses


REGTEST_CHAIN = (
    '[[chains]]\nname = "btc"\nkind = "electrum"\nurls = ["tcp://127.0.0.1:1"]\n'
    f'genesis_hash = "{regtest.GENESIS_HASH_HEX}"\n'
)
EVM_CHAIN = '[[chains]]\nname = "dev"\nkind = "evm"\nurls = ["http://127.0.0.1:1"]\nchain_id = 1\n'
MAINNET_ADDRESS = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"  # BIP 173's example


@pytest.mark.parametrize(
    ("chains", "wallet", "key"),
    [
        (REGTEST_CHAIN, f'chain = "btc"\naddresses = ["{MAINNET_ADDRESS}"]',
         "wallets[0].addresses[0]"),
        (REGTEST_CHAIN, 'chain = "btc"\ndescriptors = ["wpkh(tpubNOTAKEY/0/*)"]',
         "wallets[0].descriptors[0]"),
        (REGTEST_CHAIN + EVM_CHAIN, f'chain = "dev"\naddresses = ["{MAINNET_ADDRESS}"]',
         "wallets[0].chain"),
    ],
    ids=["address-of-mainnet", "malformed-descriptor", "evm-chain"],
)  # fmt: skip
def test_a_bad_wallet_config_exits_2_naming_the_key(
    chains: str, wallet: str, key: str, tmp_path: Path
) -> None:
    path = tmp_path / "indexer.toml"
    path.write_text(
        '[database]\nurl = "postgresql://nobody@127.0.0.1:1/none"\n'
        f'{chains}[[wallets]]\nname = "w"\n{wallet}\n'
    )
    result = run_cli("--config", str(path), "sync", timeout_secs=60)
    assert result.returncode == errors.EXIT_USAGE, result.stderr
    assert key in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


# -- The proxy's lies over protocol 1.7


async def test_the_proxy_censors_histories_and_statuses_over_protocol_1_7(
    bitcoind_sim: BitcoindSim, electrumx: ElectrumXProc, lying: LyingElectrum
) -> None:
    """What the wallet tests rely on: with 1.7 (no `blockchain.scripthash.*`) the proxy
    leaves the transaction out of `scriptpubkey` histories, by script or by txid alone, and
    rewrites subscribe answers and notifications (which carry the script hash)."""
    sim = bitcoind_sim
    spk = script(0)
    scripthash = wallet_keys.electrum_scripthash(spk)
    sim.generate(3)
    first, _ = sim.pay(spk, 10_000)
    hidden, _ = sim.pay(spk, 20_000)
    sim.generate(1)
    electrumx.wait_synced(sim.height)
    true_history = sim.ledger([spk]).electrum_history(spk)
    censored = [e for e in true_history if e["tx_hash"] != hidden]
    assert [e["tx_hash"] for e in censored] == [first]

    reader, writer = await asyncio.open_connection(electrumx_proc.LOOPBACK, lying.port)
    ids = iter(range(1, 100))

    async def call(method: str, *params: Any) -> Any:
        request_id = next(ids)
        request = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        writer.write(orjson.dumps(request) + b"\n")
        async with asyncio.timeout(10):
            while True:
                message = orjson.loads(await reader.readline())
                if message.get("id") == request_id:
                    assert message.get("error") is None, message
                    return message["result"]

    try:
        assert (await call("server.version", "test", "1.7"))[1] == "1.7"
        lying.omit_from_history(hidden)  # by txid only: every script
        got = await call(lying_electrum.SPK_GET_HISTORY, spk.hex())
        assert got == {"history": censored}
        assert await call(lying_electrum.SPK_SUBSCRIBE, spk.hex()) == (
            lying_electrum.electrum_status(true_history)
        )  # without rewrite_status the status tells the truth

        lying.omit_from_history(hidden, scripthashes=[scripthash], rewrite_status=True)
        assert await call(lying_electrum.SPK_GET_HISTORY, spk.hex()) == {"history": censored}
        status = await call(lying_electrum.SPK_SUBSCRIBE, spk.hex())
        assert status == lying_electrum.electrum_status(censored)
        other = script(1)
        assert await call(lying_electrum.SPK_GET_HISTORY, other.hex()) == {"history": []}

        third, _ = sim.pay(spk, 30_000)  # its notification carries a censored status too
        censored.append({"tx_hash": third, "height": 0, "fee": PAY_FEE_SATS})
        async with asyncio.timeout(20):
            while True:
                message = orjson.loads(await reader.readline())
                if message.get("method") == lying_electrum.SPK_SUBSCRIBE:
                    assert message["params"][0] == scripthash
                    if message["params"][1] == lying_electrum.electrum_status(censored):
                        break
        mempool = await call(lying_electrum.SPK_GET_MEMPOOL, spk.hex())
        assert [e["tx_hash"] for e in mempool["history"]] == [third]
    finally:
        writer.close()
        await writer.wait_closed()
    told = lying.lies_told()
    assert told[lying_electrum.SPK_GET_HISTORY] == 2 and told[lying_electrum.SPK_SUBSCRIBE] >= 2
