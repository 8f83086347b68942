"""Typed configuration with named defaults and explicit limits, validated once at load."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ext_authz.envelope.models import check_issuer, default_issuer
from ext_authz.errors import ConfigError

DATA_CLASSES = ("public", "internal", "confidential", "restricted")
DEFAULT_SAE_TTL_SECONDS = 60
SAE_TTL_RANGE = (30, 300)  # seed: expiry 30-300 s


@dataclass(frozen=True)
class Limits:
    """Inputs above these sizes are denied with INPUT_OVERSIZED, never parsed."""

    max_path_bytes: int = 2048
    max_headers_bytes: int = 16 * 1024
    max_body_bytes: int = 64 * 1024
    max_parent_sae_bytes: int = 4096
    max_approval_bytes: int = 4096
    max_json_depth: int = 32  # nesting of arrays and objects in a JSON body

    def __post_init__(self) -> None:
        for name in ("max_path_bytes", "max_headers_bytes", "max_body_bytes", "max_parent_sae_bytes",
                     "max_approval_bytes", "max_json_depth"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(f"limits.{name} must be a positive integer, found {value!r}")


@dataclass(frozen=True)
class RouteRule:
    """Maps a request to an action. Amount and data class come from the request, never a claim."""

    method: str
    authority: str
    path: str  # exact path, or a prefix when it ends with "*"
    action_type: str
    target: str
    data_class: str = "internal"
    amount_field: str | None = None  # top-level JSON body field holding an integer amount
    query: tuple[str, ...] = ()  # query parameter names the route accepts; any other is QUERY_NOT_ALLOWED

    def __post_init__(self) -> None:
        object.__setattr__(self, "query", tuple(self.query))
        if any(not isinstance(q, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", q) for q in self.query):
            raise ConfigError(f"route {self.action_type}: query names must be 1-64 of [A-Za-z0-9_.-], found {self.query!r}")
        if self.amount_field is not None and self.amount_field in self.query:
            raise ConfigError(f"route {self.action_type}: the amount comes from the body, never the query string")
        if self.path.endswith("*") and not self.path.endswith("/*") and self.path.count("*") == 1:
            # "/v1/balance*" means the segment /v1/balance and what lies under it, not /v1/balance-admin
            object.__setattr__(self, "path", self.path[:-1].rstrip("/") + "/*")
        if "*" in self.path[:-1]:
            raise ConfigError(f"route {self.action_type}: '*' may only end a path")

    def matches(self, method: str, authority: str, path: str) -> bool:
        """Prefix routes (`/p/*`) match whole path segments: /p and /p/..., never /p-other."""
        if method != self.method or authority != self.authority:
            return False
        if self.path.endswith("/*"):
            base = self.path[:-2]
            return path == base or path.startswith(base + "/")
        return path == self.path


@dataclass(frozen=True)
class AnchorConfig:
    db_path: str = "sealgate-anchor.sqlite3"
    batch_max_leaves: int = 512
    interval_seconds: float = 1.0
    # `sealgate anchor` only (ext_authz/anchoring/anchorer.py AnchoringPolicy checks them at its start):
    mode: str = "root"  # root | leaves (the batch's values in the anchoring calldata: custody on L2)
    confirmations: int = 1
    stuck_seconds: float = 30.0
    fee_bump_percent: int = 25
    degraded_after_seconds: float = 60.0
    rpc_timeout_seconds: float = 10.0
    max_fee_gwei: float = 1000.0  # fee bumps stop at this maxFeePerGas

    def __post_init__(self) -> None:
        if type(self.batch_max_leaves) is not int or not 1 <= self.batch_max_leaves <= 16384:
            raise ConfigError(f"anchor.batch_max_leaves must be an integer 1-16384 (SaeAnchor.MAX_BATCH_LEAVES), "
                              f"found {self.batch_max_leaves!r}")
        if self.mode not in ("root", "leaves"):
            raise ConfigError(f"anchor.mode must be root or leaves, found {self.mode!r}")
        if type(self.confirmations) is not int or not 1 <= self.confirmations <= 1000:
            raise ConfigError(f"anchor.confirmations must be an integer 1-1000, found {self.confirmations!r}")
        if type(self.fee_bump_percent) is not int or not 11 <= self.fee_bump_percent <= 500:
            raise ConfigError(f"anchor.fee_bump_percent must be an integer 11-500, found {self.fee_bump_percent!r}")
        for name in ("interval_seconds", "stuck_seconds", "degraded_after_seconds", "rpc_timeout_seconds", "max_fee_gwei"):
            if not isinstance(getattr(self, name), int | float) or getattr(self, name) <= 0:
                raise ConfigError(f"anchor.{name} must be a positive number of seconds, found {getattr(self, name)!r}")


@dataclass(frozen=True)
class OcspConfig:
    """The agent certificate's revocation status over OCSP, beside the on-chain registry (docs/keys.md)."""

    responder_url: str  # the agent identity CA's responder (never taken from the agent's certificate)
    issuer_cert: str  # PEM file of the intermediate CA that issues agent certificates
    timeout_seconds: float = 1.0

    def __post_init__(self) -> None:
        if not re.fullmatch(r"https?://\S{1,2000}", self.responder_url or ""):
            raise ConfigError(f"ocsp.responder_url must be an http(s) URL, found {self.responder_url!r}")
        if not 0.05 <= self.timeout_seconds <= 10:
            raise ConfigError(f"ocsp.timeout_seconds must be 0.05-10, found {self.timeout_seconds!r}")


