"""Check a stored chain: the invariants of RELIABILITY.md section 7, and equality with a node.

Used after every sync, fault, crash and reorg test. Everything here reads the database with
plain SQL and the node with plain JSON-RPC, independently of the indexer's own code.
"""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg.sql

from indexer.devnet.anvil import RpcClient


def chain_id_of(conn: psycopg.Connection[Any], name: str) -> int:
    row = conn.execute("SELECT id FROM chains WHERE name = %s", (name,)).fetchone()
    assert row is not None, f"chain {name} is not registered"
    return int(row[0])


def check_invariants(
    db_url: str, name: str, *, start_block: int = 0, transactions: bool = True
) -> int | None:
    """Assert invariants 1-6 for chain `name`; return the checkpoint height (None if empty)."""
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT id FROM chains WHERE name = %s", (name,)).fetchone()
        if row is None:  # never got as far as registering the chain
            assert conn.execute("SELECT count(*) FROM blocks").fetchone() == (0,)
            return None
        chain = int(row[0])
        q = conn.execute
        # 1. Linkage: every block's parent hash is its stored predecessor's hash.
        bad_links = q(
            """SELECT count(*) FROM blocks b JOIN blocks p
               ON p.chain = b.chain AND p.number = b.number - 1
               WHERE b.chain = %s AND b.parent_hash <> p.hash""",
            (chain,),
        ).fetchone()
        assert bad_links == (0,), f"{bad_links} unlinked blocks"
        cp = q("SELECT number, hash FROM checkpoints WHERE chain = %s", (chain,)).fetchone()
        assert cp is not None
        low, high, count = q(
            "SELECT min(number), max(number), count(*) FROM blocks WHERE chain = %s", (chain,)
        ).fetchone()  # type: ignore[misc]
        if cp[0] is None:
            assert count == 0, "blocks stored but no checkpoint"
            return None
        # 2. No gaps between the start and the checkpoint; 4. checkpoint == tip.
        assert low == start_block, f"lowest stored block {low} != start block {start_block}"
        assert high == cp[0], f"highest stored {high} != checkpoint {cp[0]}"
        assert count == high - low + 1, f"gaps: {count} blocks in {low}..{high}"
        tip_hash = q(
            "SELECT hash FROM blocks WHERE chain = %s AND number = %s", (chain, cp[0])
        ).fetchone()
        assert tip_hash is not None and bytes(tip_hash[0]) == bytes(cp[1]), "checkpoint hash"
        # 5. No orphans: child rows only for stored blocks, never above the checkpoint.
        for table in ("transactions", "logs", "receipts", "withdrawals"):
            orphans = q(
                f"""SELECT count(*) FROM {table} t LEFT JOIN blocks b
                    ON b.chain = t.chain AND b.number = t.block_number
                    WHERE t.chain = %s AND b.number IS NULL""",
                (chain,),
            ).fetchone()
            assert orphans == (0,), f"{orphans} orphan rows in {table}"
        # ... event tables too: each row is a stored log of a stored block, and every log it
        # skipped is a stored log; the registry's counts are the tables' own.
        # A table filled from the node (a chain that stores no logs): of a stored block.
        registered = q(
            "SELECT table_name, rows, undecodable, fill FROM event_registry WHERE chain = %s",
            (chain,),
        ).fetchall()
        for table, counted_rows, counted_skipped, fill in registered:
            ident = psycopg.sql.Identifier(table)
            parent, key = ("blocks b", "b.number") if fill == "node" else ("logs l", "l.log_index")
            join = (
                "b.chain = {t}.chain AND b.number = {t}.block_number"
                if fill == "node"
                else "l.chain = {t}.chain AND l.block_number = {t}.block_number "
                "AND l.log_index = {t}.log_index"
            )
            orphans = q(
                psycopg.sql.SQL(
                    f"SELECT count(*) FROM {{}} e LEFT JOIN {parent} ON {join.format(t='e')} "
                    f"WHERE e.chain = %s AND {key} IS NULL"
                ).format(ident),
                (chain,),
            ).fetchone()
            assert orphans == (0,), f"{orphans} rows of event table {table} with no stored log"
            (rows,) = q(
                psycopg.sql.SQL("SELECT count(*) FROM {} WHERE chain = %s").format(ident), (chain,)
            ).fetchone() or (None,)
            (skipped,) = q(
                f"SELECT count(*) FROM event_undecodable u LEFT JOIN {parent} "
                f"ON {join.format(t='u')} "
                f"WHERE u.chain = %s AND u.table_name = %s AND {key} IS NOT NULL",
                (chain, table),
            ).fetchone() or (None,)
            assert (rows, skipped) == (counted_rows, counted_skipped), (
                f"event table {table}: {rows} rows and {skipped} skipped logs, the registry "
                f"counts {counted_rows} and {counted_skipped}"
            )
        # 6. No duplicates (primary keys make these structural; tx hashes are checked here).
        dup = q(
            """SELECT count(*) FROM (SELECT hash FROM transactions WHERE chain = %s
               GROUP BY hash HAVING count(*) > 1) d""",
            (chain,),
        ).fetchone()
        assert dup == (0,), "duplicate transaction hashes"
        if not transactions:
            return int(cp[0])
        # tx_count matches the stored transactions of every block.
        mismatch = q(
            """SELECT count(*) FROM blocks b WHERE b.chain = %s AND b.tx_count <>
               (SELECT count(*) FROM transactions t
                WHERE t.chain = b.chain AND t.block_number = b.number)""",
            (chain,),
        ).fetchone()
        assert mismatch == (0,), "tx_count differs from stored transactions"
        return int(cp[0])


