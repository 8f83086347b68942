"""The deploy plan: what `sealgate deploy --plan` builds on a real chain, validated once at load.

A YAML file (see deploy/plan.example.yaml): the chain it is for, the Safe's owners and
threshold, the guardian and anchorer addresses, the timelock delay, where the deployer key
comes from, and the initial state -- models, agents, rules, approvers -- seeded in the
bootstrap window, before the deployer hands every admin role to the timelock. Unknown keys
are refused by name, every value is type- and range-checked, and anvil's development
accounts are refused on any chain but the local one (31337): their keys are public.
Nothing here talks to a chain; `ext_authz.chain.deploy.deploy_plan` does.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ext_authz.chain.deployer_key import ENV_NAME, DeployerKey, EnvKey, KeystoreKey, Pkcs11Key
from ext_authz.chain.manifest import read_bounded
from ext_authz.errors import ConfigError

PLAN_VERSION = 1
DEV_CHAIN_ID = 31337  # anvil's (and hardhat's) local chain: the only one development keys may deploy to
DEV_ACCOUNT_COUNT = 10  # anvil's default --accounts
TIMELOCK_DELAY_RANGE = (3600, 30 * 24 * 3600)  # seconds: 1 hour .. 30 days
DEV_TIMELOCK_DELAY_MIN = 1  # on 31337 the local stack time-travels past the delay
MAX_PLAN_BYTES = 1024 * 1024
MAX_OWNERS = 64
MAX_SEEDS = 1000  # per list: models, agents, rules, approvers
MAX_NAME_CHARS = 256
MAX_AMOUNT = 2**256 - 1
ALL_HOURS = tuple(range(24))
DEFAULT_DATA_CLASSES = ("public", "internal")

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_HEX32 = re.compile(r"(0x)?[0-9a-fA-F]{64}")
_SPIFFE_ID = re.compile(r"spiffe://[a-z0-9.\-_]+/[^\s?#]+")
_ED25519_X = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 bytes, base64url without padding (a JWK's `x`)
_ZERO_ADDRESS = "0x" + "00" * 20

DEV_KEYS_REFUSED = ("anvil's development keys are public (mnemonic \"test test ... junk\"): anyone could take over "
                    "contracts deployed or governed with them")


# ------------------------------------------------------------ the plan


@dataclass(frozen=True)
class SafePlan:
    owners: tuple[str, ...]  # checksummed addresses
    threshold: int


@dataclass(frozen=True)
class ModelSeed:
    id: str
    sha256: str  # 64 lowercase hex digits, no 0x
    sbom: str


@dataclass(frozen=True)
class AgentSeed:
    spiffe_id: str
    org: str
    role: str
    model: str
    key_fingerprint: bytes = bytes(32)  # SHA-256 of the certificate's SPKI; zeros: SPIFFE ID only


@dataclass(frozen=True)
class RuleSeed:
    role: str
    action_type: str
    target: str
    max_amount: int
    approval_threshold: int = 0
    data_classes: tuple[str, ...] = DEFAULT_DATA_CLASSES
    max_risk: int = 100
    utc_hours: tuple[int, ...] = ALL_HOURS
    required_model: str | None = None
    enabled: bool = True

    @property
    def utc_hours_mask(self) -> int:
        mask = 0
        for hour in self.utc_hours:
            mask |= 1 << hour
        return mask

    @property
    def data_class_indexes(self) -> tuple[int, ...]:
        from ext_authz.server.config import DATA_CLASSES

        return tuple(DATA_CLASSES.index(c) for c in self.data_classes)


@dataclass(frozen=True)
class ApproverSeed:
    name: str
    x: str  # the approver's Ed25519 public key: the `x` of its JWK (base64url)


@dataclass(frozen=True)
class SigningKeySeed:
    """An SAE / denial signing key registered in the SigningKeyRegistry at deployment (its public JWK)."""

    jwk: dict[str, Any]
    valid_from: int = 0
    valid_until: int = 2**64 - 1


@dataclass(frozen=True)
class DeployPlan:
    chain_id: int
    safe: SafePlan
    guardian: str
    anchorer: str
    timelock_delay_seconds: int
    deployer_key: DeployerKey
    models: tuple[ModelSeed, ...] = ()
    agents: tuple[AgentSeed, ...] = ()
    rules: tuple[RuleSeed, ...] = ()
    approvers: tuple[ApproverSeed, ...] = ()
    signing_keys: tuple[SigningKeySeed, ...] = ()
    version: int = PLAN_VERSION
    source: str = field(default="deploy plan", compare=False)

    def role_addresses(self) -> dict[str, str]:
        """What each address in the plan is for (the deployer's is known only once its key is open)."""
        named = {f"safe.owners[{i}]": o for i, o in enumerate(self.safe.owners)}
        return {**named, "guardian": self.guardian, "anchorer": self.anchorer}


# ------------------------------------------------------------ development accounts


@functools.lru_cache(maxsize=1)
def dev_addresses() -> frozenset[str]:
    """anvil's default accounts 0..9, lowercase."""
    from ext_authz.chain.dev import dev_account

    return frozenset(dev_account(i).address.lower() for i in range(DEV_ACCOUNT_COUNT))


def refuse_dev_accounts(chain_id: int, named: dict[str, str]) -> None:
    """On any chain but 31337, none of the addresses may be one of anvil's development accounts."""
    if chain_id == DEV_CHAIN_ID:
        return
    dev = [f"{what} {address}" for what, address in named.items() if address.lower() in dev_addresses()]
    if dev:
        raise ConfigError(f"{'; '.join(dev)}: {'is' if len(dev) == 1 else 'are'} anvil development account"
                          f"{'' if len(dev) == 1 else 's'}. {DEV_KEYS_REFUSED}, and chain {chain_id} is not the local "
                          f"anvil chain ({DEV_CHAIN_ID}): use addresses whose keys only you hold")


# ------------------------------------------------------------ loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, but a key given twice in one mapping is an error rather than the last one winning."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"key {key!r} given twice (line {key_node.start_mark.line + 1})")
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_plan(path: str | Path) -> DeployPlan:
    """Reads and validates a plan file; a relative keystore path is taken relative to the plan's directory."""
    path = Path(path)
    data = read_bounded(path, MAX_PLAN_BYTES, "deploy plan")
    try:
        raw = yaml.load(data.decode("utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except UnicodeDecodeError as e:
        raise ConfigError(f"deploy plan {path} is not UTF-8 text") from e
    except ConfigError as e:
        raise ConfigError(f"deploy plan {path}: {e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"deploy plan {path} is not valid YAML: {e}") from e
    return plan_from_dict(raw, str(path), base_dir=path.parent)


PLAN_KEYS = ("version", "chain_id", "safe", "guardian", "anchorer", "timelock_delay_seconds", "deployer_key",
             "models", "agents", "rules", "approvers", "signing_keys")
PLAN_REQUIRED = PLAN_KEYS[:7]


def plan_from_dict(raw: Any, source: str = "deploy plan", base_dir: Path | None = None) -> DeployPlan:
    top = _mapping(raw, source, PLAN_REQUIRED, PLAN_KEYS[7:])
    if top["version"] != PLAN_VERSION or type(top["version"]) is not int:
        raise ConfigError(f"{source}: version must be {PLAN_VERSION}, found {top['version']!r}")
    chain_id = _int(top["chain_id"], f"{source}: chain_id", 1, 2**53)
    safe = _safe(top["safe"], f"{source}: safe")
    guardian = _address(top["guardian"], f"{source}: guardian")
    anchorer = _address(top["anchorer"], f"{source}: anchorer")
    low = DEV_TIMELOCK_DELAY_MIN if chain_id == DEV_CHAIN_ID else TIMELOCK_DELAY_RANGE[0]
    delay = _int(top["timelock_delay_seconds"], f"{source}: timelock_delay_seconds", low, TIMELOCK_DELAY_RANGE[1],
                 unit="seconds", why="" if chain_id == DEV_CHAIN_ID else f" (below {low} only on chain {DEV_CHAIN_ID})")
    deployer_key = _deployer_key(top["deployer_key"], f"{source}: deployer_key", base_dir or Path("."))
    models = tuple(_model(m, w) for m, w in _list(top.get("models", []), f"{source}: models"))
    agents = tuple(_agent(a, w) for a, w in _list(top.get("agents", []), f"{source}: agents"))
    rules = tuple(_rule(r, w) for r, w in _list(top.get("rules", []), f"{source}: rules"))
    approvers = tuple(_approver(a, w) for a, w in _list(top.get("approvers", []), f"{source}: approvers"))
    signing_keys = tuple(_signing_key(k, w) for k, w in _list(top.get("signing_keys", []), f"{source}: signing_keys"))

    if guardian.lower() == anchorer.lower():
        raise ConfigError(f"{source}: guardian and anchorer are the same address {guardian}: the anchorer's key is a hot "
                          "key on the authorizer host, the guardian's is for emergencies; give them separate keys")
    if anchorer.lower() in {o.lower() for o in safe.owners}:
        raise ConfigError(f"{source}: the anchorer {anchorer} is also a Safe owner: the anchorer's key is a hot key on "
                          "the authorizer host and must not govern")
    _unique(source, "models", (m.id for m in models), "id")
    _unique(source, "agents", (a.spiffe_id for a in agents), "spiffe_id")
    _unique(source, "rules", ((r.role, r.action_type, r.target) for r in rules), "role/action_type/target")
    _unique(source, "approvers", (a.name for a in approvers), "name")
    model_ids = {m.id for m in models}
    for i, a in enumerate(agents):
        if a.model not in model_ids:
            raise ConfigError(f"{source}: agents[{i}] ({a.spiffe_id}) runs model {a.model!r}, which the plan does not "
                              "register: add it under models (an agent on an unregistered model is always denied)")
    for i, r in enumerate(rules):
        if r.required_model is not None and r.required_model not in model_ids:
            raise ConfigError(f"{source}: rules[{i}] requires model {r.required_model!r}, which the plan does not "
                              "register: add it under models")
    plan = DeployPlan(chain_id=chain_id, safe=safe, guardian=guardian, anchorer=anchorer, timelock_delay_seconds=delay,
                      deployer_key=deployer_key, models=models, agents=agents, rules=rules, approvers=approvers,
                      signing_keys=signing_keys, source=source)
    try:
        refuse_dev_accounts(chain_id, plan.role_addresses())
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from e
    return plan


# ------------------------------------------------------------ sections


def _safe(raw: Any, where: str) -> SafePlan:
    s = _mapping(raw, where, ("owners", "threshold"))
    if not isinstance(s["owners"], list) or not 1 <= len(s["owners"]) <= MAX_OWNERS:
        raise ConfigError(f"{where}.owners must be a list of 1..{MAX_OWNERS} addresses, found {s['owners']!r}")
    owners = tuple(_address(o, f"{where}.owners[{i}]") for i, o in enumerate(s["owners"]))
    _unique(where, "owners", (o.lower() for o in owners), "address")
    threshold = s["threshold"]
    if type(threshold) is not int:
        raise ConfigError(f"{where}.threshold must be an integer, found {threshold!r}")
    if not 1 <= threshold <= len(owners):
        raise ConfigError(f"{where}.threshold must be in 1..{len(owners)} (the number of owners), found {threshold}")
    return SafePlan(owners, threshold)


def _deployer_key(raw: Any, where: str, base_dir: Path) -> DeployerKey:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with one of env, keystore or pkcs11, found {raw!r}")
    sources = [k for k in ("env", "keystore", "pkcs11") if k in raw]
    if len(sources) != 1:
        found = ", ".join(sources) if sources else "none"
        raise ConfigError(f"{where}: give exactly one key source (env, keystore or pkcs11), found {found}")
    if sources == ["env"]:
        k = _mapping(raw, where, ("env",))
        return EnvKey(_env_name(k["env"], f"{where}.env"))
    if sources == ["keystore"]:
        k = _mapping(raw, where, ("keystore", "password_env"))
        path = Path(_text(k["keystore"], f"{where}.keystore", 4096))
        return KeystoreKey(path if path.is_absolute() else base_dir / path, _env_name(k["password_env"], f"{where}.password_env"))
    k = _mapping(raw, where, ("pkcs11",))
    hsm = _mapping(k["pkcs11"], f"{where}.pkcs11", ("module", "token", "key"))
    return Pkcs11Key(*(_text(hsm[n], f"{where}.pkcs11.{n}", 4096) for n in ("module", "token", "key")))


def _model(raw: Any, where: str) -> ModelSeed:
    m = _mapping(raw, where, ("id", "sha256", "sbom"))
    digest = m["sha256"]
    if not isinstance(digest, str) or not _HEX32.fullmatch(digest):
        raise ConfigError(f"{where}.sha256 must be 64 hex digits (the model artifact's SHA-256), found {digest!r}")
    digest = digest.removeprefix("0x").lower()
    if digest == "0" * 64:
        raise ConfigError(f"{where}.sha256 is all zeros: not a hash")
    return ModelSeed(_name(m["id"], f"{where}.id"), digest, _text(m["sbom"], f"{where}.sbom", 2048))


def _agent(raw: Any, where: str) -> AgentSeed:
    a = _mapping(raw, where, ("spiffe_id", "org", "role", "model"), ("key_fingerprint",))
    spiffe_id = a["spiffe_id"]
    if not isinstance(spiffe_id, str) or len(spiffe_id) > 2048 or not _SPIFFE_ID.fullmatch(spiffe_id):
        raise ConfigError(f"{where}.spiffe_id must be a SPIFFE ID (spiffe://trust-domain/path), found {spiffe_id!r}")
    fingerprint = bytes(32)
    if a.get("key_fingerprint") is not None:
        fp = a["key_fingerprint"]
        if not isinstance(fp, str) or not _HEX32.fullmatch(fp):
            raise ConfigError(f"{where}.key_fingerprint must be 64 hex digits (SHA-256 of the certificate's SPKI), "
                              f"found {fp!r}")
        fingerprint = bytes.fromhex(fp.removeprefix("0x"))
    return AgentSeed(spiffe_id, _name(a["org"], f"{where}.org"), _name(a["role"], f"{where}.role"),
                     _name(a["model"], f"{where}.model"), fingerprint)


RULE_REQUIRED = ("role", "action_type", "target", "max_amount")
RULE_OPTIONAL = ("approval_threshold", "data_classes", "max_risk", "utc_hours", "required_model", "enabled")


def _rule(raw: Any, where: str) -> RuleSeed:
    from ext_authz.server.config import DATA_CLASSES

    r = _mapping(raw, where, RULE_REQUIRED, RULE_OPTIONAL)
    max_amount = _int(r["max_amount"], f"{where}.max_amount", 0, MAX_AMOUNT, unit="route units, e.g. cents")
    threshold = _int(r.get("approval_threshold", 0), f"{where}.approval_threshold", 0, MAX_AMOUNT)
    if threshold > max_amount:
        raise ConfigError(f"{where}.approval_threshold {threshold} is above max_amount {max_amount}: no amount could "
                          "ever need approval (0 means never)")
    classes = r.get("data_classes", list(DEFAULT_DATA_CLASSES))
    if not isinstance(classes, list) or not classes or any(c not in DATA_CLASSES for c in classes):
        raise ConfigError(f"{where}.data_classes must be a non-empty list of {', '.join(DATA_CLASSES)}, found {classes!r}")
    hours = r.get("utc_hours", list(ALL_HOURS))
    if (not isinstance(hours, list) or not hours
            or any(type(h) is not int or not 0 <= h <= 23 for h in hours) or len(set(hours)) != len(hours)):
        raise ConfigError(f"{where}.utc_hours must be a non-empty list of distinct hours 0..23 (UTC), found {hours!r}")
    enabled = r.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}.enabled must be true or false, found {enabled!r}")
    required = r.get("required_model")
    return RuleSeed(
        role=_name(r["role"], f"{where}.role"), action_type=_name(r["action_type"], f"{where}.action_type"),
        target=_name(r["target"], f"{where}.target"), max_amount=max_amount, approval_threshold=threshold,
        data_classes=tuple(classes), max_risk=_int(r.get("max_risk", 100), f"{where}.max_risk", 0, 100),
        utc_hours=tuple(sorted(hours)), required_model=None if required is None else _name(required, f"{where}.required_model"),
        enabled=enabled)


def _approver(raw: Any, where: str) -> ApproverSeed:
    from ext_authz.authz.approvals import APPROVER_NAME

    a = _mapping(raw, where, ("name", "x"))
    if not isinstance(a["name"], str) or not APPROVER_NAME.fullmatch(a["name"]):
        raise ConfigError(f"{where}.name must be 1-64 of [a-z0-9.-_], starting with a letter or digit, found {a['name']!r}")
    x = a["x"]
    if not isinstance(x, str) or not _ED25519_X.fullmatch(x) or len(base64.urlsafe_b64decode(x + "=")) != 32:
        raise ConfigError(f"{where}.x must be an Ed25519 public key: the 43-character base64url `x` of the approver's JWK "
                          f"(`sealgate approver keygen`), found {x!r}")
    if base64.urlsafe_b64decode(x + "=") == bytes(32):
        raise ConfigError(f"{where}.x is all zeros: not a public key")
    return ApproverSeed(a["name"], x)


def _signing_key(raw: Any, where: str) -> SigningKeySeed:
    from ext_authz.chain.keys import registration_of

    k = _mapping(raw, where, ("jwk",), ("valid_from", "valid_until"))
    if not isinstance(k["jwk"], dict) or "d" in k["jwk"]:
        raise ConfigError(f"{where}.jwk must be the PUBLIC JWK `sealgate keys generate` printed (no 'd')")
    try:
        registration_of(k["jwk"])
    except ConfigError as e:
        raise ConfigError(f"{where}.jwk: {e}") from e
    valid_from = _int(k.get("valid_from", 0), f"{where}.valid_from", 0, 2**64 - 2, unit="unix seconds")
    valid_until = _int(k.get("valid_until", 2**64 - 1), f"{where}.valid_until", valid_from + 1, 2**64 - 1, unit="unix seconds")
    return SigningKeySeed(dict(k["jwk"]), valid_from, valid_until)


# ------------------------------------------------------------ values


def _mapping(raw: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, found {type(raw).__name__} {raw!r}")
    allowed = (*required, *optional)
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {key!r} (allowed: {', '.join(allowed)})")
    missing = [k for k in required if k not in raw]
    if missing:
        raise ConfigError(f"{where}: missing key{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}")
    return raw


def _list(raw: Any, where: str) -> Iterable[tuple[Any, str]]:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: expected a list, found {type(raw).__name__}")
    if len(raw) > MAX_SEEDS:
        raise ConfigError(f"{where}: at most {MAX_SEEDS} entries, found {len(raw)}")
    return [(item, f"{where}[{i}]") for i, item in enumerate(raw)]


def _int(value: Any, where: str, low: int, high: int, unit: str = "", why: str = "") -> int:
    units = f" {unit}" if unit else ""
    if type(value) is not int:
        raise ConfigError(f"{where} must be an integer{units}, found {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{where} must be in {low}..{high}{units}{why}, found {value}")
    return value


def _text(value: Any, where: str, max_chars: int) -> str:
    if not isinstance(value, str) or not value or len(value) > max_chars:
        raise ConfigError(f"{where} must be a non-empty string of at most {max_chars} characters, found {value!r}")
    return value


def _name(value: Any, where: str) -> str:
    """A name hashed on-chain (role, org, model id, ...): text, no surrounding or control whitespace."""
    _text(value, where, MAX_NAME_CHARS)
    if value != value.strip() or any(not c.isprintable() for c in value):
        raise ConfigError(f"{where} must have no surrounding whitespace nor control characters, found {value!r}")
    return value


def _env_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not ENV_NAME.fullmatch(value):
        raise ConfigError(f"{where} must name an environment variable ([A-Za-z_][A-Za-z0-9_]*), found {value!r}")
    return value


def _address(value: Any, where: str) -> str:
    from eth_utils import is_checksum_address, to_checksum_address

    if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
        raise ConfigError(f"{where} must be an address (0x and 40 hex digits), found {value!r}")
    if value[2:] != value[2:].lower() and value[2:] != value[2:].upper() and not is_checksum_address(value):
        raise ConfigError(f"{where}: {value} has mixed case but a wrong EIP-55 checksum (a typo?)")
    if value.lower() == _ZERO_ADDRESS:
        raise ConfigError(f"{where} is the zero address")
    return to_checksum_address(value)


def _unique(where: str, what: str, values: Iterable[Any], key: str) -> None:
    seen = set()
    for value in values:
        if value in seen:
            raise ConfigError(f"{where}: {what} lists {key} {value!r} twice")
        seen.add(value)
