"""Sealgate's agent PKI: a root CA, an intermediate CA for agent identity, and the certificates they issue.

The seed's hierarchy (section 5): the root CA key is in a token and used offline, only to create the
intermediate (`init`); the intermediate's key is in a token and signs agent certificates (Ed25519,
the SPIFFE ID as URI SAN, 24 h by default), the SAE signing key's certificate and the OCSP signer's;
the OCSP signer (a delegated responder, id-kp-OCSPSigning, its key a file) signs OCSP responses
so the token is not asked for one signature per status request. File keys instead of tokens exist
for development (`--file-keys`).

A PKI directory holds `pki.json` (where the CA keys are), `root.crt`, `intermediate.crt`,
`ocsp-signer.crt` + `ocsp-signer.key`, `issued.sqlite3` (every certificate issued, its
status and revocation) and `events.jsonl` (lifecycle events, OCSF).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from ext_authz.errors import ConfigError
from ext_authz.pki.events import EventLog, certificate_event
from ext_authz.pki.x509sign import public_key_of, sign_certificate
from ext_authz.signing.base import Signer
from ext_authz.signing.file_key import Ed25519Signer, load_file_signer
from ext_authz.signing.pkcs11 import HsmKey

ROOT_LIFETIME = dt.timedelta(days=3650)  # seed: 10 years
INTERMEDIATE_LIFETIME = dt.timedelta(days=730)  # seed: 2 years
AGENT_LIFETIME = dt.timedelta(hours=24)  # seed: 24 h
OCSP_SIGNER_LIFETIME = dt.timedelta(days=30)
MAX_AGENT_LIFETIME = dt.timedelta(days=7)
BACKDATE = dt.timedelta(minutes=1)  # clocks of verifiers a little behind
REASONS = ("unspecified", "key_compromise", "affiliation_changed", "superseded", "cessation_of_operation")

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class KeySpec:
    """Where a CA key lives: a file in the PKI directory (development) or a PKCS#11 token (PIN from the environment)."""

    file: str | None = None
    pkcs11: HsmKey | None = None

    def to_json(self) -> dict[str, Any]:
        if self.pkcs11 is not None:
            return {"pkcs11": {"module": self.pkcs11.module, "token": self.pkcs11.token, "key": self.pkcs11.key}}
        return {"file": self.file}

    @classmethod
    def from_json(cls, doc: Any, where: str) -> KeySpec:
        if isinstance(doc, dict) and set(doc) == {"file"} and isinstance(doc["file"], str):
            return cls(file=doc["file"])
        if isinstance(doc, dict) and set(doc) == {"pkcs11"} and isinstance(doc["pkcs11"], dict) \
                and set(doc["pkcs11"]) == {"module", "token", "key"}:
            return cls(pkcs11=HsmKey(**doc["pkcs11"]))
        raise ConfigError(f"{where}: expected {{file: PATH}} or {{pkcs11: {{module, token, key}}}}")

    def open(self, directory: Path) -> Signer:
        if self.pkcs11 is not None:
            from ext_authz.signing.pkcs11 import hsm_signer

            return hsm_signer(self.pkcs11)
        assert self.file is not None
        return load_file_signer(directory / self.file)


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key_pem: bytes | None  # None when the key stays with its owner (the SAE signing key)
    chain_pem: bytes  # the certificate then the intermediate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def serial(self) -> int:
        return self.cert.serial_number

    def write(self, directory: str | Path, name: str) -> tuple[Path, Path]:
        """`name.crt` (the chain) and `name.key` (mode 0600), each replaced atomically: a reader sees the old
        pair or the new one (write the key first, so a new chain never meets an old key for long)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        cert, key = d / f"{name}.crt", d / f"{name}.key"
        if self.key_pem is not None:
            _atomic_write(key, self.key_pem, 0o600)
        _atomic_write(cert, self.chain_pem, 0o644)
        return cert, key


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Sealgate"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                         key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False)


def _leaf_usage(key_agreement: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                         key_agreement=key_agreement, key_cert_sign=False, crl_sign=False, encipher_only=False,
                         decipher_only=False)


def _pem_private(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _utc(t: dt.datetime) -> int:
    return int(t.timestamp())


SCHEMA = """
CREATE TABLE IF NOT EXISTS issued (
  serial TEXT PRIMARY KEY,          -- hex
  subject TEXT NOT NULL,            -- SPIFFE ID, or the host name of a server certificate
  kind TEXT NOT NULL,               -- agent, server, sae_signer, ocsp_signer, intermediate
  not_before INTEGER NOT NULL,
  not_after INTEGER NOT NULL,
  revoked_at INTEGER,
  reason TEXT,
  pem TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS issued_subject ON issued (subject);
"""


class CertificateAuthority:
    """The intermediate CA of a PKI directory: issues, revokes and answers status. Thread-safe."""

    def __init__(self, directory: str | Path, clock: Any = time.time):
        self.directory = Path(directory)
        try:
            doc = json.loads((self.directory / "pki.json").read_text())
        except OSError as e:
            raise ConfigError(f"PKI directory {directory}: no pki.json ({e.strerror}): `sealgate pki init`") from e
        if not isinstance(doc, dict) or doc.get("version") != 1:
            raise ConfigError(f"{directory}/pki.json: expected version 1")
        self.trust_domain: str = doc["trust_domain"]
        self.ocsp_url: str | None = doc.get("ocsp_url")
        self._intermediate_spec = KeySpec.from_json(doc["intermediate"], "pki.json intermediate")
        self.root = x509.load_pem_x509_certificate((self.directory / "root.crt").read_bytes())
        self.intermediate = x509.load_pem_x509_certificate((self.directory / "intermediate.crt").read_bytes())
        self._clock = clock
        self._signer: Signer | None = None
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.directory / "issued.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.executescript(SCHEMA)
        self.events = EventLog(self.directory / "events.jsonl")

    # ------------------------------------------------------------------ keys
    def _intermediate_signer(self) -> Signer:
        if self._signer is None:
            self._signer = self._intermediate_spec.open(self.directory)
            if public_key_of(self._signer) != self.intermediate.public_key():
                raise ConfigError("the intermediate CA key is not the one intermediate.crt names")
        return self._signer

    def close(self) -> None:
        close = getattr(self._signer, "close", None)
        if close is not None:
            close()
        self._db.close()

    @property
    def chain_pem(self) -> bytes:
        return self.intermediate.public_bytes(serialization.Encoding.PEM)

    @property
    def bundle_pem(self) -> bytes:
        """What a relying party trusts: the root (and the intermediate, for TLS stacks that want both)."""
        return self.root.public_bytes(serialization.Encoding.PEM)

    # ------------------------------------------------------------------ issuing
    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(int(self._clock()), dt.UTC)

    def _leaf(self, subject_cn: str, public_key: PublicKey, san: list[x509.GeneralName], eku: list[x509.ObjectIdentifier],
              lifetime: dt.timedelta, *, key_agreement: bool = False, ocsp_nocheck: bool = False) -> x509.Certificate:
        now = self._now()
        builder = (x509.CertificateBuilder()
                   .subject_name(_name(subject_cn))
                   .issuer_name(self.intermediate.subject)
                   .public_key(public_key)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - BACKDATE)
                   .not_valid_after(now + lifetime)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(_leaf_usage(key_agreement), critical=True)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.intermediate.public_key()),  # type: ignore[arg-type]
                                  critical=False)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        if eku:
            builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        if ocsp_nocheck:
            builder = builder.add_extension(x509.OCSPNoCheck(), critical=False)
        elif self.ocsp_url:
            builder = builder.add_extension(x509.AuthorityInformationAccess(
                [x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(self.ocsp_url))]),
                critical=False)
        with self._lock:
            return sign_certificate(builder, self._intermediate_signer(), self.intermediate.public_key())  # type: ignore[arg-type]

    def _record(self, cert: x509.Certificate, subject: str, kind: str) -> None:
        pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        with self._lock:
            renewing = kind in ("agent", "server") and self._db.execute(
                "SELECT 1 FROM issued WHERE subject = ? AND kind = ? AND revoked_at IS NULL AND not_after > ?",
                (subject, kind, int(self._clock()))).fetchone() is not None
            self._db.execute("INSERT INTO issued (serial, subject, kind, not_before, not_after, pem) VALUES (?, ?, ?, ?, ?, ?)",
                             (f"{cert.serial_number:x}", subject, kind, _utc(cert.not_valid_before_utc),
                              _utc(cert.not_valid_after_utc), pem))
        self.events.emit(certificate_event("renewed" if renewing else "issued", serial=cert.serial_number, subject=subject,
                                           not_before=_utc(cert.not_valid_before_utc),
                                           not_after=_utc(cert.not_valid_after_utc), issuer=self.intermediate.subject.rfc4514_string()))

    def _check_spiffe_id(self, spiffe_id: str) -> None:
        prefix = f"spiffe://{self.trust_domain}/"
        if not spiffe_id.startswith(prefix) or len(spiffe_id) > 2048 or any(
                seg in ("", ".", "..") for seg in spiffe_id[len(prefix):].split("/")):
            raise ConfigError(f"expected a SPIFFE ID under {prefix}, found {spiffe_id[:80]!r}")

    def issue_agent(self, spiffe_id: str, lifetime: dt.timedelta = AGENT_LIFETIME,
                    key: ed25519.Ed25519PrivateKey | None = None) -> Issued:
        """An agent's identity: an Ed25519 key (new, or `key` when renewing an agent whose key the on-chain
        registry binds), the SPIFFE ID as the only SAN, client authentication."""
        self._check_spiffe_id(spiffe_id)
        if not dt.timedelta(minutes=1) <= lifetime <= MAX_AGENT_LIFETIME:
            raise ConfigError(f"agent certificate lifetime must be 1 min to {MAX_AGENT_LIFETIME}, found {lifetime}")
        key = key or ed25519.Ed25519PrivateKey.generate()
        cert = self._leaf(spiffe_id, key.public_key(), [x509.UniformResourceIdentifier(spiffe_id)],
                          [ExtendedKeyUsageOID.CLIENT_AUTH], lifetime)
        self._record(cert, spiffe_id, "agent")
        return Issued(cert, _pem_private(key), cert.public_bytes(serialization.Encoding.PEM) + self.chain_pem)

    def issue_server(self, spiffe_id: str, host: str = "localhost", lifetime: dt.timedelta = AGENT_LIFETIME) -> Issued:
        """A mesh workload's TLS certificate (a sidecar): ECDSA P-256 (Envoy serves RSA or ECDSA keys only),
        the SPIFFE ID, the host name and 127.0.0.1, usable both ways."""
        self._check_spiffe_id(spiffe_id)
        key = ec.generate_private_key(ec.SECP256R1())
        san = [x509.UniformResourceIdentifier(spiffe_id), x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        cert = self._leaf(spiffe_id, key.public_key(), san, [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
                          lifetime, key_agreement=True)
        self._record(cert, spiffe_id, "server")
        return Issued(cert, _pem_private(key), cert.public_bytes(serialization.Encoding.PEM) + self.chain_pem)

    def issue_sae_signer(self, spiffe_id: str, public_key: PublicKey, lifetime: dt.timedelta) -> Issued:
        """The authorizer's SAE signing key (its private half stays where it is: file or token)."""
        self._check_spiffe_id(spiffe_id)
        cert = self._leaf(spiffe_id, public_key, [x509.UniformResourceIdentifier(spiffe_id)], [], lifetime)
        self._record(cert, spiffe_id, "sae_signer")
        return Issued(cert, None, cert.public_bytes(serialization.Encoding.PEM) + self.chain_pem)

    def issue_ocsp_signer(self, lifetime: dt.timedelta = OCSP_SIGNER_LIFETIME) -> Issued:
        """The delegated OCSP responder (RFC 6960 §4.2.2.2): id-kp-OCSPSigning, id-pkix-ocsp-nocheck."""
        key = ed25519.Ed25519PrivateKey.generate()
        subject = f"spiffe://{self.trust_domain}/sealgate/ocsp"
        cert = self._leaf(subject, key.public_key(), [], [ExtendedKeyUsageOID.OCSP_SIGNING], lifetime, ocsp_nocheck=True)
        self._record(cert, subject, "ocsp_signer")
        return Issued(cert, _pem_private(key), cert.public_bytes(serialization.Encoding.PEM) + self.chain_pem)

    # ------------------------------------------------------------------ revocation and status
    def revoke(self, *, serial: int | None = None, subject: str | None = None, reason: str = "unspecified") -> list[int]:
        """Revokes one certificate (serial) or every unexpired one of a subject; returns the serials revoked."""
        if reason not in REASONS:
            raise ConfigError(f"reason must be one of {REASONS}, found {reason!r}")
        if (serial is None) == (subject is None):
            raise ConfigError("revoke one --serial or every certificate of one --spiffe-id")
        now = int(self._clock())
        with self._lock:
            if serial is not None:
                rows = self._db.execute("SELECT serial, subject, not_before, not_after FROM issued WHERE serial = ? "
                                        "AND revoked_at IS NULL", (f"{serial:x}",)).fetchall()
            else:
                rows = self._db.execute("SELECT serial, subject, not_before, not_after FROM issued WHERE subject = ? "
                                        "AND revoked_at IS NULL AND not_after > ?", (subject, now)).fetchall()
            for row in rows:
                self._db.execute("UPDATE issued SET revoked_at = ?, reason = ? WHERE serial = ?", (now, reason, row[0]))
        for s, subj, nb, na in rows:
            self.events.emit(certificate_event("revoked", serial=int(s, 16), subject=subj, not_before=nb, not_after=na,
                                               issuer=self.intermediate.subject.rfc4514_string(), reason=reason))
        return [int(r[0], 16) for r in rows]

    def status(self, serial: int) -> tuple[str, int | None, str | None]:
        """("good" | "revoked" | "unknown", revoked_at, reason) of a serial this CA issued."""
        with self._lock:
            row = self._db.execute("SELECT revoked_at, reason FROM issued WHERE serial = ?", (f"{serial:x}",)).fetchone()
        if row is None:
            return "unknown", None, None
        return ("revoked", row[0], row[1]) if row[0] is not None else ("good", None, None)

    def issued(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT serial, subject, kind, not_before, not_after, revoked_at, reason FROM issued "
                                    "ORDER BY not_before").fetchall()
        return [dict(zip(("serial", "subject", "kind", "not_before", "not_after", "revoked_at", "reason"), r, strict=True))
                for r in rows]

    def expiring(self, within_seconds: int) -> list[dict[str, Any]]:
        """Unrevoked agent certificates expiring within the window, each reported once (an expiry warning event)."""
        now = int(self._clock())
        with self._lock:
            self._db.execute("CREATE TABLE IF NOT EXISTS warned (serial TEXT PRIMARY KEY)")
            rows = self._db.execute("SELECT serial, subject, not_before, not_after FROM issued WHERE kind = 'agent' "
                                    "AND revoked_at IS NULL AND not_after > ? AND not_after <= ? "
                                    "AND serial NOT IN (SELECT serial FROM warned)", (now, now + within_seconds)).fetchall()
            for r in rows:
                self._db.execute("INSERT INTO warned (serial) VALUES (?)", (r[0],))
        for s, subj, nb, na in rows:
            self.events.emit(certificate_event("expiry_warning", serial=int(s, 16), subject=subj, not_before=nb, not_after=na,
                                               issuer=self.intermediate.subject.rfc4514_string()))
        return [{"serial": r[0], "subject": r[1], "not_after": r[3]} for r in rows]


