from __future__ import annotations

import logging

from indexer import redact


def test_redact_url_masks_password_query_keys_and_path_keys() -> None:
    assert redact.redact_url("postgresql://u:pw123@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact.redact_url("http://h/x?apikey=K123&chain=1") == "http://h/x?apikey=***&chain=1"
    assert (
        redact.redact_url("https://eth.node.io/v2/abcdefghijklmnopqrstuvwxyz")
        == "https://eth.node.io/v2/***"
    )
    assert redact.redact_url("http://127.0.0.1:8545") == "http://127.0.0.1:8545"


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
