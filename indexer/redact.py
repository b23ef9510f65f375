"""Keep secrets out of logs, stderr, metrics, health answers and error messages, by structure.

A configured URL is shown only through `redact_url`, which keeps what tells endpoints apart
(scheme, host, port) and masks every part that can hold a secret, whatever it looks like:

* the userinfo: in the Postgres URL the user name (a role, which Postgres prints in its own
  errors anyway) is shown and the password masked (``indexer:***@``); in an RPC or Electrum
  URL, where providers put a project id or an API key, it is masked whole (``***@``);
* every path segment after the host (an RPC key, a Postgres database name): ``/***/***``;
* every query value (key names stay, a parameter without ``=`` is masked whole) and any
  fragment: ``?apikey=***&***``;
* a URL that does not parse (no ``scheme://``, a host or port that is not one, or an ``@``
  after the host that leaves it unclear where the host is, as a raw ``/ ? #`` in a password
  does) is masked whole: ``***``.

Second line of defence: `secrets_in_url` lists those parts as text, in every form a library
may print them (raw, percent-decoded, percent-encoded, backslash-escaped), and
`SecretsFilter.scrub` removes them from any text, after masking every URL and every conninfo
``password=`` value found in it. A secret is removed wherever it appears when it is a
credential (password, user-name key) of 3+ characters or any part of 12+ characters; a
shorter one (``v2``, a database called ``indexer``) cannot be told from ordinary words, so it
is removed where libraries print values: quoted, or after ``=`` or ``/``.
`register` makes one filter the process's, for `scrub`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import quote, quote_plus, unquote, unquote_plus

MASK = "***"
CREDENTIAL_MIN_CHARS = 3  # a credential this long is scrubbed wherever it appears
ANY_PART_MIN_CHARS = 12  # so is any other secret part this long; shorter ones only in context

_POSTGRES_SCHEMES = frozenset({"postgres", "postgresql"})
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
# One host[:port]: a name or IPv4 address (empty: Postgres's default socket), or [IPv6].
_HOST_PORT = re.compile(
    r"(?:[A-Za-z0-9._~%-]*|\[[0-9A-Fa-f:.]+(?:%25[A-Za-z0-9._~-]+)?\])(?::[0-9]{0,5})?"
)
_SHOWN_USER = re.compile(r"[A-Za-z0-9._~%!$&'()*+,;=-]*")
_SHOWN_KEY = re.compile(r"[A-Za-z0-9._~%+-]+")
_SUB_DELIMS = "!$&'()*+,;="
_HEX_ESCAPE = re.compile(r"%[0-9A-F]{2}")
_PIECE_DELIMS = re.compile(r"[/?#@:&=,\[\]]")
# In free text: a URL runs to whitespace or a quote; trailing punctuation is the sentence's.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]*")
_TRAILING = ".,;:!?)}>"
_CONNINFO_PASSWORD = re.compile(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\"[^\"]*\"|\S+)")
# Where libraries print a value: quoted, or after `=` or `/`.
_BEFORE_VALUE = "(?<=[\"'=/])"
_AFTER_VALUE = "(?=[\"'\\s&;,)\\]/?#]|$)"


class Secret(str):
    """A secret substring; `credential` (a password or key) or another masked URL part."""

    credential: bool

    def __new__(cls, text: str, *, credential: bool) -> Secret:
        self = super().__new__(cls, text)
        self.credential = credential
        return self


@dataclass(frozen=True)
class _Reading:
    """One way to split a URL: ``scheme://[userinfo@]hostport[path][?query][#fragment]``."""

    scheme: str
    userinfo: str | None
    hostport: str
    path: str
    query: str | None
    fragment: str | None

    @property
    def postgres(self) -> bool:
        return self.scheme.lower() in _POSTGRES_SCHEMES

    def valid(self) -> bool:
        return all(_HOST_PORT.fullmatch(item) for item in self.hostport.split(","))


def _reading(scheme: str, rest: str, at: int) -> _Reading:
    """Split `rest` (the URL after ``scheme://``) with the userinfo ending at `at` (-1: none)."""
    start = at + 1
    ends = [i for i in (rest.find(c, start) for c in "/?#") if i >= 0]
    end = min(ends, default=len(rest))
    before_fragment, hash_sign, fragment = rest[end:].partition("#")
    path, question_mark, query = before_fragment.partition("?")
    return _Reading(
        scheme=scheme,
        userinfo=rest[:at] if at >= 0 else None,
        hostport=rest[start:end],
        path=path,
        query=query if question_mark else None,
        fragment=fragment if hash_sign else None,
    )


