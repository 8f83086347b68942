"""Ethereum wallet whose secp256k1 key lives in a PKCS#11 token (anchoring transactions)."""

from __future__ import annotations

from typing import Any

from eth_keys.constants import SECPK1_N

from ext_authz.errors import ConfigError, SigningError
from ext_authz.signing.pkcs11 import (
    PKCS11_LOCK,
    SECP256K1_OID_DER,
    HsmKey,
    TokenSession,
    find_key_pair,
    login,
    unwrap_ec_point,
)

SECP256K1_N = SECPK1_N  # the group order, from eth_keys rather than typed out


def low_s(s: int) -> int:
    """EIP-2: nodes reject s above n/2; (r, n - s) is the same signature's other form."""
    return SECP256K1_N - s if s > SECP256K1_N // 2 else s


class HsmWallet(TokenSession):
    """An Ethereum account whose secp256k1 key stays in a PKCS#11 token (CKM_ECDSA over the hash).

    Drop-in for eth_account's LocalAccount where ChainClient uses it (`address`,
    `sign_transaction`): eth_account builds and hashes the transaction, the token
    signs, s is normalised low and the recovery id found with coincurve.
    """

    def __init__(self, spec: HsmKey):
        self._spec = spec
        with PKCS11_LOCK:
            self._token, self._session = login(spec)
            self._init_keys(spec)

    def _init_keys(self, spec: HsmKey) -> None:
        from eth_utils import keccak, to_checksum_address
        from pkcs11 import Attribute, KeyType

        try:
            public, self._private = find_key_pair(self._session, spec, KeyType.EC)
            if public[Attribute.EC_PARAMS] != SECP256K1_OID_DER:
                raise ConfigError(f"key {spec.key!r} is not on secp256k1")
            point = unwrap_ec_point(public[Attribute.EC_POINT], 65, "secp256k1")  # 04 || X || Y
            if point[0] != 4:
                raise ConfigError("secp256k1 public key is not an uncompressed point")
            self._public = point
            self.address = to_checksum_address(keccak(point[1:])[12:])
            self.sign_msg_hash(keccak(b"sealgate self-test"))
        except BaseException:
            self.close()
            raise

    def sign_msg_hash(self, digest: bytes) -> Any:
        """(v, r, s) over a 32-byte hash as an eth_keys Signature: the interface eth_account signs through."""
        import coincurve
        from eth_keys.datatypes import Signature
        from pkcs11 import Mechanism
        from pkcs11.exceptions import PKCS11Error

        if len(digest) != 32:
            raise SigningError(f"expected a 32-byte hash, found {len(digest)} bytes")
        try:
            with PKCS11_LOCK:
                rs = self._private.sign(digest, mechanism=Mechanism.ECDSA)
        except PKCS11Error as e:
            raise SigningError(f"HSM signing failed: {type(e).__name__} {e}") from e
        r, s = int.from_bytes(rs[:32], "big"), low_s(int.from_bytes(rs[32:], "big"))
        compact = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        for v in (0, 1):
            recovered = coincurve.PublicKey.from_signature_and_message(compact + bytes([v]), digest, hasher=None)
            if recovered.format(compressed=False) == self._public:
                return Signature(vrs=(v, r, s))
        raise SigningError("HSM signature does not recover to the wallet's public key")

    def sign_transaction(self, transaction: dict[str, Any]) -> Any:
        from eth_account._utils.signing import sign_transaction_dict
        from eth_account.datastructures import SignedTransaction
        from eth_utils import keccak
        from hexbytes import HexBytes

        transaction = dict(transaction)
        sender = transaction.pop("from", self.address)
        if str(sender).lower() != self.address.lower():  # as eth_account's LocalAccount refuses it
            raise SigningError(f"transaction is from {sender}, this wallet is {self.address}")
        v, r, s, encoded = sign_transaction_dict(self, transaction)  # type: ignore[arg-type]  # duck-typed: sign_msg_hash
        return SignedTransaction(raw_transaction=HexBytes(encoded), hash=HexBytes(keccak(encoded)), r=r, s=s, v=v)

