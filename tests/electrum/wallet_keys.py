"""Deterministic wallet keys for tests: descriptors, regtest addresses and Electrum scripthashes.

Two fixed BIP32 roots (BIP32 test vectors 1 and 2, in testnet encoding) give one account
per standard script type at its usual path, written as output descriptors with key origin
and `/<change>/*` ranges. `derive` turns a descriptor and an index into the regtest address
and scriptPubKey, through embit (the library the indexer uses), so a test never hand-writes
an address it could get wrong.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from embit import bip32
from embit.descriptor import Descriptor
from embit.descriptor.checksum import add_checksum
from embit.networks import NETWORKS
from embit.script import address_to_scriptpubkey

# BIP32 test vector 1's seed, and the master key it gives with testnet version bytes.
ROOT_SEED_HEX = "000102030405060708090a0b0c0d0e0f"
ROOT_TPRV = (
    "tprv8ZgxMBicQKsPeDgjzdC36fs6bMjGApWDNLR9erAXMs5skhMv36j9MV5ecvfavji5khqjWaWSFhN3YcCUUdiKH6"
    "isR4Pwy3U5y5egddBr16m"
)
ROOT_FINGERPRINT_HEX = "3442193e"
# BIP32 test vector 2's master key: the second signer of the multisig descriptors.
COSIGNER_TPRV = (
    "tprv8ZgxMBicQKsPdqC56nGKYsarqYsgrSm33vCswnuMLFCk3gP7DFW5nPFExzSe7FGAzkbAFrxtXoQEe8vaX471tU"
    "3dsUUC7PNpYLGuzb2agmj"
)
COSIGNER_FINGERPRINT_HEX = "bd16bee5"

REGTEST = NETWORKS["regtest"]
_TESTNET_XPUB = NETWORKS["test"]["xpub"]


class Kind(enum.StrEnum):
    """A wallet descriptor shape; the first five are the standard single-address types."""

    P2PKH = "pkh"
    P2SH_P2WPKH = "sh-wpkh"
    P2WPKH = "wpkh"
    P2WSH = "wsh"  # a 1-of-1 multisig, wsh(multi(1,K))
    P2TR = "tr"
    WSH_SORTEDMULTI = "wsh-sortedmulti"  # 1-of-2 with the cosigner
    SH_MULTI = "sh-multi"  # 1-of-2 with the cosigner


STANDARD_KINDS = (Kind.P2PKH, Kind.P2SH_P2WPKH, Kind.P2WPKH, Kind.P2WSH, Kind.P2TR)

# Account paths below the root (BIP44/49/84/86, BIP48 for wsh, BIP45 for bare sh multisig).
ACCOUNT_PATHS = {
    Kind.P2PKH: "44h/1h/0h",
    Kind.P2SH_P2WPKH: "49h/1h/0h",
    Kind.P2WPKH: "84h/1h/0h",
    Kind.P2WSH: "48h/1h/0h/2h",
    Kind.P2TR: "86h/1h/0h",
    Kind.WSH_SORTEDMULTI: "48h/1h/0h/2h",
    Kind.SH_MULTI: "45h",
}

_TEMPLATES = {
    Kind.P2PKH: "pkh({key})",
    Kind.P2SH_P2WPKH: "sh(wpkh({key}))",
    Kind.P2WPKH: "wpkh({key})",
    Kind.P2WSH: "wsh(multi(1,{key}))",
    Kind.P2TR: "tr({key})",
    Kind.WSH_SORTEDMULTI: "wsh(sortedmulti(1,{key},{cosigner}))",
    Kind.SH_MULTI: "sh(multi(1,{key},{cosigner}))",
}


@dataclass(frozen=True)
class WalletAddress:
    kind: Kind
    index: int
    change: bool
    address: str
    script_pubkey: bytes

    @property
    def scripthash(self) -> str:
        return electrum_scripthash(self.script_pubkey)


def electrum_scripthash(script_pubkey: bytes) -> str:
    """Return the Electrum protocol's scripthash: sha256(script), reversed, hex."""
    return hashlib.sha256(script_pubkey).digest()[::-1].hex()


def account_key(path: str, *, root_tprv: str = ROOT_TPRV) -> str:
    """Return `[fingerprint/path]tpub` for the account at `path` (like "84h/1h/0h")."""
    root = bip32.HDKey.from_string(root_tprv)
    tpub = root.derive(f"m/{path}").to_public().to_base58(version=_TESTNET_XPUB)
    return f"[{root.my_fingerprint.hex()}/{path}]{tpub}"


def descriptor(kind: Kind, *, change: bool = False, checksum: bool = False) -> str:
    """Return the ranged descriptor of `kind` over the receive (or change) chain."""
    branch = f"/{int(change)}/*"
    path = ACCOUNT_PATHS[kind]
    text = _TEMPLATES[kind].format(
        key=account_key(path) + branch,
        cosigner=account_key(path, root_tprv=COSIGNER_TPRV) + branch,
    )
    return str(add_checksum(text)) if checksum else text


def derive(descriptor_text: str, index: int) -> tuple[str, bytes]:
    """Return the regtest (address, scriptPubKey) of a ranged descriptor at `index`."""
    parsed = Descriptor.from_string(descriptor_text)
    if not parsed.is_wildcard:
        raise ValueError(f"not a ranged descriptor: {descriptor_text}")
    derived = parsed.derive(index)
    return str(derived.address(REGTEST)), bytes(derived.script_pubkey().data)


def address(kind: Kind, index: int = 0, *, change: bool = False) -> WalletAddress:
    """Return the regtest address of `kind` at `index` of the receive (or change) chain."""
    text, script = derive(descriptor(kind, change=change), index)
    return WalletAddress(kind, index, change, text, script)


def standard_addresses(index: int = 0) -> dict[Kind, WalletAddress]:
    """Return one receive address of each standard type (P2PKH … P2TR) at `index`."""
    return {kind: address(kind, index) for kind in STANDARD_KINDS}


def address_script(address_text: str) -> bytes:
    """Return the scriptPubKey an address (of any network) pays to."""
    return bytes(address_to_scriptpubkey(address_text).data)