@dataclass(frozen=True)
class StaplingConfig:
    """Every SAE and denial carries the signing key's certificate chain (x5c) and a fresh OCSP answer for it."""

    chain: str  # PEM file: the SAE key's certificate (`sealgate pki certify-key`), then the intermediate
    responder_url: str  # the PKI's OCSP responder
    timeout_seconds: float = 1.0

    def __post_init__(self) -> None:
        if not re.fullmatch(r"https?://\S{1,2000}", self.responder_url or ""):
            raise ConfigError(f"stapling.responder_url must be an http(s) URL, found {self.responder_url!r}")
        if not 0.05 <= self.timeout_seconds <= 10:
            raise ConfigError(f"stapling.timeout_seconds must be 0.05-10, found {self.timeout_seconds!r}")


@dataclass(frozen=True)
class EvidenceConfig:
    """The evidence store (the tokens themselves; same SQLite file as the anchor queue, `anchor.db_path`)."""

    retention_days: int = 400  # tokens of anchored records older than this are dropped; 0 keeps them forever
    max_group: int = 512  # records written per durable transaction (group commit)
    commit_timeout_seconds: float = 5.0  # a decision waits this long for its record, then fails closed

    def __post_init__(self) -> None:
        if type(self.retention_days) is not int or not 0 <= self.retention_days <= 36500:
            raise ConfigError(f"evidence.retention_days must be an integer 0-36500 (0: forever), found {self.retention_days!r}")
        if type(self.max_group) is not int or not 1 <= self.max_group <= 10000:
            raise ConfigError(f"evidence.max_group must be an integer 1-10000, found {self.max_group!r}")
        if not isinstance(self.commit_timeout_seconds, (int, float)) or not 0.05 <= self.commit_timeout_seconds <= 60:
            raise ConfigError(f"evidence.commit_timeout_seconds must be 0.05-60, found {self.commit_timeout_seconds!r}")


