"""The benchmark replay node serves blocks whose commitments are real.

`evm_proof.verify_block` (the reference verifier) must pass on every block the node serves,
with its receipts, in both variants and after a reorg; the receipts must be the same whether
asked per block or per transaction, and their logs the same as eth_getLogs; and a changed
field must fail verification (so passing means something).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from benchmarks.replay_node import ReplayChain, ReplayServer, Shape
from indexer.chain import evm_proof
from indexer.chain.evm_proof import Check, ProofMismatch

HEAD = 40


class Node:
    """A replay node answered in-process (the same code path as over HTTP, less the socket)."""

    def __init__(self, shape: Shape, *, head: int = HEAD, block_receipts: bool = True) -> None:
        self.chain = ReplayChain(shape, head=head)
        self.server = ReplayServer(self.chain, block_receipts=block_receipts)

    def answer(self, payload: Any) -> Any:
        return orjson.loads(b"".join(self.server.respond(orjson.dumps(payload))))

    def call(self, method: str, *params: Any) -> Any:
        reply = self.answer({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply["result"]

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        payload = [
            {"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)
        ]
        replies = self.answer(payload)
        assert [r["id"] for r in replies] == list(range(len(calls)))
        return [r["result"] for r in replies]

    def block(self, number: int | str, full: bool = True) -> dict[str, Any]:
        result: dict[str, Any] = self.call("eth_getBlockByNumber", _tag(number), full)
        return result

    def receipts(self, number: int | str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("eth_getBlockReceipts", _tag(number))
        return result


def _tag(number: int | str) -> str:
    return hex(number) if isinstance(number, int) else number


@pytest.fixture(scope="module")
def full() -> Node:
    return Node(Shape())


def _verify(node: Node, number: int | str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    block, receipts = node.block(number), node.receipts(number)
    plan = evm_proof.verify_block(block, receipts)
    assert set(plan.run) == set(evm_proof.STANDARD_CHECKS), plan.skipped  # nothing skipped
    return block, receipts


@pytest.mark.parametrize("variant", ["full", "headers"])
def test_blocks_verify_and_link(variant: str, full: Node) -> None:
    node = full if variant == "full" else Node(Shape(variant="headers"))
    parent = None
    for number in [0, 1, 2, 3, HEAD - 1, HEAD]:
        block, receipts = _verify(node, number)
        assert int(block["number"], 16) == number
        assert len(receipts) == len(block["transactions"])
        if variant == "full":
            assert len(block["transactions"]) == 150
        else:
            assert block["transactions"] == [] and receipts == []
        if number == 0:
            assert block["parentHash"] == "0x" + "00" * 32
        elif parent is not None and int(parent["number"], 16) == number - 1:
            assert block["parentHash"] == parent["hash"]
        else:
            assert block["parentHash"] == node.block(number - 1)["hash"]
        # The hashes-only answer is the same header.
        hashes_only = node.block(number, full=False)
        assert hashes_only["hash"] == block["hash"]
        assert hashes_only["transactions"] == [tx["hash"] for tx in block["transactions"]]
        evm_proof.verify_block(hashes_only)
        parent = block
    assert node.block("latest")["hash"] == node.block(HEAD)["hash"]
    assert node.receipts("latest") == node.receipts(HEAD)
    assert node.call("eth_getBlockByNumber", hex(HEAD + 1), True) is None
    assert node.call("eth_getBlockReceipts", hex(HEAD + 1)) is None


def test_reorg_serves_a_new_verified_branch() -> None:
    node = Node(Shape(templates=4))
    old = {n: node.block(n, full=False)["hash"] for n in range(HEAD - 5, HEAD + 1)}
    switched = node.call("replay_reorg", 3, 2)
    fork = HEAD - 3
    assert switched["fork"] == fork and switched["head"] == HEAD + 2
    for number in range(fork - 1, HEAD + 3):
        block, _ = _verify(node, number)
        assert block["parentHash"] == node.block(number - 1)["hash"]
        if number <= fork:
            assert block["hash"] == old[number]
        elif number in old:
            assert block["hash"] != old[number]
    assert switched["hash"] == node.block(HEAD + 2)["hash"]
    # A second reorg below the first: its branch differs from both.
    first = {n: node.block(n, full=False)["hash"] for n in range(fork - 3, HEAD + 3)}
    assert node.call("replay_reorg", 6, 0)["fork"] == HEAD + 2 - 6
    for number in range(HEAD + 2 - 6, HEAD + 3):
        block, _ = _verify(node, number)
        assert (block["hash"] == first[number]) == (number == HEAD + 2 - 6)


def test_block_receipts_equal_transaction_receipts(full: Node) -> None:
    for number in (5, 6):
        block, receipts = node_block_and_receipts(full, number)
        hashes = [tx["hash"] for tx in block["transactions"]]
        one_by_one = full.batch([("eth_getTransactionReceipt", [h]) for h in hashes])
        assert one_by_one == receipts
        # A lone call: the block served last that holds the hash.
        assert full.call("eth_getTransactionReceipt", hashes[7]) == receipts[7]
    assert full.call("eth_getTransactionReceipt", "0x" + "ab" * 32) is None


def node_block_and_receipts(node: Node, number: int) -> tuple[dict[str, Any], list[Any]]:
    return node.block(number), node.receipts(number)


def test_per_transaction_fallback_matches_block_receipts() -> None:
    """The indexer's fallback: fetch a batch of blocks, then every transaction's receipt in
    chunks, in block order; with 3 templates each block's transactions repeat in the batch."""
    node = Node(Shape(templates=3), block_receipts=False)
    with pytest.raises(RuntimeError, match="-32601"):
        node.call("eth_getBlockReceipts", "0x1")
    start, end = 10, 29
    blocks = node.batch([("eth_getBlockByNumber", [hex(n), True]) for n in range(start, end + 1)])
    flat = [tx["hash"] for block in blocks for tx in block["transactions"]]
    assert len(set(flat)) < len(flat)  # hashes repeat: placing them is the node's job
    got: list[Any] = []
    for at in range(0, len(flat), 333):
        got += node.batch([("eth_getTransactionReceipt", [h]) for h in flat[at : at + 333]])
    expected = Node(Shape(templates=3))
    want = [r for n in range(start, end + 1) for r in expected.receipts(n)]
    assert got == want


