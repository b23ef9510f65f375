-- Bitcoin wallets over Electrum: the scripts each [[wallets]] entry watches, what the servers
-- said of each script, and the wallet's transactions, their inputs and its outputs.
-- txids and block hashes are bytea in display order (as explorers and Electrum show them).
-- height is null while a transaction is unconfirmed (in the mempool), or was confirmed in a
-- block that a reorg removed and is not yet proven again on the new branch.
-- Nothing is stored as confirmed unless its merkle proof reaches the merkle root of the header
-- stored at its height (`merkle_branch`, `position`: `indexer verify` checks them again).

-- Bookkeeping: one row per wallet of the config (kept by `indexer sync`).
CREATE TABLE wallets (
    chain      smallint NOT NULL REFERENCES chains (id),
    name       text NOT NULL,
    scripts    integer NOT NULL DEFAULT 0,   -- scripts watched (derived so far)
    synced_at  timestamptz,                  -- every script last seen equal to the server's
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain, name)
);

-- Bookkeeping: every script a wallet watches, where it comes from, and the Electrum status
-- (hash of its history) last synced; null: never synced, or to be synced again (a reorg).
CREATE TABLE wallet_scripts (
    chain            smallint NOT NULL,
    wallet           text NOT NULL,
    scripthash       bytea NOT NULL,   -- Electrum's: sha256(script), in the byte order sent
    script           bytea NOT NULL,
    address          text NOT NULL,
    descriptor       integer,          -- index in the wallet's descriptors; null: addresses
    branch           integer,
    derivation_index integer,
    status           bytea,
    used             boolean NOT NULL DEFAULT false,
    PRIMARY KEY (chain, wallet, scripthash),
    FOREIGN KEY (chain, wallet) REFERENCES wallets (chain, name) ON DELETE CASCADE
);
CREATE INDEX wallet_scripts_unsynced ON wallet_scripts (chain) WHERE status IS NULL;

-- Each script's history as the servers gave it (the transactions that pay to it or spend
-- from it), with the height it was proven at.
CREATE TABLE wallet_history (
    chain      smallint NOT NULL,
    wallet     text NOT NULL,
    scripthash bytea NOT NULL,
    txid       bytea NOT NULL,
    height     bigint,
    PRIMARY KEY (chain, wallet, scripthash, txid)
);
CREATE INDEX wallet_history_txid ON wallet_history (chain, wallet, txid);

CREATE TABLE wallet_transactions (
    chain         smallint NOT NULL,
    wallet        text NOT NULL,
    txid          bytea NOT NULL,
    height        bigint,
    block_hash    bytea,
    position      integer,             -- index of the transaction in its block
    merkle_branch bytea[],             -- the proof: sibling hashes, leaf to root
    raw           bytea NOT NULL,      -- the transaction as served (its txid checked)
    first_seen    timestamp with time zone NOT NULL,
    PRIMARY KEY (chain, wallet, txid),
    CHECK ((height IS NULL) = (block_hash IS NULL)),
    CHECK ((height IS NULL) = (position IS NULL))
);
CREATE INDEX wallet_transactions_height ON wallet_transactions (chain, height);

-- Every input of a wallet transaction: what it spends.
CREATE TABLE wallet_inputs (
    chain     smallint NOT NULL,
    wallet    text NOT NULL,
    txid      bytea NOT NULL,
    vin       integer NOT NULL,
    prev_txid bytea NOT NULL,
    prev_vout bigint NOT NULL,
    height    bigint,                   -- the spending transaction's
    PRIMARY KEY (chain, wallet, txid, vin)
);
CREATE INDEX wallet_inputs_prevout ON wallet_inputs (chain, wallet, prev_txid, prev_vout);

-- The outputs that pay to a script of the wallet, and the transaction spending each.
CREATE TABLE wallet_outputs (
    chain        smallint NOT NULL,
    wallet       text NOT NULL,
    txid         bytea NOT NULL,
    vout         integer NOT NULL,
    address      text NOT NULL,
    script       bytea NOT NULL,
    value        bigint NOT NULL CHECK (value >= 0),   -- satoshis
    height       bigint,
    spent_txid   bytea,
    spent_height bigint,
    PRIMARY KEY (chain, wallet, txid, vout)
);
CREATE INDEX wallet_outputs_height ON wallet_outputs (chain, height);

-- Per wallet and address: confirmed = confirmed outputs not spent by a confirmed
-- transaction; unconfirmed = the mempool's change to it (new unspent outputs, less confirmed
-- outputs a mempool transaction spends). Electrum's get_balance, in satoshis.
CREATE VIEW wallet_balances AS
SELECT c.name AS chain,
       o.wallet,
       o.address,
       coalesce(sum(o.value) FILTER (WHERE o.height IS NOT NULL AND o.spent_height IS NULL), 0)
           ::bigint AS confirmed,
       (coalesce(sum(o.value) FILTER (WHERE o.height IS NULL AND o.spent_txid IS NULL), 0)
        - coalesce(sum(o.value) FILTER (WHERE o.height IS NOT NULL AND o.spent_txid IS NOT NULL
                                          AND o.spent_height IS NULL), 0))::bigint
           AS unconfirmed
FROM wallet_outputs o
JOIN chains c ON c.id = o.chain
GROUP BY c.name, o.wallet, o.address;

-- Outputs not spent, not even by a mempool transaction.
CREATE VIEW wallet_utxos AS
SELECT c.name AS chain, o.wallet, o.address, o.txid, o.vout, o.value, o.height
FROM wallet_outputs o
JOIN chains c ON c.id = o.chain
WHERE o.spent_txid IS NULL;
