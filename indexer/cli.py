"""Command line: `indexer [--config PATH] COMMAND`. Exit codes are in `indexer.errors`."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Coroutine
from typing import Any

import click
import orjson

from indexer import config as config_mod
from indexer import daemon, errors, logsetup, redact, stats
from indexer import repair as repair_mod
from indexer import rewind as rewind_mod
from indexer import verify as verify_mod
from indexer.config import Config
from indexer.sdnotify import Notifier
from indexer.store.migrate import migrate, migrate_events

logger = logging.getLogger("indexer")


def _fail(exc: errors.IndexerError) -> None:
    click.echo(f"error: {redact.scrub(str(exc))}", err=True)
    sys.exit(exc.exit_code)


def _load(ctx: click.Context, chains: tuple[str, ...] = ()) -> Config:
    """Load the config (and check that every `--chain` names a configured chain)."""
    path: str | None = ctx.obj["config_path"]
    try:
        cfg = config_mod.load(path)
        daemon.select_chains(cfg, chains)
    except errors.ConfigError as exc:
        _fail(exc)
    logsetup.configure(secrets=cfg.secrets(), level=ctx.obj["log_level"], json=ctx.obj["json"])
    return cfg


def _run(
    main: Callable[[asyncio.Event], Coroutine[Any, Any, int]],
    *,
    grace_secs: float | None = None,
    notifier: Notifier | None = None,
    on_hangup: Callable[[], None] | None = None,
) -> int:
    """Run `main(stop)`: SIGINT/SIGTERM set `stop`; a second signal, or `grace_secs` after the
    first, cancels it (an open transaction is then rolled back, never half committed)."""

    async def wrapper() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        task = asyncio.current_task()
        assert task is not None

        def on_signal(signame: str) -> None:
            if stop.is_set():
                logger.warning("%s again: stopping now", signame, extra={"action": "abort"})
                task.cancel()
                return
            logger.info(
                "%s: finishing the batch in flight, then stopping",
                signame,
                extra={"action": "stopping"},
            )
            if notifier is not None:
                notifier.notify("STOPPING=1")
            stop.set()
            if grace_secs is not None:
                loop.call_later(grace_secs, _abort, task, grace_secs)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig.name)
        if on_hangup is not None:
            loop.add_signal_handler(signal.SIGHUP, on_hangup)
        try:
            return await main(stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            if on_hangup is not None:
                loop.remove_signal_handler(signal.SIGHUP)

    try:
        return asyncio.run(wrapper())
    except errors.IndexerError as exc:
        logger.error("%s", exc, extra={"action": "fatal"})
        _fail(exc)
    except asyncio.CancelledError:
        return errors.EXIT_FAILURE
    except Exception as exc:  # a bug: said in one line (type, where, message), never a traceback
        _fail(internal_error(exc))
    raise AssertionError("unreachable")


def internal_error(exc: BaseException) -> errors.IndexerError:
    """An exception no handler names, as one line: its type, where it was raised, its text."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, errors.IndexerError):
        return exc
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    error = errors.IndexerError(
        f"internal error: {type(exc).__name__}{where}: {exc} (a bug; please report it)"
    )
    logger.error("%s", error, extra={"action": "internal_error"})
    return error


def _abort(task: asyncio.Task[Any], grace_secs: float) -> None:
    if not task.done():
        logger.error(
            "shutdown grace of %gs exceeded: aborting (open transactions roll back)",
            grace_secs,
            extra={"action": "abort"},
        )
        task.cancel()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help="Config file (default: $INDEXER_CONFIG, else config/indexer.toml).",
)
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))  # fmt: skip
@click.option("--log-json/--log-text", "log_json", default=None,
              help="Log format (default: JSON unless stderr is a terminal).")  # fmt: skip
@click.pass_context
def main(
    ctx: click.Context, config_path: str | None, log_level: str, log_json: bool | None
) -> None:
    """Index blockchains into Postgres, exactly: every block linked, every reorg undone."""
    ctx.obj = {
        "config_path": config_path,
        "log_level": getattr(logging, log_level.upper()),
        "json": log_json,
    }


@main.command("migrate")
@click.pass_context
def migrate_cmd(ctx: click.Context) -> None:
    """Apply pending database migrations and make the config's event tables (idempotent)."""
    cfg = _load(ctx)

    async def run(stop: asyncio.Event) -> int:
        applied = await migrate(cfg.database)
        click.echo(f"applied {len(applied)} migration(s)" if applied else "schema is up to date")
        made = await migrate_events(cfg.database, cfg.events)
        if made:
            click.echo(f"made event table(s): {', '.join(made)}")
        return errors.EXIT_OK

    sys.exit(_run(run))


@main.command("sync")
@click.option("--chain", "chains", multiple=True, metavar="NAME",
              help="Chain to index (repeatable; default: all configured chains).")  # fmt: skip
