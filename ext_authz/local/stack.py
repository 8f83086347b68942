"""The local stack: anvil + contracts + authorizer + agent sidecar Envoy + PEP Envoy + target.

Used by `make demo` and by the integration tests, so both run the same real parts.
Every process runs in its own session and is stopped (process group) on exit.
"""

from __future__ import annotations

import http.client
import importlib.resources
import json
import os
import signal
import ssl
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from eth_account import Account
from web3.types import RPCEndpoint

from ext_authz.authz.identity import spki_fingerprint
from ext_authz.chain.client import ChainClient
from ext_authz.chain.deploy import Bootstrap, deploy_all
from ext_authz.chain.dev import DEV_KEYS, DEV_OWNER_ACCOUNTS, dev_account
from ext_authz.chain.governance import Governance, rule_tuple
from ext_authz.errors import SealgateError
from ext_authz.local.net import (
    Response,
    anvil_binary,
    envoy_ready,
    free_port,
    http_get_json,
    request,
    tcp_open,
    unix_open,
    wait_until,
)
from ext_authz.local.pki import AGENT_CERT_LIFETIME, LocalCA
from ext_authz.mesh.configs import (
    AuthorizerTls,
    JwksUri,
    PepPorts,
    SidecarPorts,
    envoy_binary,
    pep_config,
    sds_from_file,
    sidecar_config,
)
from ext_authz.policy.abi import text_id
from ext_authz.server.config import DATA_CLASSES, config_from_dict
from ext_authz.signing.base import Signer, published_jwks
from ext_authz.signing.file_key import Ed25519Signer, load_file_signer, new_key_file
from ext_authz.signing.keyring import Keyring, init_keyring
from ext_authz.signing.pkcs11 import HsmKey, hsm_signer

DEFAULT_SPEC = Path(str(importlib.resources.files("ext_authz.local") / "local-stack.yaml"))
AUTHORITY = "payments.internal"
AUDIENCE = "payments-api"
APPROVER = "treasury-lead"


@dataclass
class StackPorts:
    """TCP ports; the authorizer's gRPC and the Envoys' admin interfaces are Unix sockets (LocalStack.socket)."""

    anvil: int = field(default_factory=free_port)
    authz_admin: int = field(default_factory=free_port)
    target: int = field(default_factory=free_port)
    pep: int = field(default_factory=free_port)
    sidecar: int = field(default_factory=free_port)
    anchor_http: int = field(default_factory=free_port)  # `sealgate anchor --listen`: /healthz, /v1/proofs/<hash>


