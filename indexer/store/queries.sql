-- Named queries. Each starts with `-- name: NAME --` and one description line; parameters are
-- psycopg named placeholders, never string formatting.

-- name: advisory_lock --
-- Block until the session advisory lock (namespace, key) is ours.
SELECT pg_advisory_lock(%(namespace)s, %(key)s);

-- name: advisory_unlock --
-- Release a session advisory lock taken with advisory_lock / try_advisory_lock.
SELECT pg_advisory_unlock(%(namespace)s, %(key)s);

-- name: try_advisory_lock --
-- Take the session advisory lock (namespace, key) if free; true when taken.
SELECT pg_try_advisory_lock(%(namespace)s, %(key)s);

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
-- Register a chain under the next free id; no-op if the name exists.
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

-- name: blocks_above_count --
-- How many blocks are stored above a height (must be 0 above the checkpoint).
SELECT count(*) FROM blocks WHERE chain = %(chain)s AND number > %(number)s;

-- name: copy_blocks --
-- Bulk-load blocks (binary COPY; column order matches store.writer.BLOCK_TYPES).
COPY blocks (chain, number, hash, parent_hash, timestamp, tx_count, miner, gas_used, gas_limit,
             base_fee_per_gas, size, version, merkle_root, bits, nonce)
FROM STDIN (FORMAT BINARY);

-- name: copy_transactions --
-- Bulk-load transactions (binary COPY; column order matches store.writer.TX_TYPES).
COPY transactions (chain, block_number, tx_index, hash, from_address, to_address, value, nonce,
                   gas, gas_price, input, type)
FROM STDIN (FORMAT BINARY);

-- name: copy_logs --
-- Bulk-load logs (binary COPY; column order matches store.writer.LOG_TYPES).
COPY logs (chain, block_number, log_index, tx_index, tx_hash, address, topics, data)
FROM STDIN (FORMAT BINARY);

-- name: stats_chain --
-- Per-chain facts for `indexer stats`.
SELECT c.id, c.name, c.kind, c.start_block, k.number AS checkpoint, c.head, c.head_seen_at,
       (SELECT count(*) FROM blocks b WHERE b.chain = c.id) AS blocks_stored,
       (SELECT max(number) FROM blocks b WHERE b.chain = c.id) AS highest_stored,
       (SELECT r.detected_at FROM reorgs r WHERE r.chain = c.id
        ORDER BY r.detected_at DESC LIMIT 1) AS last_reorg
FROM chains c LEFT JOIN checkpoints k ON k.chain = c.id
WHERE c.name = %(name)s;

-- name: stored_hashes --
-- Stored hashes at the given heights (fork-point search).
SELECT number, hash FROM blocks WHERE chain = %(chain)s AND number = ANY(%(numbers)s);

-- name: delete_logs_above --
-- Rollback: logs above the fork point.
DELETE FROM logs WHERE chain = %(chain)s AND block_number > %(number)s;

-- name: delete_transactions_above --
-- Rollback: transactions above the fork point.
DELETE FROM transactions WHERE chain = %(chain)s AND block_number > %(number)s;

-- name: delete_blocks_above --
-- Rollback: blocks above the fork point.
DELETE FROM blocks WHERE chain = %(chain)s AND number > %(number)s;

-- name: reorg_insert --
-- Audit row for a rollback (kind 'reorg') or an operator rewind (kind 'rewind').
INSERT INTO reorgs (chain, kind, fork_number, depth, old_tip_hash, new_tip_hash)
VALUES (%(chain)s, %(kind)s, %(fork_number)s, %(depth)s, %(old_tip_hash)s, %(new_tip_hash)s);

-- name: rows_above --
-- What a rollback or rewind to a height would delete.
SELECT (SELECT count(*) FROM blocks WHERE chain = %(chain)s AND number > %(number)s),
       (SELECT count(*) FROM transactions WHERE chain = %(chain)s AND block_number > %(number)s),
       (SELECT count(*) FROM logs WHERE chain = %(chain)s AND block_number > %(number)s);
