"""Apply numbered SQL migrations in order, once, under an advisory lock.

Migrations are `NNNN_description.sql` files in `migrations/` (shipped inside the package as
`indexer/migrations`). Each runs in its own transaction together with its row in
`schema_migrations`, so a crash leaves it either applied and recorded or neither. An applied
migration whose file changed is an error: migrations are append-only.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from indexer import errors
from indexer.config import DatabaseConfig, EventConfig
from indexer.events import schema
from indexer.store import LOCK_NS_MIGRATE, connect, translate
from indexer.store.queries import Q

logger = logging.getLogger(__name__)

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations_dir() -> Path:
    """The installed copy inside the package, else the repository's `migrations/`."""
    packaged = Path(str(resources.files("indexer"))) / "migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def discover(directory: Path | None = None) -> list[Migration]:
    directory = directory or migrations_dir()
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if not match:
            raise errors.MigrationError(f"migration file {path.name} is not NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text("utf-8")))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise errors.MigrationError(f"migrations must be numbered 1..n without gaps: {versions}")
    return found


async def migrate(db: DatabaseConfig, *, directory: Path | None = None) -> list[Migration]:
    """Apply pending migrations; return those applied now. Safe to run concurrently."""
    pending = discover(directory)
    applied_now: list[Migration] = []
    conn = await connect(db, purpose="migrate")
    try:
        with translate("apply migrations"):
            await conn.execute(Q["advisory_lock"], {"namespace": LOCK_NS_MIGRATE, "key": 0})
            cur = await conn.execute(Q["migrations_table_exists"])
            exists = await cur.fetchone()
            if not (exists and exists[0]):
                # Only the schema owner can do this; a runtime role with no CREATE privilege
                # never gets here once the schema is up to date.
                await conn.execute(Q["migrations_table"])
            cur = await conn.execute(Q["migrations_applied"])
            done = {int(v): (str(n), str(c)) for v, n, c in await cur.fetchall()}
            for migration in pending:
                if migration.version in done:
                    if done[migration.version][1] != migration.checksum:
                        raise errors.MigrationError(
                            f"migration {migration.version:04d}_{migration.name} was changed "
                            "after it was applied; migrations are append-only"
                        )
                    continue
                async with conn.transaction():
                    # Trusted SQL shipped with the package.
                    await conn.execute(migration.sql)
                    await conn.execute(
                        Q["migration_record"],
                        {
                            "version": migration.version,
                            "name": migration.name,
                            "checksum": migration.checksum,
                        },
                    )
                logger.info(
                    "applied migration %04d_%s",
                    migration.version,
                    migration.name,
                    extra={"action": "migrate"},
                )
                applied_now.append(migration)
            unknown = sorted(set(done) - {m.version for m in pending})
            if unknown:
                raise errors.MigrationError(
                    f"the database has migrations {unknown} that this version does not know; "
                    "is an older indexer running against a newer schema?"
                )
    finally:
        await conn.close()
    return applied_now


async def migrate_events(db: DatabaseConfig, entries: Sequence[EventConfig]) -> list[str]:
    """Make the event tables of `entries` (`[[events]]`) that do not exist; return their names.

    A table that exists must be exactly as its declaration says, else `MigrationError`
    naming it: an event's columns are not changed in place (drop the table, or name
    another). A table made now has no rows, whatever the registry remembers of an earlier
    one by that name: that is forgotten, so sync registers it afresh.
    """
    made: list[str] = []
    conn = await connect(db, purpose="migrate")
    try:
        with translate("make event tables"):
            await conn.execute(Q["advisory_lock"], {"namespace": LOCK_NS_MIGRATE, "key": 0})
            for entry in entries:
                table = schema.table_of(entry)
                found = await schema.catalog_columns(conn, table.name)
                if found:
                    diff = schema.differences(table, found)
                    if diff is not None:
                        raise errors.MigrationError(
                            f"event table {table.name!r} exists but {diff}: drop it (its "
                            "rows are refilled from the stored logs) or name another table"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(schema.create_statement(table))
                    await conn.execute(Q["event_registry_forget_table"], {"table": table.name})
                logger.info(
                    "made event table %s (%s)", table.name, entry.decl.declaration,
                    extra={"action": "migrate"},
                )  # fmt: skip
                made.append(table.name)
    finally:
        await conn.close()
    return made
