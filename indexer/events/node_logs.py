"""An event table's logs from the node, for chains that store no logs: `eth_getLogs` filtered
by the event's topic (and contracts), each log checked, ranges split when a node refuses one.

Every log must be of the range asked for and carry its block's number and hash, its index,
its transaction's index and hash, its contract, its topics and data, in the shapes of the
JSON-RPC spec; anything else is `ResponseCorrupted` (the pool asks another endpoint). A
node that refuses a range (too many results, a range limit: providers answer so with an
error object, or a body too large for our budget) gets the two halves, down to one block.
The caller checks each log's block hash against the block stored at its height before it
writes anything (logs of another branch are not ours).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from indexer import errors
from indexer.chain.rpc import RpcClient
from indexer.events.matcher import LogRow

MAX_FILTER_ADDRESSES = 1_000  # more than this: no address filter, matched here instead


def _hex_bytes(value: Any, size: int | None, where: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise errors.ResponseCorrupted(f"{where}: expected a 0x hex string")
    try:
        raw = bytes.fromhex(value[2:])
    except ValueError:
        raise errors.ResponseCorrupted(f"{where}: not hex") from None
    if size is not None and len(raw) != size:
        raise errors.ResponseCorrupted(f"{where}: expected {size} bytes, got {len(raw)}")
    return raw


def _quantity(value: Any, where: str) -> int:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) > 18:
        raise errors.ResponseCorrupted(f"{where}: expected a hex quantity")
    try:
        return int(value, 16)
    except ValueError:
        raise errors.ResponseCorrupted(f"{where}: not a hex quantity") from None


def parse_logs(
    answer: Any, *, low: int, high: int, where: str
) -> tuple[list[LogRow], dict[int, bytes]]:
    """Checked log rows of an `eth_getLogs` answer for [low, high], and each block's hash."""
    if not isinstance(answer, list):
        raise errors.ResponseCorrupted(f"{where}: eth_getLogs answered no list")
    rows: list[LogRow] = []
    hashes: dict[int, bytes] = {}
    seen: set[tuple[int, int]] = set()
    for item in answer:
        if not isinstance(item, dict):
            raise errors.ResponseCorrupted(f"{where}: a log is not an object")
        if item.get("removed") is True:
            continue  # a log of a block the node has since left
        number = _quantity(item.get("blockNumber"), f"{where} blockNumber")
        if not low <= number <= high:
            raise errors.ResponseCorrupted(f"{where}: a log of block {number}, outside the range")
        block_hash = _hex_bytes(item.get("blockHash"), 32, f"{where} blockHash")
        if hashes.setdefault(number, block_hash) != block_hash:
            raise errors.ResponseCorrupted(f"{where}: two hashes for block {number}")
        log_index = _quantity(item.get("logIndex"), f"{where} logIndex")
        if (number, log_index) in seen:
            raise errors.ResponseCorrupted(f"{where}: log {number}/{log_index} twice")
        seen.add((number, log_index))
        topics = item.get("topics")
        if not isinstance(topics, list) or len(topics) > 4:
            raise errors.ResponseCorrupted(f"{where}: topics is not a list of at most 4")
        rows.append(
            (
                number,
                log_index,
                _quantity(item.get("transactionIndex"), f"{where} transactionIndex"),
                _hex_bytes(item.get("transactionHash"), 32, f"{where} transactionHash"),
                _hex_bytes(item.get("address"), 20, f"{where} address"),
                [_hex_bytes(t, 32, f"{where} topic") for t in topics],
                _hex_bytes(item.get("data"), None, f"{where} data"),
            )
        )
    rows.sort(key=lambda r: (r[0], r[1]))
    return rows, hashes


async def fetch_logs(
    rpc: RpcClient,
    *,
    low: int,
    high: int,
    topic0: bytes | None,
    addresses: Iterable[bytes] | None,
) -> tuple[list[LogRow], dict[int, bytes]]:
    """The logs of [low, high] with first topic `topic0` (any, if None) of `addresses` (any,
    if None), checked (see the module docstring), and the hash of every block they name."""
    wanted = None if addresses is None else sorted(set(addresses))
    query: dict[str, Any] = {"fromBlock": hex(low), "toBlock": hex(high)}
    if topic0 is not None:
        query["topics"] = ["0x" + topic0.hex()]
    if wanted is not None and len(wanted) <= MAX_FILTER_ADDRESSES:
        query["address"] = ["0x" + a.hex() for a in wanted]
    where = f"eth_getLogs {low:,d}-{high:,d}"

    def parse(results: list[Any]) -> tuple[list[LogRow], dict[int, bytes]]:
        return parse_logs(results[0], low=low, high=high, where=where)

    try:
        rows, hashes = await rpc.batch_parsed([("eth_getLogs", [query])], parse)
    except (errors.BatchTooLarge, errors.RpcError) as exc:
        if isinstance(exc, errors.RpcError) and exc.fatal and high == low:
            raise
        if high == low:
            raise errors.SourceTransient(f"{where}: refused even for one block: {exc}") from exc
        middle = (low + high) // 2
        first = await fetch_logs(rpc, low=low, high=middle, topic0=topic0, addresses=wanted)
        second = await fetch_logs(rpc, low=middle + 1, high=high, topic0=topic0, addresses=wanted)
        return first[0] + second[0], {**first[1], **second[1]}
    if wanted is not None and "address" not in query:
        keep = set(wanted)
        rows = [r for r in rows if r[4] in keep]
    return rows, hashes
