import { ponder } from "ponder:registry";
import { transfer } from "ponder:schema";

ponder.on("ERC20:Transfer", async ({ event, context }) => {
  await context.db.insert(transfer).values({
    blockNumber: event.block.number,
    logIndex: event.log.logIndex,
    address: event.log.address,
    from: event.args.from,
    to: event.args.to,
    value: event.args.value,
  });
});
