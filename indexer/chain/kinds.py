"""The kinds of chain, in one place: for each, its client, its source and its identity.

Everything that differs by `kind` outside a kind's own modules goes through `kind_of(cfg)`;
nothing else dispatches on the kind. Adding a kind is a config model (`indexer.config`),
its modules under `indexer.chain`, and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from indexer.chain import ChainSource, electrum
from indexer.chain.electrum_servers import ElectrumServers
from indexer.chain.evm import EvmSource
from indexer.chain.rpc import RpcClient
from indexer.config import ChainConfig, ElectrumChainConfig, EvmChainConfig

Client = RpcClient | ElectrumServers


@dataclass(frozen=True, slots=True)
class ChainKind:
    name: str
    make_client: Callable[[Any], Client]  # an async context manager: enter it before use
    make_source: Callable[[Any, Any], ChainSource]
    identity: Callable[[Any], tuple[int | None, bytes | None]]  # (chain id, genesis hash)


def _evm_client(cfg: EvmChainConfig) -> RpcClient:
    return RpcClient(
        cfg.urls,
        timeout_secs=cfg.request_timeout_secs,
        max_concurrency=cfg.endpoint_concurrency,
        failures_to_open=cfg.circuit_failures,
        cooldown_secs=cfg.circuit_cooldown_secs,
        label=cfg.name,
        max_bytes_in_flight=cfg.max_bytes_in_flight,
    )


def _electrum_client(cfg: ElectrumChainConfig) -> ElectrumServers:
    return electrum.make_servers(cfg, tls_fingerprints=cfg.tls_fingerprints)


KINDS: dict[str, ChainKind] = {
    "evm": ChainKind(
        "evm",
        make_client=_evm_client,
        make_source=lambda cfg, client: EvmSource(cfg, cast(RpcClient, client)),
        identity=lambda cfg: (cast(EvmChainConfig, cfg).chain_id, None),
    ),
    "electrum": ChainKind(
        "electrum",
        make_client=_electrum_client,
        make_source=lambda cfg, client: electrum.ElectrumSource(cfg, cast(ElectrumServers, client)),
        identity=lambda cfg: (
            None,
            bytes.fromhex(cast(ElectrumChainConfig, cfg).genesis_hash.removeprefix("0x")),
        ),
    ),
}


def kind_of(cfg: ChainConfig) -> ChainKind:
    return KINDS[cfg.kind]
