"""Agent identity from the mTLS peer: SPIFFE ID and the certificate's key fingerprint."""

from __future__ import annotations

import functools
import hashlib
import re
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ext_authz import reasons
from ext_authz.errors import InputRejected


def parse_spiffe_id(principal: str, trust_domain: str) -> str:
    """Returns the SPIFFE ID if it belongs to the trust domain, else raises."""
    if not principal:
        raise InputRejected(reasons.IDENTITY_MISSING, "no mTLS peer principal in the check request")
    prefix = f"spiffe://{trust_domain}/"
    if not principal.startswith(prefix) or len(principal) > 2048:
        raise InputRejected(reasons.IDENTITY_INVALID, f"expected a SPIFFE ID under {prefix!r}, found {principal[:80]!r}")
    rest = principal[len(prefix):]
    if not rest or any(seg in ("", ".", "..") for seg in rest.split("/")) or not re.fullmatch(r"[A-Za-z0-9.\-_/]+", rest):
        raise InputRejected(reasons.IDENTITY_INVALID, f"malformed SPIFFE ID path {rest[:80]!r}")
    return principal


NO_KEY = bytes(32)


@functools.lru_cache(maxsize=4096)
def spki_fingerprint(certificate: str) -> bytes:
    """SHA-256 of the certificate's SubjectPublicKeyInfo (cached: an agent keeps its cert for hours)."""
    if not certificate:
        return NO_KEY
    try:
        cert = x509.load_pem_x509_certificate(urllib.parse.unquote(certificate).encode("ascii"))
    except (ValueError, UnicodeEncodeError) as e:
        raise InputRejected(reasons.IDENTITY_INVALID, f"peer certificate unreadable: {e}") from e
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()

