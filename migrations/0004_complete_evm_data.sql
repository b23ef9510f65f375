-- Complete EVM data: every header field the node sends, every transaction field a
-- transaction's hash commits to (plus the L2 fields of OP Stack and Arbitrum), and two new
-- tables, receipts and withdrawals. Declared column by column in indexer/tables.py.
-- Child tables carry (chain, block_number) and no foreign key, like transactions and logs.

ALTER TABLE blocks
    ADD COLUMN sha3_uncles              bytea,
    ADD COLUMN state_root               bytea,
    ADD COLUMN transactions_root        bytea,
    ADD COLUMN receipts_root            bytea,
    ADD COLUMN logs_bloom               bytea,
    ADD COLUMN difficulty               numeric,
    ADD COLUMN extra_data               bytea,
    ADD COLUMN mix_hash                 bytea,
    ADD COLUMN header_nonce             bytea,     -- the EVM header's 8-byte nonce
    ADD COLUMN withdrawals_root         bytea,     -- Shanghai
    ADD COLUMN blob_gas_used            bigint,    -- Cancun
    ADD COLUMN excess_blob_gas          bigint,    -- Cancun
    ADD COLUMN parent_beacon_block_root bytea,     -- Cancun
    ADD COLUMN requests_hash            bytea,     -- Prague
    ADD COLUMN aura_step                numeric,   -- Gnosis before the merge (AuRa seal)
    ADD COLUMN aura_seal                bytea,
    ADD COLUMN l1_block_number          bigint,    -- Arbitrum
    ADD COLUMN send_count               numeric,   -- Arbitrum
    ADD COLUMN send_root                bytea;     -- Arbitrum

-- OP Stack deposits are unsigned and their encoding has no nonce; some answers leave it out.
ALTER TABLE transactions ALTER COLUMN nonce DROP NOT NULL;

ALTER TABLE transactions
    ADD COLUMN max_priority_fee_per_gas numeric,
    ADD COLUMN max_fee_per_blob_gas     numeric,
    ADD COLUMN blob_versioned_hashes    bytea[],
    ADD COLUMN chain_id                 numeric,
    ADD COLUMN access_list              jsonb,
    ADD COLUMN authorization_list       jsonb,
    ADD COLUMN v                        numeric,
    ADD COLUMN r                        numeric,
    ADD COLUMN s                        numeric,
    ADD COLUMN y_parity                 smallint,
    ADD COLUMN source_hash              bytea,     -- OP Stack deposit (type 0x7e)
    ADD COLUMN mint                     numeric,   -- OP Stack deposit
    ADD COLUMN is_system_tx             boolean,   -- OP Stack deposit
    ADD COLUMN request_id               bytea,     -- Arbitrum (types 0x64 0x66 0x69)
    ADD COLUMN ticket_id                bytea,     -- Arbitrum retry (0x68)
    ADD COLUMN refund_to                bytea,     -- Arbitrum (0x68 0x69)
    ADD COLUMN max_refund               numeric,   -- Arbitrum retry
    ADD COLUMN submission_fee_refund    numeric,   -- Arbitrum retry
    ADD COLUMN l1_base_fee              numeric,   -- Arbitrum submit retryable (0x69)
    ADD COLUMN deposit_value            numeric,
    ADD COLUMN retry_to                 bytea,
    ADD COLUMN retry_value              numeric,
    ADD COLUMN retry_data               bytea,
    ADD COLUMN beneficiary              bytea,
    ADD COLUMN max_submission_fee       numeric;

CREATE TABLE receipts (
    chain                   smallint NOT NULL,
    block_number            bigint NOT NULL,
    tx_index                integer NOT NULL,
    tx_hash                 bytea NOT NULL,
    type                    smallint NOT NULL,
    status                  smallint,          -- 1 or 0; null before Byzantium
    root                    bytea,             -- the state root before Byzantium
    gas_used                bigint NOT NULL,
    cumulative_gas_used     bigint NOT NULL,
    effective_gas_price     numeric,
    contract_address        bytea,             -- null unless a contract creation
    logs_bloom              bytea NOT NULL,
    blob_gas_used           bigint,            -- blob transactions
    blob_gas_price          numeric,
    deposit_nonce           numeric,           -- OP Stack deposits
    deposit_receipt_version smallint,
    l1_fee                  numeric,           -- OP Stack
    l1_gas_used             numeric,
    l1_gas_price            numeric,
    gas_used_for_l1         numeric,           -- Arbitrum
    l1_block_number         bigint,            -- Arbitrum
    PRIMARY KEY (chain, block_number, tx_index)
);

CREATE TABLE withdrawals (
    chain           smallint NOT NULL,
    block_number    bigint NOT NULL,
    position        integer NOT NULL,          -- 0-based in the block
    index           bigint NOT NULL,
    validator_index bigint NOT NULL,
    address         bytea NOT NULL,
    amount          bigint NOT NULL,           -- gwei
    PRIMARY KEY (chain, block_number, position)
);
