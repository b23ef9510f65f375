-- Least privilege for indexer: an owner role for migrations, a runtime role for the daemon.
--
--   indexer_owner  owns every table, view, function and trigger the migrations create; it is
--                  the only role with CREATE on the schema. Use it for `indexer migrate` only.
--   indexer_rw     what `indexer sync` (and stats, verify, repair-gaps, rewind) runs as:
--                  SELECT, INSERT, UPDATE, DELETE on the tables, USAGE on the sequences, and
--                  nothing else. It cannot CREATE, ALTER, DROP or TRUNCATE anything, nor create
--                  temporary tables; `indexer sync` runs no DDL once the schema is up to date.
--
-- Run it once per database, as a superuser, before the first `indexer migrate`. It is
-- idempotent, so running it again (e.g. after adding a database) is safe:
--
--   sudo -u postgres psql -X -v dbname=indexer -f config/roles.sql
--
-- Variables (psql -v NAME=VALUE): dbname (default indexer), owner (default indexer_owner),
-- runtime (default indexer_rw). The database must exist (createdb indexer). Passwords are left
-- to you and never appear here, nor in your shell history:
--
--   sudo -u postgres psql -c '\password indexer_owner'
--   sudo -u postgres psql -c '\password indexer_rw'
--
-- Tables that already exist and belong to another role (e.g. created by `postgres` before this
-- script was run) keep their owner: hand them over with ALTER TABLE ... OWNER TO indexer_owner.
--
-- Trigger functions (migration 0002: triggers on `blocks` maintain `block_ranges`) run with
-- the privileges of whoever changes `blocks`, so the runtime role needs DML on block_ranges
-- too; it gets it like every other table. We deliberately do not make them SECURITY DEFINER:
-- DML on a derived bookkeeping table grants nothing the runtime role cannot already do (it
-- may delete blocks), `indexer verify` detects a tampered block_ranges, and definer functions
-- owned by the schema owner are a classic privilege-escalation path (search_path tricks).

\set ON_ERROR_STOP on
\if :{?dbname}
\else
  \set dbname indexer
\endif
\if :{?owner}
\else
  \set owner indexer_owner
\endif
\if :{?runtime}
\else
  \set runtime indexer_rw
\endif

-- Roles are cluster-wide: create them once, with no password and no special attributes.
SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION', :'owner')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner')
\gexec
SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION', :'runtime')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'runtime')
\gexec

-- Database: only our two roles may connect; nobody may create temporary tables.
REVOKE ALL ON DATABASE :"dbname" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"dbname" TO :"owner", :"runtime";
-- Unqualified names resolve to public only (no "$user" schema can shadow our tables).
ALTER ROLE :"owner" IN DATABASE :"dbname" SET search_path = public;
ALTER ROLE :"runtime" IN DATABASE :"dbname" SET search_path = public;

\connect :"dbname"

-- Schema: PostgreSQL 15 no longer grants CREATE on public to PUBLIC in new databases, but a
-- database created from an older cluster (pg_upgrade, dump) still does.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO :"owner";
GRANT USAGE ON SCHEMA public TO :"runtime";

-- Objects that exist already (re-run after migrations) ...
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO :"runtime";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO :"runtime";

-- ... and everything future migrations create as the owner. Default privileges belong to the
-- creating role, which is why migrations must run as the owner and not as a superuser.
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"runtime";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO :"runtime";
