-- Named queries. Each starts with `-- name: NAME --` and one description line; parameters are
-- psycopg named placeholders, never string formatting.

-- name: advisory_lock --
-- Block until the session advisory lock (namespace, key) is ours.
SELECT pg_advisory_lock(%(namespace)s, %(key)s);

-- name: try_advisory_lock --
-- Take the session advisory lock (namespace, key) if free; true when taken.
SELECT pg_try_advisory_lock(%(namespace)s, %(key)s);

-- name: advisory_xact_lock --
-- Block until the transaction advisory lock (namespace, key) is ours (released at commit).
SELECT pg_advisory_xact_lock(%(namespace)s, %(key)s);

-- name: writer_lock_held --
-- Whether this session holds the session advisory lock (namespace, key) (the heartbeat).
SELECT EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted AND objsubid = 2
      AND classid::bigint = %(namespace)s AND objid::bigint = %(key)s
);

-- name: migrations_table_exists --
-- Whether the bookkeeping table exists (no DDL needed by a runtime role when it does).
SELECT to_regclass('schema_migrations') IS NOT NULL;

-- name: migrations_table --
-- The bookkeeping table of applied migrations (created before any migration runs).
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: migrations_applied --
-- Applied migrations in order.
SELECT version, name, checksum FROM schema_migrations ORDER BY version;

-- name: migration_record --
-- Record one applied migration (same transaction as the migration itself).
INSERT INTO schema_migrations (version, name, checksum)
VALUES (%(version)s, %(name)s, %(checksum)s);

-- name: chain_get --
-- One chain row by name.
SELECT id, name, kind, chain_id, genesis_hash, start_block FROM chains WHERE name = %(name)s;

-- name: chain_insert --
-- Register a chain under the next free id (under the registration lock); no-op if the name exists.
INSERT INTO chains (id, name, kind, chain_id, genesis_hash, start_block)
SELECT coalesce(max(id), 0) + 1, %(name)s, %(kind)s, %(chain_id)s, %(genesis_hash)s, %(start_block)s
FROM chains
ON CONFLICT (name) DO NOTHING;

-- name: chain_set_start_block --
-- Follow a changed start_block in the config (coverage is measured from it).
UPDATE chains SET start_block = %(start_block)s WHERE id = %(chain)s;

-- name: chain_set_head --
-- Remember the node head last seen by sync.
UPDATE chains SET head = %(head)s, head_seen_at = now() WHERE id = %(chain)s;

-- name: checkpoint_init --
-- Create the empty checkpoint row of a new chain.
INSERT INTO checkpoints (chain, number, hash) VALUES (%(chain)s, NULL, NULL)
ON CONFLICT (chain) DO NOTHING;

-- name: checkpoint_get --
-- Where sync resumes: (number, hash), both null before the first batch.
SELECT number, hash FROM checkpoints WHERE chain = %(chain)s;

-- name: checkpoint_advance --
-- Compare-and-swap: move the checkpoint only if it still is where we think it is.
UPDATE checkpoints
SET number = %(number)s, hash = %(hash)s, updated_at = now()
WHERE chain = %(chain)s
  AND number IS NOT DISTINCT FROM %(expected_number)s
  AND hash IS NOT DISTINCT FROM %(expected_hash)s;

-- name: block_hash_at --
-- The stored hash at one height (null when the height is not stored).
SELECT hash FROM blocks WHERE chain = %(chain)s AND number = %(number)s;

-- name: stats_chain --
-- Per-chain facts for `indexer stats`: the coverage view plus the last reorg.
SELECT v.*, c.head_seen_at,
       (SELECT r.detected_at FROM reorgs r WHERE r.chain = c.id
        ORDER BY r.detected_at DESC LIMIT 1) AS last_reorg
FROM coverage v JOIN chains c ON c.name = v.chain
WHERE v.chain = %(name)s;

-- name: stored_hashes --
-- Stored hashes at the given heights (fork-point search).
SELECT number, hash FROM blocks WHERE chain = %(chain)s AND number = ANY(%(numbers)s);

