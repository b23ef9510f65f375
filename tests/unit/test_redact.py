from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import quote, unquote

import pytest

from indexer import redact

# (configured URL, what redact_url shows, secret parts that must never be shown).
# Secrets are chosen so that none is a substring of the host, port or shown user name.
URLS: list[tuple[str, str, list[str]]] = [
    # RPC keys in the path: any characters, any length.
    ("https://node.example/v2/abc-DEF_123.x~y", "https://node.example/***/***",
     ["abc-DEF_123.x~y", "v2"]),
    ("https://node.example/k-1", "https://node.example/***", ["k-1"]),
    ("https://node.example/~tilde.dot_under-dash", "https://node.example/***",
     ["~tilde.dot_under-dash"]),
    ("https://eth.node.io:8443/rpc/AbCdEfGhIjKlMnOpQrStUvWxYz012345/",
     "https://eth.node.io:8443/***/***/", ["AbCdEfGhIjKlMnOpQrStUvWxYz012345", "rpc"]),
    ("HTTPS://Node.Example:8545/KEY", "HTTPS://Node.Example:8545/***", ["KEY"]),
    # Query values whatever the key is called; a parameter without `=` is masked whole.
    ("http://127.0.0.1:8545/?chain=mainnet&x=qvalue&flagkey",
     "http://127.0.0.1:8545/?chain=***&x=***&***", ["mainnet", "qvalue", "flagkey"]),
    ("https://node.example/?apikey=K123&token=T-4_5", "https://node.example/?apikey=***&token=***",
     ["K123", "T-4_5"]),
    ("https://node.example/#fragtoken", "https://node.example/#***", ["fragtoken"]),
    # Userinfo of RPC and Electrum URLs: masked whole (providers put keys there).
    ("https://KEY-abc_1@node.example/", "https://***@node.example/", ["KEY-abc_1"]),
    ("https://proj:s3cr_t-x@node.example:443/v3/Kq", "https://***@node.example:443/***/***",
     ["s3cr_t-x", "proj", "Kq"]),
    # Postgres: the user (a role) is shown, the password and the database masked.
    ("postgresql://indexer:pw123@127.0.0.1:5432/indexer",
     "postgresql://indexer:***@127.0.0.1:5432/***", ["pw123"]),
    ("postgresql://postgres@127.0.0.1:5432/testdb", "postgresql://postgres@127.0.0.1:5432/***",
     ["testdb"]),
    ("postgres://u:pw@db.internal/app?sslmode=require&password=qpw",
     "postgres://u:***@db.internal/***?sslmode=***&password=***", ["pw", "app", "require", "qpw"]),
    ("postgresql://u:pw@/sockdb?host=/var/run/postgresql",
     "postgresql://u:***@/***?host=***", ["pw", "sockdb", "/var/run/postgresql"]),
    # Passwords with % / @ : ? #, percent-encoded and raw.
    ("postgresql://u:p%25w%2Fd%40x%3Ay%3Fz@127.0.0.1:5432/db1",
     "postgresql://u:***@127.0.0.1:5432/***", ["p%25w%2Fd%40x%3Ay%3Fz", "p%w/d@x:y?z", "db1"]),
    ("postgresql://u:p%w@x:y@127.0.0.1/db2", "postgresql://u:***@127.0.0.1/***",
     ["p%w@x:y", "db2"]),
    ("postgresql://u:p@ss:w/rd?x@127.0.0.1:5432/db3", "postgresql://u:***@127.0.0.1:5432/***",
     ["p@ss:w/rd?x", "db3"]),
    ("postgresql://u:p%25w/d@127.0.0.1/db4", "postgresql://u:***@127.0.0.1/***",
     ["p%25w/d", "p%w/d", "db4"]),
    ("postgresql://u:pa#ss@127.0.0.1/db5", "postgresql://u:***@127.0.0.1/***", ["pa#ss", "db5"]),
    ("https://qq:k/e?y@node.example/z", "https://***@node.example/***", ["k/e?y", "qq"]),
    # IPv6 hosts.
    ("http://[::1]:8545/v2/KEYabc", "http://[::1]:8545/***/***", ["KEYabc"]),
    ("postgresql://u:pw@[2001:db8::1]:5432/db6", "postgresql://u:***@[2001:db8::1]:5432/***",
     ["pw", "db6"]),
    ("http://[fe80::1%25eth0]:8545/?k=v6key", "http://[fe80::1%25eth0]:8545/?k=***", ["v6key"]),
    # Electrum.
    ("ssl://electrum.example.org:50002", "ssl://electrum.example.org:50002", []),
    ("tcp://127.0.0.1:50001", "tcp://127.0.0.1:50001", []),
    ("ssl://euser:epass@electrum.example.org:50002/epath?x=eq",
     "ssl://***@electrum.example.org:50002/***?x=***", ["euser", "epass", "epath", "eq"]),
    ("tcp://ekey@[::1]:50001", "tcp://***@[::1]:50001", ["ekey"]),
]  # fmt: skip

