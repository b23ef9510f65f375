-- Coverage: which heights each chain has, kept as contiguous ranges so that the `gaps` and
-- `coverage` views answer from a handful of rows instead of scanning every block.
--
-- `block_ranges` is derived data, maintained by statement-level triggers on `blocks` (any
-- insert or delete, by the indexer or by hand, keeps it exact; TRUNCATE clears it).
-- Adjacent ranges may exist side by side after concurrent writers; the views treat them as
-- one. `indexer verify` checks block_ranges against the blocks table itself.

CREATE TABLE block_ranges (
    chain smallint NOT NULL,
    first bigint NOT NULL,
    last  bigint NOT NULL CHECK (last >= first),
    PRIMARY KEY (chain, first)
);
CREATE INDEX block_ranges_chain_last ON block_ranges (chain, last);

CREATE FUNCTION block_ranges_add() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    run record;
    low bigint;
    high bigint;
BEGIN
    FOR run IN
        SELECT chain, min(number) AS s, max(number) AS e
        FROM (SELECT chain, number,
                     number - row_number() OVER (PARTITION BY chain ORDER BY number) AS grp
              FROM new_rows) t
        GROUP BY chain, grp
    LOOP
        DELETE FROM block_ranges WHERE chain = run.chain AND last = run.s - 1
        RETURNING first INTO low;
        DELETE FROM block_ranges WHERE chain = run.chain AND first = run.e + 1
        RETURNING last INTO high;
        INSERT INTO block_ranges (chain, first, last)
        VALUES (run.chain, coalesce(low, run.s), coalesce(high, run.e));
    END LOOP;
    RETURN NULL;
END
$$;

CREATE FUNCTION block_ranges_remove() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    run record;
    r record;
BEGIN
    FOR run IN
        SELECT chain, min(number) AS s, max(number) AS e
        FROM (SELECT chain, number,
                     number - row_number() OVER (PARTITION BY chain ORDER BY number) AS grp
              FROM old_rows) t
        GROUP BY chain, grp
    LOOP
        -- Deleted rows existed, so a run of them lies inside stored ranges; it may span
        -- several adjacent ranges.
        FOR r IN
            DELETE FROM block_ranges
            WHERE chain = run.chain AND first <= run.e AND last >= run.s
            RETURNING first, last
        LOOP
            IF r.first < run.s THEN
                INSERT INTO block_ranges (chain, first, last) VALUES (run.chain, r.first, run.s - 1);
            END IF;
            IF r.last > run.e THEN
                INSERT INTO block_ranges (chain, first, last) VALUES (run.chain, run.e + 1, r.last);
            END IF;
        END LOOP;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE FUNCTION block_ranges_clear() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM block_ranges;
    RETURN NULL;
END
$$;

CREATE FUNCTION block_ranges_no_renumber() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.number <> OLD.number OR NEW.chain <> OLD.chain THEN
        RAISE EXCEPTION 'blocks.number and blocks.chain are immutable; delete and insert instead';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER blocks_ranges_insert AFTER INSERT ON blocks
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION block_ranges_add();
CREATE TRIGGER blocks_ranges_delete AFTER DELETE ON blocks
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION block_ranges_remove();
CREATE TRIGGER blocks_ranges_truncate AFTER TRUNCATE ON blocks
    FOR EACH STATEMENT EXECUTE FUNCTION block_ranges_clear();
CREATE TRIGGER blocks_ranges_no_renumber BEFORE UPDATE OF number, chain ON blocks
    FOR EACH ROW EXECUTE FUNCTION block_ranges_no_renumber();

-- Ranges of blocks already stored before this migration.
INSERT INTO block_ranges (chain, first, last)
SELECT chain, min(number), max(number)
FROM (SELECT chain, number, number - row_number() OVER (PARTITION BY chain ORDER BY number) AS grp
      FROM blocks) t
GROUP BY chain, grp;

-- Ranges that could not be repaired (every endpoint failed or sent invalid data): kept, with
-- the error, until a later attempt fills them. Never dropped silently.
CREATE TABLE gap_failures (
    chain           smallint NOT NULL REFERENCES chains (id),
    range_start     bigint NOT NULL,
    range_end       bigint NOT NULL CHECK (range_end >= range_start),
    error           text NOT NULL,
    attempts        integer NOT NULL DEFAULT 1,
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_failed_at  timestamptz NOT NULL DEFAULT now(),
    next_retry_at   timestamptz NOT NULL,
    PRIMARY KEY (chain, range_start)
);

-- Merged ranges at or above each chain's start block (adjacent ranges joined).
CREATE VIEW chain_ranges AS
WITH clipped AS (
    SELECT r.chain, greatest(r.first, c.start_block) AS first, r.last
    FROM block_ranges r JOIN chains c ON c.id = r.chain
    WHERE r.last >= c.start_block
), marked AS (
    SELECT chain, first, last,
           CASE WHEN first = lag(last) OVER w + 1 THEN 0 ELSE 1 END AS starts_run
    FROM clipped WINDOW w AS (PARTITION BY chain ORDER BY first)
), numbered AS (
    SELECT chain, first, last, sum(starts_run) OVER (PARTITION BY chain ORDER BY first) AS run
    FROM marked
)
SELECT chain, min(first) AS first, max(last) AS last FROM numbered GROUP BY chain, run;

CREATE VIEW gaps AS
WITH ordered AS (
    SELECT cr.chain, cr.first, cr.last,
           lag(cr.last) OVER (PARTITION BY cr.chain ORDER BY cr.first) AS prev_last
    FROM chain_ranges cr
)
SELECT c.name AS chain,
       coalesce(o.prev_last + 1, c.start_block) AS gap_start,
       o.first - 1 AS gap_end,
       o.first - coalesce(o.prev_last + 1, c.start_block) AS size
FROM ordered o JOIN chains c ON c.id = o.chain
WHERE o.first > coalesce(o.prev_last + 1, c.start_block);

CREATE VIEW coverage AS
SELECT c.name AS chain,
       c.start_block,
       k.number AS checkpoint,
       c.head,
       c.head - coalesce(k.number, c.start_block - 1) AS lag,
       coalesce(s.stored, 0)::bigint AS blocks_stored,
       coalesce(s.highest - c.start_block + 1, 0) AS blocks_expected,
       coalesce(s.highest - c.start_block + 1 - s.stored, 0)::bigint AS blocks_missing,
       CASE WHEN s.highest IS NULL THEN NULL
            ELSE round(100.0 * s.stored / (s.highest - c.start_block + 1), 4)
       END::numeric AS coverage_pct,
       -- Holes between merged ranges, plus one below the first range if it starts late.
       coalesce(s.ranges - 1 + (s.lowest > c.start_block)::int, 0) AS gap_count,
       (SELECT count(*) FROM gap_failures f WHERE f.chain = c.id) AS failed_ranges,
       (SELECT coalesce(sum(f.range_end - f.range_start + 1), 0)::bigint FROM gap_failures f
        WHERE f.chain = c.id) AS failed_blocks
FROM chains c
LEFT JOIN checkpoints k ON k.chain = c.id
LEFT JOIN LATERAL (
    SELECT sum(cr.last - cr.first + 1) AS stored, max(cr.last) AS highest,
           min(cr.first) AS lowest, count(*) AS ranges
    FROM chain_ranges cr WHERE cr.chain = c.id
    HAVING count(*) > 0
) s ON true;