class LocalStack:
    def __init__(self, workdir: str | Path, spec_path: str | Path = DEFAULT_SPEC, allow_all: bool = False,
                 authorizer_overrides: dict[str, Any] | None = None, hsm: HsmKey | None = None,
                 target_checks_sae: bool = True, sae_alg: str = "EdDSA", rotating_keys: bool = False,
                 jwks_cache_seconds: int = 10, agent_pki: bool = False, ocsp_validity_seconds: int = 5,
                 pki_keys: tuple[HsmKey, HsmKey] | None = None, stapling: bool = False,
                 endorse_period_seconds: int | None = None):
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "run").mkdir(mode=0o700, exist_ok=True)  # the stack's Unix sockets
        self.spec = yaml.safe_load(Path(spec_path).read_text())
        self.allow_all = allow_all
        self.hsm = hsm  # SAE key in a PKCS#11 token instead of a seed file (PIN in $SEALGATE_HSM_PIN)
        # the SAE key file: an Ed25519 seed (EdDSA) or a P-256 PEM key (ES256)
        self.sae_key = self.workdir / "keys" / ("sae-ed25519.seed" if sae_alg == "EdDSA" else "sae-p256.pem")
        self.sae_alg = sae_alg
        # a keyring (`sealgate keys init/rotate`) the authorizer follows; the PEP and its verifier fetch the JWKS
        # from the authorizer's admin endpoint (the target's own check reads a file: off in this mode)
        self.key_dir = self.workdir / "keys" / "sae-keyring" if rotating_keys else None
        self.jwks_cache_seconds = jwks_cache_seconds
        # the HSM key endorses short-lived in-memory keys (ext_authz.signing.endorsed) in the authorizer process
        self.endorse_period = endorse_period_seconds
        # the PEP follows the authorizer's JWKS (its keys change while running) instead of an inlined copy
        self.follows_jwks = rotating_keys or endorse_period_seconds is not None
        if self.follows_jwks:
            target_checks_sae = False
        # the agent PKI (ext_authz.pki) instead of the test CA: root + intermediate (keys in tokens with `pki_keys`,
        # else files), Ed25519 agent certificates, the sidecar's certificate renewed through file SDS, and OCSP
        # checked by the authorizer (answers valid `ocsp_validity_seconds`)
        self.agent_pki = agent_pki
        self.pki_keys = pki_keys
        self.ocsp_validity_seconds = ocsp_validity_seconds
        self.ocsp_port = free_port() if agent_pki else 0
        # the target re-checks each SAE, body digest included (off for benchmarks that skip the PEP)
        self.target_checks_sae = target_checks_sae
        self.ports = StackPorts()
        self.procs: dict[str, subprocess.Popen] = {}
        self.rpc_url = f"http://127.0.0.1:{self.ports.anvil}"
        raw = dict(self.spec["authorizer"])
        if agent_pki:
            raw["ocsp"] = {"responder_url": f"http://127.0.0.1:{self.ocsp_port}/",
                           "issuer_cert": str(self.workdir / "agent-pki" / "intermediate.crt")}
        if agent_pki and stapling:  # the SAE key certified by the PKI (start_authorizer), its OCSP answer stapled
            raw["stapling"] = {"chain": str(self.workdir / "keys" / "sae-cert-chain.pem"),
                               "responder_url": f"http://127.0.0.1:{self.ocsp_port}/"}
        raw.update(authorizer_overrides or {})
        raw["anchor"] = {**raw.get("anchor", {}), "db_path": str(self.workdir / "anchor.sqlite3")}
        # one person who may approve actions over a rule's approval threshold (registered on-chain at deploy)
        self.approver_key = self.workdir / "keys" / "approver-treasury-lead.seed"
        self.approver = Ed25519Signer.from_file(self.approver_key, create=True)
        self.config_raw = raw
        self.config = config_from_dict(raw, "local-stack.authorizer")
        self.trust_domain = self.config.trust_domain
        self.issuer = self.config.issuer  # iss of the authorizer's SAEs and denials, pinned at the PEP
        self.guardian = Account.from_key(DEV_KEYS["guardian"])
        self.owners = [dev_account(i) for i in DEV_OWNER_ACCOUNTS]

    # ------------------------------------------------------------ processes

    def socket(self, name: str) -> str:
        """The address of one of the stack's Unix sockets (authorizer gRPC, Envoy admin, PEP verifier)."""
        return f"unix:{self.workdir / 'run' / f'{name}.sock'}"

    @property
    def authz_socket(self) -> str:
        return self.socket("authorizer")

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, **(env or {})}, cwd=self.workdir)
        log.close()
        self.procs[name] = proc
        return proc

    def stop_process(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)

    def stop(self) -> None:
        # front to back, so nothing is left waiting on a dead upstream; anvil last
        for name in [n for n in reversed(list(self.procs)) if n != "anvil"] + ["anvil"]:
            self.stop_process(name)
        close = getattr(getattr(self, "signer", None), "close", None)
        if close is not None:
            close()  # an HSM signer logs out of its token
        authority = getattr(self, "authority", None)
        if authority is not None:
            authority.close()

    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _check_alive(self, name: str) -> bool:
        proc = self.procs[name]
        if proc.poll() is not None:
            log = (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]
            raise SealgateError(f"{name} exited with {proc.returncode}:\n{log}")
        return True

    # ------------------------------------------------------------ start

    def start(self) -> None:
        self.make_pki()
        self.start_chain()
        if self.agent_pki:
            self.start_ocsp()
        self.start_authorizer()
        self.start_target_and_pep()
        self.start_sidecar()

    def make_pki(self) -> None:
        """Local CA, the sidecar's server certificate, one client certificate per agent."""
        if self.agent_pki:
            self.make_agent_pki()
            return
        pki = self.workdir / "pki"
        self.ca = LocalCA()
        pki.mkdir(parents=True, exist_ok=True)
        (pki / "ca.crt").write_text(self.ca.cert_pem)
        self.server_cert = self.ca.issue_server()
        self.agent_certs: dict[str, tuple[Path, Path]] = {}
        self.agent_fingerprints: dict[str, bytes] = {}
        for agent in self.spec["agents"]:
            issued = self.ca.issue_agent(self.spiffe_id(agent["name"]))
            self.agent_certs[agent["name"]] = issued.write(pki, agent["name"])
            self.agent_fingerprints[agent["name"]] = spki_fingerprint(issued.cert_pem)

    def make_agent_pki(self) -> None:
        from ext_authz.pki.ca import KeySpec, init_pki
        from ext_authz.pki.renewal import Renewer

        pki = self.workdir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        self.pki_dir = self.workdir / "agent-pki"
        root, intermediate = ((KeySpec(pkcs11=self.pki_keys[0]), KeySpec(pkcs11=self.pki_keys[1])) if self.pki_keys
                              else (KeySpec(file="keys/root-ca.seed"), KeySpec(file="keys/agent-ca.seed")))
        self.authority = init_pki(self.pki_dir, self.trust_domain, root=root, intermediate=intermediate,
                                  ocsp_url=f"http://127.0.0.1:{self.ocsp_port}/")
        (pki / "ca.crt").write_bytes(self.authority.bundle_pem)
        self.agent_certs = {}
        self.agent_fingerprints = {}
        for agent in self.spec["agents"]:
            issued = self.authority.issue_agent(self.spiffe_id(agent["name"]))
            self.agent_certs[agent["name"]] = issued.write(pki, agent["name"])
            self.agent_fingerprints[agent["name"]] = spki_fingerprint(issued.cert_pem.decode())
        self.sidecar_renewer = Renewer(self.authority, f"spiffe://{self.trust_domain}/mesh/sidecar", pki, "sidecar",
                                       AGENT_CERT_LIFETIME, server=True)
        self.sidecar_renewer.renew_if_due()

    def start_ocsp(self) -> None:
        self._spawn("ocsp", [sys.executable, "-m", "ext_authz.cli", "pki", "ocsp", "--dir", str(self.pki_dir),
                             "--listen", f"127.0.0.1:{self.ocsp_port}", "--validity", str(self.ocsp_validity_seconds)])
        wait_until(lambda: self._check_alive("ocsp") and tcp_open(self.ocsp_port), 20, "OCSP responder")

    def start_chain(self) -> None:
        self._spawn("anvil", [anvil_binary(), "--host", "127.0.0.1", "--port", str(self.ports.anvil),
                              "--config-out", str(self.workdir / "anvil.json")])
        wait_until(lambda: self._check_alive("anvil") and ChainClient(self.rpc_url, timeout=1).w3.is_connected(), 30, "anvil")
        self.manifest = deploy_all(self.rpc_url, self.workdir / "addresses.json",
                                   delay_seconds=self.spec["governance"]["delay_seconds"], bootstrap=self._seed)
        self.chain = ChainClient(self.rpc_url)
        self.gov = Governance(self.chain, self.manifest)
        self.registry = self.gov.registry
        self.models = self.gov.models
        self.policy = self.chain.contract("RuleBasedPolicy", self.manifest.policy)
        self.policy_registry = self.gov.policy_registry
        self.anchor = self.chain.contract("SaeAnchor", self.manifest.anchor)
        self.approvers = self.gov.approvers

    def _seed(self, b: Bootstrap) -> None:
        """Bootstrap window (the deployer still holds the admin roles): demo models, agents, rules, approver."""
        for m in self.spec["models"]:
            b.client.transact(b.deployer, b.models.functions.register(text_id(m["id"]), bytes.fromhex(m["sha256"]), m["sbom"]))
        for a in self.spec["agents"]:
            if a.get("register", True):
                key = self.agent_fingerprints[a["name"]] if a.get("bind_key") else bytes(32)
                fn = b.registry.functions.register(text_id(self.spiffe_id(a["name"])), text_id(a["org"]), text_id(a["role"]),
                                                   text_id(a["model"]), key)
                b.client.transact(b.deployer, fn)
        for r in self.spec["rules"]:
            fn = b.policy.functions.setRule(text_id(r["role"]), text_id(r["action_type"]), text_id(r["target"]),
                                            self.rule_from_spec(r))
            b.client.transact(b.deployer, fn)
        b.client.transact(b.deployer, b.approvers.functions.register(text_id(APPROVER), self.approver.raw_public))
        # the SAE signing key in the SigningKeyRegistry: verifiers take it from the chain, not from our JWKS
        from ext_authz.chain.keys import call_add_key

        for jwk in published_jwks(self.sae_signer())["keys"]:
            b.send(call_add_key(b.client, b.signing_keys.address, jwk, 0))
    @staticmethod
    def rule_from_spec(r: dict[str, Any]) -> tuple:
        return rule_tuple(r["max_amount"], r.get("approval_threshold", 0),
                          tuple(DATA_CLASSES.index(c) for c in r.get("data_classes", ["public", "internal"])),
                          r.get("max_risk_score", 100), r.get("utc_hours", 0x00FFFFFF), r.get("required_model"),
                          r.get("enabled", True))

    def spiffe_id(self, agent_name: str) -> str:
        return f"spiffe://{self.trust_domain}/agent/{agent_name}"

    # ------------------------------------------------------------ governance (Safe -> timelock) and guardian

    def time_travel(self, seconds: int) -> None:
        self.chain.w3.provider.make_request(RPCEndpoint("evm_increaseTime"), [seconds])
        self.chain.w3.provider.make_request(RPCEndpoint("evm_mine"), [])

    def govern(self, call: tuple) -> Any:
        """Propose through the Safe, approve with the threshold of owners, wait out the delay, execute."""
        proposal = self.gov.propose(call)
        for owner in self.owners[: self.manifest.threshold]:
            self.gov.approve(proposal, owner)
        self.gov.submit(proposal, self.owners[0])
        self.time_travel(self.manifest.delay_seconds + 1)
        return self.gov.execute(proposal, self.owners[0])

    def set_rule(self, role: str, action_type: str, target: str, **rule: Any) -> Any:
        return self.govern(self.gov.call_set_rule(role, action_type, target,
                                                  self.rule_from_spec({"role": role, **rule})))

    def revoke(self, name: str) -> int:
        """Guardian: immediate."""
        return self.chain.transact(self.guardian, self.registry.functions.revoke(text_id(self.spiffe_id(name)))).blockNumber

    def reactivate(self, name: str) -> int:
        """Governed: through the Safe and the timelock."""
        return self.govern(self.gov.call_reactivate(self.spiffe_id(name))).blockNumber

    def pause_policy(self) -> int:
        policy = self.gov.current_policy()
        return self.chain.transact(self.guardian, policy.functions.pause()).blockNumber

    def unpause_policy(self) -> int:
        return self.govern(self.gov.call_unpause()).blockNumber

    def sae_signer(self) -> Signer:
        """The authorizer's SAE key (made once: registered on-chain at deploy, used by the authorizer)."""
        if getattr(self, "signer", None) is None:
            if self.key_dir is not None:
                if not (self.key_dir / "keyring.json").exists():
                    init_keyring(self.key_dir, self.sae_alg)
                self.signer: Signer = Keyring(self.key_dir).start()
            elif self.hsm is None:
                if not self.sae_key.exists():
                    new_key_file(self.sae_key, self.sae_alg)
                self.signer = load_file_signer(self.sae_key)
            else:
                self.signer = hsm_signer(self.hsm)
        return self.signer

    def start_authorizer(self) -> None:
        self.signer = self.sae_signer()
        self.jwks = published_jwks(self.signer)  # a keyring's: live, as the authorizer's
        if "stapling" in self.config_raw:
            from ext_authz.pki.x509sign import public_key_of

            chain = self.authority.issue_sae_signer(self.issuer, public_key_of(self.signer), AGENT_CERT_LIFETIME).chain_pem
            Path(self.config_raw["stapling"]["chain"]).write_bytes(chain)
        self.spawn_authorizer("authorizer", self.authz_socket, self.ports.authz_admin, self.allow_all,
                              self.workdir / "anchor.sqlite3")
        if self.endorse_period is not None:  # the keys are the authorizer process's own: what it publishes
            self.jwks = http_get_json(self.jwks_url)
        self._spawn("anchorer", [sys.executable, "-m", "ext_authz.cli", "anchor", "--config", str(self.workdir / "authorizer.json"),
                                 "--manifest", str(self.workdir / "addresses.json"),
                                 "--listen", f"127.0.0.1:{self.ports.anchor_http}"],
                    env={"SEALGATE_ANCHORER_KEY": DEV_KEYS["anchorer"]})

    def spawn_authorizer(self, name: str, grpc: str, admin_port: int, allow_all: bool, anchor_db: Path,
                         extra_args: tuple[str, ...] = (), config_overrides: dict[str, Any] | None = None) -> None:
        """Starts an authorizer process on this stack's chain and key; waits until its state is fresh."""
        raw = {**self.config_raw, "anchor": {**self.config_raw["anchor"], "db_path": str(anchor_db)},
               **(config_overrides or {})}
        config_path = self.workdir / f"{name}.json"
        config_path.write_text(json.dumps(raw, indent=2))
        argv = [sys.executable, "-m", "ext_authz.cli", "serve", "--config", str(config_path),
                "--manifest", str(self.workdir / "addresses.json"), *self._signer_args(),
                "--grpc", grpc, "--admin", f"127.0.0.1:{admin_port}", *extra_args]
        if allow_all:
            argv.append("--allow-all")
        self._spawn(name, argv)
        wait_until(lambda: self._check_alive(name) and http_get_json(f"http://127.0.0.1:{admin_port}/status")["healthy"],
                   60, f"{name} /status healthy")

    def _signer_args(self) -> list[str]:
        if self.key_dir is not None:
            return ["--key-dir", str(self.key_dir)]
        endorse = [] if self.endorse_period is None else ["--endorse-period", str(self.endorse_period)]
        if self.hsm is not None:
            return ["--hsm-module", self.hsm.module, "--hsm-token", self.hsm.token, "--hsm-key", self.hsm.key, *endorse]
        if endorse:
            return ["--key", str(self.sae_key), *endorse]
        if self.hsm is None:
            return ["--key", str(self.sae_key)]
        return ["--hsm-module", self.hsm.module, "--hsm-token", self.hsm.token, "--hsm-key", self.hsm.key]

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.authz_admin}/jwks.json"

    def status(self) -> dict[str, Any]:
        return http_get_json(f"http://127.0.0.1:{self.ports.authz_admin}/status")

    def wait_pinned(self, block: int, timeout: float = 15) -> None:
        wait_until(lambda: (self.status()["pinned_block"] or 0) >= block, timeout, f"authorizer to pin block {block}")

    def _start_envoy(self, name: str, config: dict[str, Any], admin: int | str, concurrency: int = 1) -> None:
        path = self.workdir / f"{name}.envoy.json"
        path.write_text(json.dumps(config, indent=1))
        self._spawn(name, [envoy_binary(), "-c", str(path), "--disable-hot-restart", "--concurrency", str(concurrency),
                           "-l", "warning"])
        if isinstance(admin, str):
            Path(admin.removeprefix("unix:")).unlink(missing_ok=True)
        wait_until(lambda: self._check_alive(name) and envoy_ready(admin), 30, f"{name} envoy /ready")

    def start_target_and_pep(self) -> None:
        checks = []
        if self.target_checks_sae:
            (self.workdir / "jwks.json").write_text(json.dumps(self.jwks))
            checks = ["--jwks", str(self.workdir / "jwks.json"), "--issuer", self.issuer, "--audience", AUDIENCE]
        self._spawn("target", [sys.executable, "-m", "ext_authz.local.target", "--port", str(self.ports.target),
                               "--receipts", str(self.workdir / "target-receipts.jsonl"), *checks])
        wait_until(lambda: self._check_alive("target") and tcp_open(self.ports.target), 20, "target")
        self.pep_verifier = self.spawn_pep_verifier("pep_verifier", f"sqlite://{self.workdir / 'redeemed.sqlite3'}")
        self.pep_conf = self.spawn_pep("pep", self.ports.pep, self.socket("pep-admin"), self.pep_verifier)

    def spawn_pep_verifier(self, name: str, redemptions: str) -> str:
        """Starts `sealgate pep serve` for the target on a Unix socket; returns its address."""
        (self.workdir / "jwks.json").write_text(json.dumps(self.jwks))
        socket_path = Path(self.socket(name).removeprefix("unix:"))
        socket_path.unlink(missing_ok=True)  # left behind by a killed predecessor: wait for the new one
        jwks = self.jwks_url if self.follows_jwks else str(self.workdir / "jwks.json")
        self._spawn(name, [sys.executable, "-m", "ext_authz.cli", "pep", "serve", "--listen", f"unix:{socket_path}",
                           "--jwks", jwks, "--jwks-refresh", "1", "--issuer", self.issuer, "--audience", AUDIENCE,
                           "--redemptions", redemptions])
        wait_until(lambda: self._check_alive(name) and unix_open(socket_path), 30, f"{name} socket")
        return f"unix:{socket_path}"

    def spawn_pep(self, name: str, port: int, admin: int | str, verifier: str | None, concurrency: int = 1) -> dict[str, Any]:
        """Starts a PEP Envoy in front of the target (verifier None: the benchmarks' hop without it)."""
        jwks: dict[str, Any] | JwksUri = self.jwks
        if self.follows_jwks:
            jwks = JwksUri(self.jwks_url, self.jwks_cache_seconds)
        conf = pep_config(PepPorts(port, admin, self.ports.target), jwks, AUDIENCE, issuer=self.issuer,
                          verifier=verifier, max_body_bytes=self.config.limits.max_body_bytes)
        self._start_envoy(name, conf, admin, concurrency)
        return conf

    def start_sidecar(self) -> None:
        ports = SidecarPorts(self.ports.sidecar, self.socket("sidecar-admin"), self.authz_socket, self.ports.pep)
        self.sidecar_conf = self.spawn_sidecar("sidecar", ports)

    def spawn_sidecar(self, name: str, ports: SidecarPorts, authorizer_tls: AuthorizerTls | None = None) -> dict[str, Any]:
        """Starts an agent-side Envoy (mTLS listener; ext_authz unless ports.authorizer is None)."""
        if self.agent_pki:
            conf = sidecar_config(ports, self.authority.bundle_pem.decode(), "", "", self.trust_domain,
                                  max_body_bytes=self.config.limits.max_body_bytes, authorizer_tls=authorizer_tls,
                                  cert_sds=sds_from_file(self.sidecar_renewer.sds_path, "sidecar"))
        else:
            conf = sidecar_config(ports, self.ca.cert_pem, self.server_cert.cert_pem, self.server_cert.key_pem,
                                  self.trust_domain, max_body_bytes=self.config.limits.max_body_bytes,
                                  authorizer_tls=authorizer_tls)
        self._start_envoy(name, conf, ports.admin)
        return conf

    # ------------------------------------------------------------ clients

    def tls_context(self, agent: str | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.workdir / "pki" / "ca.crt"))
        if agent is not None:
            cert, key = self.agent_certs[agent]
            ctx.load_cert_chain(str(cert), str(key))
        return ctx

    def agent_call(self, agent: str | None, method: str, path: str, body: Any = None,
                   headers: dict[str, str] | None = None, authority: str = AUTHORITY,
                   context: ssl.SSLContext | None = None, port: int | None = None) -> Response:
        """A request as the agent sends it: HTTPS with its client certificate to its sidecar."""
        conn = self.agent_connection(agent, port or self.ports.sidecar, context)
        return request(conn, method, path, body, headers, authority)

    def agent_connection(self, agent: str | None, port: int, context: ssl.SSLContext | None = None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", port, context=context or self.tls_context(agent), timeout=10)

    def approve(self, denial: str, body: Any = None, ttl: int = 300) -> str:
        """The approver's part, through the CLI as a person would run it, having reviewed `body`."""
        extra = []
        if body is not None:
            reviewed = self.workdir / "reviewed-body"
            reviewed.write_bytes(body if isinstance(body, bytes) else json.dumps(body).encode())
            extra = ["--body", str(reviewed)]
        out = subprocess.run([sys.executable, "-m", "ext_authz.cli", "approver", "sign", "--denial", denial,
                              "--jwks", f"http://127.0.0.1:{self.ports.authz_admin}/jwks.json", "--name", APPROVER,
                              "--key", str(self.approver_key), "--ttl", str(ttl), *extra],
                             capture_output=True, text=True, cwd=self.workdir, timeout=60)
        if out.returncode != 0:
            raise SealgateError(f"approver sign failed: {out.stderr.strip()}")
        return out.stdout.strip()

    def pep_call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                 authority: str = AUTHORITY) -> Response:
        """A request straight to the target's PEP, skipping the agent sidecar."""
        return request(http.client.HTTPConnection("127.0.0.1", self.ports.pep, timeout=10), method, path, body, headers, authority)


