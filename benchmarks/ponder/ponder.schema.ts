import { onchainTable, primaryKey } from "ponder";

// One row per ERC-20 Transfer, keyed as the indexer's event table is.
export const transfer = onchainTable(
  "transfer",
  (t) => ({
    blockNumber: t.bigint().notNull(),
    logIndex: t.integer().notNull(),
    address: t.hex().notNull(),
    from: t.hex().notNull(),
    to: t.hex().notNull(),
    value: t.bigint().notNull(),
  }),
  (table) => ({
    pk: primaryKey({ columns: [table.blockNumber, table.logIndex] }),
  }),
);
