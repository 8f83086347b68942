"""web3 client for the write side: contracts by artifact name, transactions signed locally."""

from __future__ import annotations

import threading
from typing import Any, Protocol

from eth_typing import ChecksumAddress
from eth_utils import to_checksum_address
from web3 import Web3

from ext_authz.chain.artifacts import artifact, describe_revert
from ext_authz.errors import ChainError


class TxSigner(Protocol):
    """What signs a transaction: eth_account's LocalAccount, or HsmWallet (the key stays in a PKCS#11 token)."""

    @property
    def address(self) -> ChecksumAddress: ...

    def sign_transaction(self, transaction: Any, /) -> Any: ...


class ChainClient:
    """Transactions signed locally with an account key; waits for the receipt."""

    def __init__(self, rpc_url: str, timeout: float = 30.0):
        self.rpc_url = rpc_url
        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
        self._nonce_lock = threading.Lock()

    def contract(self, name: str, address: str):
        return self.w3.eth.contract(address=to_checksum_address(address), abi=artifact(name)["abi"])

    def transact(self, account: TxSigner, fn, timeout: float = 30.0) -> Any:
        try:
            with self._nonce_lock:
                tx = fn.build_transaction(
                    {
                        "from": account.address,
                        "nonce": self.w3.eth.get_transaction_count(account.address, "pending"),
                        "chainId": self.w3.eth.chain_id,
                    }
                )
                signed = account.sign_transaction(tx)
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout)
        except Exception as e:  # web3 raises many unrelated types; one boundary here
            raise ChainError(f"transaction from {account.address} failed: {describe_revert(e)}") from e
        if receipt["status"] != 1:
            raise ChainError(f"transaction {tx_hash.hex()} reverted in block {receipt['blockNumber']}")
        return receipt

    def deploy(self, account: TxSigner, name: str, *args: Any) -> str:
        art = artifact(name)
        factory = self.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        return self.transact(account, factory.constructor(*args)).contractAddress

