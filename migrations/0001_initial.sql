-- Core tables: chains, blocks, transactions, logs, checkpoints, reorgs.
-- Hashes and addresses are bytea in explorer byte order; heights are bigint.
-- Child tables carry (chain, block_number) and no foreign key: rows are only ever written and
-- deleted together with their block, in one transaction (see ARCHITECTURE.md), and a foreign
-- key check per row would halve bulk-load speed.

CREATE TABLE chains (
    id           smallint PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9_-]+$'),
    kind         text NOT NULL CHECK (kind IN ('evm', 'electrum')),
    chain_id     bigint,           -- evm: eth_chainId
    genesis_hash bytea,            -- electrum: genesis block hash
    start_block  bigint NOT NULL CHECK (start_block >= 0),
    head         bigint,           -- node head last seen by sync
    head_seen_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE blocks (
    chain            smallint NOT NULL REFERENCES chains (id),
    number           bigint NOT NULL CHECK (number >= 0),
    hash             bytea NOT NULL,
    parent_hash      bytea NOT NULL,
    timestamp        timestamptz NOT NULL,
    tx_count         integer NOT NULL,
    miner            bytea,
    gas_used         bigint,
    gas_limit        bigint,
    base_fee_per_gas numeric,
    size             integer,
    version          bigint,        -- bitcoin header fields
    merkle_root      bytea,
    bits             bigint,
    nonce            bigint,
    PRIMARY KEY (chain, number)
);

CREATE TABLE transactions (
    chain        smallint NOT NULL,
    block_number bigint NOT NULL,
    tx_index     integer NOT NULL,
    hash         bytea NOT NULL,
    from_address bytea NOT NULL,
    to_address   bytea,             -- null for contract creation
    value        numeric NOT NULL,
    nonce        numeric NOT NULL,
    gas          numeric NOT NULL,
    gas_price    numeric,
    input        bytea NOT NULL,
    type         smallint NOT NULL,
    PRIMARY KEY (chain, block_number, tx_index)
);

CREATE TABLE logs (
    chain        smallint NOT NULL,
    block_number bigint NOT NULL,
    log_index    integer NOT NULL,
    tx_index     integer NOT NULL,
    tx_hash      bytea NOT NULL,
    address      bytea NOT NULL,
    topics       bytea[] NOT NULL,
    data         bytea NOT NULL,
    PRIMARY KEY (chain, block_number, log_index)
);

-- Where sync resumes. number/hash are null until the first batch is written. Updated only by
-- compare-and-swap, in the same transaction as the blocks it covers.
CREATE TABLE checkpoints (
    chain      smallint PRIMARY KEY REFERENCES chains (id),
    number     bigint,
    hash       bytea,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((number IS NULL) = (hash IS NULL))
);

CREATE TABLE reorgs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chain        smallint NOT NULL REFERENCES chains (id),
    detected_at  timestamptz NOT NULL DEFAULT now(),
    kind         text NOT NULL CHECK (kind IN ('reorg', 'rewind')),
    fork_number  bigint NOT NULL,
    depth        bigint NOT NULL CHECK (depth >= 0),
    old_tip_hash bytea,
    new_tip_hash bytea
);
CREATE INDEX reorgs_chain_detected_at ON reorgs (chain, detected_at);