-- name: reorg_insert --
-- Audit row for a rollback (kind 'reorg') or an operator rewind (kind 'rewind').
INSERT INTO reorgs (chain, kind, fork_number, depth, old_tip_hash, new_tip_hash)
VALUES (%(chain)s, %(kind)s, %(fork_number)s, %(depth)s, %(old_tip_hash)s, %(new_tip_hash)s);

-- name: chain_write_lock --
-- Serialise write transactions of one chain (sync batches, rollbacks, gap repairs).
SELECT pg_advisory_xact_lock(%(namespace)s, %(chain)s);

-- name: gaps_of_chain --
-- Missing ranges of one chain between its start block and its highest stored block.
SELECT gap_start, gap_end FROM gaps
WHERE chain = %(name)s AND gap_end >= %(low)s AND gap_start <= %(high)s
ORDER BY gap_start;

-- name: gap_failures_of_chain --
-- Dead-letter ranges of one chain.
SELECT range_start, range_end, error, attempts, first_failed_at, last_failed_at, next_retry_at
FROM gap_failures WHERE chain = %(chain)s ORDER BY range_start;

-- name: gap_failure_record --
-- Record (or count again) a range that could not be repaired; back off before the next try.
INSERT INTO gap_failures (chain, range_start, range_end, error, next_retry_at)
VALUES (%(chain)s, %(start)s, %(end)s, %(error)s, now() + make_interval(secs => %(backoff_secs)s))
ON CONFLICT (chain, range_start) DO UPDATE
SET range_end = EXCLUDED.range_end,
    error = EXCLUDED.error,
    attempts = gap_failures.attempts + 1,
    last_failed_at = now(),
    next_retry_at = now() + make_interval(
        secs => least(%(backoff_secs)s * power(2, gap_failures.attempts), %(max_backoff_secs)s));

-- name: gap_failures_clear --
-- Forget dead-letter ranges that start inside a range that is now stored.
DELETE FROM gap_failures
WHERE chain = %(chain)s AND range_start BETWEEN %(start)s AND %(end)s;

-- name: stored_block_at --
-- (hash, parent_hash) of one stored block, locked against deletion until commit.
SELECT hash, parent_hash FROM blocks WHERE chain = %(chain)s AND number = %(number)s
FOR KEY SHARE;

-- name: verify_links --
-- Blocks whose parent hash is not the stored predecessor's hash (first `limit`, with total).
SELECT count(*) OVER () AS total, b.number, b.parent_hash, p.hash
FROM blocks b JOIN blocks p ON p.chain = b.chain AND p.number = b.number - 1
WHERE b.chain = %(chain)s AND b.number BETWEEN %(low)s AND %(high)s
  AND b.parent_hash <> p.hash
ORDER BY b.number LIMIT %(limit)s;

-- name: verify_orphan_transactions --
-- Heights with transactions but no stored block (first `limit`, with the total).
SELECT count(*) OVER () AS total, t.block_number, count(*)
FROM transactions t LEFT JOIN blocks b ON b.chain = t.chain AND b.number = t.block_number
WHERE t.chain = %(chain)s AND t.block_number BETWEEN %(low)s AND %(high)s AND b.number IS NULL
GROUP BY t.block_number ORDER BY t.block_number LIMIT %(limit)s;

-- name: verify_orphan_logs --
-- Logs whose block or transaction is not stored (first `limit`, with the total). A log at index
-- tx_count names the block's system transaction (Polygon's state sync): its receipt, if kept.
SELECT count(*) OVER () AS total, l.block_number, l.log_index
FROM logs l
LEFT JOIN transactions t
  ON t.chain = l.chain AND t.block_number = l.block_number AND t.tx_index = l.tx_index
LEFT JOIN blocks b ON b.chain = l.chain AND b.number = l.block_number
WHERE l.chain = %(chain)s AND l.block_number BETWEEN %(low)s AND %(high)s
  AND (t.hash IS NULL OR t.hash <> l.tx_hash)
  AND (t.hash IS NOT NULL OR b.number IS NULL OR l.tx_index <> b.tx_count)
ORDER BY l.block_number, l.log_index LIMIT %(limit)s;

