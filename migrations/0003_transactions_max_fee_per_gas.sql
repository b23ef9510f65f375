-- EIP-1559 fee cap of a transaction (null for legacy and access-list transactions).
ALTER TABLE transactions ADD COLUMN max_fee_per_gas numeric;
