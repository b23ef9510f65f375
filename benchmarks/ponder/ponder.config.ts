// The Ponder side of benchmarks/ponder_compare.py: every ERC-20 Transfer (any contract)
// from block 0 to PONDER_END_BLOCK of the replay node behind PONDER_RPC_URL.
import { createConfig } from "ponder";

import { TransferAbi } from "./abis/Transfer";

const rpc = process.env.PONDER_RPC_URL;
if (!rpc) throw new Error("PONDER_RPC_URL is not set");

export default createConfig({
  chains: {
    replay: {
      id: Number(process.env.PONDER_CHAIN_ID ?? "1"),
      rpc,
      pollingInterval: 1_000,
    },
  },
  contracts: {
    ERC20: {
      chain: "replay",
      abi: TransferAbi,
      // No address: every contract's Transfer, as the indexer's [[events]] table without one.
      startBlock: 0,
      endBlock: Number(process.env.PONDER_END_BLOCK ?? "0"),
    },
  },
});
