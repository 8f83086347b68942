"""anvil's public development accounts: the local stack on chain id 31337 only, refused anywhere else."""

from __future__ import annotations

import functools

from eth_account import Account
from eth_account.signers.local import LocalAccount

# anvil's development accounts (mnemonic "test test ... junk"): the local stack only.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_ROLES = {"deployer": 0, "anchorer": 1, "guardian": 2}  # owners of the Safe: accounts 3-7
DEV_OWNER_ACCOUNTS = (3, 4, 5, 6, 7)


@functools.lru_cache(maxsize=16)
def dev_account(index: int) -> LocalAccount:
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def dev_key(role: str) -> str:
    return dev_account(DEV_ROLES[role]).key.hex()


DEV_KEYS = {role: dev_key(role) for role in DEV_ROLES}