def _parse(url: str) -> tuple[_Reading | None, list[_Reading]]:
    """The reading to show (None: mask the whole URL), and every plausible reading.

    RFC 3986 ends the userinfo at the last ``@`` before the first ``/ ? #``. An ``@`` further
    on means either a raw ``/ ? #`` in the userinfo (then the host follows the last ``@``) or
    an ``@`` in the path or query: when both readings give a valid host, nobody can tell.
    """
    match = _SCHEME.match(url)
    if match is None:
        return None, []
    scheme, rest = match.group(1), url[match.end() :]
    ends = [i for i in (rest.find(c) for c in "/?#") if i >= 0]
    at = rest.rfind("@", 0, min(ends, default=len(rest)))
    readings = [_reading(scheme, rest, at)]
    last_at = rest.rfind("@")
    if last_at > at:
        readings.append(_reading(scheme, rest, last_at))
    valid = [r for r in readings if r.valid()]
    return (valid[0] if len(valid) == 1 else None), readings


def is_clear(url: str) -> bool:
    """Whether `url` reads one way only: it parses, and no ``@`` follows its host.

    Libraries (libpq, yarl) take the host from before such an ``@``, `redact_url` from after
    it: a config should refuse such a URL rather than connect somewhere else than it shows.
    """
    shown, readings = _parse(url)
    return shown is not None and len(readings) == 1


def _shown_userinfo(reading: _Reading, userinfo: str) -> str:
    if not reading.postgres:
        return MASK
    user, colon, _ = userinfo.partition(":")
    shown = user if _SHOWN_USER.fullmatch(user) else MASK
    return f"{shown}:{MASK}" if colon else shown


def _masked_param(param: str) -> str:
    key, equals, _ = param.partition("=")
    if not param:
        return ""
    return f"{key}={MASK}" if equals and _SHOWN_KEY.fullmatch(key) else MASK


def redact_url(url: str) -> str:
    """`url` with only its scheme, host(s) and port(s) shown (the rules are in the docstring).

    >>> redact_url("https://user:pw@node.example:8545/v2/abc-DEF_123?apikey=K&x=1#f")
    'https://***@node.example:8545/***/***?apikey=***&x=***#***'
    >>> redact_url("postgresql://indexer:pw@[::1]:5432/indexer")
    'postgresql://indexer:***@[::1]:5432/***'
    """
    reading, _ = _parse(url)
    if reading is None:
        return MASK
    out = [reading.scheme, "://"]
    if reading.userinfo is not None:
        out += [_shown_userinfo(reading, reading.userinfo), "@"]
    out.append(reading.hostport)
    out.append("/".join(MASK if segment else "" for segment in reading.path.split("/")))
    if reading.query is not None:
        out += ["?", "&".join(_masked_param(p) for p in reading.query.split("&"))]
    if reading.fragment is not None:
        out.append("#" + MASK)
    return "".join(out)


def _parts(reading: _Reading, add: Callable[[str, bool], None]) -> None:
    """Call `add(text, credential)` for every part of `reading` that `redact_url` masks."""
    if reading.userinfo:
        user, colon, password = reading.userinfo.partition(":")
        if colon:
            add(password, True)
        if not reading.postgres:
            add(user, True)
            add(reading.userinfo, True)
    segments = [s for s in reading.path.split("/") if s]
    for segment in segments:
        add(segment, False)
    if len(segments) > 1:
        add(reading.path.lstrip("/"), False)  # libpq takes the whole path as the dbname
    if reading.query:
        add(reading.query, False)
        for param in reading.query.split("&"):
            _, equals, value = param.partition("=")
            add(value if equals else param, False)
    if reading.fragment:
        add(reading.fragment, False)


