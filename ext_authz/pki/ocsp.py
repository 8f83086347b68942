"""OCSP (RFC 6960) for the agent identity CA: the responder, the client, and the authorizer's status check.

The responder answers over HTTP (POST application/ocsp-request, or GET /<base64>) for certificates the
intermediate issued, signing with the delegated OCSP signer (its certificate travels in the response).
Responses are valid `validity_seconds` (nextUpdate). The client verifies a response completely: the
CertID is the one asked about, the signer is the issuer or a certificate the issuer gave
id-kp-OCSPSigning and which is valid now, the signature verifies, thisUpdate is not in the future and
nextUpdate not in the past. `CertStatus` is the authorizer's check of the agent's certificate, cached
until nextUpdate: good passes; revoked is IDENTITY_REVOKED; unknown, an unreachable responder, or any
response that does not verify is IDENTITY_STATUS_UNKNOWN (fail closed).
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from ext_authz import reasons
from ext_authz.errors import ConfigError, InputRejected, SealgateError
from ext_authz.httpd import QuietHandler, serve_in_thread

log = logging.getLogger("sealgate.ocsp")
MAX_OCSP_BYTES = 16 * 1024
CLOCK_SKEW = dt.timedelta(seconds=5)
DEFAULT_VALIDITY_SECONDS = 300

_REASONS = {"unspecified": x509.ReasonFlags.unspecified, "key_compromise": x509.ReasonFlags.key_compromise,
            "affiliation_changed": x509.ReasonFlags.affiliation_changed, "superseded": x509.ReasonFlags.superseded,
            "cessation_of_operation": x509.ReasonFlags.cessation_of_operation}


class OcspError(SealgateError):
    """A response that cannot be obtained or does not verify."""


# ---------------------------------------------------------------------------------------------- responder

class OcspResponder:
    """Signs status answers for one issuer from a status source (`CertificateAuthority.status`)."""

    def __init__(self, issuer: x509.Certificate, signer_cert: x509.Certificate, signer_key: ed25519.Ed25519PrivateKey,
                 status: Callable[[int], tuple[str, int | None, str | None]], validity_seconds: int = DEFAULT_VALIDITY_SECONDS,
                 clock: Callable[[], float] = time.time):
        if not 2 <= validity_seconds <= 7 * 86400:
            raise ConfigError(f"OCSP validity must be 2 s to 7 days, found {validity_seconds}")
        self.issuer, self._cert, self._key, self._status = issuer, signer_cert, signer_key, status
        self.validity = dt.timedelta(seconds=validity_seconds)
        self._clock = clock
        self.answered = 0

    @classmethod
    def from_directory(cls, directory: str | Path, status: Callable[[int], tuple[str, int | None, str | None]],
                       validity_seconds: int = DEFAULT_VALIDITY_SECONDS) -> OcspResponder:
        d = Path(directory)
        chain = x509.load_pem_x509_certificates((d / "ocsp-signer.crt").read_bytes())
        key = serialization.load_pem_private_key((d / "ocsp-signer.key").read_bytes(), password=None)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ConfigError("the OCSP signer key must be Ed25519")
        issuer = x509.load_pem_x509_certificate((d / "intermediate.crt").read_bytes())
        return cls(issuer, chain[0], key, status, validity_seconds)

    def respond(self, request_der: bytes) -> bytes:
        try:
            req = ocsp.load_der_ocsp_request(request_der)
        except ValueError:
            return ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST).public_bytes(
                serialization.Encoding.DER)
        issuer_key_hash = _key_hash(self.issuer, req.hash_algorithm)
        if req.issuer_key_hash != issuer_key_hash or req.issuer_name_hash != _name_hash(self.issuer, req.hash_algorithm):
            return ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED).public_bytes(
                serialization.Encoding.DER)
        status, revoked_at, reason = self._status(req.serial_number)
        now = dt.datetime.fromtimestamp(self._clock(), dt.UTC).replace(microsecond=0)
        cert_status = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED}.get(status,
                                                                                                   ocsp.OCSPCertStatus.UNKNOWN)
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            issuer_name_hash=req.issuer_name_hash, issuer_key_hash=req.issuer_key_hash, serial_number=req.serial_number,
            algorithm=req.hash_algorithm, cert_status=cert_status, this_update=now, next_update=now + self.validity,
            revocation_time=dt.datetime.fromtimestamp(revoked_at, dt.UTC) if revoked_at is not None else None,
            revocation_reason=_REASONS.get(reason or "") if revoked_at is not None else None,
        ).responder_id(ocsp.OCSPResponderEncoding.HASH, self._cert).certificates([self._cert])
        for ext in req.extensions:
            if isinstance(ext.value, x509.OCSPNonce):
                builder = builder.add_extension(ext.value, critical=False)
        self.answered += 1
        return builder.sign(self._key, None).public_bytes(serialization.Encoding.DER)


def _key_hash(cert: x509.Certificate, algorithm: hashes.HashAlgorithm) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(cert.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
             if isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
             else cert.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    return h.finalize()


def _name_hash(cert: x509.Certificate, algorithm: hashes.HashAlgorithm) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(cert.subject.public_bytes())
    return h.finalize()


def serve_ocsp(address: tuple[str, int], responder: OcspResponder) -> ThreadingHTTPServer:
    """HTTP OCSP on `address` (RFC 6960 appendix A: POST, or GET with the base64 request in the path)."""

    class Handler(QuietHandler):
        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("content-length") or 0)
            if self.headers.get("content-type") != "application/ocsp-request" or not 0 < length <= MAX_OCSP_BYTES:
                self._send(400, b"")
                return
            self._send(200, responder.respond(self.rfile.read(length)))

        def do_GET(self) -> None:  # noqa: N802
            raw = urllib.parse.unquote(self.path.lstrip("/"))
            try:
                request = base64.b64decode(raw, validate=True)
            except ValueError:
                self._send(400, b"")
                return
            self._send(200, responder.respond(request))

        def _send(self, code: int, body: bytes) -> None:
            self.send_body(code, body, "application/ocsp-response")

    return serve_in_thread(address, Handler, "sealgate-ocsp")


# ---------------------------------------------------------------------------------------------- client

@dataclass(frozen=True)
class OcspAnswer:
    status: str  # good, revoked, unknown
    this_update: dt.datetime
    next_update: dt.datetime
    revoked_at: dt.datetime | None
    reason: str | None
    der: bytes  # the signed response, as stapled


def _verify_signature(public_key: Any, signature: bytes, data: bytes, hash_algorithm: hashes.HashAlgorithm | None) -> None:
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        public_key.verify(signature, data)
    elif isinstance(public_key, ec.EllipticCurvePublicKey) and hash_algorithm is not None:
        public_key.verify(signature, data, ec.ECDSA(hash_algorithm))
    else:
        raise OcspError(f"unsupported OCSP signature key {type(public_key).__name__}")


def verify_response(der: bytes, cert: x509.Certificate, issuer: x509.Certificate, at: dt.datetime) -> OcspAnswer:
    """The signed response for `cert`, checked as valid at `at` (now, or an SAE's issuance time)."""
    if len(der) > MAX_OCSP_BYTES:
        raise OcspError("OCSP response too large")
    try:
        resp = ocsp.load_der_ocsp_response(der)
    except ValueError as e:
        raise OcspError(f"not an OCSP response: {e}") from e
    if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise OcspError(f"OCSP responder answered {resp.response_status.name}")
    if (resp.serial_number != cert.serial_number or resp.issuer_key_hash != _key_hash(issuer, resp.hash_algorithm)
            or resp.issuer_name_hash != _name_hash(issuer, resp.hash_algorithm)):
        raise OcspError("the OCSP response is about another certificate")
    signer = _response_signer(resp, issuer, at)
    try:
        _verify_signature(signer.public_key(), resp.signature, resp.tbs_response_bytes, resp.signature_hash_algorithm)
    except InvalidSignature as e:
        raise OcspError("the OCSP response's signature does not verify") from e
    this_update, next_update = resp.this_update_utc, resp.next_update_utc
    if next_update is None:
        raise OcspError("the OCSP response has no nextUpdate")
    if this_update > at + CLOCK_SKEW or next_update < at - CLOCK_SKEW:
        raise OcspError(f"the OCSP response is valid {this_update:%Y-%m-%dT%H:%M:%SZ} to {next_update:%Y-%m-%dT%H:%M:%SZ}, "
                        f"not at {at:%Y-%m-%dT%H:%M:%SZ}")
    status = {ocsp.OCSPCertStatus.GOOD: "good", ocsp.OCSPCertStatus.REVOKED: "revoked"}.get(resp.certificate_status, "unknown")
    reason = resp.revocation_reason.name if resp.revocation_reason is not None else None
    return OcspAnswer(status, this_update, next_update, resp.revocation_time_utc, reason, der)


def _response_signer(resp: ocsp.OCSPResponse, issuer: x509.Certificate, at: dt.datetime) -> x509.Certificate:
    """The issuer itself, or a delegated responder the issuer certified for OCSP signing, valid at `at`."""
    def named(cert: x509.Certificate) -> bool:
        if resp.responder_key_hash is not None:  # RFC 6960 byKey: SHA-1 of the subjectPublicKey bits, as SKI method 1
            return resp.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(
                cert.public_key()).digest
        return resp.responder_name == cert.subject

    if named(issuer):
        return issuer
    for cert in resp.certificates:
        if not named(cert):
            continue
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature) as e:
            raise OcspError("the OCSP responder's certificate is not issued by the CA") from e
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound as e:
            raise OcspError("the OCSP responder's certificate has no OCSP signing usage") from e
        if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            raise OcspError("the OCSP responder's certificate has no OCSP signing usage")
        if not cert.not_valid_before_utc - CLOCK_SKEW <= at <= cert.not_valid_after_utc + CLOCK_SKEW:
            raise OcspError("the OCSP responder's certificate was not valid then")
        return cert
    raise OcspError("the OCSP response is signed by neither the CA nor a responder it certified")


