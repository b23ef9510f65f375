"""`indexer rewind`: the operator's recovery after a halt, in one audited transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable

from indexer import errors, tables
from indexer.config import Config
from indexer.models import BlockRef
from indexer.store import Store
from indexer.store.migrate import migrate
from indexer.store.writer import ChainWriter

logger = logging.getLogger(__name__)


async def rewind(cfg: Config, *, name: str, to_height: int, confirm: Callable[[str], bool]) -> int:
    """Delete everything of chain `name` above `to_height` and move its checkpoint there.

    Takes the chain's writer lock first, so it cannot run while `indexer sync` writes that
    chain. `confirm` gets the plan as text and says whether to go ahead.
    """
    chain_cfg = cfg.chain(name)
    await migrate(cfg.database)
    async with Store(cfg.database) as store:
        row = await store.chain_row(name)
    if row is None:
        raise errors.ConfigError(
            f"--chain: chain {name!r} has never been synced; nothing to rewind"
        )
    start_block = int(row["start_block"])
    if to_height < start_block - 1:
        raise errors.ConfigError(
            f"--to: {to_height:,d} is below the chain's start block {start_block:,d} less one"
        )
    async with ChainWriter(cfg.database, chain=int(row["id"]), name=chain_cfg.name) as writer:
        tip = await writer.tip()
        if tip is None or to_height >= tip.number:
            where = "nothing is stored" if tip is None else f"the checkpoint is {tip}"
            raise errors.ConfigError(f"--to: {where}; rewinding to {to_height:,d} deletes nothing")
        fork = None
        if to_height >= start_block:
            stored = await writer.stored_hashes([to_height])
            if to_height not in stored:
                raise errors.ConfigError(
                    f"--to: block {to_height:,d} is not stored (a gap); run `indexer "
                    "repair-gaps` or choose a stored height"
                )
            fork = BlockRef(to_height, stored[to_height])
        counts = await writer.rows_above(to_height)
        # Wallet transactions are not deleted: they turn unconfirmed, to be proven again.
        unconfirmed = counts.pop(tables.WALLET_TRANSACTIONS.name, 0)
        listed = [f"{n:,d} {table}" for table, n in counts.items()]
        plan = (
            f"rewind chain {name} from {tip} to {to_height:,d}: delete "
            f"{', '.join(listed[:-1])} and {listed[-1]}"
        )
        if unconfirmed:
            plan += f"; {unconfirmed:,d} wallet transaction(s) turn unconfirmed"
        if not confirm(plan):
            logger.info("rewind cancelled", extra={"chain": name, "action": "rewind"})
            return errors.EXIT_FAILURE
        await writer.roll_back(
            expected=tip, fork=fork, fork_number=to_height, kind="rewind", new_tip_hash=None
        )
    logger.warning(
        "%s: rewound from %s to %s",
        name,
        tip,
        f"{to_height:,d}",
        extra={"chain": name, "height": to_height, "action": "rewind"},
    )
    return errors.EXIT_OK
