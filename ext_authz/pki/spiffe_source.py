"""Workload identities from a SPIRE agent's Workload API, where one runs; the built-in PKI otherwise.

With `SPIFFE_ENDPOINT_SOCKET` (or `--socket`) naming a Workload API socket that exists, the X.509-SVID
(certificate chain, key) and the trust bundle come from SPIRE through the `spiffe` package, and every
rotation SPIRE pushes is written out as the built-in renewal writes its certificates: `NAME.key`,
`NAME.crt`, `NAME.sds.json` (Envoy file SDS) and `NAME.bundle.pem`, each replaced atomically. Without
a socket the caller falls back to `ext_authz.pki.renewal.Renewer` (the built-in PKI). The authorizer
needs nothing else: it reads the SPIFFE ID of the mTLS peer, whoever issued it (docs/keys.md).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from ext_authz.errors import ConfigError
from ext_authz.pki.ca import _atomic_write
from ext_authz.pki.renewal import SDS_SECRET_TYPE

log = logging.getLogger("sealgate.spiffe")
SOCKET_ENV = "SPIFFE_ENDPOINT_SOCKET"


def workload_api_socket(explicit: str | None = None) -> str | None:
    """The Workload API address (`unix:/path`) if given or in the environment and the socket exists, else None."""
    value = explicit or os.environ.get(SOCKET_ENV)
    if not value:
        return None
    path = value.removeprefix("unix://").removeprefix("unix:")
    return f"unix:{path}" if Path(path).exists() else None


class SvidWriter:
    """Writes each X.509 context the Workload API delivers: the default SVID and its trust domain's bundle."""

    def __init__(self, directory: str | Path, name: str):
        self.directory, self.name = Path(directory), name
        self.updates = 0
        self.spiffe_id: str | None = None
        self.error: str | None = None
        self.updated = threading.Event()

    def write(self, context: Any) -> None:
        svid = context.default_svid
        chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in svid.cert_chain)
        key = svid.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption())
        bundle = context.x509_bundle_set.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
        if bundle is None:
            raise ConfigError(f"the Workload API gave no bundle for {svid.spiffe_id.trust_domain}")
        roots = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in bundle.x509_authorities)
        self.directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.directory / f"{self.name}.key", key, 0o600)
        _atomic_write(self.directory / f"{self.name}.crt", chain, 0o644)
        _atomic_write(self.directory / f"{self.name}.bundle.pem", roots, 0o644)
        sds = {"resources": [{"@type": SDS_SECRET_TYPE, "name": self.name, "tls_certificate": {
            "certificate_chain": {"inline_string": chain.decode()}, "private_key": {"inline_string": key.decode()}}}]}
        _atomic_write(self.directory / f"{self.name}.sds.json", json.dumps(sds).encode(), 0o600)
        self.spiffe_id = str(svid.spiffe_id)
        self.updates += 1
        self.updated.set()
        log.info("SVID %s from the Workload API written (%d)", self.spiffe_id, self.updates)

    def failed(self, error: Exception) -> None:
        self.error = str(error)
        log.error("Workload API: %s", error)


def fetch_once(socket: str, writer: SvidWriter, timeout: float = 10.0) -> None:
    from spiffe import WorkloadApiClient

    with WorkloadApiClient(socket_path=socket) as client:
        writer.write(client.fetch_x509_context(timeout=timeout))


def watch(socket: str, writer: SvidWriter) -> Any:
    """Streams X.509 contexts (SPIRE pushes each rotation); returns the client and its cancel handle."""
    from spiffe import WorkloadApiClient

    client = WorkloadApiClient(socket_path=socket)
    handle = client.stream_x509_contexts(on_success=writer.write, on_error=writer.failed)
    return client, handle