def ocsp_request(cert: x509.Certificate, issuer: x509.Certificate) -> bytes:
    return ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA256()).build().public_bytes(
        serialization.Encoding.DER)


def fetch_ocsp(url: str, cert: x509.Certificate, issuer: x509.Certificate, timeout: float = 1.0) -> OcspAnswer:
    """POSTs the request and verifies the answer (now)."""
    req = urllib.request.Request(url, data=ocsp_request(cert, issuer), headers={"content-type": "application/ocsp-request"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            der = r.read(MAX_OCSP_BYTES + 1)
    except OSError as e:
        raise OcspError(f"OCSP responder {url}: {e}") from e
    return verify_response(der, cert, issuer, dt.datetime.now(dt.UTC))


def ocsp_url_of(cert: x509.Certificate) -> str | None:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for desc in aia:
        if desc.access_method == x509.oid.AuthorityInformationAccessOID.OCSP:
            return str(desc.access_location.value)
    return None


# ---------------------------------------------------------------------------------------------- the authorizer's check

class CertStatus:
    """The agent certificate's revocation status, on the decision path; answers cached until their nextUpdate.

    `responder_url` overrides the certificate's AIA OCSP URL (the agent does not choose where it is checked)."""

    MAX_CACHED = 65536

    def __init__(self, issuer: x509.Certificate, responder_url: str, timeout: float = 1.0,
                 clock: Callable[[], float] = time.time):
        self.issuer = issuer
        self.url = responder_url
        self._timeout = timeout
        self._clock = clock
        self._cache: dict[tuple[bytes, int], OcspAnswer] = {}
        self._parsed_pems: dict[str, tuple[x509.Certificate, tuple[bytes, int]]] = {}
        self._lock = threading.Lock()
        self.fetches = 0

    def _parsed(self, certificate_pem: str) -> tuple[x509.Certificate, tuple[bytes, int]]:
        known = self._parsed_pems.get(certificate_pem)  # an agent presents the same certificate for hours
        if known is not None:
            return known
        try:
            cert = x509.load_pem_x509_certificate(urllib.parse.unquote(certificate_pem).encode("ascii"))
        except (ValueError, UnicodeEncodeError) as e:
            raise InputRejected(reasons.IDENTITY_INVALID, f"peer certificate unreadable: {e}") from e
        if cert.issuer != self.issuer.subject:
            raise InputRejected(reasons.IDENTITY_STATUS_UNKNOWN, "the certificate is not issued by the agent identity CA")
        parsed = (cert, (cert.fingerprint(hashes.SHA256()), cert.serial_number))
        with self._lock:
            if len(self._parsed_pems) >= self.MAX_CACHED:
                self._parsed_pems.clear()
            self._parsed_pems[certificate_pem] = parsed
        return parsed

    def check(self, certificate_pem: str) -> None:
        """Returns if the certificate is good now; raises InputRejected otherwise."""
        cert, key = self._parsed(certificate_pem)
        now = dt.datetime.fromtimestamp(self._clock(), dt.UTC)
        answer = self._cache.get(key)
        if answer is None or answer.next_update <= now:
            try:
                self.fetches += 1
                answer = fetch_ocsp(self.url, cert, self.issuer, self._timeout)
            except OcspError as e:
                raise InputRejected(reasons.IDENTITY_STATUS_UNKNOWN, f"certificate status unavailable: {e}") from e
            with self._lock:
                if len(self._cache) >= self.MAX_CACHED:
                    self._cache.clear()
                self._cache[key] = answer
        if answer.status == "revoked":
            raise InputRejected(reasons.IDENTITY_REVOKED, f"certificate {cert.serial_number:x} revoked"
                                                          + (f" ({answer.reason})" if answer.reason else ""))
        if answer.status != "good":
            raise InputRejected(reasons.IDENTITY_STATUS_UNKNOWN, f"certificate {cert.serial_number:x} unknown to the CA")
