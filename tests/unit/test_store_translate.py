"""`store.translate`: every database fault class is sorted by SQLSTATE in one place.

What waiting cures (an outage, a read-only server, a timeout, a deadlock, a full disk, too
many connections, no pooled connection) becomes `StoreUnavailable`, and those whose session
or server must be replaced say so (`reconnect`); a missing privilege becomes `StoreDenied`
(only an operator cures it); anything else stays a plain `StoreError` (a bug, never
retried). Each carries its SQLSTATE and a message that names the cause.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors as pg
from psycopg_pool import PoolTimeout, TooManyRequests

from indexer import errors
from indexer.store import translate

CASES = [
    # (psycopg error, our class in `indexer.errors`, reconnect, words the message must hold)
    (pg.ReadOnlySqlTransaction, "DatabaseReadOnly", True, "read-only"),
    (pg.InsufficientPrivilege, "StoreDenied", False, "permission denied"),
    (pg.QueryCanceled, "StoreUnavailable", False, "statement_timeout"),
    (pg.LockNotAvailable, "StoreUnavailable", False, "lock_timeout"),
    (pg.DeadlockDetected, "StoreUnavailable", False, "deadlock detected"),
    (pg.SerializationFailure, "StoreUnavailable", False, "serialization failure"),
    (pg.DiskFull, "StoreUnavailable", False, "disk is full"),
    (pg.OutOfMemory, "StoreUnavailable", False, "out of memory"),
    (pg.TooManyConnections, "StoreUnavailable", False, "too many connections"),
    (pg.AdminShutdown, "DatabaseDisconnected", True, "shutting down"),
    (pg.CrashShutdown, "DatabaseDisconnected", True, "crashed"),
    (pg.CannotConnectNow, "DatabaseDisconnected", True, "starting up"),
    (pg.IdleSessionTimeout, "DatabaseDisconnected", True, "session was ended"),
    (pg.ConnectionFailure, "DatabaseDisconnected", True, "connection failure"),
    (pg.InvalidPassword, "StoreDenied", False, "refused the role"),
]


@pytest.mark.parametrize(
    ("cls", "kind", "reconnect", "words"), [pytest.param(*c, id=c[0].__name__) for c in CASES]
)
def test_sqlstate_is_classified_with_its_cause(
    cls: type[psycopg.Error], kind: str, reconnect: bool, words: str
) -> None:
    with pytest.raises(errors.StoreError) as info, translate("write blocks 1-2 of dev"):
        raise cls("what the server said")
    exc = info.value
    assert type(exc).__name__ == kind
    assert exc.reconnect is reconnect
    assert exc.sqlstate == cls.sqlstate
    text = str(exc)
    assert text.startswith("write blocks 1-2 of dev: ") and words in text, text
    assert f"SQLSTATE {cls.sqlstate}: what the server said" in text, text


@pytest.mark.parametrize("cls", [pg.UniqueViolation, pg.SyntaxError, pg.UndefinedTable])
def test_bugs_are_not_retried_and_name_their_sqlstate(cls: type[psycopg.Error]) -> None:
    with pytest.raises(errors.StoreError) as info, translate("write"):
        raise cls("boom")
    assert type(info.value) is errors.StoreError
    assert info.value.sqlstate == cls.sqlstate
    assert str(info.value) == f"write: error (SQLSTATE {cls.sqlstate}: boom)"


def test_no_sqlstate_is_a_lost_or_refused_connection() -> None:
    with pytest.raises(errors.StoreUnavailable) as info, translate("connect"):
        raise psycopg.OperationalError("connection failed: Connection refused")
    assert type(info.value).__name__ == "DatabaseDisconnected"
    assert info.value.reconnect and info.value.sqlstate is None
    assert "database unavailable: connection failed" in str(info.value)


@pytest.mark.parametrize("cls", [PoolTimeout, TooManyRequests])
def test_an_exhausted_pool_is_waited_out_without_reconnecting(cls: type[psycopg.Error]) -> None:
    with pytest.raises(errors.StoreUnavailable) as info, translate("health check"):
        raise cls("couldn't get a connection after 1.00 sec")
    assert type(info.value) is errors.StoreUnavailable and not info.value.reconnect
    assert "no database connection available" in str(info.value)
