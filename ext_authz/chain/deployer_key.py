"""Where the deployer's secp256k1 key comes from: an environment variable, an encrypted keystore, or a PKCS#11 token.

The deployer key only signs the bootstrap: it deploys the contracts, seeds the initial state
and renounces every admin role to the timelock. Whatever the source, `open_deployer` yields
an object ChainClient can sign with (`address`, `sign_transaction`): eth_account's
LocalAccount for a key in memory, `HsmWallet` for a key that never leaves the token. Error
messages name the source, never the key.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ext_authz.chain.manifest import read_bounded
from ext_authz.errors import ConfigError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from ext_authz.chain.client import TxSigner

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
MAX_KEYSTORE_BYTES = 64 * 1024


@dataclass(frozen=True)
class EnvKey:
    """The hex private key in environment variable `env`."""

    env: str

    def describe(self) -> str:
        return f"${self.env}"


@dataclass(frozen=True)
class KeystoreKey:
    """An encrypted Ethereum keystore (JSON, v3), its password in environment variable `password_env`."""

    path: Path
    password_env: str

    def describe(self) -> str:
        return f"keystore {self.path}"


@dataclass(frozen=True)
class Pkcs11Key:
    """A secp256k1 key pair in a PKCS#11 token (`sealgate hsm keygen --type secp256k1`); PIN in $SEALGATE_HSM_PIN."""

    module: str
    token: str
    key: str

    def describe(self) -> str:
        return f"PKCS#11 key {self.key!r} in token {self.token!r}"


DeployerKey = EnvKey | KeystoreKey | Pkcs11Key


def _env(name: str, what: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"set ${name} to {what} (it is read from the environment, never from the plan)")
    return value


def _from_env(source: EnvKey) -> LocalAccount:
    from eth_account import Account

    try:
        return Account.from_key(_env(source.env, "the deployer's hex private key").strip())
    except (ValueError, TypeError):
        # the key itself is never part of the message nor of a chained exception
        raise ConfigError(f"${source.env} does not hold a secp256k1 private key (expected 32 bytes as hex)") from None


def _from_keystore(source: KeystoreKey) -> LocalAccount:
    from eth_account import Account

    data = read_bounded(source.path, MAX_KEYSTORE_BYTES, "deployer keystore")
    try:
        keyfile = json.loads(data)
    except ValueError as e:
        raise ConfigError(f"deployer keystore {source.path} is not valid JSON: {e}") from e
    if not isinstance(keyfile, dict) or not isinstance(keyfile.get("crypto", keyfile.get("Crypto")), dict):
        raise ConfigError(f"deployer keystore {source.path} is not an Ethereum keystore (no 'crypto' object)")
    password = _env(source.password_env, f"the password of {source.path}")
    try:
        key = Account.decrypt(keyfile, password)
    except ValueError as e:  # "MAC mismatch" for a wrong password; others for a damaged file
        raise ConfigError(f"deployer keystore {source.path} does not decrypt with ${source.password_env}: {e}") from None
    except (KeyError, TypeError, NotImplementedError) as e:
        raise ConfigError(f"deployer keystore {source.path} is not a supported keystore: {type(e).__name__} {e}") from None
    return Account.from_key(key)


@contextmanager
def open_deployer(source: DeployerKey) -> Iterator[TxSigner]:
    """The deployer, ready to sign; an HSM session is logged out when the block ends."""
    if isinstance(source, EnvKey):
        yield _from_env(source)
    elif isinstance(source, KeystoreKey):
        yield _from_keystore(source)
    elif isinstance(source, Pkcs11Key):
        from ext_authz.chain.hsm_wallet import HsmWallet
        from ext_authz.signing.pkcs11 import HsmKey

        with HsmWallet(HsmKey(source.module, source.token, source.key)) as wallet:
            yield wallet
    else:
        raise ConfigError(f"unknown deployer key source {source!r}")
