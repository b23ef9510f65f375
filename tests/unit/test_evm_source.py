"""EvmSource turns untrusted JSON-RPC answers into blocks, or refuses them."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, cast

import orjson
import pytest

from indexer import errors, tables
from indexer.chain.evm import EvmSource
from indexer.chain.rpc import RpcClient
from indexer.config import EvmChainConfig
from tests.support.rows import header, named

ZERO_BLOOM = "0x" + "0" * 512
SOME_BLOOM = "0x" + "0" * 510 + "01"


def h(n: int, salt: int = 0) -> str:
    return "0x" + (bytes([salt]) + n.to_bytes(31, "big")).hex()


def block_json(n: int, *, txs: int = 1, logs: bool = True) -> dict[str, Any]:
    return {
        "number": hex(n),
        "hash": h(n),
        "parentHash": h(n - 1) if n else "0x" + "00" * 32,
        "timestamp": hex(1_700_000_000 + n),
        "miner": "0x" + "11" * 20,
        "gasUsed": "0x5208",
        "gasLimit": "0x1c9c380",
        "baseFeePerGas": "0x3b9aca00",
        "size": "0x220",
        "sha3Uncles": h(1, salt=1),
        "stateRoot": h(2, salt=1),
        "transactionsRoot": h(3, salt=1),
        "receiptsRoot": h(4, salt=1),
        "difficulty": "0x0",
        "extraData": "0x6265617665726275696c642e6f7267",
        "mixHash": h(5, salt=1),
        "nonce": "0x0000000000000000",
        "withdrawalsRoot": h(6, salt=1),
        "withdrawals": [
            {
                "index": hex(n * 16 + w),
                "validatorIndex": hex(900 + w),
                "address": "0x" + "55" * 20,
                "amount": hex(12_345 + w),
            }
            for w in range(2)
        ],
        "logsBloom": SOME_BLOOM if (logs and txs) else ZERO_BLOOM,
        "transactions": [
            {
                "blockNumber": hex(n),
                "blockHash": h(n),
                "transactionIndex": hex(i),
                "hash": h(n * 100 + i, salt=7),
                "from": "0x" + "22" * 20,
                "to": None if i == 1 else "0x" + "33" * 20,
                "value": "0xde0b6b3a7640000",
                "nonce": hex(i),
                "gas": "0x5208",
                "gasPrice": "0x3b9aca00",
                "input": "0x",
                "type": "0x2",
                "chainId": "0x1",
                "v": "0x1",
                "r": h(n, salt=2),
                "s": h(i, salt=3),
                "yParity": "0x1",
                "accessList": []
                if i
                else [{"address": "0x" + "66" * 20, "storageKeys": [h(7, salt=4), h(8, salt=4)]}],
                **(
                    {}
                    if i == 1
                    else {
                        "maxFeePerGas": hex(2_000_000_000 + i),
                        "maxPriorityFeePerGas": hex(1_000_000 + i),
                    }
                ),
            }
            for i in range(txs)
        ],
    }


def log_json(n: int, *, tx_index: int = 0, log_index: int = 0) -> dict[str, Any]:
    return {
        "blockNumber": hex(n),
        "blockHash": h(n),
        "transactionIndex": hex(tx_index),
        "transactionHash": h(n * 100 + tx_index, salt=7),
        "logIndex": hex(log_index),
        "address": "0x" + "44" * 20,
        "topics": [h(1, salt=9), h(2, salt=9)],
        "data": "0x0102",
        "removed": False,
    }


class FakeRpc:
    def __init__(self, results: list[Any]) -> None:
        self.results = results
        self.urls = ["http://127.0.0.1:1"]
        self.calls: list[Sequence[tuple[str, Sequence[Any]]]] = []

    async def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        self.calls.append(calls)
        return copy.deepcopy(self.results)

    async def batch_parsed(self, calls: Sequence[tuple[str, Sequence[Any]]], parse: Any) -> Any:
        return parse(await self.batch(calls))

    async def batch_for_endpoint(self, build: Any, decode: Any) -> Any:
        calls = build(self.urls[0])
        results = await self.batch(calls)
        body = orjson.dumps(
            [{"jsonrpc": "2.0", "id": i, "result": r} for i, r in enumerate(results)]
        )
        return await decode(body, list(range(len(calls))), calls, self.urls[0])


CFG = EvmChainConfig(
    name="t", kind="evm", urls=("http://127.0.0.1:1",), chain_id=1, store="logs", verify="links"
)


def source(results: list[Any]) -> tuple[EvmSource, FakeRpc]:
    rpc = FakeRpc(results)
    return EvmSource(CFG, cast(RpcClient, rpc)), rpc


def good(start: int = 10, n: int = 3) -> list[Any]:
    return [block_json(i, txs=2) for i in range(start, start + n)] + [
        [log_json(i, log_index=0) for i in range(start, start + n)]
    ]


async def test_maps_blocks_transactions_and_logs_in_one_batch() -> None:
    src, rpc = source(good())
    blocks = await src.blocks(10, 3)
    assert [b.number for b in blocks] == [10, 11, 12]
    assert [m for m, _ in rpc.calls[0]] == ["eth_getBlockByNumber"] * 3 + ["eth_getLogs"]
    b = blocks[0]
    assert b.hash == bytes.fromhex(h(10)[2:]) and b.parent_hash == bytes.fromhex(h(9)[2:])
    txs = named(tables.TRANSACTIONS, b.rows["transactions"].values)
    logs = named(tables.LOGS, b.rows["logs"].values)
    assert header(b)["tx_count"] == 2 and len(txs) == 2
    assert txs[1]["to_address"] is None and txs[0]["value"] == 10**18
    assert (txs[0]["max_fee_per_gas"], txs[1]["max_fee_per_gas"]) == (2_000_000_000, None)
    assert len(logs) == 1 and logs[0]["topics"][1] == bytes.fromhex(h(2, salt=9)[2:])


def mutate(results: list[Any], fn: Any) -> list[Any]:
    fn(results)
    return results


CORRUPTIONS = {
    "null block": lambda r: r.__setitem__(1, None),
    "wrong number": lambda r: r[1].__setitem__("number", hex(99)),
    "short hash": lambda r: r[0].__setitem__("hash", "0x1234"),
    "non-hex field": lambda r: r[0].__setitem__("timestamp", "yesterday"),
    "tx names other block": lambda r: r[0]["transactions"][0].__setitem__("blockHash", h(5)),
    "tx index out of order": lambda r: r[0]["transactions"][1].__setitem__(
        "transactionIndex", "0x0"
    ),
    "log for foreign block hash": lambda r: r[-1][0].__setitem__("blockHash", h(10, salt=3)),
    "log outside range": lambda r: r[-1].append(log_json(50)),
    "log names unknown tx": lambda r: r[-1][0].__setitem__("transactionHash", h(1, salt=1)),
    "duplicate log index": lambda r: r[-1].append(log_json(10, tx_index=1, log_index=0)),
    "bloom says logs, none returned (lagging node)": lambda r: r.__setitem__(-1, []),
    "logs but empty bloom": lambda r: r[0].__setitem__("logsBloom", ZERO_BLOOM),
    "logs not a list": lambda r: r.__setitem__(-1, {"oops": 1}),
    "removed log": lambda r: r[-1][0].__setitem__("removed", True),
    "transaction twice": lambda r: r[0]["transactions"][1].__setitem__(
        "hash", r[0]["transactions"][0]["hash"]
    ),
    "transaction twice, in capitals": lambda r: r[0]["transactions"][1].__setitem__(
        "hash", "0x" + r[0]["transactions"][0]["hash"][2:].upper()
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
async def test_corrupted_answers_are_rejected(case: str) -> None:
    src, _ = source(mutate(good(), CORRUPTIONS[case]))
    with pytest.raises(errors.ResponseCorrupted):
        await src.blocks(10, 3)
