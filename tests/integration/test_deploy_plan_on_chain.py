"""`sealgate deploy` against a real anvil that is not the local chain (chain id 8453, as Base mainnet).

Development keys are refused there; a plan with fresh keys deploys, seeds and hands over; a
live manifest is reused; a bad or foreign manifest is an error, never a silent redeploy. The
CLI runs as a subprocess, as an operator would run it.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from eth_account import Account
from eth_utils import to_checksum_address

from ext_authz.chain.artifacts import role_id
from ext_authz.chain.client import ChainClient
from ext_authz.chain.dev import dev_account
from ext_authz.chain.manifest import Manifest
from ext_authz.local.net import anvil_binary, free_port, wait_until
from ext_authz.policy.abi import PolicyAction, text_id
from ext_authz.policy.pinned import PinnedPolicy

pytestmark = pytest.mark.slow

CHAIN_ID = 8453
DELAY = 7200
AGENT = "spiffe://prod.example.com/agent/procurement-01"
FINGERPRINT = bytes.fromhex("f910152c80be10ee2280a04cb011ce9131b993408adb19cf47f1495c331bcdbc")
APPROVER_X = "30iuycB2yeCYqW6tLRRahiceevc8k6GTlxNBgQUzEEE"
MODEL_SHA = "87776fd21ba9b0aecd90e9f3a5dc80998ec34570a4952c88ce67e8410cc283b8"
ADMIN_ROLES = {"AgentRegistry": "REGISTRAR_ROLE", "ModelRegistry": "MODEL_ADMIN_ROLE", "RuleBasedPolicy": "POLICY_ADMIN_ROLE",
               "PolicyRegistry": "POLICY_ADMIN_ROLE", "SaeAnchor": None, "ApproverRegistry": "APPROVER_ADMIN_ROLE",
               "SigningKeyRegistry": "KEY_ADMIN_ROLE"}
FIELDS = {"AgentRegistry": "registry", "ModelRegistry": "models", "RuleBasedPolicy": "policy",
          "PolicyRegistry": "policy_registry", "SaeAnchor": "anchor", "ApproverRegistry": "approvers",
          "SigningKeyRegistry": "signing_keys"}
SAE_JWK = {"kty": "OKP", "crv": "Ed25519", "x": "oUAdWDv90wlIf1oKc225-68MaYY3muqYw7iEOIYXezg"}
SAE_KID = "e6YJVKbZZCmIon7qrz2NIrusrs6T9hLx4FxLrGSYIG8"


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """anvil with chain id 8453 on a free port (no contracts)."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("anvil8453") / "anvil.log", "ab")
    proc = subprocess.Popen([anvil_binary(), "--host", "127.0.0.1", "--port", str(port), "--chain-id", str(CHAIN_ID)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    try:
        client = ChainClient(f"http://127.0.0.1:{port}", timeout=5)
        wait_until(lambda: proc.poll() is None and client.w3.is_connected(), 30, "anvil --chain-id 8453")
        assert client.w3.eth.chain_id == CHAIN_ID
        yield client
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        proc.wait(10)


def deploy(chain, manifest, plan=None, env=None):
    argv = [sys.executable, "-m", "ext_authz.cli", "deploy", "--rpc", chain.rpc_url, "--manifest", str(manifest)]
    if plan is not None:
        argv += ["--plan", str(plan)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def fund(chain, address):
    """The test funding a wallet: a plain transfer from an anvil account (9: never a deployer here)."""
    tx = chain.w3.eth.send_transaction({"from": dev_account(9).address, "to": to_checksum_address(address), "value": 10**20})
    chain.w3.eth.wait_for_transaction_receipt(tx)


class Keys:
    """Fresh, non-development accounts for one plan."""

    def __init__(self):
        self.deployer = Account.create()
        self.owners = [Account.create() for _ in range(3)]
        self.guardian = Account.create()
        self.anchorer = Account.create()


def write_plan(path: Path, keys: Keys, deployer_key: dict, **overrides) -> Path:
    raw = {
        "version": 1,
        "chain_id": CHAIN_ID,
        "safe": {"owners": [o.address for o in keys.owners], "threshold": 2},
        "guardian": keys.guardian.address,
        "anchorer": keys.anchorer.address,
        "timelock_delay_seconds": DELAY,
        "deployer_key": deployer_key,
        "models": [{"id": "payments-model-v1", "sha256": MODEL_SHA, "sbom": "https://example.com/sbom.cdx.json"}],
        "agents": [{"spiffe_id": AGENT, "org": "acme", "role": "procurement", "model": "payments-model-v1",
                    "key_fingerprint": FINGERPRINT.hex()}],
        "rules": [{"role": "procurement", "action_type": "payment.transfer", "target": "payments-api",
                   "max_amount": 1_000_000, "approval_threshold": 250_000, "data_classes": ["public", "internal"],
                   "max_risk": 50, "required_model": "payments-model-v1"}],
        "approvers": [{"name": "treasury-lead", "x": APPROVER_X}],
        "signing_keys": [{"jwk": SAE_JWK, "valid_from": 1}],
        **overrides,
    }
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def nothing_sent(chain, *addresses):
    """Snapshot of the block number and nonces: equal before and after means no transaction was sent."""
    return chain.w3.eth.block_number, [chain.w3.eth.get_transaction_count(to_checksum_address(a)) for a in addresses]


@pytest.fixture(scope="module")
def env_deploy(chain, tmp_path_factory):
    """A plan deployed with the deployer key in an environment variable."""
    work = tmp_path_factory.mktemp("plan-env")
    keys = Keys()
    fund(chain, keys.deployer.address)
    plan = write_plan(work / "plan.yaml", keys, {"env": "SEALGATE_TEST_DEPLOYER_KEY"})
    manifest = work / "addresses.json"
    out = deploy(chain, manifest, plan, {"SEALGATE_TEST_DEPLOYER_KEY": keys.deployer.key.to_0x_hex()})
    assert out.returncode == 0, out.stderr
    assert keys.deployer.key.hex() not in out.stdout + out.stderr
    return keys, plan, manifest, Manifest.load(manifest), out


# ------------------------------------------------------------ (a) development keys refused


def test_deploy_without_a_plan_on_chain_8453_exits_2_and_sends_nothing(chain, tmp_path):
    manifest = tmp_path / "addresses.json"
    before = nothing_sent(chain, dev_account(0).address)
    out = deploy(chain, manifest)
    assert out.returncode == 2, out.stderr
    assert "development keys" in out.stderr and "public" in out.stderr and "chain 8453" in out.stderr
    assert "--plan" in out.stderr
    assert not manifest.exists()
    assert nothing_sent(chain, dev_account(0).address) == before


def test_plan_with_a_dev_account_as_guardian_is_refused_on_chain_8453(chain, tmp_path):
    keys = Keys()
    plan = write_plan(tmp_path / "plan.yaml", keys, {"env": "SEALGATE_TEST_DEPLOYER_KEY"}, guardian=dev_account(2).address)
    out = deploy(chain, tmp_path / "addresses.json", plan, {"SEALGATE_TEST_DEPLOYER_KEY": keys.deployer.key.to_0x_hex()})
    assert out.returncode == 2 and "anvil development account" in out.stderr
    assert not (tmp_path / "addresses.json").exists()


def test_plan_with_the_dev_deployer_key_is_refused_on_chain_8453(chain, tmp_path):
    dev = dev_account(0)
    plan = write_plan(tmp_path / "plan.yaml", Keys(), {"env": "SEALGATE_TEST_DEPLOYER_KEY"})
    before = nothing_sent(chain, dev.address)
    out = deploy(chain, tmp_path / "addresses.json", plan, {"SEALGATE_TEST_DEPLOYER_KEY": dev.key.to_0x_hex()})
    assert out.returncode == 2 and "the deployer key" in out.stderr and "anvil development account" in out.stderr
    assert nothing_sent(chain, dev.address) == before and not (tmp_path / "addresses.json").exists()


def test_plan_for_another_chain_id_is_refused(chain, tmp_path):
    keys = Keys()
    plan = write_plan(tmp_path / "plan.yaml", keys, {"env": "SEALGATE_TEST_DEPLOYER_KEY"}, chain_id=10)
    out = deploy(chain, tmp_path / "addresses.json", plan, {"SEALGATE_TEST_DEPLOYER_KEY": keys.deployer.key.to_0x_hex()})
    assert out.returncode == 2 and "is for chain 10" in out.stderr and "chain 8453" in out.stderr


def test_unfunded_deployer_is_refused_before_sending(chain, tmp_path):
    keys = Keys()
    plan = write_plan(tmp_path / "plan.yaml", keys, {"env": "SEALGATE_TEST_DEPLOYER_KEY"})
    out = deploy(chain, tmp_path / "addresses.json", plan, {"SEALGATE_TEST_DEPLOYER_KEY": keys.deployer.key.to_0x_hex()})
    assert out.returncode == 2 and "has no funds" in out.stderr


# ------------------------------------------------------------ (b) a plan deploys, seeds and hands over


def test_plan_deploy_sets_the_plans_safe_timelock_and_roles(chain, env_deploy):
    keys, _, _, m, out = env_deploy
    assert json.loads(out.stdout) == json.loads(m.to_json())
    assert m.chain_id == CHAIN_ID
    safe = chain.contract("Safe", m.safe)
    assert set(safe.functions.getOwners().call()) == {o.address for o in keys.owners}
    assert safe.functions.getThreshold().call() == 2
    timelock = chain.contract("SealgateTimelock", m.timelock)
    assert timelock.functions.getMinDelay().call() == DELAY
    assert timelock.functions.hasRole(role_id("PROPOSER_ROLE"), m.safe).call()
    assert (m.owners, m.threshold, m.delay_seconds) == (tuple(o.address for o in keys.owners), 2, DELAY)
    assert (m.guardian, m.anchorer) == (keys.guardian.address, keys.anchorer.address)
    for name in ("AgentRegistry", "ModelRegistry", "RuleBasedPolicy", "ApproverRegistry", "SigningKeyRegistry"):
        c = chain.contract(name, getattr(m, FIELDS[name]))
        assert c.functions.hasRole(role_id("GUARDIAN_ROLE"), keys.guardian.address).call(), name
    anchor = chain.contract("SaeAnchor", m.anchor)
    assert anchor.functions.hasRole(role_id("ANCHORER_ROLE"), keys.anchorer.address).call()


def test_plan_deploy_leaves_the_deployer_no_role(chain, env_deploy):
    keys, _, _, m, _ = env_deploy
    deployer = keys.deployer.address
    for name, role in ADMIN_ROLES.items():
        c = chain.contract(name, getattr(m, FIELDS[name]))
        assert c.functions.hasRole(bytes(32), m.timelock).call(), name
        assert not c.functions.hasRole(bytes(32), deployer).call(), name
        if role:
            assert c.functions.hasRole(role_id(role), m.timelock).call(), name
            assert not c.functions.hasRole(role_id(role), deployer).call(), name
    timelock = chain.contract("SealgateTimelock", m.timelock)
    for role in ("DEFAULT_ADMIN_ROLE", "PROPOSER_ROLE", "CANCELLER_ROLE"):
        rid = bytes(32) if role == "DEFAULT_ADMIN_ROLE" else role_id(role)
        assert not timelock.functions.hasRole(rid, deployer).call(), role
    assert deployer not in chain.contract("Safe", m.safe).functions.getOwners().call()


def test_plan_deploy_seeds_agent_model_rule_and_approver(env_deploy):
    _, _, _, m, _ = env_deploy
    pinned = PinnedPolicy(m.rpc_url, m.policy_registry, bytes.fromhex(m.policy_id[2:]), watch=(m.registry, m.models),
                          approvers=m.approvers)
    pinned.refresh()

    def evaluate(amount=100, data_class=1, key=FINGERPRINT, agent=AGENT):
        return pinned.evaluate(PolicyAction(text_id(agent), key, text_id("payment.transfer"), text_id("payments-api"),
                                            amount, data_class, 0))

    allowed = evaluate()
    assert (allowed.decision, allowed.reason) == ("ALLOW", "OK")
    assert allowed.model_hash.hex() == MODEL_SHA and allowed.implementation == m.policy
    assert (evaluate(amount=250_001).decision, evaluate(amount=1_000_001).reason) == ("REQUIRE_APPROVAL", "AMOUNT_OVER_LIMIT")
    assert evaluate(data_class=2).reason == "DATA_CLASS_NOT_PERMITTED"
    assert evaluate(key=bytes(32)).reason == "KEY_NOT_BOUND"
    assert evaluate(agent="spiffe://prod.example.com/agent/other").reason == "AGENT_UNKNOWN"
    import base64

    assert pinned.approver_key("treasury-lead") == base64.urlsafe_b64decode(APPROVER_X + "=")
    from ext_authz.chain.client import ChainClient
    from ext_authz.chain.keys import SigningKeys

    record = SigningKeys(ChainClient(m.rpc_url), m.signing_keys).record(SAE_KID)  # the SAE key, seeded by the plan
    assert record is not None and record.jwk["x"] == SAE_JWK["x"] and (record.valid_from, record.revoked_at) == (1, 0)


# ------------------------------------------------------------ (c) the same manifest is reused


def test_second_deploy_with_the_same_manifest_is_reused(chain, env_deploy):
    keys, plan, manifest, m, _ = env_deploy
    before = nothing_sent(chain, keys.deployer.address)
    out = deploy(chain, manifest, plan, {"SEALGATE_TEST_DEPLOYER_KEY": keys.deployer.key.to_0x_hex()})
    assert out.returncode == 0, out.stderr
    assert Manifest.load(manifest) == m and json.loads(out.stdout) == json.loads(m.to_json())
    assert nothing_sent(chain, keys.deployer.address) == before


def test_reuse_with_a_plan_that_differs_from_the_deployment_is_refused(chain, env_deploy, tmp_path):
    keys, _, manifest, m, _ = env_deploy
    changed = write_plan(tmp_path / "plan.yaml", keys, {"env": "SEALGATE_TEST_DEPLOYER_KEY"}, timelock_delay_seconds=DELAY * 2)
    before = nothing_sent(chain, keys.deployer.address)
    out = deploy(chain, manifest, changed, {"SEALGATE_TEST_DEPLOYER_KEY": keys.deployer.key.to_0x_hex()})
    assert out.returncode == 2 and "differs from" in out.stderr and "delay_seconds" in out.stderr
    assert "sealgate gov propose" in out.stderr
    assert nothing_sent(chain, keys.deployer.address) == before and Manifest.load(manifest) == m


# ------------------------------------------------------------ (d) the deployer key from an encrypted keystore


def test_deployer_key_from_an_encrypted_keystore(chain, tmp_path):
    keys = Keys()
    fund(chain, keys.deployer.address)
    keystore = tmp_path / "keys" / "deployer.json"
    keystore.parent.mkdir()
    keystore.write_text(json.dumps(Account.encrypt(keys.deployer.key, "correct horse battery", kdf="scrypt",
                                                   iterations=2**14)))
    plan = write_plan(tmp_path / "plan.yaml", keys, {"keystore": "keys/deployer.json", "password_env": "SEALGATE_TEST_PW"})
    manifest = tmp_path / "addresses.json"

    wrong = deploy(chain, manifest, plan, {"SEALGATE_TEST_PW": "wrong"})
    assert wrong.returncode == 2 and "does not decrypt" in wrong.stderr and not manifest.exists()
    assert chain.w3.eth.get_transaction_count(keys.deployer.address) == 0

    out = deploy(chain, manifest, plan, {"SEALGATE_TEST_PW": "correct horse battery"})
    assert out.returncode == 0, out.stderr
    m = Manifest.load(manifest)
    assert chain.w3.eth.get_transaction_count(keys.deployer.address) > 0  # the keystore's key signed the deployment
    assert set(chain.contract("Safe", m.safe).functions.getOwners().call()) == {o.address for o in keys.owners}
    registry = chain.contract("AgentRegistry", m.registry)
    assert not registry.functions.hasRole(bytes(32), keys.deployer.address).call()


# ------------------------------------------------------------ (e) a bad or foreign manifest is never deployed over


@pytest.mark.parametrize("case,edit,message", [
    ("unknown_field", lambda doc: {**doc, "extra": 1}, "unknown field 'extra'"),
    ("another_chain_id", lambda doc: {**doc, "chain_id": 31337}, "is for chain 31337"),
    ("contracts_without_code", lambda doc: {**doc, "registry": "0x" + "12" * 20}, "have no code"),
    ("no_version", lambda doc: {k: v for k, v in doc.items() if k != "version"}, "missing field 'version'"),
    ("not_json", lambda doc: "{truncated", "not valid JSON"),
])
def test_bad_or_foreign_manifest_exits_2_without_deploying(chain, env_deploy, tmp_path, case, edit, message):
    keys, _, good, _, _ = env_deploy
    fresh = Keys()
    fund(chain, fresh.deployer.address)
    plan = write_plan(tmp_path / "plan.yaml", fresh, {"env": "SEALGATE_TEST_DEPLOYER_KEY"})
    doc = edit(json.loads(good.read_text()))
    manifest = tmp_path / "addresses.json"
    manifest.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    written = manifest.read_text()
    before = nothing_sent(chain, fresh.deployer.address, dev_account(0).address)
    out = deploy(chain, manifest, plan, {"SEALGATE_TEST_DEPLOYER_KEY": fresh.deployer.key.to_0x_hex()})
    assert out.returncode == 2, (case, out.stderr)
    assert message in out.stderr and "refusing to deploy" in out.stderr.lower(), out.stderr
    assert nothing_sent(chain, fresh.deployer.address, dev_account(0).address) == before
    assert manifest.read_text() == written
    # without a plan the answer is no better: development keys on chain 8453
    assert deploy(chain, manifest).returncode == 2 and manifest.read_text() == written


# ------------------------------------------------------------ the deployer key in a PKCS#11 token

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"


@pytest.mark.skipif(not (Path(SOFTHSM).exists() and shutil.which("softhsm2-util")), reason="SoftHSM2 is not installed")
def test_deployer_key_in_a_pkcs11_token(chain, tmp_path):
    conf = tmp_path / "softhsm2.conf"
    (tmp_path / "tokens").mkdir()
    conf.write_text(f"directories.tokendir = {tmp_path / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {"SOFTHSM2_CONF": str(conf), "SEALGATE_HSM_PIN": "4321"}
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "deploy-test", "--pin", "4321", "--so-pin", "87654321"],
                   check=True, capture_output=True, env={**os.environ, **env})
    made = subprocess.run([sys.executable, "-m", "ext_authz.cli", "hsm", "keygen", "--type", "secp256k1", "--module", SOFTHSM,
                           "--token", "deploy-test", "--key", "deployer"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})
    assert made.returncode == 0, made.stderr
    address = json.loads(made.stdout)["address"]
    fund(chain, address)
    keys = Keys()
    plan = write_plan(tmp_path / "plan.yaml", keys, {"pkcs11": {"module": SOFTHSM, "token": "deploy-test", "key": "deployer"}})
    out = deploy(chain, tmp_path / "addresses.json", plan, env)
    assert out.returncode == 0, out.stderr
    m = Manifest.load(tmp_path / "addresses.json")
    assert chain.w3.eth.get_transaction_count(to_checksum_address(address)) > 0
    assert not chain.contract("AgentRegistry", m.registry).functions.hasRole(bytes(32), address).call()
    assert chain.contract("SaeAnchor", m.anchor).functions.hasRole(role_id("ANCHORER_ROLE"), keys.anchorer.address).call()