@dataclass(frozen=True)
class AuthorizerConfig:
    trust_domain: str = "sealgate.local"
    # `iss` of every SAE and denial: names this authorizer, whose JWKS verifies them (RFC 8725 §3.8); the PEP's
    # jwt_authn and verifier pin it. "" means default_issuer(trust_domain).
    issuer: str = ""
    sae_ttl_seconds: int = DEFAULT_SAE_TTL_SECONDS
    routes: tuple[RouteRule, ...] = ()
    limits: Limits = field(default_factory=Limits)
    anchor: AnchorConfig = field(default_factory=AnchorConfig)
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)
    state_poll_seconds: float = 0.2
    max_state_age_seconds: float = 15.0
    # decisions are evaluated at this authorizer's clock, trusted while the head block's own timestamp is at most
    # this far behind it (a quiet or stalled chain goes stale) or ahead of it (docs/governance.md "The clock");
    # null: unbounded, for the local anvil only (it mines on transactions and is time-travelled)
    max_head_age_seconds: float | None = 60.0
    max_clock_ahead_seconds: float | None = 60.0
    # state the pinned EVM has not cached (an agent not seen since the pin) is fetched off the event loop within
    # this deadline, else that request alone is denied with POLICY_STATE_UNAVAILABLE
    policy_fetch_timeout_seconds: float = 2.0
    # decisions in flight on worker threads when the signer is a device (HSM); its signatures are serialized
    signing_threads: int = 4
    # operator's risk feed (UEBA/XDR), by SPIFFE ID; 0-100. Never taken from the agent.
    risk_scores: dict[str, int] = field(default_factory=dict)
    # identities (URI SANs, e.g. spiffe://td/mesh/sidecar-eu1) of the Envoys allowed to call over mutual TLS;
    # on a Unix socket the socket's file mode is the gate
    mesh_clients: tuple[str, ...] = ()
    # agent certificates checked over OCSP too (IDENTITY_REVOKED, IDENTITY_STATUS_UNKNOWN); None: registry only
    ocsp: OcspConfig | None = None
    # the signing certificate's chain and OCSP answer in every envelope's header (docs/keys.md); None: no stapling
    stapling: StaplingConfig | None = None

    def __post_init__(self) -> None:
        lo, hi = SAE_TTL_RANGE
        if not lo <= self.sae_ttl_seconds <= hi:
            raise ConfigError(f"sae_ttl_seconds must be in [{lo}, {hi}], found {self.sae_ttl_seconds}")
        if not re.fullmatch(r"[a-z0-9.\-_]{1,255}", self.trust_domain):
            raise ConfigError(f"trust_domain must be a SPIFFE trust domain name, found {self.trust_domain!r}")
        object.__setattr__(self, "issuer", check_issuer(self.issuer or default_issuer(self.trust_domain), "issuer"))
        if self.max_state_age_seconds <= self.state_poll_seconds:
            raise ConfigError("max_state_age_seconds must exceed state_poll_seconds")
        for name in ("max_head_age_seconds", "max_clock_ahead_seconds"):
            bound = getattr(self, name)
            if bound is not None and (type(bound) not in (int, float) or not 0 < bound <= 24 * 3600):
                raise ConfigError(f"{name} must be a number of seconds in (0, 86400] or null, found {bound!r}")
        if not isinstance(self.policy_fetch_timeout_seconds, (int, float)) or not 0.05 <= self.policy_fetch_timeout_seconds <= 30:
            raise ConfigError(f"policy_fetch_timeout_seconds must be 0.05-30, found {self.policy_fetch_timeout_seconds!r}")
        if type(self.signing_threads) is not int or not 1 <= self.signing_threads <= 64:
            raise ConfigError(f"signing_threads must be an integer 1-64, found {self.signing_threads!r}")
        object.__setattr__(self, "mesh_clients", tuple(self.mesh_clients))
        if any(not isinstance(c, str) or not re.fullmatch(r"[a-z][a-z0-9+.\-]*://\S{1,2000}", c) for c in self.mesh_clients):
            raise ConfigError(f"mesh_clients must be URIs (the Envoys' URI SANs), found {self.mesh_clients!r}")
        for agent, score in self.risk_scores.items():
            if type(score) is not int or not 0 <= score <= 100:
                raise ConfigError(f"risk_scores[{agent!r}] must be an integer 0-100, found {score!r}")
        seen = set()
        for r in self.routes:
            if r.data_class not in DATA_CLASSES:
                raise ConfigError(f"route {r.action_type}: data_class must be one of {DATA_CLASSES}, found {r.data_class!r}")
            if r.method != r.method.upper() or not r.path.startswith("/"):
                raise ConfigError(f"route {r.action_type}: method must be upper case and path start with '/'")
            key = (r.method, r.authority, r.path)
            if key in seen:
                raise ConfigError(f"duplicate route {key}")
            seen.add(key)


def _build(cls: Any, raw: dict[str, Any], where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, found {type(raw).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; expected some of {sorted(known)}")
    try:
        return cls(**raw)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from e


def load_config(path: str | Path) -> AuthorizerConfig:
    """Loads a YAML or JSON authorizer config file."""
    text = Path(path).read_text()
    try:
        raw = yaml.safe_load(text) if str(path).endswith((".yaml", ".yml")) else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML/JSON: {e}") from e
    return config_from_dict(raw or {}, str(path))


def config_from_dict(raw: dict[str, Any], where: str = "config") -> AuthorizerConfig:
    raw = dict(raw)
    routes = tuple(_build(RouteRule, r, f"{where}.routes[{i}]") for i, r in enumerate(raw.pop("routes", [])))
    limits = _build(Limits, raw.pop("limits", {}), f"{where}.limits")
    anchor = _build(AnchorConfig, raw.pop("anchor", {}), f"{where}.anchor")
    ocsp = raw.pop("ocsp", None)
    if ocsp is not None:
        raw["ocsp"] = _build(OcspConfig, ocsp, f"{where}.ocsp")
    stapling = raw.pop("stapling", None)
    if stapling is not None:
        raw["stapling"] = _build(StaplingConfig, stapling, f"{where}.stapling")
    evidence = _build(EvidenceConfig, raw.pop("evidence", {}), f"{where}.evidence")
    return _build(AuthorizerConfig, {**raw, "routes": routes, "limits": limits, "anchor": anchor,
                                     "evidence": evidence}, where)
