"""Logging: JSON lines for journald when not on a terminal, readable text on one.

Every record passes through `redact.SecretsFilter` first, so no secret from the config can
reach a log line, whatever code produced it. The same filter then guards `sys.stdout` and
`sys.stderr` themselves: what is printed without logging (an error echoed before exit, an
uncaught traceback, a warning, a library's own print) is scrubbed too.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TextIO

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


class ScrubbedStream(io.TextIOBase):
    """A text stream that writes what it is given, scrubbed, to the stream it wraps.

    Each write is scrubbed on its own: writers put a value in one write (`print` writes each
    argument whole, logging and click a whole line). There is no `buffer` attribute, so that
    nothing (click's binary fallback, for one) can write around the scrubbing.
    """

    def __init__(self, stream: TextIO, secrets: redact.SecretsFilter) -> None:
        super().__init__()
        self.stream = stream
        self.secrets = secrets

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self.stream.write(self.secrets.scrub(text))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    # The wrapped stream's, read-only (io.TextIOBase declares them as plain attributes).
    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.stream.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return self.stream.errors


def _raw(stream: TextIO) -> TextIO:
    return stream.stream if isinstance(stream, ScrubbedStream) else stream


def guard_std_streams(secrets: redact.SecretsFilter) -> None:
    """Scrub everything written to `sys.stdout` and `sys.stderr` with `secrets`."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, ScrubbedStream):
            stream.secrets = secrets
        elif stream is not None:
            setattr(sys, name, ScrubbedStream(stream, secrets))


def configure(
    *, secrets: Iterable[str] = (), level: int = logging.INFO, json: bool | None = None
) -> None:
    """Install one stderr handler with the secrets filter on the root logger, register the
    filter as the process's (`redact.scrub`) and guard stdout and stderr with it."""
    secrets_filter = redact.register(secrets)
    stderr = _raw(sys.stderr)
    use_json = (not stderr.isatty()) if json is None else json
    handler: logging.Handler
    if use_json:
        handler = logging.StreamHandler(stderr)
        handler.setFormatter(JsonFormatter())
    else:
        handler = TerminalHandler(stderr) if stderr.isatty() else logging.StreamHandler(stderr)
        handler.setFormatter(TextFormatter())
    handler.addFilter(secrets_filter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Library chatter below WARNING is noise for operators.
    for noisy in ("psycopg", "psycopg.pool", "aiohttp", "asyncio", "web3", "urllib3"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    guard_std_streams(secrets_filter)