def test_receipts_agree_with_block_and_logs(full: Node) -> None:
    low, high = 3, 8
    logs = full.call("eth_getLogs", {"fromBlock": hex(low), "toBlock": hex(high)})
    from_receipts: list[Any] = []
    kinds: set[str] = set()
    failed = creations = 0
    for number in range(low, high + 1):
        block, receipts = full.block(number), full.receipts(number)
        block_logs = [log for r in receipts for log in r["logs"]]
        assert [int(log["logIndex"], 16) for log in block_logs] == list(range(len(block_logs)))
        from_receipts += block_logs
        previous = 0
        for i, (tx, receipt) in enumerate(zip(block["transactions"], receipts, strict=True)):
            assert receipt["blockHash"] == block["hash"] == tx["blockHash"]
            assert receipt["blockNumber"] == block["number"] == tx["blockNumber"]
            assert receipt["transactionHash"] == tx["hash"]
            assert receipt["transactionIndex"] == tx["transactionIndex"] == hex(i)
            assert receipt["from"] == tx["from"] and receipt["to"] == tx["to"]
            assert receipt["type"] == tx["type"]
            assert receipt["effectiveGasPrice"] == tx["gasPrice"]
            cumulative = int(receipt["cumulativeGasUsed"], 16)
            assert cumulative > previous
            assert int(receipt["gasUsed"], 16) == cumulative - previous <= int(tx["gas"], 16)
            previous = cumulative
            for log in receipt["logs"]:
                assert log["transactionHash"] == tx["hash"]
                assert log["transactionIndex"] == tx["transactionIndex"]
                assert log["blockHash"] == block["hash"]
            if receipt["status"] == "0x0":
                failed += 1
                assert receipt["logs"] == []
            assert (receipt["contractAddress"] is None) == (tx["to"] is not None)
            creations += tx["to"] is None
            blob = tx["type"] == "0x3"
            assert ("blobGasUsed" in receipt) == blob == ("blobGasPrice" in receipt)
            if blob:
                assert int(receipt["blobGasUsed"], 16) == 131072 * len(tx["blobVersionedHashes"])
            kinds.add(tx["type"])
        assert int(block["gasUsed"], 16) == previous
        blob_gas = sum(int(r.get("blobGasUsed", "0x0"), 16) for r in receipts)
        assert int(block["blobGasUsed"], 16) == blob_gas
    assert logs == from_receipts
    assert kinds == {"0x0", "0x2", "0x3"} and failed and creations


def _first(items: list[Any], test: Callable[[Any], bool]) -> Any:
    return next(item for item in items if test(item))


_CHANGES: dict[str, tuple[Check, Callable[[dict[str, Any], list[Any]], None]]] = {
    "header stateRoot": (
        Check.HEADER_HASH,
        lambda b, r: b.__setitem__("stateRoot", "0x" + "11" * 32),
    ),
    "header parentHash": (
        Check.HEADER_HASH,
        lambda b, r: b.__setitem__("parentHash", "0x" + "22" * 32),
    ),
    "transaction value": (
        Check.TRANSACTION_HASHES,
        lambda b, r: b["transactions"][3].__setitem__("value", "0x1234"),
    ),
    "transaction dropped": (
        Check.TRANSACTIONS_ROOT,
        lambda b, r: b["transactions"].pop(),
    ),
    "receipt status": (
        Check.RECEIPTS_ROOT,
        lambda b, r: _first(r, lambda x: x["status"] == "0x1").__setitem__("status", "0x0"),
    ),
    "log data": (
        Check.RECEIPTS_ROOT,
        lambda b, r: _first(r, lambda x: x["logs"])["logs"][0].__setitem__("data", "0x01"),
    ),
    "withdrawal amount": (
        Check.WITHDRAWALS_ROOT,
        lambda b, r: b["withdrawals"][0].__setitem__("amount", "0x1"),
    ),
}


@pytest.mark.parametrize("change", sorted(_CHANGES))
def test_a_changed_field_fails_verification(change: str, full: Node) -> None:
    block, receipts = full.block(4), full.receipts(4)
    evm_proof.verify_block(block, receipts)
    check, mutate = _CHANGES[change]
    block, receipts = copy.deepcopy(block), copy.deepcopy(receipts)
    mutate(block, receipts)
    with pytest.raises(ProofMismatch) as caught:
        evm_proof.verify_block(block, receipts)
    assert caught.value.check is check


async def test_served_over_http() -> None:
    chain = ReplayChain(Shape(templates=3), head=HEAD)
    async with TestClient(TestServer(ReplayServer(chain).app(), host="127.0.0.1")) as client:
        calls = [
            {"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByNumber", "params": ["0x9", True]},
            {"jsonrpc": "2.0", "id": 2, "method": "eth_getBlockReceipts", "params": ["0x9"]},
        ]
        reply = await client.post("/", data=orjson.dumps(calls))
        block, receipts = (item["result"] for item in orjson.loads(await reply.read()))
    evm_proof.verify_block(block, receipts)
    assert chain.stats.blocks == 1 and chain.stats.block_receipts == 1
