-- Event tables with a factory: their contracts are the addresses in a column of another event
-- table (pools created by a factory's PoolCreated). Such a table is filled from the stored
-- logs as far as that table is synced (the backfill follows it), never decoded live.
--   factory   "table.column" the addresses come from; null for other tables

ALTER TABLE event_registry ADD COLUMN factory text;

-- synced_to of a table with a factory is how far its backfill is; of any other table, as
-- before (the checkpoint once the backfill met the heights sync decodes live).
CREATE OR REPLACE VIEW event_tables AS
SELECT c.name AS chain,
       r.table_name AS "table",
       r.signature,
       r.start_block,
       CASE
           WHEN r.factory IS NULL AND r.live_from IS NOT NULL
                AND r.backfilled_to >= r.live_from - 1
               THEN GREATEST(r.backfilled_to, coalesce(cp.number, r.backfilled_to))
           ELSE r.backfilled_to
       END AS synced_to,
       r.rows,
       r.undecodable,
       r.live_from,
       r.backfilled_to,
       r.factory
FROM event_registry r
JOIN chains c ON c.id = r.chain
LEFT JOIN checkpoints cp ON cp.chain = r.chain;