def _h(value: str) -> bytes:
    return bytes.fromhex(value[2:])


def assert_equals_node(
    db_url: str,
    name: str,
    node_url: str,
    *,
    start: int = 0,
    end: int | None = None,
    transactions: bool = True,
    logs: bool = True,
    receipts: bool = False,
) -> None:
    """Assert stored blocks, transactions, logs and receipts in [start, end] equal the
    node's (7). Receipts are compared wherever any is stored, and everywhere with
    `receipts`."""
    with psycopg.connect(db_url) as conn, RpcClient(node_url) as rpc:
        chain = chain_id_of(conn, name)
        if end is None:
            row = conn.execute(
                "SELECT number FROM checkpoints WHERE chain = %s", (chain,)
            ).fetchone()
            assert row is not None and row[0] is not None
            end = int(row[0])
        stored_blocks = {
            int(n): (bytes(h), bytes(p), int(c))
            for n, h, p, c in conn.execute(
                """SELECT number, hash, parent_hash, tx_count FROM blocks
                   WHERE chain = %s AND number BETWEEN %s AND %s""",
                (chain, start, end),
            )
        }
        stored_txs: dict[int, list[tuple[bytes, int | None]]] = {}
        for n, h, max_fee in conn.execute(
            """SELECT block_number, hash, max_fee_per_gas FROM transactions
               WHERE chain = %s AND block_number BETWEEN %s AND %s
               ORDER BY block_number, tx_index""",
            (chain, start, end),
        ):
            stored_txs.setdefault(int(n), []).append(
                (bytes(h), None if max_fee is None else int(max_fee))
            )
        stored_logs: dict[int, list[tuple[int, bytes, bytes, list[bytes], bytes]]] = {}
        for n, i, tx, addr, topics, data in conn.execute(
            """SELECT block_number, log_index, tx_hash, address, topics, data FROM logs
               WHERE chain = %s AND block_number BETWEEN %s AND %s
               ORDER BY block_number, log_index""",
            (chain, start, end),
        ):
            stored_logs.setdefault(int(n), []).append(
                (int(i), bytes(tx), bytes(addr), [bytes(t) for t in topics], bytes(data))
            )
        stored_receipts: dict[int, list[tuple[Any, ...]]] = {}
        for row in conn.execute(
            """SELECT block_number, tx_hash, type, status, gas_used, cumulative_gas_used,
                      effective_gas_price, contract_address, logs_bloom FROM receipts
               WHERE chain = %s AND block_number BETWEEN %s AND %s
               ORDER BY block_number, tx_index""",
            (chain, start, end),
        ):
            stored_receipts.setdefault(int(row[0]), []).append(
                tuple(bytes(v) if isinstance(v, bytes | memoryview) else v for v in row[1:])
            )
        assert sorted(stored_blocks) == list(range(start, end + 1)), "stored heights"
        step = 100
        for lo in range(start, end + 1, step):
            hi = min(lo + step - 1, end)
            results = rpc.batch(
                [("eth_getBlockByNumber", [hex(n), True]) for n in range(lo, hi + 1)]
                + [("eth_getLogs", [{"fromBlock": hex(lo), "toBlock": hex(hi)}])]
            )
            node_logs: dict[int, list[tuple[int, bytes, bytes, list[bytes], bytes]]] = {}
            for lg in results[-1]:
                node_logs.setdefault(int(lg["blockNumber"], 16), []).append(
                    (
                        int(lg["logIndex"], 16),
                        _h(lg["transactionHash"]),
                        _h(lg["address"]),
                        [_h(t) for t in lg["topics"]],
                        _h(lg["data"]),
                    )
                )
            compare_columns(conn, chain, results[:-1], transactions=transactions)
            for block in results[:-1]:
                n = int(block["number"], 16)
                want = (_h(block["hash"]), _h(block["parentHash"]), len(block["transactions"]))
                assert stored_blocks[n] == want, f"block {n} differs from the node"
                want_txs = (
                    [(_h(t["hash"]), _q(t.get("maxFeePerGas"))) for t in block["transactions"]]
                    if transactions
                    else []
                )
                assert stored_txs.get(n, []) == want_txs, f"transactions of block {n} differ"
                want_logs = sorted(node_logs.get(n, [])) if logs else []
                assert stored_logs.get(n, []) == want_logs, f"logs of block {n} differ"
                if n in stored_receipts or (receipts and block["transactions"]):
                    want_receipts = [
                        _receipt(r) for r in rpc.batch([("eth_getBlockReceipts", [hex(n)])])[0]
                    ]
                    assert stored_receipts.get(n) == want_receipts, f"receipts of block {n}"


