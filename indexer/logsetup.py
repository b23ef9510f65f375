"""Logging: JSON lines for journald when not on a terminal, readable text on one.

Every record passes through `redact.SecretsFilter` first, so no secret from the config can
reach a log line, whatever code produced it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

import orjson

from indexer import redact

_EXTRA_KEYS = ("chain", "height", "action")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in _EXTRA_KEYS:
            value = record.__dict__.get(key)
            if value is not None:
                out[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        return orjson.dumps(out).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S")


class TerminalHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """On a terminal, erase the progress line before a log line (progress redraws itself)."""

    def format(self, record: logging.LogRecord) -> str:
        return "\r\x1b[2K" + super().format(record)


def configure(
    *, secrets: Iterable[str] = (), level: int = logging.INFO, json: bool | None = None
) -> None:
    """Install one stderr handler with the secrets filter on the root logger."""
    use_json = (not sys.stderr.isatty()) if json is None else json
    handler: logging.Handler
    if use_json:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    else:
        handler = TerminalHandler(sys.stderr) if sys.stderr.isatty() else logging.StreamHandler()
        handler.setFormatter(TextFormatter())
    handler.addFilter(redact.SecretsFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Library chatter below WARNING is noise for operators.
    for noisy in ("psycopg", "psycopg.pool", "aiohttp", "asyncio", "web3", "urllib3"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