@click.option("--to", "to_height", type=click.IntRange(min=0), metavar="HEIGHT",
              help="Stop once every selected chain's checkpoint reaches HEIGHT.")  # fmt: skip
@click.pass_context
def sync_cmd(ctx: click.Context, chains: tuple[str, ...], to_height: int | None) -> None:
    """Migrate if needed, then index the chains (follow the head forever without --to)."""
    cfg = _load(ctx, chains)

    notifier = Notifier(os.environ)
    path: str | None = ctx.obj["config_path"]
    reload = daemon.Reload(lambda: config_mod.load(path))

    async def run(stop: asyncio.Event) -> int:
        return await daemon.run_sync(
            cfg, chains=chains, to_height=to_height, stop=stop, notifier=notifier, reload=reload
        )

    try:
        sys.exit(
            _run(
                run,
                grace_secs=cfg.service.shutdown_grace_secs,
                notifier=notifier,
                on_hangup=reload.request,
            )
        )
    finally:
        notifier.close()


@main.command("stats")
@click.option("--chain", "chains", multiple=True, metavar="NAME", help="Chain (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.pass_context
def stats_cmd(ctx: click.Context, chains: tuple[str, ...], as_json: bool) -> None:
    """Per chain: start block, checkpoint, node head, lag, blocks stored and missing."""
    cfg = _load(ctx, chains)

    async def run(stop: asyncio.Event) -> int:
        rows = await stats.collect(cfg, chains)
        if as_json:
            click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        else:
            click.echo(stats.render(rows))
        return errors.EXIT_OK

    sys.exit(_run(run))


@main.command("rewind")
@click.option("--chain", "name", required=True, metavar="NAME", help="Chain to rewind.")
@click.option("--to", "to_height", required=True, type=click.IntRange(min=0), metavar="HEIGHT",
              help="Keep blocks up to HEIGHT; delete everything above it.")  # fmt: skip
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def rewind_cmd(ctx: click.Context, name: str, to_height: int, yes: bool) -> None:
    """Operator recovery after a halt: delete everything above HEIGHT, in one transaction."""
    cfg = _load(ctx)
    try:
        cfg.chain(name)
    except errors.ConfigError as exc:
        _fail(exc)

    def confirm(plan: str) -> bool:
        click.echo(plan, err=True)
        if yes:
            return True
        if not sys.stdin.isatty():
            raise errors.ConfigError("no terminal to ask for confirmation; pass --yes to rewind")
        return click.confirm("Proceed?", default=False, err=True)

    async def run(stop: asyncio.Event) -> int:
        return await rewind_mod.rewind(cfg, name=name, to_height=to_height, confirm=confirm)

    sys.exit(_run(run))


@main.command("repair-gaps")
@click.option("--chain", "chains", multiple=True, metavar="NAME", help="Chain (repeatable).")
@click.option("--from", "low", type=click.IntRange(min=0), metavar="H", help="Lowest height.")
@click.option("--to", "high", type=click.IntRange(min=0), metavar="H", help="Highest height.")
@click.option("--dry-run", is_flag=True, help="Only list the missing ranges.")
@click.option("--retry-failed", is_flag=True,
              help="Retry failed ranges now, without waiting for their backoff.")  # fmt: skip
@click.pass_context
def repair_gaps_cmd(
    ctx: click.Context,
    chains: tuple[str, ...],
    low: int | None,
    high: int | None,
    dry_run: bool,
    retry_failed: bool,
) -> None:
    """Find missing ranges below each chain's tip and refetch them (exit 0: no gap left)."""
    cfg = _load(ctx, chains)
    if low is not None and high is not None and low > high:
        _fail(errors.ConfigError("--from must not exceed --to"))

    async def run(stop: asyncio.Event) -> int:
        return await repair_mod.repair_gaps(
            cfg,
            chains=chains,
            low=low,
            high=high,
            dry_run=dry_run,
            retry_failed=retry_failed,
            echo=click.echo,
            stop=stop,
        )

    sys.exit(_run(run))


@main.command("verify")
@click.option("--chain", "chains", multiple=True, metavar="NAME", help="Chain (repeatable).")
@click.option("--from", "low", type=click.IntRange(min=0), metavar="H", help="Lowest height.")
@click.option("--to", "high", type=click.IntRange(min=0), metavar="H", help="Highest height.")
@click.option("--against-node", is_flag=True, help="Also compare stored hashes with the node's.")
@click.pass_context
def verify_cmd(
    ctx: click.Context,
    chains: tuple[str, ...],
    low: int | None,
    high: int | None,
    against_node: bool,
) -> None:
    """Check stored chains: links, child rows, coverage; list every mismatch (exit 1 if any)."""
    cfg = _load(ctx, chains)

    async def run(stop: asyncio.Event) -> int:
        return await verify_mod.verify(
            cfg, chains=chains, low=low, high=high, against_node=against_node, echo=click.echo
        )

    sys.exit(_run(run))
