"""Local test CA and short-lived agent certificates (SPIFFE ID in the URI SAN).

For the local stack and tests; production agents get their SVIDs from SPIRE.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

AGENT_CERT_LIFETIME = dt.timedelta(hours=24)


@dataclass(frozen=True)
class Issued:
    cert_pem: str
    key_pem: str

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        cert.write_text(self.cert_pem)
        key.touch(mode=0o600)
        key.write_text(self.key_pem)
        return cert, key


def _pem(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Issued:
    return Issued(
        cert.public_bytes(serialization.Encoding.PEM).decode(),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode(),
    )


class LocalCA:
    def __init__(self, name: str = "Sealgate Local Agent CA"):
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(self._key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def _issue(self, subject: str, san: list[x509.GeneralName], usage: list, lifetime: dt.timedelta,
               not_before: dt.datetime | None = None) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + lifetime)
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return _pem(cert, key)

    def issue_agent(self, spiffe_id: str, lifetime: dt.timedelta = AGENT_CERT_LIFETIME,
                    not_before: dt.datetime | None = None) -> Issued:
        return self._issue(spiffe_id, [x509.UniformResourceIdentifier(spiffe_id)], [ExtendedKeyUsageOID.CLIENT_AUTH],
                           lifetime, not_before)

    def issue_server(self, host: str = "localhost") -> Issued:
        san = [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        return self._issue(host, san, [ExtendedKeyUsageOID.SERVER_AUTH], dt.timedelta(days=7))

    def issue_service(self, spiffe_id: str, host: str = "localhost") -> Issued:
        """A mesh workload's certificate (the authorizer, a sidecar): SPIFFE ID in the URI SAN, usable both ways."""
        san = [x509.UniformResourceIdentifier(spiffe_id), x509.DNSName(host),
               x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        return self._issue(spiffe_id, san, [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
                           dt.timedelta(days=1))
