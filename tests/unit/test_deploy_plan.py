"""Deploy plan, deployer key sources and the address manifest: each invalid case named after its failure."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from eth_account import Account
from eth_utils import keccak, to_checksum_address

from ext_authz.chain.deployer_key import EnvKey, KeystoreKey, Pkcs11Key, open_deployer
from ext_authz.chain.dev import dev_account
from ext_authz.chain.manifest import MANIFEST_VERSION, Manifest
from ext_authz.chain.plan import ALL_HOURS, DEV_CHAIN_ID, load_plan, plan_from_dict
from ext_authz.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "plan.example.yaml"


def addr(name: str) -> str:
    return to_checksum_address(keccak(text=name)[12:])


OWNERS = [addr(f"owner-{i}") for i in range(3)]
BASE = {
    "version": 1,
    "chain_id": 8453,
    "safe": {"owners": OWNERS, "threshold": 2},
    "guardian": addr("guardian"),
    "anchorer": addr("anchorer"),
    "timelock_delay_seconds": 86400,
    "deployer_key": {"env": "SEALGATE_DEPLOYER_KEY"},
    "models": [{"id": "m-1", "sha256": "ab" * 32, "sbom": "https://example.com/m-1.cdx.json"}],
    "agents": [{"spiffe_id": "spiffe://prod.example.com/agent/a1", "org": "acme", "role": "procurement", "model": "m-1"}],
    "rules": [{"role": "procurement", "action_type": "payment.transfer", "target": "payments-api", "max_amount": 1000}],
    "approvers": [{"name": "treasury-lead", "x": "30iuycB2yeCYqW6tLRRahiceevc8k6GTlxNBgQUzEEE"}],
}


def plan(**changes):
    """BASE with dotted-path changes; a value of ... deletes the key."""
    raw = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = raw
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if value is ...:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return raw


# ------------------------------------------------------------ valid plans


def test_example_plan_loads_cleanly():
    p = load_plan(EXAMPLE)
    assert p.chain_id == 8453 and p.safe.threshold <= len(p.safe.owners)
    assert isinstance(p.deployer_key, KeystoreKey)
    assert p.deployer_key.path == EXAMPLE.parent / "deployer.json"  # relative to the plan file
    assert p.models and p.agents and p.rules and p.approvers


def test_base_plan_loads_with_the_rule_defaults():
    p = plan_from_dict(BASE)
    rule = p.rules[0]
    assert rule.approval_threshold == 0 and rule.data_classes == ("public", "internal") and rule.max_risk == 100
    assert rule.utc_hours == ALL_HOURS and rule.utc_hours_mask == 0x00FFFFFF and rule.enabled
    assert rule.data_class_indexes == (0, 1)
    assert p.agents[0].key_fingerprint == bytes(32)
    assert p.deployer_key == EnvKey("SEALGATE_DEPLOYER_KEY")


def test_lowercase_addresses_are_checksummed():
    p = plan_from_dict(plan(guardian=addr("guardian").lower()))
    assert p.guardian == addr("guardian")


def test_dev_accounts_are_fine_on_the_local_chain():
    dev = [dev_account(i).address for i in (3, 4, 5)]
    p = plan_from_dict(plan(chain_id=DEV_CHAIN_ID, safe={"owners": dev, "threshold": 2},
                            guardian=dev_account(2).address, anchorer=dev_account(1).address, timelock_delay_seconds=1))
    assert p.safe.owners == tuple(dev)


def test_pkcs11_and_keystore_sources_parse():
    p = plan_from_dict(plan(deployer_key={"pkcs11": {"module": "/usr/lib/x.so", "token": "t", "key": "k"}}))
    assert p.deployer_key == Pkcs11Key("/usr/lib/x.so", "t", "k")
    p = plan_from_dict(plan(deployer_key={"keystore": "/abs/ks.json", "password_env": "PW"}))
    assert p.deployer_key == KeystoreKey(Path("/abs/ks.json"), "PW")


# ------------------------------------------------------------ invalid plans, named after the failure

INVALID = {
    "unknown_top_level_key": (plan(owners=OWNERS), "unknown key 'owners'"),
    "unknown_key_in_safe": (plan(safe__treshold=2), "unknown key 'treshold'"),
    "unknown_key_in_rule": (plan(rules__0__max_risk_score=5), "unknown key 'max_risk_score'"),
    "unknown_key_in_agent": (plan(agents__0__name="a1"), "unknown key 'name'"),
    "missing_guardian": (plan(guardian=...), "missing key 'guardian'"),
    "missing_rule_max_amount": (plan(rules__0__max_amount=...), "missing key 'max_amount'"),
    "wrong_version": (plan(version=2), "version must be 1"),
    "version_true_is_not_1": (plan(version=True), "version must be 1"),
    "chain_id_not_an_integer": (plan(chain_id="8453"), "chain_id must be an integer"),
    "chain_id_zero": (plan(chain_id=0), "chain_id must be in 1.."),
    "bad_address_short": (plan(guardian="0x1234"), "guardian must be an address"),
    "bad_address_not_hex": (plan(anchorer="0x" + "zz" * 20), "anchorer must be an address"),
    "bad_address_checksum": (plan(guardian=addr("guardian")[:-1] + ("a" if addr("guardian")[-1] != "a" else "b")),
                             None),
    "zero_address_owner": (plan(safe__owners=[OWNERS[0], "0x" + "00" * 20]), "zero address"),
    "threshold_above_owners": (plan(safe__threshold=4), "threshold must be in 1..3"),
    "threshold_zero": (plan(safe__threshold=0), "threshold must be in 1..3"),
    "no_owners": (plan(safe__owners=[]), "owners must be a list of 1.."),
    "duplicate_owner": (plan(safe__owners=[OWNERS[0], OWNERS[0].lower()]), "twice"),
    "two_key_sources": (plan(deployer_key={"env": "K", "keystore": "ks.json", "password_env": "P"}),
                        "exactly one key source (env, keystore or pkcs11), found env, keystore"),
    "no_key_source": (plan(deployer_key={}), "exactly one key source"),
    "keystore_without_password_env": (plan(deployer_key={"keystore": "ks.json"}), "missing key 'password_env'"),
    "password_env_with_env_source": (plan(deployer_key={"env": "K", "password_env": "P"}), "unknown key 'password_env'"),
    "env_name_invalid": (plan(deployer_key={"env": "0xdeadbeef key"}), "must name an environment variable"),
    "pkcs11_missing_token": (plan(deployer_key={"pkcs11": {"module": "m", "key": "k"}}), "missing key 'token'"),
    "dev_owner_on_a_non_dev_chain": (plan(safe__owners__0=dev_account(3).address), "anvil development account"),
    "dev_guardian_on_a_non_dev_chain": (plan(guardian=dev_account(2).address), "guardian"),
    "dev_anchorer_on_a_non_dev_chain": (plan(anchorer=dev_account(1).address), "keys are public"),
    "delay_too_short_on_a_real_chain": (plan(timelock_delay_seconds=60), "timelock_delay_seconds must be in 3600..2592000"),
    "delay_too_long": (plan(timelock_delay_seconds=31 * 86400), "timelock_delay_seconds must be in"),
    "delay_zero_on_the_dev_chain": (plan(chain_id=DEV_CHAIN_ID, timelock_delay_seconds=0), "must be in 1.."),
    "guardian_is_anchorer": (plan(anchorer=addr("guardian")), "guardian and anchorer are the same"),
    "anchorer_is_an_owner": (plan(anchorer=OWNERS[1]), "anchorer"),
    "model_sha256_short": (plan(models__0__sha256="abcd"), "sha256 must be 64 hex digits"),
    "model_sha256_zero": (plan(models__0__sha256="00" * 32), "all zeros"),
    "duplicate_model": (plan(models=[BASE["models"][0], BASE["models"][0]]), "models lists id 'm-1' twice"),
    "agent_not_a_spiffe_id": (plan(agents__0__spiffe_id="agent-1"), "must be a SPIFFE ID"),
    "agent_model_not_registered": (plan(agents__0__model="m-2"), "does not register"),
    "agent_key_fingerprint_short": (plan(agents__0__key_fingerprint="ab" * 31), "key_fingerprint must be 64 hex"),
    "agent_role_with_whitespace": (plan(agents__0__role=" procurement"), "surrounding whitespace"),
    "rule_max_amount_negative": (plan(rules__0__max_amount=-1), "max_amount must be in 0.."),
    "rule_max_amount_float": (plan(rules__0__max_amount=10.5), "max_amount must be an integer"),
    "rule_threshold_above_max_amount": (plan(rules__0__approval_threshold=1001), "above max_amount"),
    "rule_max_risk_over_100": (plan(rules__0__max_risk=101), "max_risk must be in 0..100"),
    "rule_unknown_data_class": (plan(rules__0__data_classes=["public", "secret"]), "data_classes must be"),
    "rule_hour_24": (plan(rules__0__utc_hours=[23, 24]), "utc_hours must be"),
    "rule_enabled_not_bool": (plan(rules__0__enabled="yes"), "enabled must be true or false"),
    "rule_required_model_not_registered": (plan(rules__0__required_model="m-9"), "requires model 'm-9'"),
    "duplicate_rule": (plan(rules=[BASE["rules"][0], BASE["rules"][0]]), "twice"),
    "approver_name_uppercase": (plan(approvers__0__name="Treasury"), "name must be 1-64"),
    "approver_key_not_base64url": (plan(approvers__0__x="not a key"), "must be an Ed25519 public key"),
    "approver_key_zero": (plan(approvers__0__x="A" * 43), "all zeros"),
    "signing_key_private_jwk": (plan(signing_keys=[{"jwk": {"kty": "OKP", "crv": "Ed25519", "x": "oUAdWDv90wlIf1oKc225-68"
                                                                 "MaYY3muqYw7iEOIYXezg", "d": "secret"}}]), "PUBLIC JWK"),
    "signing_key_kid_not_its_thumbprint": (plan(signing_keys=[{"jwk": {"kty": "OKP", "crv": "Ed25519", "x": "oUAdWDv90wl"
                                                                        "If1oKc225-68MaYY3muqYw7iEOIYXezg", "kid": "x" * 43}}]),
                                           "not its RFC 7638 thumbprint"),
    "signing_key_rsa": (plan(signing_keys=[{"jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}}]), "Ed25519 (OKP) or P-256"),
    "signing_key_empty_window": (plan(signing_keys=[{"jwk": {"kty": "OKP", "crv": "Ed25519", "x": "oUAdWDv90wlIf1oKc225-68"
                                                                  "MaYY3muqYw7iEOIYXezg"}, "valid_from": 5, "valid_until": 5}]),
                                 "valid_until must be in"),
    "models_not_a_list": (plan(models={"id": "m-1"}), "expected a list"),
    "plan_not_a_mapping": ([BASE], "expected a mapping"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_plan(case):
    raw, message = INVALID[case]
    with pytest.raises(ConfigError) as err:
        plan_from_dict(raw, "plan.yaml")
    if message is None:  # the bad checksum case: mixed case that is not EIP-55
        message = "wrong EIP-55 checksum"
    assert message in str(err.value), str(err.value)
    assert str(err.value).startswith("plan.yaml"), str(err.value)


def write(tmp_path, text, name="plan.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_plan_file_with_a_duplicate_key_is_refused(tmp_path):
    text = yaml.safe_dump(BASE) + f"guardian: {addr('other')}\n"
    with pytest.raises(ConfigError, match="'guardian' given twice"):
        load_plan(write(tmp_path, text))


def test_plan_file_unreadable(tmp_path):
    with pytest.raises(ConfigError, match="unreadable"):
        load_plan(tmp_path / "absent.yaml")


def test_plan_file_not_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_plan(write(tmp_path, "safe: [unclosed\n"))


def test_plan_file_relative_keystore_is_next_to_the_plan(tmp_path):
    raw = plan(deployer_key={"keystore": "keys/deployer.json", "password_env": "PW"})
    p = load_plan(write(tmp_path, yaml.safe_dump(raw)))
    assert p.deployer_key.path == tmp_path / "keys" / "deployer.json"


# ------------------------------------------------------------ deployer key sources

KEY = "0x" + "4c" * 32


def test_env_key_opens(monkeypatch):
    monkeypatch.setenv("SEALGATE_TEST_DEPLOYER", KEY)
    with open_deployer(EnvKey("SEALGATE_TEST_DEPLOYER")) as account:
        assert account.address == Account.from_key(KEY).address


def test_env_key_unset(monkeypatch):
    monkeypatch.delenv("SEALGATE_TEST_DEPLOYER", raising=False)
    with pytest.raises(ConfigError, match=r"set \$SEALGATE_TEST_DEPLOYER"):
        with open_deployer(EnvKey("SEALGATE_TEST_DEPLOYER")):
            pass


def test_env_key_malformed_never_echoes_the_value(monkeypatch):
    monkeypatch.setenv("SEALGATE_TEST_DEPLOYER", "0xsecretsecret")
    with pytest.raises(ConfigError) as err:
        with open_deployer(EnvKey("SEALGATE_TEST_DEPLOYER")):
            pass
    assert "secret" not in str(err.value) and err.value.__cause__ is None


@pytest.fixture
def keystore(tmp_path):
    path = tmp_path / "deployer.json"
    path.write_text(json.dumps(Account.encrypt(KEY, "correct horse", kdf="pbkdf2", iterations=1000)))
    return path


def test_keystore_key_opens(keystore, monkeypatch):
    monkeypatch.setenv("SEALGATE_TEST_PW", "correct horse")
    with open_deployer(KeystoreKey(keystore, "SEALGATE_TEST_PW")) as account:
        assert account.address == Account.from_key(KEY).address


def test_keystore_wrong_password(keystore, monkeypatch):
    monkeypatch.setenv("SEALGATE_TEST_PW", "wrong")
    with pytest.raises(ConfigError, match="does not decrypt"):
        with open_deployer(KeystoreKey(keystore, "SEALGATE_TEST_PW")):
            pass


def test_keystore_password_env_unset(keystore, monkeypatch):
    monkeypatch.delenv("SEALGATE_TEST_PW", raising=False)
    with pytest.raises(ConfigError, match=r"set \$SEALGATE_TEST_PW"):
        with open_deployer(KeystoreKey(keystore, "SEALGATE_TEST_PW")):
            pass


def test_keystore_not_a_keystore(tmp_path, monkeypatch):
    monkeypatch.setenv("SEALGATE_TEST_PW", "x")
    path = write(tmp_path, '{"hello": 1}', "ks.json")
    with pytest.raises(ConfigError, match="not an Ethereum keystore"):
        with open_deployer(KeystoreKey(path, "SEALGATE_TEST_PW")):
            pass


def test_keystore_missing(tmp_path):
    with pytest.raises(ConfigError, match="unreadable"):
        with open_deployer(KeystoreKey(tmp_path / "absent.json", "PW")):
            pass


# ------------------------------------------------------------ the address manifest

GOOD_MANIFEST = {
    "version": MANIFEST_VERSION, "chain_id": 8453, "rpc_url": "http://127.0.0.1:8545", "deploy_block": 12,
    **{name: addr(name) for name in Manifest.CONTRACTS}, "policy_id": "0x" + "ab" * 32,
    "owners": OWNERS, "threshold": 2, "delay_seconds": 86400, "guardian": addr("guardian"), "anchorer": addr("anchorer"),
}


def manifest_file(tmp_path, doc):
    path = tmp_path / "addresses.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_manifest_round_trips(tmp_path):
    m = Manifest.load(manifest_file(tmp_path, GOOD_MANIFEST))
    assert m.version == MANIFEST_VERSION and m.owners == tuple(OWNERS)
    assert Manifest.load(manifest_file(tmp_path, m.to_json())) == m
    assert json.loads(m.to_json())["version"] == MANIFEST_VERSION


def test_manifest_constructed_without_a_version_writes_the_current_one():
    m = Manifest(**{k: v for k, v in GOOD_MANIFEST.items() if k != "version"} | {"owners": tuple(OWNERS)})
    assert m.version == MANIFEST_VERSION


INVALID_MANIFESTS = {
    "manifest_unknown_field": ({**GOOD_MANIFEST, "extra": 1}, "unknown field 'extra'"),
    "manifest_missing_field": ({k: v for k, v in GOOD_MANIFEST.items() if k != "safe"}, "missing field 'safe'"),
    "manifest_without_version": ({k: v for k, v in GOOD_MANIFEST.items() if k != "version"}, "missing field 'version'"),
    "manifest_wrong_version": ({**GOOD_MANIFEST, "version": 99}, "manifest version 99"),
    "manifest_bad_address": ({**GOOD_MANIFEST, "anchor": "0x12"}, "anchor must be an address"),
    "manifest_chain_id_string": ({**GOOD_MANIFEST, "chain_id": "8453"}, "chain_id must be a non-negative integer"),
    "manifest_threshold_above_owners": ({**GOOD_MANIFEST, "threshold": 4}, "threshold must be in 1..3"),
    "manifest_bad_policy_id": ({**GOOD_MANIFEST, "policy_id": "0x12"}, "policy_id must be"),
    "manifest_not_an_object": ("[1, 2]", "expected a JSON object"),
    "manifest_invalid_json": ("{not json", "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(INVALID_MANIFESTS))
def test_invalid_manifest(tmp_path, case):
    doc, message = INVALID_MANIFESTS[case]
    with pytest.raises(ConfigError) as err:
        Manifest.load(manifest_file(tmp_path, doc))
    assert message in str(err.value), str(err.value)


def test_manifest_unreadable(tmp_path):
    with pytest.raises(ConfigError, match="unreadable"):
        Manifest.load(tmp_path / "absent.json")


def test_manifest_not_utf8(tmp_path):
    path = tmp_path / "addresses.json"
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ConfigError, match="not UTF-8"):
        Manifest.load(path)


# ------------------------------------------------------------ the command line


def test_deploy_help_names_flags_units_env_and_an_example():
    out = subprocess.run([sys.executable, "-m", "ext_authz.cli", "deploy", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for text in ("--plan FILE", "--rpc URL", "--manifest FILE", "--delay-seconds SECONDS", "in seconds",
                 "default: 86400", "example:", "sealgate deploy --plan plan.yaml", "environment:", "SEALGATE_HSM_PIN",
                 "password_env", "31337", "exit 2"):
        assert text in out, text


def test_deploy_refuses_delay_seconds_with_a_plan(tmp_path):
    out = subprocess.run([sys.executable, "-m", "ext_authz.cli", "deploy", "--plan", str(EXAMPLE), "--delay-seconds", "5",
                          "--rpc", "http://127.0.0.1:9", "--manifest", str(tmp_path / "m.json")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "timelock_delay_seconds" in out.stderr


def test_deploy_with_an_invalid_plan_exits_2_before_touching_the_chain(tmp_path):
    bad = write(tmp_path, yaml.safe_dump(plan(safe__threshold=9)))
    out = subprocess.run([sys.executable, "-m", "ext_authz.cli", "deploy", "--plan", str(bad),
                          "--rpc", "http://127.0.0.1:9", "--manifest", str(tmp_path / "m.json")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "threshold must be in 1..3" in out.stderr
    assert not (tmp_path / "m.json").exists()
