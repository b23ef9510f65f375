-- How an event table is filled:
--   live   decoded from each batch's logs as sync writes it, backfilled from stored logs below
--          live_from (the default)
--   logs   filled from the stored logs by the backfill only, following (a table with a factory)
--   node   filled from the node's eth_getLogs by the backfill only, following (a chain that
--          stores no logs)

ALTER TABLE event_registry
    ADD COLUMN fill text NOT NULL DEFAULT 'live' CHECK (fill IN ('live', 'logs', 'node'));
UPDATE event_registry SET fill = 'logs' WHERE factory IS NOT NULL;

CREATE OR REPLACE VIEW event_tables AS
SELECT c.name AS chain,
       r.table_name AS "table",
       r.signature,
       r.start_block,
       CASE
           WHEN r.fill = 'live' AND r.live_from IS NOT NULL AND r.backfilled_to >= r.live_from - 1
               THEN GREATEST(r.backfilled_to, coalesce(cp.number, r.backfilled_to))
           ELSE r.backfilled_to
       END AS synced_to,
       r.rows,
       r.undecodable,
       r.live_from,
       r.backfilled_to,
       r.factory,
       r.fill
FROM event_registry r
JOIN chains c ON c.id = r.chain
LEFT JOIN checkpoints cp ON cp.chain = r.chain;