# URLs that do not parse, or whose host cannot be told: masked whole.
UNPARSEABLE = [
    "",
    "not a url",
    "node.example/v2/KEY",
    "http://h:notaport/x",
    "http://[::1/x",
    "postgresql://u:pw@h o st/db",
    "https://node.example/rpc?email=a@b.example",  # the host could be node.example or b.example
    "postgresql://u:123/abc@127.0.0.1/db",  # `u` port 123, or 127.0.0.1: masked
]


@pytest.mark.parametrize(("url", "shown", "secrets"), URLS, ids=[u for u, _, _ in URLS])
def test_redact_url_masks_every_secret_and_keeps_scheme_host_port(
    url: str, shown: str, secrets: list[str]
) -> None:
    assert redact.redact_url(url) == shown
    assert redact.redact_url(shown) == shown  # idempotent: scrubbing may see it again
    for secret in secrets:
        assert secret not in shown


@pytest.mark.parametrize(("url", "shown", "secrets"), URLS, ids=[u for u, _, _ in URLS])
def test_secrets_in_url_lists_every_secret_in_every_form(
    url: str, shown: str, secrets: list[str]
) -> None:
    found = redact.secrets_in_url(url)
    for secret in secrets:
        decoded = unquote(secret)
        for form in (secret, decoded, quote(decoded, safe="")):
            assert form in found, form
    for kept in ("127.0.0.1", "node.example", "electrum.example.org", "8545", "5432"):
        assert kept not in found


@pytest.mark.parametrize("url", UNPARSEABLE)
def test_a_url_that_does_not_parse_is_masked_whole(url: str) -> None:
    assert redact.redact_url(url) == redact.MASK
    if url:
        assert url.partition("://")[2] in redact.secrets_in_url(url) or url in (
            redact.secrets_in_url(url)
        )


@pytest.mark.parametrize(
    ("url", "clear"),
    [
        ("postgresql://u:p%25w%2Fd@127.0.0.1/db", True),
        ("postgresql://u:p%w@x:y@127.0.0.1/db", True),  # the last @ before the path: clear
        ("http://[::1]:8545/v2/KEY", True),
        ("postgresql://u:p@ss:w/rd?x@127.0.0.1/db", False),  # libpq: host "ss", port "w"
        ("postgresql://u:p%25w/d@127.0.0.1/db", False),  # libpq: host "u", port "p%w"
        ("https://node.example/rpc?email=a@b.example", False),
        ("not a url", False),
    ],
)
def test_is_clear_tells_urls_libraries_would_read_otherwise(url: str, clear: bool) -> None:
    assert redact.is_clear(url) is clear


def _leaky_texts(url: str, secret: str) -> list[str]:
    """Ways libraries print a URL or a value taken from it."""
    return [
        f"connection failed: {url}",
        f"InvalidURL({url!r})",
        f"URL('{url}'): 404, message='Not Found'",
        json.dumps({"url": url}),
        f'invalid integer value "{secret}" for connection option "port"',
        f"failed to resolve host '{secret}'",
        f"user=u password={secret} dbname=x",
        f"password='{secret}'",
        f"url='{quote(unquote(secret), safe='')}'",
    ]


@pytest.mark.parametrize(("url", "shown", "secrets"), URLS, ids=[u for u, _, _ in URLS])
def test_filter_scrubs_every_secret_from_what_libraries_print(
    url: str, shown: str, secrets: list[str]
) -> None:
    flt = redact.SecretsFilter(redact.secrets_in_url(url))
    for secret in secrets:
        for text in _leaky_texts(url, secret):
            scrubbed = flt.scrub(text)
            assert secret not in scrubbed, (text, scrubbed)
            assert unquote(secret) not in scrubbed, (text, scrubbed)


