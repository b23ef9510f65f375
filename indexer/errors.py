"""One error tree for the indexer; a class docstring is its default message.

Library errors (aiohttp, psycopg, pydantic) are translated into these at the boundary that
talks to the library, with ``raise ... from exc``; business code catches only these.
Messages never carry secrets: URLs are redacted before they reach an error.
"""

from __future__ import annotations

# Process exit codes (see INTERFACE.md).
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_REORG_TOO_DEEP = 3


class IndexerError(Exception):
    """Unexpected indexer error."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str | None = None, **context: object) -> None:
        self.context = context
        super().__init__(message or (self.__doc__ or "").strip())


# -- Configuration and usage


class ConfigError(IndexerError):
    """Configuration is invalid."""

    exit_code = EXIT_USAGE


class ChainMismatch(ConfigError):
    """The node serves a different chain than the configuration names."""


# -- Chain sources


class SourceError(IndexerError):
    """Chain source failed."""


class SourceTransient(SourceError):
    """Chain source unreachable, timed out or rate-limited (retried)."""


class SourceTimeout(SourceTransient):
    """Chain source did not answer in time (retried)."""


class RpcError(SourceError):
    """Chain source answered with a JSON-RPC error."""

    def __init__(self, message: str | None = None, *, code: int = 0, **context: object) -> None:
        self.code = code
        super().__init__(message, code=code, **context)

    @property
    def fatal(self) -> bool:
        """True when retrying cannot help: the node lacks the method, or refuses its params.

        Not -32700 (parse error) nor -32600 (invalid request): said of a request we built,
        they are no verdict on it but a broken endpoint (or something between us and it),
        which `chain/rpc.py` raises as `EndpointRefused`, failed over.
        """
        return self.code in (-32601, -32602)


class BatchTooLarge(SourceError):
    """The node refused a batch this large (items or response bytes); send smaller ones."""


class ResponseCorrupted(SourceError):
    """Chain source answered with malformed or inconsistent data."""


class EndpointRefused(ResponseCorrupted):
    """The endpoint refuses what a healthy node answers: our credentials (HTTP 401/403), or a
    valid request it calls unparsable or invalid (JSON-RPC -32700/-32600).

    Failed over like a wrong answer; when every endpoint says it, the chain is stuck on a
    refused answer (said, retried with capped backoff), never an exit.
    """


class InvalidHeader(ResponseCorrupted):
    """A block header fails validation (the server that sent it is faulty or lying)."""

    def __init__(self, height: int, reason: str) -> None:
        self.height = height
        self.reason = reason
        super().__init__(f"header {height:,d}: {reason}", height=height, reason=reason)


class CertificateMismatch(SourceError):
    """The server's TLS certificate does not match the pinned fingerprint."""


# -- Chain validation


class ChainValidationError(IndexerError):
    """Fetched blocks do not form a valid chain."""


class ReorgDetected(ChainValidationError):
    """The first fetched block does not link to our stored tip."""


class BrokenBatch(ChainValidationError):
    """A fetched batch is not internally linked (the node changed while answering)."""


class NeighbourMismatch(ChainValidationError):
    """A repaired range no longer links to its stored neighbour (a reorg happened)."""


class ReorgNotConfirmed(ChainValidationError):
    """The node no longer says what made us see a reorg; nothing was deleted (retried)."""


class ChainHalted(IndexerError):
    """A chain stopped and needs an operator."""


class ReorgTooDeep(ChainHalted):
    """Fork point is deeper than max_reorg_depth; refusing to roll back."""

    exit_code = EXIT_REORG_TOO_DEEP


# -- Store
#
# `store.translate` is the one place that sorts psycopg errors (by SQLSTATE) into these:
# `StoreUnavailable` for what waiting cures (an outage, a read-only server, a timeout, a
# deadlock, a full disk, no free connection), `StoreDenied` for what only an operator cures
# (a missing privilege), plain `StoreError` for everything else (a bug: never retried).


class StoreError(IndexerError):
    """Database operation failed."""

    # Whether a connection that met this must be replaced: its session is gone, or it is
    # bound to a server that takes no writes now (after a failover, a new connection may
    # reach the new primary).
    reconnect = False

    def __init__(
        self, message: str | None = None, *, sqlstate: str | None = None, **context: object
    ) -> None:
        self.sqlstate = sqlstate
        super().__init__(message, sqlstate=sqlstate, **context)


class StoreUnavailable(StoreError):
    """Database unavailable (retried)."""


class DatabaseDisconnected(StoreUnavailable):
    """Database connection lost or refused (reconnecting)."""

    reconnect = True


class DatabaseReadOnly(StoreUnavailable):
    """Database is read-only: a hot standby, or default_transaction_read_only (retried)."""

    reconnect = True


class StoreDenied(StoreError):
    """The database role lacks a privilege; an operator must grant it."""


class CheckpointConflict(StoreError):
    """Checkpoint moved under us; is another writer running?"""


class WriterLockHeld(StoreError):
    """Another indexer instance holds the writer lock for this chain."""


class WriterLockLost(StoreError):
    """The writer lock was lost and taken again; the checkpoint must be read again."""


class MigrationError(StoreError):
    """A migration failed."""