def compare_columns(
    conn: psycopg.Connection[Any], chain: int, blocks: list[dict[str, Any]], *, transactions: bool
) -> None:
    """Every stored column of these blocks and their transactions equals the node's field."""
    from psycopg.rows import dict_row

    from indexer.chain import evm_fields
    from tests.support.columns import expected, stored

    numbers = [int(b["number"], 16) for b in blocks]
    cur = conn.cursor(row_factory=dict_row)
    rows = {
        r["number"]: stored(r)
        for r in cur.execute(
            "SELECT * FROM blocks WHERE chain = %s AND number = ANY(%s)", (chain, numbers)
        )
    }
    txs = {
        (r["block_number"], r["tx_index"]): stored(r)
        for r in cur.execute(
            "SELECT * FROM transactions WHERE chain = %s AND block_number = ANY(%s)",
            (chain, numbers),
        )
    }
    for block in blocks:
        n = int(block["number"], 16)
        want = expected(evm_fields.BLOCKS, block)
        got = {k: rows[n][k] for k in want}
        assert got == want, f"block {n}: columns differ from the node"
        if not transactions:
            continue
        for i, tx in enumerate(block["transactions"]):
            want = expected(evm_fields.TRANSACTIONS, tx)
            got = {k: txs[(n, i)][k] for k in want}
            assert got == want, f"block {n} transaction {i}: columns differ from the node"


def _receipt(r: dict[str, Any]) -> tuple[Any, ...]:
    address = r.get("contractAddress")
    return (
        _h(r["transactionHash"]),
        _q(r.get("type")) or 0,
        _q(r.get("status")),
        _q(r["gasUsed"]),
        _q(r["cumulativeGasUsed"]),
        _q(r.get("effectiveGasPrice")),
        None if address is None else _h(address),
        _h(r["logsBloom"]),
    )


def _q(value: str | None) -> int | None:
    return None if value is None else int(value, 16)


def table_counts(db_url: str) -> dict[str, int]:
    with psycopg.connect(db_url) as conn:
        return {
            t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # type: ignore[index]
            for t in ("blocks", "transactions", "logs", "reorgs")
        }