def _forms(text: str) -> set[str]:
    """`text` as it may be printed: raw, percent-decoded and -encoded, backslash-escaped."""
    decoded = unquote(text)
    forms = {text, decoded, unquote_plus(text), quote_plus(decoded, safe="")}
    for safe in ("", "/", _SUB_DELIMS + ":@", _SUB_DELIMS + ":@/?"):
        encoded = quote(decoded, safe=safe)
        forms |= {encoded, _HEX_ESCAPE.sub(lambda m: m.group().lower(), encoded)}
    for form in list(forms):
        doubled = form.replace("\\", "\\\\")  # repr, JSON
        forms |= {doubled, doubled.replace("'", "\\'"), doubled.replace('"', '\\"')}
    return {form for form in forms if form.strip("*")}


def secrets_in_url(url: str) -> set[str]:
    """Every secret substring of `url`, in every printed form, as `Secret`s.

    The parts `redact_url` masks, read every plausible way; when the structure is unclear,
    also the whole URL after ``scheme://`` and each piece of it between delimiters (libpq
    prints such pieces one at a time), but for the host, port and user name shown.
    """
    found: dict[str, bool] = {}

    def add(text: str, credential: bool) -> None:
        for form in _forms(text):
            found[form] = found.get(form, False) or credential

    shown, readings = _parse(url)
    for reading in readings:
        _parts(reading, add)
    if shown is None or len(readings) > 1:
        match = _SCHEME.match(url)
        rest = url[match.end() :] if match else url
        add(rest, True)
        keep: set[str] = set()
        if shown is not None:
            keep = set(_PIECE_DELIMS.split(shown.hostport))
            if shown.userinfo is not None:
                keep.add(_shown_userinfo(shown, shown.userinfo).partition(":")[0])
        for piece in _PIECE_DELIMS.split(rest):
            if piece and piece not in keep:
                add(piece, False)
    return {Secret(text, credential=credential) for text, credential in found.items()}


def _redact_url_in_text(match: re.Match[str]) -> str:
    url = match.group()
    tail = ""
    while url and (url[-1] in _TRAILING or (url[-1] == "]" and url.count("[") < url.count("]"))):
        url, tail = url[:-1], url[-1] + tail
    return redact_url(url) + tail


def scrub_structure(text: str) -> str:
    """`text` with every URL in it redacted and every conninfo ``password=`` value masked."""
    if "://" in text:
        text = _URL_IN_TEXT.sub(_redact_url_in_text, text)
    if "=" in text:
        text = _CONNINFO_PASSWORD.sub(lambda m: m.group(1) + MASK, text)
    return text


class SecretsFilter(logging.Filter):
    """Scrub secrets from a log record's message, arguments, extras and exception text.

    `secrets` are `Secret`s (from `secrets_in_url`) or plain strings (taken as credentials).
    """

    # Set by logging and our code, never from the config: left alone.
    _CODE_ATTRIBUTES = frozenset(
        {"msg", "exc_text", "name", "levelname", "pathname", "filename", "module", "funcName"}
    )

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        anywhere: set[str] = set()
        in_context: set[str] = set()
        for secret in secrets:
            if not secret.strip("*"):
                continue
            credential = getattr(secret, "credential", True)
            min_chars = CREDENTIAL_MIN_CHARS if credential else ANY_PART_MIN_CHARS
            (anywhere if len(secret) >= min_chars else in_context).add(str(secret))
        self._anywhere = sorted(anywhere, key=len, reverse=True)
        alternatives = "|".join(re.escape(s) for s in sorted(in_context, key=len, reverse=True))
        self._in_context = (
            re.compile(f"{_BEFORE_VALUE}(?:{alternatives}){_AFTER_VALUE}") if alternatives else None
        )

    def scrub(self, text: str) -> str:
        text = scrub_structure(text)
        for secret in self._anywhere:
            if secret in text:
                text = text.replace(secret, MASK)
        if self._in_context is not None:
            text = self._in_context.sub(MASK, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.scrub(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Format once here, scrubbed; handlers reuse exc_text instead of re-formatting.
            record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        for key, value in list(record.__dict__.items()):
            if isinstance(value, str) and key not in self._CODE_ATTRIBUTES:
                record.__dict__[key] = self.scrub(value)
        return True


_registered = SecretsFilter(())


def register(secrets: Iterable[str]) -> SecretsFilter:
    """Make a filter of `secrets` the process's (for `scrub`) and return it."""
    global _registered
    _registered = SecretsFilter(secrets)
    return _registered


def scrub(text: str) -> str:
    """`text` scrubbed of the registered secrets, and of every URL and conninfo password in it."""
    return _registered.scrub(text)
