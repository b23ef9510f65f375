"""Prometheus metrics, read from the running parts at scrape time.

Nothing on the hot path touches prometheus objects: the syncers, RPC clients and pool keep
plain counters, and this collector turns them into samples when /metrics is scraped.
Endpoint URLs appear only redacted.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from indexer.chain.endpoints import CIRCUIT_CLOSED, CIRCUIT_HALF_OPEN, CIRCUIT_OPEN
from indexer.runtime import Runtime

_CIRCUIT_VALUES = {CIRCUIT_CLOSED: 0, CIRCUIT_HALF_OPEN: 1, CIRCUIT_OPEN: 2}


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RuntimeCollector(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        rt = self.runtime

        def chain_gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"indexer_{name}", doc, labels=["chain"])

        def chain_counter(name: str, doc: str) -> CounterMetricFamily:
            return CounterMetricFamily(f"indexer_{name}", doc, labels=["chain"])

        head = chain_gauge("node_head", "Node head height last seen")
        tip = chain_gauge("indexed_tip", "Highest height stored (the checkpoint)")
        lag = chain_gauge("lag_blocks", "Node head minus indexed tip")
        halted = chain_gauge("halted", "1 when the chain halted and needs an operator")
        stuck = chain_gauge(
            "stuck_on_refused_answer",
            "1 while every endpoint gives an answer our checks refuse (retried with backoff)",
        )
        refused = chain_counter("refused_answers", "Answers refused by every endpoint's turn")
        unexpected = chain_counter(
            "unexpected_errors", "Exceptions no handler names (bugs), logged and waited out"
        )
        rows = CounterMetricFamily(
            "indexer_rows_written", "Rows written, by table", labels=["chain", "table"]
        )
        backfilled = CounterMetricFamily(
            "indexer_event_backfill_rows",
            "Event table rows written by the backfill from stored logs",
            labels=["chain", "table"],
        )
        pending = GaugeMetricFamily(
            "indexer_event_backfill_pending_blocks",
            "Heights an event table still has to backfill from stored logs",
            labels=["chain", "table"],
        )
        wallet_labels = ["chain", "wallet"]
        wallet_scripts = GaugeMetricFamily(
            "indexer_wallet_scripts",
            "Scripts a wallet watches (derived so far)",
            labels=wallet_labels,
        )
        wallet_txs = GaugeMetricFamily(
            "indexer_wallet_transactions",
            "A wallet's stored transactions, confirmed (proven) or not",
            labels=[*wallet_labels, "state"],
        )
        wallet_in_sync = GaugeMetricFamily(
            "indexer_wallet_in_sync",
            "1 when every script of the wallet equalled the servers' at the last round",
            labels=wallet_labels,
        )
        wallet_synced = GaugeMetricFamily(
            "indexer_wallet_last_sync_timestamp_seconds",
            "When the wallet was last seen in sync (Unix time)",
            labels=wallet_labels,
        )
        wallet_lag = GaugeMetricFamily(
            "indexer_wallet_lag_seconds",
            "Seconds since the wallet was last seen in sync (0 while it is)",
            labels=wallet_labels,
        )
        wallet_fetched = chain_counter(
            "wallet_transactions_fetched", "Wallet transactions fetched (each once)"
        )
        wallet_proofs = chain_counter("wallet_proofs_checked", "Merkle proofs checked")
        wallet_lies = chain_counter(
            "wallet_lies_refused", "Servers dropped for a history omitting a proven transaction"
        )
        missing = chain_gauge("missing_blocks", "Blocks missing below the tip (last repair pass)")
        failed = chain_gauge("gap_failed_ranges", "Ranges repair could not fill (gap_failures)")
        blocks = chain_counter("blocks_written", "Blocks written")
        txs = chain_counter("transactions_written", "Transaction rows written")
        logs = chain_counter("logs_written", "Log rows written")
        batches = chain_counter("batches_written", "Batches written (one transaction each)")
        batch_secs = chain_counter("batch_write_seconds", "Time spent writing batches")
        last_batch = chain_gauge("last_batch_write_seconds", "Duration of the last batch write")
        reorgs = chain_counter("reorgs", "Reorgs rolled back")
        deepest = chain_gauge("reorg_deepest_depth", "Deepest reorg rolled back")
        last_depth = chain_gauge("reorg_last_depth", "Depth of the last reorg rolled back")
        last_reorg = chain_gauge("reorg_last_timestamp_seconds", "Unix time of the last reorg")
        rpc_labels = ["chain", "endpoint"]
        rpc_requests = CounterMetricFamily(
            "indexer_rpc_requests", "JSON-RPC requests (batches) sent", labels=rpc_labels
        )
        rpc_errors = CounterMetricFamily(
            "indexer_rpc_errors", "JSON-RPC requests that failed", labels=rpc_labels
        )
        rpc_limited = CounterMetricFamily(
            "indexer_rpc_rate_limited", "Requests answered 429/503 with Retry-After",
            labels=rpc_labels,
        )  # fmt: skip
        rpc_secs = CounterMetricFamily(
            "indexer_rpc_request_seconds", "Time spent in JSON-RPC requests", labels=rpc_labels
        )
        circuit = GaugeMetricFamily(
            "indexer_rpc_circuit_state", "Circuit breaker: 0 closed, 1 half open, 2 open",
            labels=rpc_labels,
        )  # fmt: skip

        decoded = CounterMetricFamily(
            "indexer_decoded_batches",
            "Full EVM batches decoded, by path: fast (msgspec + C encoder) or checked (answers "
            "the fast path does not take: non-canonical or wrong)",
            labels=["chain", "path"],
        )

        for chain in rt.chains:
            for path, count in chain.syncer.source.decode_counts().items():
                decoded.add_metric([chain.name, path], count)
            s = chain.state
            label = [chain.name]
            if s.head is not None:
                head.add_metric(label, s.head)
            if s.tip is not None:
                tip.add_metric(label, s.tip.number)
            if s.lag is not None:
                lag.add_metric(label, s.lag)
            halted.add_metric(label, 1 if s.halted else 0)
            stuck.add_metric(label, 1 if s.refused else 0)
            refused.add_metric(label, s.refused_answers)
            wallet_bugs = chain.wallets.unexpected_errors if chain.wallets is not None else 0
            unexpected.add_metric(label, s.unexpected_errors + wallet_bugs)
            for table, count in s.counters.rows_written.items():
                rows.add_metric([chain.name, table], count)
            if chain.backfiller is not None:
                for table, count in chain.backfiller.rows_written.items():
                    backfilled.add_metric([chain.name, table], count)
                for table, heights in chain.backfiller.pending_blocks.items():
                    pending.add_metric([chain.name, table], heights)
            if chain.wallets is not None:
                now = time.time()
                for wallet in chain.wallets.wallets.values():
                    w_label = [chain.name, wallet.name]
                    wallet_scripts.add_metric(w_label, len(wallet.scripts))
                    wallet_txs.add_metric([*w_label, "confirmed"], wallet.confirmed)
                    wallet_txs.add_metric([*w_label, "unconfirmed"], wallet.unconfirmed)
                    wallet_in_sync.add_metric(w_label, 1 if wallet.in_sync else 0)
                    if wallet.synced_at is not None:
                        wallet_synced.add_metric(w_label, wallet.synced_at)
                        behind = 0.0 if wallet.in_sync else max(0.0, now - wallet.synced_at)
                        wallet_lag.add_metric(w_label, behind)
                wallet_fetched.add_metric(label, chain.wallets.transactions_fetched)
                wallet_proofs.add_metric(label, chain.wallets.proofs_checked)
                wallet_lies.add_metric(label, chain.wallets.lies_refused)
            missing.add_metric(label, chain.repairer.missing_blocks)
            failed.add_metric(label, chain.repairer.failed_ranges)
            c = s.counters
            blocks.add_metric(label, c.blocks_written)
            txs.add_metric(label, c.transactions_written)
            logs.add_metric(label, c.logs_written)
            batches.add_metric(label, c.batches)
            batch_secs.add_metric(label, c.batch_secs_total)
            last_batch.add_metric(label, c.last_batch_secs)
            reorgs.add_metric(label, s.reorgs.count)
            deepest.add_metric(label, s.reorgs.deepest)
            if s.reorgs.last_depth is not None:
                last_depth.add_metric(label, s.reorgs.last_depth)
            if s.reorgs.last_at is not None:
                last_reorg.add_metric(label, s.reorgs.last_at)
            for ep in chain.rpc.endpoints:
                ep_label = [chain.name, ep.url]
                rpc_requests.add_metric(ep_label, ep.requests)
                rpc_errors.add_metric(ep_label, ep.errors)
                rpc_limited.add_metric(ep_label, ep.rate_limited)
                rpc_secs.add_metric(ep_label, ep.latency_secs_total)
                circuit.add_metric(ep_label, _CIRCUIT_VALUES.get(ep.circuit, 0))
        yield from (head, tip, lag, halted, stuck, refused, unexpected, missing, failed, blocks,
                    txs, logs, rows, backfilled, pending, batches, batch_secs, last_batch,
                    reorgs, deepest, last_depth, last_reorg, rpc_requests, rpc_errors,
                    rpc_limited, rpc_secs, circuit, decoded, wallet_scripts, wallet_txs,
                    wallet_in_sync, wallet_synced, wallet_lag, wallet_fetched, wallet_proofs,
                    wallet_lies)  # fmt: skip

        pool = rt.store.pool_stats()
        for key, doc in (
            ("pool_size", "Connections in the pool"),
            ("pool_available", "Idle connections in the pool"),
            ("requests_waiting", "Requests waiting for a connection"),
        ):
            yield GaugeMetricFamily(f"indexer_db_{key}", doc, value=pool.get(key, 0))
        yield CounterMetricFamily(
            "indexer_db_pool_errors",
            "Pool connection errors and timeouts",
            value=pool.get("connections_errors", 0) + pool.get("requests_errors", 0),
        )
        yield CounterMetricFamily(
            "indexer_db_errors", "Database checks that failed", value=rt.database_errors
        )
        if rt.database_size_bytes is not None:
            yield GaugeMetricFamily(
                "indexer_database_size_bytes", "pg_database_size", value=rt.database_size_bytes
            )
        yield GaugeMetricFamily("indexer_process_resident_memory_bytes", "RSS",
                                value=_rss_bytes())  # fmt: skip
        yield GaugeMetricFamily(
            "indexer_start_time_seconds", "Unix time the daemon started", value=rt.started_at
        )
