"""Fixtures: a bitcoind simulator, and a real ElectrumX indexing it (both per test, ~0.5 s)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.electrum import electrumx_proc
from tests.electrum.bitcoind_sim import BitcoindSim


@pytest.fixture
def bitcoind_sim() -> Iterator[BitcoindSim]:
    """A simulated regtest bitcoind on a free loopback port, holding only the genesis block."""
    with BitcoindSim() as sim:
        yield sim
    assert not sim.internal_errors, f"the simulator failed: {sim.internal_errors!r}"


@pytest.fixture
def electrumx(bitcoind_sim: BitcoindSim, tmp_path: Path) -> Iterator[electrumx_proc.ElectrumXProc]:
    """A real ElectrumX synced to `bitcoind_sim`'s tip and listening on loopback TCP."""
    try:
        server = electrumx_proc.find_electrumx_server()
    except electrumx_proc.ElectrumXNotInstalled as exc:  # a failure, never a skip
        raise pytest.fail.Exception(str(exc), pytrace=False) from None
    proc = electrumx_proc.ElectrumXProc(
        daemon_url=bitcoind_sim.url, db_dir=tmp_path / "electrumx", server_path=server
    )
    with proc:
        tip = bitcoind_sim.tip()
        proc.wait_synced(tip.height, hash_hex=tip.hash_hex)
        yield proc
    log = proc.log_path.read_text(errors="replace")
    # ElectrumX logs crashes and exits 0, so its log is the only witness of a clean run.
    if "terminated normally" not in log or "Traceback" in log:
        pytest.fail(f"ElectrumX did not run cleanly:\n{proc.log_tail()}", pytrace=False)
