"""What a wallet watches: scripts from addresses and output descriptors (through embit).

Nothing here is our own cryptography: addresses are decoded, descriptors parsed and keys
derived by embit (BIP 32, BIP 380-386). This module checks that what the config names
belongs to the chain's network, and turns it into `Script`s: the scriptPubKey, its address,
and the Electrum script hash the servers index it by.

A ranged descriptor (`.../0/*`, or a multipath `.../<0;1>/*`) is one or more `Branch`es;
each is derived as far as its highest used index plus the wallet's gap limit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Final

from embit import script as embit_script
from embit.descriptor import Descriptor
from embit.networks import NETWORKS

# Our header networks (chain/btc_headers.py) by name, to embit's.
EMBIT_NETWORKS: Final = {"mainnet": "main", "testnet3": "test", "regtest": "regtest"}
MAX_DERIVATION_INDEX: Final = (1 << 31) - 1  # non-hardened BIP 32 indexes


class KeyError_(ValueError):
    """An address or descriptor the config gives that we cannot watch (the message says why,
    never repeating the descriptor, which may be private to its owner)."""


@dataclass(frozen=True, slots=True)
class Script:
    script: bytes  # scriptPubKey
    address: str
    descriptor: int | None = None  # index in the wallet's `descriptors`; None: `addresses`
    branch: int | None = None  # multipath branch of that descriptor
    index: int | None = None  # derivation index (None: a descriptor without a range)

    @property
    def scripthash(self) -> bytes:
        return scripthash(self.script)


def scripthash(script: bytes) -> bytes:
    """Electrum's script hash, as the 32 bytes it is sent as hex of: sha256, reversed."""
    return hashlib.sha256(script).digest()[::-1]


def network(name: str) -> dict[str, Any]:
    """embit's parameters of our header network `name`."""
    return NETWORKS[EMBIT_NETWORKS[name]]  # type: ignore[no-any-return]


def address_script(address: str, network_name: str) -> Script:
    """The script an address pays to; refuse one of another network or not standard."""
    net = network(network_name)
    try:
        script = embit_script.address_to_scriptpubkey(address)
        again = script.address(net)
    except Exception as exc:  # embit raises many types for bad input
        raise KeyError_(f"{address!r} is not a valid address ({_reason(exc)})") from None
    if again.lower() != address.lower():
        raise KeyError_(f"{address!r} is not an address of {network_name}")
    return Script(script=script.data, address=again)


@dataclass(frozen=True)
class Branch:
    """One derivation chain of a ranged descriptor."""

    descriptor: int
    branch: int
    _desc: Any  # embit Descriptor with one branch

    def derive(self, index: int, network_name: str) -> Script:
        script = self._desc.derive(index).script_pubkey()
        return Script(
            script=script.data,
            address=script.address(network(network_name)),
            descriptor=self.descriptor,
            branch=self.branch,
            index=index,
        )


@dataclass(frozen=True)
class ParsedDescriptor:
    fixed: Script | None  # a descriptor without a range: its one script
    branches: tuple[Branch, ...]  # ranged: its derivation chains


def parse_descriptor(text: str, position: int, network_name: str) -> ParsedDescriptor:
    """Parse one output descriptor of a wallet; refuse what we cannot watch."""
    net = network(network_name)
    if "prv" in text:
        raise KeyError_(
            "holds a private key; give its public form (xpub/tpub): the indexer only watches"
        )
    try:
        desc = Descriptor.from_string(text.strip())
    except Exception as exc:
        raise KeyError_(f"cannot parse the descriptor ({_reason(exc)})") from None
    for key in desc.keys:
        if getattr(key, "is_private", False):
            raise KeyError_(
                "holds a private key; give its public form (xpub/tpub): the indexer only watches"
            )
        if getattr(key, "is_extended", False) and key.key.version != net["xpub"]:
            raise KeyError_(f"an extended key of another network than {network_name}")
    try:
        if not desc.is_wildcard:
            script = desc.script_pubkey()
            fixed = Script(script.data, script.address(net), descriptor=position)
            return ParsedDescriptor(fixed=fixed, branches=())
        count = getattr(desc, "num_branches", 1) or 1
        branches = tuple(
            Branch(position, i, desc.branch(i) if count > 1 else desc) for i in range(count)
        )
        for branch in branches:
            branch.derive(0, network_name)  # fails now, not while syncing
    except KeyError_:
        raise
    except Exception as exc:
        raise KeyError_(f"cannot derive scripts from the descriptor ({_reason(exc)})") from None
    return ParsedDescriptor(fixed=None, branches=branches)


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
    return text