-- name: verify_tx_counts --
-- Blocks whose tx_count differs from their stored transactions (first `limit`, with total).
SELECT count(*) OVER () AS total, b.number, b.tx_count, count(t.tx_index)
FROM blocks b LEFT JOIN transactions t ON t.chain = b.chain AND t.block_number = b.number
WHERE b.chain = %(chain)s AND b.number BETWEEN %(low)s AND %(high)s
GROUP BY b.number, b.tx_count HAVING b.tx_count <> count(t.tx_index)
ORDER BY b.number LIMIT %(limit)s;

-- name: verify_log_indexes --
-- Blocks whose stored log indexes are not 0..n-1 (a log missing; first `limit`, with total).
SELECT count(*) OVER () AS total, block_number, count(*), min(log_index), max(log_index)
FROM logs
WHERE chain = %(chain)s AND block_number BETWEEN %(low)s AND %(high)s
GROUP BY block_number HAVING min(log_index) <> 0 OR max(log_index) <> count(*) - 1
ORDER BY block_number LIMIT %(limit)s;

-- name: verify_ranges --
-- Differences between block_ranges (derived) and blocks itself (first `limit`, with total).
SELECT count(*) OVER () AS total, problem, first, last FROM (
WITH truth AS (
    SELECT min(number) AS first, max(number) AS last
    FROM (SELECT number, number - row_number() OVER (ORDER BY number) AS grp
          FROM blocks WHERE chain = %(chain)s) t
    GROUP BY grp
), derived AS (
    SELECT min(first) AS first, max(last) AS last
    FROM (SELECT first, last, sum(starts) OVER (ORDER BY first) AS run
          FROM (SELECT first, last,
                       CASE WHEN first = lag(last) OVER (ORDER BY first) + 1 THEN 0 ELSE 1 END
                         AS starts
                FROM block_ranges WHERE chain = %(chain)s) m) n
    GROUP BY run
)
(SELECT 'missing from block_ranges' AS problem, first, last FROM truth
 EXCEPT SELECT 'missing from block_ranges', first, last FROM derived)
UNION ALL
(SELECT 'not in blocks' AS problem, first, last FROM derived
 EXCEPT SELECT 'not in blocks', first, last FROM truth)
) diff ORDER BY first LIMIT %(limit)s;

-- name: stored_hashes_between --
-- Stored (number, hash) in a height range, in order (verify against the node).
SELECT number, hash FROM blocks
WHERE chain = %(chain)s AND number BETWEEN %(low)s AND %(high)s ORDER BY number;

-- name: highest_stored --
-- The highest stored height of a chain (null when empty).
SELECT max(number) FROM blocks WHERE chain = %(chain)s;

-- name: health_check --
-- Does the database answer?
SELECT 1;

-- name: database_size --
-- Size of the current database in bytes (metrics).
SELECT pg_database_size(current_database());

-- name: table_columns --
-- A table's columns as the catalog has them, in order (is an event table as declared?).
SELECT a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relname = %(table)s AND c.relkind = 'r'
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum;

-- name: event_registry_of_chain --
-- Every event table registered for a chain.
SELECT table_name, signature, start_block, live_from, backfilled_to, rows, undecodable, factory,
       fill
FROM event_registry WHERE chain = %(chain)s ORDER BY table_name;

-- name: event_registry_lock --
-- One event table's row, locked for the transaction (attach, backfill).
SELECT signature, start_block, live_from, backfilled_to
FROM event_registry WHERE chain = %(chain)s AND table_name = %(table)s FOR UPDATE;

-- name: event_registry_insert --
-- A table sync decodes events into from now on (`live_from`); nothing backfilled yet.
INSERT INTO event_registry
    (chain, table_name, signature, start_block, live_from, backfilled_to, factory, fill)
VALUES (%(chain)s, %(table)s, %(signature)s, %(start_block)s, %(live_from)s,
        %(start_block)s - 1, %(factory)s, %(fill)s);

-- name: event_registry_attach --
-- A registered table in the config (again): where live decoding starts, from what height the
-- backfill goes on, and how many rows below a raised start_block were deleted.
UPDATE event_registry
SET live_from = %(live_from)s, start_block = %(start_block)s, factory = %(factory)s,
    fill = %(fill)s,
    backfilled_to = %(backfilled_to)s, rows = rows - %(deleted)s,
    undecodable = undecodable - %(deleted_undecodable)s, updated_at = now()
