"""A lying endpoint beside an honest one: every well-formed lie is refused by the check that
can see it, the honest endpoint answers instead, and nothing wrong is stored."""

from __future__ import annotations

from typing import Any

import pytest

from indexer import errors
from indexer.chain import evm_verify
from indexer.config import EvmChainConfig
from indexer.devnet.traffic import fill_blocks
from tests.integration.helpers import make_config, sync_to
from tests.support.faultproxy import FaultProxy
from tests.support.oracle import assert_equals_node, check_invariants

LIES = [
    # (fault kind, params, the weakest `verify` that sees it)
    ("change_header", {"field": "stateRoot"}, "headers"),
    ("change_header", {"field": "timestamp"}, "headers"),
    ("change_tx_value", {}, "full"),
    ("drop_receipt_log", {}, "full"),
    ("swap_status", {}, "full"),
    ("duplicate_tx", {}, "links"),  # self-consistency: no transaction twice in a block
]


@pytest.mark.parametrize(("kind", "params", "level"), LIES)
async def test_a_lie_is_refused_and_the_honest_endpoint_answers(
    db_url: str, anvil: Any, kind: str, params: dict[str, Any], level: str
) -> None:
    fill_blocks(anvil, 12, txs_per_block=(1, 3), seed=41)
    head = anvil.block_number()
    with FaultProxy(anvil.url) as liar:
        fault = liar.add_fault(kind, times=1_000_000, **params)
        cfg = make_config(db_url, [liar.url, anvil.url], verify=level, batch_size=4)
        assert await sync_to(cfg, head) == errors.EXIT_OK
    assert fault.applied >= 1, fault
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url, receipts=True)


async def test_a_dropped_log_is_refused_by_the_bloom_with_get_logs(db_url: str, anvil: Any) -> None:
    fill_blocks(anvil, 12, txs_per_block=(1, 3), seed=42)
    head = anvil.block_number()
    with FaultProxy(anvil.url) as liar:
        fault = liar.add_fault("drop_last_log", method="eth_getLogs", times=1_000_000)
        cfg = make_config(db_url, [liar.url, anvil.url], store="logs", batch_size=4)
        assert await sync_to(cfg, head) == errors.EXIT_OK
    assert fault.applied >= 1, fault
    check_invariants(db_url, "dev")
    assert_equals_node(db_url, "dev", anvil.url)


def test_the_default_level_follows_the_chain_rules() -> None:
    def level(**keys: Any) -> str:
        cfg = EvmChainConfig(name="c", urls=("http://127.0.0.1:1",), **keys)
        rules = evm_verify.rules_for(cfg.chain_id, cfg.rules)
        return cfg.verify or evm_verify.default_level(rules)

    assert level(chain_id=1) == "full"
    assert level(chain_id=31337) == "full"  # anvil
    assert level(chain_id=424242) == "links"  # rules unknown: nothing it cannot check
    assert level(chain_id=424242, rules="optimism") == "full"
    assert level(chain_id=1, verify="headers") == "headers"
