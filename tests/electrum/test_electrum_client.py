"""The Electrum client and `ElectrumSource` against fake Electrum servers on loopback.

The fake (`tests/electrum/fake_electrum.py`) injects one fault at a time; every test checks
that nothing invalid comes out and, where there is one, that a good second server takes over.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import ssl
import struct
import subprocess
from pathlib import Path

import pytest

from indexer import errors
from indexer.chain import btc_headers as bh
from indexer.chain import electrum_connection as ec
from indexer.chain.electrum import ElectrumSource, split_range
from indexer.chain.electrum_servers import ElectrumServers
from indexer.config import ElectrumChainConfig
from tests.electrum.fake_electrum import (
    FORKED_CHAIN,
    PERIOD_BITS,
    REGTEST_CHAIN,
    FakeElectrum,
    Faults,
    assert_regtest_blocks,
    hashes_of,
    mine,
    source_for,
)
from tests.support.rows import header, utc

# -- Answers that are valid


@pytest.mark.parametrize("protocol", ["1.4", "1.6"])
async def test_headers_arrive_validated_over_hex_and_list_answers(protocol: str) -> None:
    async with FakeElectrum(REGTEST_CHAIN, protocol=protocol) as fake, source_for(fake) as source:
        await source.check_identity()
        blocks = await source.blocks(0, 120)
        assert_regtest_blocks(blocks, 0)
        assert_regtest_blocks(await source.blocks(150, 40), 150)
        parsed = bh.parse_header(REGTEST_CHAIN[7], height=7)
        got = header(blocks[7])
        assert (got["version"], got["merkle_root"], got["bits"], got["nonce"]) == (
            parsed.version,
            parsed.merkle_root,
            parsed.bits,
            parsed.nonce,
        )
        assert (got["timestamp"], got["tx_count"]) == (utc(parsed.timestamp), 0)
        assert fake.calls("blockchain.block.headers")[-1] == [149, 41]  # the parent comes along


async def test_chunks_are_fetched_concurrently_and_in_order() -> None:
    faults = Faults(max_headers=50, reply_delay_secs=0.05)
    async with FakeElectrum(REGTEST_CHAIN, faults=faults) as fake, source_for(fake) as source:
        assert_regtest_blocks(await source.blocks(1, 20), 1)  # 21 < 50: nothing learnt
        assert source.servers.max_headers(fake.url) == 2016
        # Asked for 251 at once, the server answers 50 and says so: retried in chunks of 50.
        assert_regtest_blocks(await source.blocks(0, 250), 0)
        assert source.servers.max_headers(fake.url) == 50
        assert fake.calls("blockchain.block.headers")[-5:] == [
            [start, 50] for start in range(0, 250, 50)
        ]
        assert fake.max_in_flight >= 4, "the five chunks must be in flight together"


async def test_padding_and_notifications_are_tolerated() -> None:
    faults = Faults(pad=True, notify=True)
    async with FakeElectrum(REGTEST_CHAIN, faults=faults) as fake, source_for(fake) as source:
        await source.check_identity()
        assert_regtest_blocks(await source.blocks(0, 300), 0)
        assert await source.head() == 299
        assert fake.connections == 1


async def test_hashes() -> None:
    async with FakeElectrum(REGTEST_CHAIN) as fake, source_for(fake) as source:
        want = hashes_of(REGTEST_CHAIN)
        assert await source.hashes([5, 299, 300, 5]) == {5: want[5], 299: want[299], 300: None}
        assert await source.hashes([42]) == {42: want[42]}
        assert await source.hashes([400]) == {400: None}


async def test_head_follows_notifications_and_polls_when_they_stall() -> None:
    async with FakeElectrum(REGTEST_CHAIN, faults=Faults(tip=100)) as fake:
        async with source_for(fake) as source:
            source._head_max_age_secs = 0.3
            assert await source.head() == 100
            await fake.notify(
                "blockchain.headers.subscribe", [{"height": 120, "hex": REGTEST_CHAIN[120].hex()}]
            )
            for _ in range(100):
                if await source.head() == 120:
                    break
                await asyncio.sleep(0.01)
            assert await source.head() == 120
            assert len(fake.calls("blockchain.headers.subscribe")) == 1  # no poll needed
            fake.faults.tip = 130  # and no notification: the poll must find it
            await asyncio.sleep(0.35)
            assert await source.head() == 130
            assert len(fake.calls("blockchain.headers.subscribe")) == 2


async def test_a_tip_beyond_any_chain_is_refused() -> None:
    async with FakeElectrum(REGTEST_CHAIN, faults=Faults(tip=100)) as fake:
        async with source_for(fake) as source:
            assert await source.head() == 100
            tip = {"height": 2**63, "hex": REGTEST_CHAIN[100].hex()}
            await fake.notify("blockchain.headers.subscribe", [tip])
            await asyncio.sleep(0.2)
            assert await source.head() == 100
            with pytest.raises(errors.ResponseCorrupted, match="beyond any chain"):
                source._parse_tip(tip, "test")


# -- Invalid answers: rejected, and the next server takes over


def with_bad_pow(raw: bytes) -> bytes:
    height_target = bh.bits_to_target(bh.REGTEST, 0x207FFFFF, height=0)
    for nonce in range(1 << 20):
        bad = raw[:76] + struct.pack("<I", nonce)
        if int.from_bytes(bh.double_sha256(bad)[::-1], "big") > height_target:
            return bad
    raise AssertionError("every nonce met the target")


UNLINKED_40 = mine(REGTEST_CHAIN[10], height=40, timestamp=1_700_000_040, bits=0x207FFFFF)


@pytest.mark.parametrize(
    ("faults", "error", "match"),
    [
        (
            Faults(override={40: with_bad_pow(REGTEST_CHAIN[40])}),
            errors.InvalidHeader,
            "insufficient proof of work",
        ),
        (Faults(override={40: UNLINKED_40}), errors.InvalidHeader, "header 40: does not link"),
        (Faults(count_delta=1), errors.ResponseCorrupted, "count says 101 but 100 headers"),
        (Faults(count_delta=-1), errors.ResponseCorrupted, "count says 99 but 100 headers"),
        (Faults(tip=60), errors.SourceTransient, "only 61 headers from 0"),
        (Faults(send_request=True), errors.ResponseCorrupted, "server sent us a request"),
    ],
)
async def test_invalid_answers_are_rejected_and_failed_over(
    faults: Faults, error: type[Exception], match: str
) -> None:
    async with FakeElectrum(REGTEST_CHAIN, faults=faults) as bad:
        async with source_for(bad, max_attempts=1) as source:
            with pytest.raises(error, match=match):
                await source.blocks(0, 100)
        async with FakeElectrum(REGTEST_CHAIN) as good, source_for(bad, good) as source:
            assert_regtest_blocks(await source.blocks(0, 100), 0)
            assert source.servers.endpoints[0].errors == 1
            assert match.split(":")[-1].strip() in (source.servers.endpoints[0].last_error or "")
            assert len(good.calls("blockchain.block.headers")) == 1


async def test_a_dropped_server_is_logged_and_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    faults = Faults(override={40: UNLINKED_40})
    async with (
        FakeElectrum(REGTEST_CHAIN, faults=faults) as bad,
        FakeElectrum(REGTEST_CHAIN) as good,
    ):
        async with source_for(bad, good) as source:
            assert_regtest_blocks(await source.blocks(0, 100), 0)
            assert_regtest_blocks(await source.blocks(0, 100), 0)
            assert len(bad.calls("blockchain.block.headers")) == 1  # not asked again
            assert source.servers.endpoints[0].circuit == "open"
    dropped = [r for r in caplog.records if getattr(r, "action", "") == "endpoint_dropped"]
    assert len(dropped) == 1 and "header 40: does not link" in dropped[0].getMessage()


async def test_answers_that_change_between_chunks_are_a_broken_batch() -> None:
    faults = Faults(max_headers=100, switch_to=FORKED_CHAIN)
    async with FakeElectrum(REGTEST_CHAIN, faults=faults) as fake, source_for(fake) as source:
        source.servers.lower_max_headers(fake.url, 100)
        with pytest.raises(errors.BrokenBatch, match="header 176 does not link"):
            await source.blocks(101, 150)  # [100..175] from one branch, [176..250] from another


async def test_wrong_genesis_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    mainnet = bh.MAINNET.genesis_hash.hex()
    async with FakeElectrum(REGTEST_CHAIN, faults=Faults(claim_genesis=mainnet)) as liar:
        async with source_for(liar) as source:
            with pytest.raises(errors.ChainMismatch, match=r"chains\[btc\]\.genesis_hash"):
                await source.check_identity()
    other = [mine(None, height=0, timestamp=1, bits=0x207FFFFF), *REGTEST_CHAIN[1:]]
    claim = Faults(claim_genesis=bh.REGTEST.genesis_hash.hex())  # claims right, serves wrong
    async with FakeElectrum(other, faults=claim) as liar, FakeElectrum(REGTEST_CHAIN) as good:
        async with source_for(good, liar) as source:
            with pytest.raises(errors.ChainMismatch, match="serves"):
                await source.check_identity()
            assert errors.ChainMismatch.exit_code == errors.EXIT_USAGE
        async with source_for(liar, good) as source:  # found in operation: banned, not fatal
            assert_regtest_blocks(await source.blocks(0, 10), 0)
            assert "refusing to index" in caplog.text
            assert liar.calls("blockchain.block.headers") == []


async def test_unreachable_server_is_skipped_by_the_identity_check() -> None:
    async with FakeElectrum(REGTEST_CHAIN) as good:
        async with FakeElectrum(REGTEST_CHAIN) as gone:
            gone_url = gone.url
        urls = (gone_url, good.url)
        cfg = ElectrumChainConfig(
            name="btc", kind="electrum", urls=urls, genesis_hash=bh.REGTEST.genesis_hash.hex()
        )
        async with ElectrumServers(
            urls, label="btc", timeout_secs=0.5, ping_interval_secs=0, max_backoff_secs=0.05
        ) as servers:
            source = ElectrumSource(cfg, servers)
            await source.check_identity()
            assert_regtest_blocks(await source.blocks(0, 5), 0)


@pytest.mark.parametrize("fault", ["silent", "half_line"])
async def test_a_server_that_goes_silent_mid_request_is_failed_over(fault: str) -> None:
    method = {"blockchain.block.headers"}
    faults = Faults(silent=method) if fault == "silent" else Faults(half_line=method)
    async with (
        FakeElectrum(REGTEST_CHAIN, faults=faults) as mute,
        FakeElectrum(REGTEST_CHAIN) as good,
    ):
        async with source_for(mute, good, timeout_secs=0.3) as source:
            await source.check_identity()
            assert_regtest_blocks(await source.blocks(0, 100), 0)
            assert "no answer to blockchain.block.headers within 0.3s" in str(
                source.servers.endpoints[0].last_error
            )


async def test_reconnects_after_the_server_drops_the_connection() -> None:
    async with FakeElectrum(REGTEST_CHAIN) as fake, source_for(fake) as source:
        assert_regtest_blocks(await source.blocks(0, 10), 0)
        for writer in list(fake._writers):
            writer.close()
        await asyncio.sleep(0.05)
        assert_regtest_blocks(await source.blocks(10, 10), 10)
        assert fake.connections == 2


async def test_keep_alive_pings() -> None:
    async with (
        FakeElectrum(REGTEST_CHAIN) as fake,
        source_for(fake, ping_interval_secs=0.05) as source,
    ):
        await source.check_identity()
        await asyncio.sleep(0.3)
        assert len(fake.calls("server.ping")) >= 3
        fake.faults.silent.add("server.ping")  # a ping unanswered: the connection is dropped
        await asyncio.sleep(0.8)
        assert_regtest_blocks(await source.blocks(0, 3), 0)
        assert fake.connections == 2


# -- Difficulty context on a retargeting network (an easy-target copy of mainnet's rules)


@dataclasses.dataclass(frozen=True)
class RetargetChain:
    network: bh.Network
    headers: list[bytes]


@pytest.fixture(scope="module")
def retarget_chain() -> RetargetChain:
    """Heights 0..2040: period 0 took one week, so the target halves at 2016."""
    start, week = 1_600_000_000, 7 * 86400
    headers = [mine(None, height=0, timestamp=start, bits=PERIOD_BITS)]
    for height in range(1, 2016):
        timestamp = start + height * week // 2015
        headers.append(mine(headers[-1], height=height, timestamp=timestamp, bits=PERIOD_BITS))
    network = dataclasses.replace(
        bh.MAINNET,
        name="easy",
        genesis_hash=hashes_of(headers)[0],
        genesis_bits=PERIOD_BITS,
        pow_limit=(1 << 255) - 1,
    )
    first, last = (bh.parse_header(headers[h], height=h) for h in (0, 2015))
    new_bits = bh.retarget_bits(network, first=first, last=last)
    assert new_bits != PERIOD_BITS
    for height in range(2016, 2041):
        timestamp = start + week + (height - 2015) * 600
        headers.append(mine(headers[-1], height=height, timestamp=timestamp, bits=new_bits))
    return RetargetChain(network, headers)


def single_header_calls(fake: FakeElectrum) -> list[int]:
    return [start for start, count in fake.calls("blockchain.block.headers") if count == 1]


@pytest.mark.parametrize(
    ("start", "period_first"),
    [(2010, 0), (2016, 0), (2017, None), (2020, 2016), (1, None)],
)
async def test_the_period_first_header_is_fetched_when_needed(
    retarget_chain: RetargetChain, start: int, period_first: int | None
) -> None:
    chain, network = retarget_chain.headers, retarget_chain.network
    async with FakeElectrum(chain) as fake, source_for(fake, network=network) as source:
        blocks = await source.blocks(start, 2041 - start if start > 1 else 20)
        assert [b.hash for b in blocks] == hashes_of(chain)[start : start + len(blocks)]
        assert single_header_calls(fake) == ([] if period_first is None else [period_first])


async def test_a_forged_period_first_header_fails_the_retarget(
    retarget_chain: RetargetChain,
) -> None:
    chain, network = retarget_chain.headers, retarget_chain.network
    forged = mine(None, height=0, timestamp=1_600_000_000 - 86400, bits=PERIOD_BITS)
    faults = Faults(single_override={0: forged})
    async with FakeElectrum(chain, faults=faults) as fake:
        async with source_for(fake, network=network, max_attempts=1) as source:
            with pytest.raises(errors.InvalidHeader, match="header 2,016: bits 0x"):
                await source.blocks(2010, 20)


async def test_period_first_bits_must_match_the_parent(retarget_chain: RetargetChain) -> None:
    chain, network = retarget_chain.headers, retarget_chain.network
    other_bits = mine(chain[2015], height=2016, timestamp=1_600_700_000, bits=PERIOD_BITS)
    faults = Faults(single_override={2016: other_bits})
    async with FakeElectrum(chain, faults=faults) as fake:
        async with source_for(fake, network=network, max_attempts=1) as source:
            with pytest.raises(errors.InvalidHeader, match="differ from those of header 2,019"):
                await source.blocks(2020, 10)


# -- TLS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, str]:
    """A self-signed certificate for 127.0.0.1: the server context and its SHA-256 pin."""
    directory: Path = tmp_path_factory.mktemp("tls")
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-nodes", "-subj", "/CN=127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    return context, ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


async def test_tls_with_a_pinned_certificate(certificate: tuple[ssl.SSLContext, str]) -> None:
    context, pin = certificate
    async with FakeElectrum(REGTEST_CHAIN, tls=context) as fake:
        async with source_for(fake, tls_fingerprints={fake.url: pin}) as source:
            await source.check_identity()
            assert_regtest_blocks(await source.blocks(0, 50), 0)
        wrong = "00" * 32
        async with source_for(fake, tls_fingerprints={fake.url: wrong}) as source:
            with pytest.raises(errors.ConfigError, match=r"chains\[btc\]\.tls_fingerprints"):
                await source.check_identity()


async def test_tls_verifies_certificates_by_default(
    certificate: tuple[ssl.SSLContext, str],
) -> None:
    context, _ = certificate
    async with FakeElectrum(REGTEST_CHAIN, tls=context) as fake, source_for(fake) as source:
        with pytest.raises(errors.SourceTransient, match="TLS failed"):
            await source.check_identity()
        assert fake.requests == []


# -- One connection


async def test_connection_rejects_bad_framing_and_ids() -> None:
    async with FakeElectrum(REGTEST_CHAIN) as fake:
        conn = ec.ElectrumConnection(fake.url, timeout_secs=1, max_line_bytes=4096)
        await conn.open()
        assert conn.protocol == (1, 4)
        with pytest.raises(errors.RpcError) as info:
            await conn.request("no.such.method")
        assert info.value.fatal  # -32601: this server will never serve it
        assert (await conn.request("blockchain.block.headers", [0, 2]))["count"] == 2
        with pytest.raises(errors.ResponseCorrupted, match="longer than 4,096 bytes"):
            await conn.request("blockchain.block.headers", [0, 100])
        assert conn.closed
        with pytest.raises(errors.ResponseCorrupted):
            await conn.request("server.ping")  # stays failed
        await conn.close()
    async with FakeElectrum(REGTEST_CHAIN, faults=Faults(bogus_id=True)) as fake:
        conn = ec.ElectrumConnection(fake.url, timeout_secs=1)
        with pytest.raises(errors.ResponseCorrupted, match="an id we never sent"):
            await conn.open()
        assert conn.closed


@pytest.mark.parametrize(("offered", "protocol_max"), [("1.3", "1.7"), ("1.6", "1.4")])
async def test_connection_refuses_a_protocol_outside_what_it_asked(
    offered: str, protocol_max: str
) -> None:
    async with FakeElectrum(REGTEST_CHAIN, protocol=offered) as fake:
        conn = ec.ElectrumConnection(fake.url, timeout_secs=1, protocol_max=protocol_max)
        with pytest.raises(errors.ResponseCorrupted, match=f"chose protocol {offered}"):
            await conn.open()
        assert fake.calls("server.version") == [["indexer/0.1.0", ["1.4", protocol_max]]]


def test_ranges_split_evenly() -> None:
    assert split_range(0, 2016, 2016) == [(0, 1009), (1009, 1008)]  # never 2,016 + 1
    assert split_range(5, 5, 2016) == [(5, 1)]
    assert split_range(0, 249, 50) == [(s, 50) for s in range(0, 250, 50)]
    pieces = split_range(7, 10_000, 2016)
    assert sum(n for _, n in pieces) == 9_994 and max(n for _, n in pieces) <= 2016
    assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(pieces))