WHERE chain = %(chain)s AND table_name = %(table)s;

-- name: event_registry_detach --
-- A registered table no longer in the config: sync decodes nothing more into it. What it
-- holds stays exact (rollbacks still delete from it) up to where it was synced.
UPDATE event_registry
SET backfilled_to = CASE WHEN backfilled_to >= live_from - 1 THEN %(tip)s ELSE backfilled_to END,
    live_from = NULL, updated_at = now()
WHERE chain = %(chain)s AND table_name = %(table)s AND live_from IS NOT NULL;

-- name: event_registry_forget --
-- A registered table that no longer exists (dropped by an operator).
WITH gone AS (
    DELETE FROM event_undecodable WHERE chain = %(chain)s AND table_name = %(table)s
)
DELETE FROM event_registry WHERE chain = %(chain)s AND table_name = %(table)s;

-- name: event_registry_forget_table --
-- An event table made afresh by migrate: nothing registered under its name holds.
WITH gone AS (DELETE FROM event_undecodable WHERE table_name = %(table)s)
DELETE FROM event_registry WHERE table_name = %(table)s;

-- name: event_registry_count --
-- Rows written with a batch, and logs with the topic that did not decode.
UPDATE event_registry
SET rows = rows + %(rows)s, undecodable = undecodable + %(undecodable)s, updated_at = now()
WHERE chain = %(chain)s AND table_name = %(table)s;

-- name: event_registry_roll_back --
-- Everything above `number` was deleted: live decoding resumes above it, the backfill has
-- nothing above it.
UPDATE event_registry
SET live_from = LEAST(live_from, %(number)s + 1),
    backfilled_to = LEAST(backfilled_to, GREATEST(%(number)s, start_block - 1)),
    rows = rows - %(deleted)s, undecodable = undecodable - %(deleted_undecodable)s,
    updated_at = now()
WHERE chain = %(chain)s AND table_name = %(table)s;

-- name: event_registry_backfilled --
-- One backfill chunk written (its skipped logs counted apart; `undecodable`: those deleted).
UPDATE event_registry
SET backfilled_to = %(backfilled_to)s, undecodable = undecodable + %(undecodable)s,
    updated_at = now()
WHERE chain = %(chain)s AND table_name = %(table)s;

-- name: event_undecodable_copy --
-- Logs an event table skipped.
COPY event_undecodable (chain, table_name, block_number, log_index) FROM STDIN;

-- name: event_undecodable_delete_above --
-- An event table's skipped logs above a height (a rollback).
DELETE FROM event_undecodable
WHERE chain = %(chain)s AND table_name = %(table)s AND block_number > %(number)s;

-- name: event_undecodable_delete_between --
-- An event table's skipped logs of a height range (a backfill chunk written again).
DELETE FROM event_undecodable
WHERE chain = %(chain)s AND table_name = %(table)s
  AND block_number BETWEEN %(low)s AND %(high)s;

-- name: event_undecodable_delete_below --
-- An event table's skipped logs below its start block (start_block raised).
DELETE FROM event_undecodable
WHERE chain = %(chain)s AND table_name = %(table)s AND block_number < %(start)s;

-- name: stats_event_tables --
-- A chain's event tables, as the `event_tables` view shows them.
SELECT "table", signature, start_block, synced_to, rows, undecodable, live_from, backfilled_to,
       factory, fill
FROM event_tables WHERE chain = %(name)s ORDER BY "table";