def init_pki(directory: str | Path, trust_domain: str, *, root: KeySpec, intermediate: KeySpec,
             ocsp_url: str | None = None) -> CertificateAuthority:
    """Creates the root certificate (self-signed by the root key), the intermediate (signed by the root key: its
    only use), and the OCSP signer. File key specs that do not exist yet are created (development)."""
    d = Path(directory)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    if (d / "pki.json").exists():
        raise ConfigError(f"{d}/pki.json exists: this directory already holds a PKI")
    for spec in (root, intermediate):
        if spec.file is not None and not (d / spec.file).exists():
            Ed25519Signer.from_file(d / spec.file, create=True)
    now = dt.datetime.now(dt.UTC)
    int_signer = intermediate.open(d)  # only its public key; closed before the root logs in (one login per token)
    try:
        int_public = public_key_of(int_signer)
    finally:
        close = getattr(int_signer, "close", None)
        if close is not None:
            close()
    root_signer = root.open(d)
    try:
        root_public = public_key_of(root_signer)
        root_name = _name(f"Sealgate Root CA ({trust_domain})")
        root_cert = sign_certificate(
            x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name).public_key(root_public)
            .serial_number(x509.random_serial_number()).not_valid_before(now - BACKDATE).not_valid_after(now + ROOT_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_ca_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_public), critical=False),
            root_signer, root_public)
        int_cert = sign_certificate(
            x509.CertificateBuilder().subject_name(_name(f"Sealgate Agent Identity CA ({trust_domain})"))
            .issuer_name(root_name).public_key(int_public).serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + INTERMEDIATE_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(int_public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_public), critical=False),
            root_signer, root_public)
    finally:
        close = getattr(root_signer, "close", None)
        if close is not None:
            close()
    (d / "root.crt").write_bytes(root_cert.public_bytes(serialization.Encoding.PEM))
    (d / "intermediate.crt").write_bytes(int_cert.public_bytes(serialization.Encoding.PEM))
    (d / "pki.json").write_text(json.dumps({"version": 1, "trust_domain": trust_domain, "ocsp_url": ocsp_url,
                                            "root": root.to_json(), "intermediate": intermediate.to_json()}, indent=2))
    ca = CertificateAuthority(d)
    ca.events.emit(certificate_event("issued", serial=int_cert.serial_number, subject=int_cert.subject.rfc4514_string(),
                                     not_before=_utc(int_cert.not_valid_before_utc), not_after=_utc(int_cert.not_valid_after_utc),
                                     issuer=root_cert.subject.rfc4514_string()))
    ocsp = ca.issue_ocsp_signer()
    ocsp.write(d, "ocsp-signer")
    return ca
