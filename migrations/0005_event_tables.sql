-- Event tables: what `indexer migrate` made from the config's [[events]] and how far each is.
-- The tables themselves are made by `indexer migrate` from the config (their columns come from
-- the event's declaration); this registry is kept by `indexer sync` (the runtime role), in the
-- same transactions as the rows it counts.
--
--   start_block    the first height whose events the table holds
--   live_from      the first height sync decodes events of as it writes blocks; null while the
--                  table is not (or no longer) in the config
--   backfilled_to  events of [start_block, backfilled_to] are in the table: below live_from
--                  they come from the backfill (stored logs); -1 below start_block
--   rows           rows in the table for this chain; undecodable: rows of event_undecodable

CREATE TABLE event_registry (
    chain         smallint NOT NULL REFERENCES chains (id),
    table_name    text NOT NULL,
    signature     text NOT NULL,     -- the declaration: names, types, indexed
    start_block   bigint NOT NULL CHECK (start_block >= 0),
    live_from     bigint,
    backfilled_to bigint NOT NULL,
    rows          bigint NOT NULL DEFAULT 0,
    undecodable   bigint NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain, table_name),
    CHECK (backfilled_to >= start_block - 1)
);

-- The logs each event table skipped: they have the event's topic (and contract) but are not
-- an instance of it (an ERC-721 Transfer under an ERC-20 Transfer table). Written and deleted
-- with their blocks like the table's rows; join with `logs` to see them.
CREATE TABLE event_undecodable (
    chain        smallint NOT NULL,
    table_name   text NOT NULL,
    block_number bigint NOT NULL,
    log_index    integer NOT NULL,
    PRIMARY KEY (chain, table_name, block_number, log_index)
);

-- synced_to: the highest height whose events are all in the table, contiguous from
-- start_block: the checkpoint once the backfill met the heights sync decodes live.
CREATE VIEW event_tables AS
SELECT c.name AS chain,
       r.table_name AS "table",
       r.signature,
       r.start_block,
       CASE
           WHEN r.live_from IS NOT NULL AND r.backfilled_to >= r.live_from - 1
               THEN GREATEST(r.backfilled_to, coalesce(cp.number, r.backfilled_to))
           ELSE r.backfilled_to
       END AS synced_to,
       r.rows,
       r.undecodable,
       r.live_from,
       r.backfilled_to
FROM event_registry r
JOIN chains c ON c.id = r.chain
LEFT JOIN checkpoints cp ON cp.chain = r.chain;