-- name: logs_with_topic0 --
-- Stored logs of a height range whose first topic is `topic0` (an event's backfill).
SELECT block_number, log_index, tx_index, tx_hash, address, topics, data FROM logs
WHERE chain = %(chain)s AND block_number BETWEEN %(low)s AND %(high)s
  AND topics[1] = %(topic0)s
ORDER BY block_number, log_index;

-- name: logs_with_topic_count --
-- Stored logs of a height range with `count` topics (an anonymous event's backfill).
SELECT block_number, log_index, tx_index, tx_hash, address, topics, data FROM logs
WHERE chain = %(chain)s AND block_number BETWEEN %(low)s AND %(high)s
  AND cardinality(topics) = %(count)s
ORDER BY block_number, log_index;

-- name: logs_with_topic0_copy --
-- The same logs as `logs_with_topic0`, as the binary COPY rows of `logs` (every column, in
-- the table's order): an event table decoded in C reads them with no Python object per log.
COPY (
  SELECT chain, block_number, log_index, tx_index, tx_hash, address, topics, data FROM logs
  WHERE chain = %(chain)s AND block_number BETWEEN %(low)s AND %(high)s
    AND topics[1] = %(topic0)s
  ORDER BY block_number, log_index
) TO STDOUT (FORMAT BINARY);

-- name: logs_with_topic_count_copy --
-- The same logs as `logs_with_topic_count`, as binary COPY rows (see above).
COPY (
  SELECT chain, block_number, log_index, tx_index, tx_hash, address, topics, data FROM logs
  WHERE chain = %(chain)s AND block_number BETWEEN %(low)s AND %(high)s
    AND cardinality(topics) = %(count)s
  ORDER BY block_number, log_index
) TO STDOUT (FORMAT BINARY);

-- Wallets (migrations/0006_wallets.sql; indexer/wallets, store/sinks.WalletSink)

-- name: wallet_register --
-- A wallet of the config, registered once.
INSERT INTO wallets (chain, name) VALUES (%(chain)s, %(wallet)s) ON CONFLICT DO NOTHING;

-- name: wallet_scripts_of --
-- Every script a wallet watches, with its last synced status.
SELECT scripthash, script, address, descriptor, branch, derivation_index, status, used
FROM wallet_scripts WHERE chain = %(chain)s AND wallet = %(wallet)s;

-- name: wallet_script_add --
-- A script a wallet watches from now on (never synced yet).
INSERT INTO wallet_scripts
    (chain, wallet, scripthash, script, address, descriptor, branch, derivation_index)
VALUES (%(chain)s, %(wallet)s, %(scripthash)s, %(script)s, %(address)s, %(descriptor)s,
        %(branch)s, %(derivation_index)s)
ON CONFLICT DO NOTHING;

-- name: wallet_scripts_count --
-- How many scripts a wallet watches, recorded in its registry line.
UPDATE wallets
SET scripts = (SELECT count(*) FROM wallet_scripts s
               WHERE s.chain = %(chain)s AND s.wallet = %(wallet)s),
    updated_at = now()
WHERE chain = %(chain)s AND name = %(wallet)s;

-- name: wallet_scripts_unsynced --
-- The scripts of a chain's wallets to sync again (never synced, or a rollback went by).
SELECT wallet, scripthash FROM wallet_scripts WHERE chain = %(chain)s AND status IS NULL;

-- name: wallet_script_synced --
-- A script's history is stored as of this status.
UPDATE wallet_scripts SET status = %(status)s, used = used OR %(used)s
WHERE chain = %(chain)s AND wallet = %(wallet)s AND scripthash = %(scripthash)s;

-- name: wallet_synced --
-- Every script of the wallet was seen equal to the server's.
UPDATE wallets SET synced_at = now(), updated_at = now()
WHERE chain = %(chain)s AND name = %(wallet)s;

-- name: wallet_history_txids --
-- The transactions in the stored histories of some scripts of a wallet.
SELECT DISTINCT txid FROM wallet_history
WHERE chain = %(chain)s AND wallet = %(wallet)s AND scripthash = ANY(%(scripthashes)s);

-- name: wallet_history_delete --
-- Forget the stored histories of some scripts of a wallet (new ones follow).
DELETE FROM wallet_history
WHERE chain = %(chain)s AND wallet = %(wallet)s AND scripthash = ANY(%(scripthashes)s);

-- name: wallet_orphans --
-- Which of these transactions no stored history of the wallet names any more.
SELECT t.txid FROM unnest(%(txids)s::bytea[]) AS t (txid)
WHERE NOT EXISTS (SELECT 1 FROM wallet_history h
                  WHERE h.chain = %(chain)s AND h.wallet = %(wallet)s AND h.txid = t.txid);

-- name: wallet_transactions_delete --
-- Delete transactions of a wallet.
DELETE FROM wallet_transactions
WHERE chain = %(chain)s AND wallet = %(wallet)s AND txid = ANY(%(txids)s);

-- name: wallet_inputs_delete --
-- Delete the inputs of transactions of a wallet.
DELETE FROM wallet_inputs WHERE chain = %(chain)s AND wallet = %(wallet)s AND txid = ANY(%(txids)s);

-- name: wallet_outputs_delete --
-- Delete the outputs of transactions of a wallet.
DELETE FROM wallet_outputs WHERE chain = %(chain)s AND wallet = %(wallet)s AND txid = ANY(%(txids)s);

-- name: wallet_transaction_put --
-- A wallet transaction, new or with a new height (first_seen kept).
INSERT INTO wallet_transactions
    (chain, wallet, txid, height, block_hash, position, merkle_branch, raw, first_seen)
VALUES (%(chain)s, %(wallet)s, %(txid)s, %(height)s, %(block_hash)s, %(position)s,
        %(merkle_branch)s, %(raw)s, %(first_seen)s)
ON CONFLICT (chain, wallet, txid) DO UPDATE
SET height = EXCLUDED.height, block_hash = EXCLUDED.block_hash,
    position = EXCLUDED.position, merkle_branch = EXCLUDED.merkle_branch;

-- name: wallet_output_put --
-- An output paying to the wallet, new or with a new height (spent_* set separately).
INSERT INTO wallet_outputs (chain, wallet, txid, vout, address, script, value, height)
VALUES (%(chain)s, %(wallet)s, %(txid)s, %(vout)s, %(address)s, %(script)s, %(value)s,
        %(height)s)
ON CONFLICT (chain, wallet, txid, vout) DO UPDATE SET height = EXCLUDED.height;

-- name: wallet_spent_clear --
-- Forget what spends the outputs of, or is spent by, these transactions (recomputed next).
UPDATE wallet_outputs SET spent_txid = NULL, spent_height = NULL
WHERE chain = %(chain)s AND wallet = %(wallet)s
  AND (spent_txid = ANY(%(txids)s) OR txid = ANY(%(txids)s));

-- name: wallet_spent_set --
-- Mark the wallet's outputs spent by its transactions' inputs (touching these transactions);
-- of two spends of one output (a double spend), a confirmed one wins.
UPDATE wallet_outputs o
SET spent_txid = s.txid, spent_height = s.height
FROM (
    SELECT DISTINCT ON (i.prev_txid, i.prev_vout) i.prev_txid, i.prev_vout, i.txid, i.height
    FROM wallet_inputs i
    WHERE i.chain = %(chain)s AND i.wallet = %(wallet)s
      AND (i.txid = ANY(%(txids)s) OR i.prev_txid = ANY(%(txids)s))
    ORDER BY i.prev_txid, i.prev_vout, i.height NULLS LAST, i.txid
) s
WHERE o.chain = %(chain)s AND o.wallet = %(wallet)s
  AND o.txid = s.prev_txid AND o.vout = s.prev_vout;

-- name: wallet_raw_transactions --
-- Transactions of the chain's wallets already stored (fetched once, whichever wallet).
SELECT DISTINCT ON (txid) txid, raw FROM wallet_transactions
WHERE chain = %(chain)s AND txid = ANY(%(txids)s);

-- name: wallet_stored_proofs --
-- The stored proofs of these transactions (checked against the headers we store now).
SELECT DISTINCT ON (txid) txid, height, block_hash, position, merkle_branch
FROM wallet_transactions
WHERE chain = %(chain)s AND txid = ANY(%(txids)s) AND height IS NOT NULL;

-- name: blocks_headers_at --
-- The stored headers' hashes and merkle roots at these heights.
SELECT number, hash, merkle_root FROM blocks WHERE chain = %(chain)s AND number = ANY(%(numbers)s);

-- name: wallet_roll_back_scripts --
-- A rollback above a height: the scripts whose history had a transaction above it sync again.
UPDATE wallet_scripts s SET status = NULL
FROM wallet_history h
WHERE h.chain = %(chain)s AND h.height > %(number)s
  AND s.chain = h.chain AND s.wallet = h.wallet AND s.scripthash = h.scripthash;

-- name: wallet_roll_back_history --
-- A rollback above a height: history entries above it are no longer proven.
UPDATE wallet_history SET height = NULL WHERE chain = %(chain)s AND height > %(number)s;

-- name: wallet_roll_back_transactions --
-- A rollback above a height: transactions confirmed above it are unconfirmed again.
UPDATE wallet_transactions
SET height = NULL, block_hash = NULL, position = NULL, merkle_branch = NULL
WHERE chain = %(chain)s AND height > %(number)s;

-- name: wallet_roll_back_inputs --
-- A rollback above a height: inputs of transactions above it are unconfirmed again.
UPDATE wallet_inputs SET height = NULL WHERE chain = %(chain)s AND height > %(number)s;

-- name: wallet_roll_back_outputs --
-- A rollback above a height: outputs created above it are unconfirmed again.
UPDATE wallet_outputs SET height = NULL WHERE chain = %(chain)s AND height > %(number)s;

-- name: wallet_roll_back_spends --
-- A rollback above a height: spends above it are unconfirmed again.
UPDATE wallet_outputs SET spent_height = NULL
WHERE chain = %(chain)s AND spent_height > %(number)s;

-- name: wallet_count_above --
-- How many wallet transactions a rollback above a height turns back to unconfirmed.
SELECT count(*) FROM wallet_transactions WHERE chain = %(chain)s AND height > %(number)s;

-- name: wallet_stats --
-- Per wallet of a chain: scripts, transactions (confirmed, unconfirmed), last sync.
SELECT w.name, w.scripts,
       (SELECT count(*) FROM wallet_transactions t
        WHERE t.chain = w.chain AND t.wallet = w.name AND t.height IS NOT NULL) AS confirmed,
       (SELECT count(*) FROM wallet_transactions t
        WHERE t.chain = w.chain AND t.wallet = w.name AND t.height IS NULL) AS unconfirmed,
       w.synced_at
FROM wallets w WHERE w.chain = %(chain)s ORDER BY w.name;

-- name: stats_wallets --
-- Per wallet of a chain (by name): scripts, transactions (confirmed, unconfirmed), last sync.
SELECT w.name AS wallet, w.scripts,
       (SELECT count(*) FROM wallet_transactions t
        WHERE t.chain = w.chain AND t.wallet = w.name AND t.height IS NOT NULL) AS confirmed,
       (SELECT count(*) FROM wallet_transactions t
        WHERE t.chain = w.chain AND t.wallet = w.name AND t.height IS NULL) AS unconfirmed,
       w.synced_at
FROM wallets w JOIN chains c ON c.id = w.chain
WHERE c.name = %(name)s ORDER BY w.name;

-- name: wallet_confirmed_between --
-- Stored confirmed wallet transactions of heights [low, high], with the header stored there.
SELECT t.wallet, t.txid, t.height, t.block_hash, t.position, t.merkle_branch, t.raw,
       b.hash AS header_hash, b.merkle_root
FROM wallet_transactions t
LEFT JOIN blocks b ON b.chain = t.chain AND b.number = t.height
WHERE t.chain = %(chain)s AND t.height BETWEEN %(low)s AND %(high)s
ORDER BY t.height, t.wallet, t.txid;

-- name: wallet_outputs_between --
-- Stored wallet outputs of transactions of heights [low, high] (null: unconfirmed too).
SELECT o.wallet, o.txid, o.vout, o.script, o.value, t.raw
FROM wallet_outputs o
JOIN wallet_transactions t ON t.chain = o.chain AND t.wallet = o.wallet AND t.txid = o.txid
WHERE o.chain = %(chain)s
  AND (t.height BETWEEN %(low)s AND %(high)s OR t.height IS NULL)
ORDER BY o.wallet, o.txid, o.vout;

-- name: event_table_synced_to --
-- How far an event table is synced (a factory's: its followers go no further), as the
-- `event_tables` view says it.
SELECT e.synced_to FROM event_tables e
WHERE e.chain = %(name)s AND e."table" = %(table)s;

-- name: blocks_hashes_at --
-- The stored blocks' hashes at these heights.
SELECT number, hash FROM blocks WHERE chain = %(chain)s AND number = ANY(%(numbers)s);
