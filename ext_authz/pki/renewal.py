"""Certificates renewed before they expire, picked up by running workloads without a restart.

`Renewer` re-issues a workload's certificate once `renew_at` of its lifetime has passed (2/3 by default:
8 h of slack on a 24 h certificate) and writes, each replaced atomically, `NAME.key`, `NAME.crt` and
`NAME.sds.json`: an Envoy SDS resource (a `tls_certificate` secret) that a sidecar reads through a
file-based `path_config_source` watching the directory. Envoy swaps the secret for new handshakes;
connections already open keep theirs (nothing is dropped). An agent process reloads NAME.crt/NAME.key
for its next connection. Certificates about to expire unrenewed are reported as expiry warnings.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ext_authz.errors import ConfigError
from ext_authz.pki.ca import CertificateAuthority, Issued, _atomic_write

log = logging.getLogger("sealgate.pki.renewal")
SDS_SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def sds_resource(name: str, issued: Issued) -> dict[str, Any]:
    """A file-based SDS document with one TLS certificate secret named `name`."""
    assert issued.key_pem is not None
    return {"resources": [{"@type": SDS_SECRET_TYPE, "name": name, "tls_certificate": {
        "certificate_chain": {"inline_string": issued.chain_pem.decode()},
        "private_key": {"inline_string": issued.key_pem.decode()}}}]}


class Renewer:
    def __init__(self, ca: CertificateAuthority, spiffe_id: str, directory: Path, name: str, lifetime: dt.timedelta,
                 renew_at: float = 2 / 3, *, server: bool = False, keep_key: bool = False, clock: Any = time.time):
        """`keep_key`: an agent certificate renewed for the same key (an agent whose key fingerprint the
        on-chain AgentRegistry binds: a new key would be KEY_NOT_BOUND until a governed setKey)."""
        self.ca, self.spiffe_id, self.directory, self.name = ca, spiffe_id, Path(directory), name
        self.lifetime, self.renew_at, self.server, self._clock = lifetime, renew_at, server, clock
        self.keep_key = keep_key
        self.renewals = 0

    @property
    def cert_path(self) -> Path:
        return self.directory / f"{self.name}.crt"

    @property
    def sds_path(self) -> Path:
        return self.directory / f"{self.name}.sds.json"

    def _current(self) -> x509.Certificate | None:
        try:
            return x509.load_pem_x509_certificates(self.cert_path.read_bytes())[0]
        except (OSError, ValueError):
            return None

    def due_at(self) -> float:
        cert = self._current()
        if cert is None:
            return 0.0
        start, end = cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()
        return start + (end - start) * self.renew_at

    def seconds_until_due(self) -> float:
        return max(0.5, min(60.0, self.due_at() - self._clock()))

    def _kept_key(self) -> ed25519.Ed25519PrivateKey | None:
        if not self.keep_key:
            return None
        try:
            key = serialization.load_pem_private_key((self.directory / f"{self.name}.key").read_bytes(), None)
        except (OSError, ValueError):
            return None  # nothing yet: the first certificate gets a new key
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ConfigError(f"{self.name}.key is not an Ed25519 key: cannot keep it")
        return key

    def renew_if_due(self) -> bool:
        self.ca.expiring(int(self.lifetime.total_seconds() * (1 - self.renew_at) / 2))  # unrenewed for too long: warn
        if self._clock() < self.due_at():
            return False
        issued = (self.ca.issue_server(self.spiffe_id, lifetime=self.lifetime) if self.server
                  else self.ca.issue_agent(self.spiffe_id, self.lifetime, self._kept_key()))
        self.directory.mkdir(parents=True, exist_ok=True)
        issued.write(self.directory, self.name)
        _atomic_write(self.sds_path, json.dumps(sds_resource(self.name, issued)).encode(), 0o600)
        self.renewals += 1
        log.info("renewed %s: serial %x until %s", self.spiffe_id, issued.serial, issued.cert.not_valid_after_utc)
        return True
