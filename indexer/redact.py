"""Keep secrets out of logs, metrics and error messages.

Every URL from the config goes through `redact_url` before it is shown. As a second line of
defence, `SecretsFilter` scrubs every known secret from every log record, including formatted
exception text, so a library error that echoes a URL still cannot leak a password.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit, urlunsplit

MASK = "***"
_SECRET_QUERY_KEYS = re.compile(r"(key|token|secret|pass|auth|sig)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """Return `url` with any password, and query values that look like credentials, masked.

    A path segment that looks like an API key (long and alphanumeric, as providers put keys
    in paths, e.g. ``/v2/<key>``) is masked too.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{hostport}" if ":" in userinfo else f"{MASK}@{hostport}"
    query = "&".join(
        f"{k}={MASK}" if _SECRET_QUERY_KEYS.search(k) else f"{k}={v}"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    path = "/".join(
        MASK if len(seg) >= 20 and seg.isalnum() else seg for seg in parts.path.split("/")
    )
    return urlunsplit((parts.scheme, netloc, path, query, ""))


def secrets_in_url(url: str) -> set[str]:
    """Return the secret substrings of `url` (password, credential query values, key paths)."""
    found: set[str] = set()
    try:
        parts = urlsplit(url)
    except ValueError:
        return {url}
    if parts.password:
        found.add(parts.password)
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_QUERY_KEYS.search(key) and value:
            found.add(value)
    for seg in parts.path.split("/"):
        if len(seg) >= 20 and seg.isalnum():
            found.add(seg)
    return {s for s in found if len(s) >= 3}


class SecretsFilter(logging.Filter):
    """Mask known secrets in a log record's message, arguments and exception text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted(set(secrets), key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        record.msg = self.scrub(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Format once here, scrubbed; handlers reuse exc_text instead of re-formatting.
            record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        for key, value in list(record.__dict__.items()):
            if isinstance(value, str) and key not in ("msg", "exc_text"):
                record.__dict__[key] = self.scrub(value)
        return True
