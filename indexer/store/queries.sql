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