def test_libpq_fragments_of_a_raw_password_are_scrubbed() -> None:
    # libpq reads the userinfo only up to the first `/`: it prints pieces of the password.
    url = "postgresql://u:CANARY1@CANARY2:CANARY3/CANARY4?CANARY5@127.0.0.1:9/CANARYdb"
    flt = redact.SecretsFilter(redact.secrets_in_url(url))
    for text in (
        'missing key/value separator "=" in URI query parameter: "CANARY5@127.0.0.1:9/CANARYdb"',
        'invalid integer value "CANARY3" for connection option "port"',
        'could not translate host name "CANARY2" to address',
        'database "CANARY4?CANARY5@127.0.0.1:9/CANARYdb" does not exist',
        f"connect to {url} failed",
    ):
        assert "CANARY" not in flt.scrub(text), text


def test_short_secrets_are_scrubbed_in_context_only() -> None:
    # A database called `indexer` must not take the word out of our own messages.
    flt = redact.SecretsFilter(redact.secrets_in_url("postgresql://indexer:pw@127.0.0.1/indexer"))
    message = "recover with: indexer rewind --chain dev --to 5"
    assert flt.scrub(message) == message
    assert flt.scrub('FATAL:  database "indexer" does not exist') == (
        'FATAL:  database "***" does not exist'
    )
    assert flt.scrub("password=pw dbname=indexer") == "password=*** dbname=***"
    # A credential of 3+ characters goes wherever it is.
    flt = redact.SecretsFilter(redact.secrets_in_url("postgresql://u:hunter2@127.0.0.1/db"))
    assert flt.scrub("the password is hunter2, really") == "the password is ***, really"


def test_urls_nobody_registered_are_redacted_in_any_text() -> None:
    flt = redact.SecretsFilter(())
    text = "fetch https://other.example:8443/v2/SECRETKEY?apikey=SECRETQ failed."
    assert flt.scrub(text) == "fetch https://other.example:8443/***/***?apikey=*** failed."
    assert redact.scrub_structure("see (http://[::1]:8545/KEY)") == "see (http://[::1]:8545/***)"


def test_filter_scrubs_message_args_and_exception() -> None:
    flt = redact.SecretsFilter({"CANARY"})
    try:
        raise ValueError("connect failed: postgresql://u:CANARY@h/db")
    except ValueError as exc:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "url %s", ("CANARY",),
                                   (type(exc), exc, exc.__traceback__))  # fmt: skip
    assert flt.filter(record)
    text = logging.Formatter().format(record)
    assert "CANARY" not in text
    assert "connect failed" in text


def test_filter_scrubs_extras_and_preformatted_exception_text() -> None:
    url = "https://node.example/v2/abc-DEF_123.x~y?apikey=CANARYq"
    flt = redact.SecretsFilter(redact.secrets_in_url(url))
    record = logging.LogRecord("indexer.x", logging.WARNING, __file__, 1, "m", None, None)
    record.__dict__["endpoint"] = url
    record.exc_text = f"Traceback ...\naiohttp.InvalidURL: {url}"
    assert flt.filter(record)
    assert "abc-DEF_123" not in record.__dict__["endpoint"]
    assert record.exc_text is not None and "CANARYq" not in record.exc_text


@pytest.fixture
def _restore_registered() -> Iterator[None]:
    yield
    redact.register(())


@pytest.mark.usefixtures("_restore_registered")
def test_scrub_uses_the_registered_secrets() -> None:
    assert redact.scrub('token "CANARYpw"') == 'token "CANARYpw"'
    redact.register(redact.secrets_in_url("postgresql://u:CANARYpw@127.0.0.1/db"))
    assert redact.scrub('token "CANARYpw"') == 'token "***"'


def test_stdout_and_stderr_are_scrubbed_after_logging_is_configured() -> None:
    """What bypasses logging (click's error echo, an uncaught traceback, print) is scrubbed."""
    url = "postgresql://u:CANARY%2Fpw@127.0.0.1:9/CANARYdb"
    code = f"""
import sys, warnings
import click
from indexer import logsetup, redact
url = {url!r}
logsetup.configure(secrets=redact.secrets_in_url(url), json=True)
print("stdout:", url, "CANARY/pw")
click.echo(f"error: {{url}} CANARY/pw", err=True)
warnings.warn("bad " + url)
raise RuntimeError("boom " + url.replace("%2F", "/"))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert result.returncode == 1
    assert "RuntimeError: boom" in result.stderr and "error: postgresql://u:***@" in result.stderr
    assert "stdout: postgresql://u:***@127.0.0.1:9/***" in result.stdout
    assert "CANARY" not in result.stdout + result.stderr
