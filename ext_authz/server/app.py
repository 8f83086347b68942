"""Wires the authorizer process: pinned policy, signer, decision maker, anchoring, gRPC and admin."""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

import grpc

from ext_authz.anchoring.store import AnchorStore
from ext_authz.authz.approvals import ApprovalVerifier
from ext_authz.authz.decision import DecisionMaker
from ext_authz.chain.manifest import Manifest
from ext_authz.envelope.jws import EnvelopeEncoder
from ext_authz.errors import ConfigError, SigningError
from ext_authz.evidence.commit import GroupCommitter
from ext_authz.evidence.sqlite import SqliteEvidenceStore
from ext_authz.evidence.store import EvidenceUnavailable
from ext_authz.policy.pinned import PinnedPolicy
from ext_authz.server.admin import serve_admin
from ext_authz.server.config import AuthorizerConfig
from ext_authz.server.grpc_loop import ExtAuthzServer
from ext_authz.server.grpc_service import AuthorizationService
from ext_authz.signing.base import Signer, jwks_of

log = logging.getLogger("sealgate")


@dataclass(frozen=True)
class MeshTls:
    """The authorizer's side of mutual TLS with the mesh's Envoys on other hosts (PEM files' contents)."""

    cert_pem: bytes
    key_pem: bytes
    client_ca_pem: bytes  # the CA that issues the Envoys' mesh certificates

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key_pem, self.cert_pem)], root_certificates=self.client_ca_pem,
                                           require_client_auth=True)


def check_grpc_address(address: str, tls: MeshTls | None, mesh_clients: tuple[str, ...]) -> None:
    """Only the mesh may reach the authorizer: a Unix socket (mode 0600), or TCP with mutual TLS and an allowlist."""
    if address.startswith("unix:"):
        if tls is not None:
            raise ConfigError("a Unix socket needs no TLS: give unix:PATH or host:port with TLS, not both")
        return
    if tls is None:
        raise ConfigError(f"gRPC address {address}: a TCP port needs mutual TLS (--tls-cert, --tls-key, --client-ca); "
                          "whoever reaches a plain port can ask for any agent's SAE. On one host use unix:PATH")
    if not mesh_clients:
        raise ConfigError("mutual TLS without an allowlist: set mesh_clients in the config to the Envoys' URI SANs")


@dataclass
class Authorizer:
    config: AuthorizerConfig
    manifest: Manifest
    signer: Signer
    allow_all: bool = False

    def start(self, grpc_address: str, admin_address: tuple[str, int], tls: MeshTls | None = None) -> int:
        check_grpc_address(grpc_address, tls, self.config.mesh_clients)
        self.jwks = jwks_of(self.signer)
        self.policy = PinnedPolicy(self.manifest.rpc_url, self.manifest.policy_registry,
                                   bytes.fromhex(self.manifest.policy_id.removeprefix("0x")),
                                   watch=(self.manifest.registry, self.manifest.models, self.manifest.approvers),
                                   approvers=self.manifest.approvers,
                                   poll_seconds=self.config.state_poll_seconds,
                                   max_age_seconds=self.config.max_state_age_seconds,
                                   fetch_timeout_seconds=self.config.policy_fetch_timeout_seconds,
                                   fetch_inline=False)
        self.policy.start()
        # the tokens and the anchor queue: one SQLite file, one durable transaction per group of decisions
        self.evidence = SqliteEvidenceStore(self.config.anchor.db_path)
        self.evidence.start_checkpoints()  # never on a decision's commit
        self.anchor_store = AnchorStore(self.config.anchor.db_path)
        self.committer = GroupCommitter(self.evidence, max_group=self.config.evidence.max_group,
                                        retention_seconds=self.config.evidence.retention_days * 86400)
        self.committer.start()
        self._last_evidence_probe = 0.0
        approvals = ApprovalVerifier(self.policy.approver_key, claim=self.evidence.claim_approval)
        decider = DecisionMaker(self.config, EnvelopeEncoder(self.signer), self.policy, self.manifest.chain_id,
                                self.manifest.anchor, self.jwks, approvals=approvals)
        self.service = AuthorizationService(self.config, decider, self.committer.submit, allow_all=self.allow_all,
                                            signing_threads=self.config.signing_threads if self.signer.blocking else 0,
                                            mesh_clients=frozenset(self.config.mesh_clients) if tls else None,
                                            fetch_state=self.policy.fetch)
        self.grpc_server = ExtAuthzServer(self.service, grpc_address, tls.credentials() if tls else None)
        port = self.grpc_server.start()
        self._last_probe = 0.0
        self.admin = serve_admin(admin_address, self.status, self.jwks)
        return port

    SIGNER_PROBE_SECONDS = 1.0

    def _signer_error(self) -> str | None:
        """The signer's last failure, re-probed at most once a second: healthy again once it signs."""
        error = self.service.signing_error
        now = time.monotonic()
        if error is not None and now - self._last_probe >= self.SIGNER_PROBE_SECONDS:
            self._last_probe = now
            try:
                self.signer.sign(b"sealgate health probe")
                self.service.signing_error = error = None
            except SigningError as e:
                self.service.signing_error = error = str(e)
        return error

    def _evidence_error(self) -> str | None:
        """The evidence store's last failure; re-probed (one durable write) at most once a second, so readiness
        turns green again only once the store can persist."""
        error = self.service.evidence_error or self.committer.last_error
        now = time.monotonic()
        if error is not None and now - self._last_evidence_probe >= self.SIGNER_PROBE_SECONDS:
            self._last_evidence_probe = now
            try:
                self.evidence.probe()
                self.service.evidence_error = self.committer.last_error = error = None
            except EvidenceUnavailable as e:
                error = str(e)
        return error

    def _store_counts(self) -> dict[str, int] | str:
        try:
            return self.anchor_store.counts()
        except sqlite3.Error as e:
            return f"unreadable: {e}"

    def status(self) -> dict[str, Any]:
        pinned_block = self.policy.block
        fresh = pinned_block is not None and self.policy.age_seconds() <= self.config.max_state_age_seconds
        signing_error = self._signer_error()
        evidence_error = self._evidence_error()
        return {
            "healthy": fresh and signing_error is None and evidence_error is None,
            "signing_error": signing_error,
            "evidence_error": evidence_error,
            "pinned_block": pinned_block,
            "policy_registry": self.manifest.policy_registry,
            "policy_id": self.manifest.policy_id,
            "anchor": self.manifest.anchor,
            "chain_id": self.manifest.chain_id,
            "kid": self.signer.kid,
            "decisions": dict(self.service.counters),
            "anchor_queue": self.committer.queued,  # records waiting for their group's fsync
            "anchor_store": self._store_counts(),
            "evidence_commits": self.committer.commits,
            "evidence_committed": self.committer.committed,
            "evidence_commit_ms": self.committer.commit_ms(),
            "allow_all": self.allow_all,
        }

    def stop(self) -> None:
        self.grpc_server.stop(grace=2)
        self.service.close()
        self.admin.shutdown()
        self.policy.stop()
        self.committer.stop()  # writes what is queued (its decisions were not answered yet)
        close = getattr(self.signer, "close", None)
        if close is not None:
            close()  # an HSM signer logs out
