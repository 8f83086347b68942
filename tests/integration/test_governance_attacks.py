"""The on-chain trust root under attack, on anvil with the compiled contracts: forged proposal files (with no key
and with one owner key), offline EIP-712 signing, guardian cancel and rotation, renouncing the brake, Safe owner
changes outside the timelock, upgrades that would lift a pause or leave v2 without roles, unknown model ids.

Every attack is a real transaction (or the documented CLI command); contract state is read before and after."""

import json
import subprocess
import sys

import pytest
from eth_account import Account
from web3.exceptions import ContractCustomError

from ext_authz.chain.artifacts import role_id
from ext_authz.chain.deploy import safe_guard
from ext_authz.chain.dev import DEV_KEYS, dev_account
from ext_authz.chain.governance import Proposal, rule_tuple
from ext_authz.errors import ChainError, ConfigError
from ext_authz.policy.abi import ZERO_ADDRESS, PolicyAction, text_id
from ext_authz.policy.pinned import PinnedPolicy

pytestmark = pytest.mark.slow

ATTACKER = dev_account(9)  # holds no role anywhere
GUARDIAN_ACCOUNT, OWNER_ACCOUNTS = 2, (3, 4, 5, 6, 7)
SENTINEL = "0x0000000000000000000000000000000000000001"


def gov_cli(stack, directory):
    base = [sys.executable, "-m", "ext_authz.cli", "gov", "--manifest", str(stack.workdir / "addresses.json"),
            "--dir", str(directory)]

    def run(*args, account=None, code=0):
        cmd = base + (["--dev-account", str(account)] if account is not None else []) + list(args)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
        assert out.returncode == code, out.stdout + out.stderr
        return out

    return run


def pid_of(out) -> str:
    assert out.stdout.startswith("proposal 0x"), out.stdout
    return out.stdout.split()[1]


def error_selector(stack, signature: str) -> str:
    return "0x" + stack.chain.w3.keccak(text=signature)[:4].hex()


def send_reverting(stack, account, fn, error: str | None = None, gas: int = 3_000_000):
    """Sends `fn` as a real transaction with a fixed gas limit (no estimate, which would refuse it first) and
    asserts it was mined and reverted; with `error`, that eth_call at the same state names that custom error."""
    w3 = stack.chain.w3
    if error is not None:
        with pytest.raises(ContractCustomError) as err:
            fn.call({"from": account.address})
        assert str(err.value.data).startswith(error_selector(stack, error)), err.value.data
    tx = fn.build_transaction({"from": account.address, "gas": gas, "chainId": w3.eth.chain_id,
                               "nonce": w3.eth.get_transaction_count(account.address, "pending")})
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction))
    assert receipt.status == 0, "the attack transaction succeeded"
    return receipt


def safe_state(stack) -> dict:
    safe = stack.gov.safe
    return {"owners": safe.functions.getOwners().call(), "threshold": safe.functions.getThreshold().call(),
            "guard": safe_guard(stack.chain, safe.address),
            "modules": safe.functions.getModulesPaginated(SENTINEL, 10).call()[0]}


def roles_state(stack, accounts) -> dict:
    """Who holds which power, on every contract that has it."""
    g = stack.gov
    contracts = {"registry": g.registry, "models": g.models, "approvers": g.approvers, "policy": g.current_policy()}
    out = {}
    for who in accounts:
        for name, c in contracts.items():
            for role in ("GUARDIAN_ROLE", "DEFAULT_ADMIN_ROLE", "POLICY_ADMIN_ROLE", "REGISTRAR_ROLE", "MODEL_ADMIN_ROLE"):
                out[(who, name, role)] = c.functions.hasRole(role_id(role), who).call()
        for role in ("CANCELLER_ROLE", "PROPOSER_ROLE", "DEFAULT_ADMIN_ROLE"):
            out[(who, "timelock", role)] = g.timelock.functions.hasRole(role_id(role), who).call()
    return out


def schedule(stack, changes, owners=None):
    """Proposes through the Safe and schedules with the threshold of (honest) owners; returns the proposal."""
    gov = stack.gov
    proposal = gov.propose(changes)
    for owner in owners or stack.owners[: stack.manifest.threshold]:
        gov.approve(proposal, owner)
    gov.submit(proposal, stack.owners[0])
    return proposal


def hidden_grant(stack):
    """The attacker's hidden change: POLICY_ADMIN_ROLE on the current policy for the attacker."""
    policy = stack.gov.current_policy()
    return policy.address, policy.functions.grantRole(role_id("POLICY_ADMIN_ROLE"), ATTACKER.address), "set rule"


def forge(stack, directory, honest_pid: str, hidden: Proposal) -> str:
    """The forged file: the honest proposal's calls and words, the hidden proposal's hashes."""
    honest = Proposal.load(directory, honest_pid)
    raw = json.loads(honest.to_json())
    raw["safe_tx_hash"], raw["operation_id"] = hidden.safe_tx_hash, hidden.operation_id
    honest.path.unlink()
    (directory / f"{hidden.safe_tx_hash}.json").write_text(json.dumps(raw))
    return hidden.safe_tx_hash


# ---------------------------------------------------------------- 1. approve only what you can read


def test_forged_proposal_file_without_a_key_is_refused_by_every_owner(chain_stack, tmp_path):
    s = chain_stack
    gov = gov_cli(s, tmp_path)
    honest = pid_of(gov("propose", "set-rule", "--role", "procurement", "--action-type", "payment.read",
                        "--target", "payments-api", "--max-amount", "0"))
    hidden = s.gov.propose(hidden_grant(s), salt=b"\x66" * 32)
    forged = forge(s, tmp_path, honest, hidden)
    nonce = s.gov.safe.functions.nonce().call()
    for account in OWNER_ACCOUNTS[:3]:
        out = gov("approve", forged[:14], account=account, code=2)
        assert "do not approve" in out.stderr, out.stderr
    h = bytes.fromhex(forged[2:])
    assert not any(s.gov.safe.functions.approvedHashes(o.address, h).call() for o in s.owners)  # nothing recorded
    assert s.gov.safe.functions.nonce().call() == nonce
    assert s.gov.operation_state(hidden.operation_id) == "Unset"
    assert "REFUSED, do not approve" in gov("pending").stdout
    # nobody can submit the hidden transaction: no owner approved it
    with pytest.raises(ChainError, match="GS0"):
        s.gov.submit(hidden, ATTACKER)
    assert not s.gov.current_policy().functions.hasRole(role_id("POLICY_ADMIN_ROLE"), ATTACKER.address).call()


def test_forged_proposal_file_with_one_owner_key_gets_no_honest_approval(chain_stack, tmp_path):
    s = chain_stack
    gov = gov_cli(s, tmp_path)
    insider = s.owners[0]  # one stolen owner key
    honest = pid_of(gov("propose", "unpause"))
    hidden = s.gov.propose(hidden_grant(s), salt=b"\x67" * 32)
    s.chain.transact(insider, s.gov.safe.functions.approveHash(bytes.fromhex(hidden.safe_tx_hash[2:])))  # on-chain
    forged = forge(s, tmp_path, honest, hidden)
    for account in OWNER_ACCOUNTS[1:4]:
        assert "do not approve" in gov("approve", forged[:14], account=account, code=2).stderr
    assert s.gov.approvals(hidden) == [insider.address]
    send_reverting(s, insider, s.gov.safe.functions.execTransaction(
        s.gov.timelock.address, 0, s.gov.safe_data(hidden), 0, 0, 0, 0, ZERO_ADDRESS, ZERO_ADDRESS,
        bytes(12) + bytes.fromhex(insider.address[2:]) + bytes(32) + b"\x01"))
    assert s.gov.operation_state(hidden.operation_id) == "Unset"
    assert not s.gov.current_policy().functions.hasRole(role_id("POLICY_ADMIN_ROLE"), ATTACKER.address).call()


def test_a_proposal_whose_words_lie_shows_the_call_it_makes(chain_stack, tmp_path):
    """Consistent hashes, lying words: the owner sees the decoded call, and the file's text marked unverified."""
    s = chain_stack
    hidden = s.gov.propose(hidden_grant(s), description="set rule procurement/payment.read")
    hidden.save(tmp_path)
    out = gov_cli(s, tmp_path)("approve", hidden.id[:14], "--print-eip712")
    assert (f"RuleBasedPolicy.grantRole(role=0x{role_id('POLICY_ADMIN_ROLE').hex()}(POLICY_ADMIN_ROLE), "
            f"account={ATTACKER.address}(unknown address))") in out.stderr
    assert "(the file's description, unverified: 'set rule procurement/payment.read')" in out.stderr
    assert not any(s.gov.safe.functions.approvedHashes(o.address, bytes.fromhex(hidden.id[2:])).call() for o in s.owners)


def test_offline_eip712_signatures_are_accepted_by_the_safe(chain_stack, tmp_path):
    s = chain_stack
    gov = gov_cli(s, tmp_path)
    pid = pid_of(gov("propose", "register-model", "--model-id", "offline-model", "--sha256", "5a" * 32,
                     "--sbom", "sbom://offline"))
    typed = json.loads(gov("approve", pid[:14], "--print-eip712").stdout)
    assert s.gov.safe.functions.getTransactionHash(
        typed["message"]["to"], 0, typed["message"]["data"], 0, 0, 0, 0, ZERO_ADDRESS, ZERO_ADDRESS,
        typed["message"]["nonce"]).call().hex() == pid[2:]
    signatures = [Account.sign_typed_data(o.key, full_message=typed).signature.hex() for o in s.owners[:3]]
    # a signature over other typed data (another nonce) is refused before anything is sent
    other = {**typed, "message": {**typed["message"], "nonce": typed["message"]["nonce"] + 1}}
    wrong = Account.sign_typed_data(s.owners[3].key, full_message=other).signature.hex()
    nonce = s.gov.safe.functions.nonce().call()
    assert "not an owner" in gov("submit", pid[:14], "--signature", "0x" + wrong, "--signature", "0x" + signatures[0],
                                 account=9, code=2).stderr
    assert s.gov.safe.functions.nonce().call() == nonce
    out = gov("submit", pid[:14], *[a for sig in signatures for a in ("--signature", "0x" + sig)], account=9)
    assert "threshold reached: scheduled" in out.stdout
    assert s.gov.safe.functions.nonce().call() == nonce + 1
    assert s.gov.approvals(Proposal.load(tmp_path, pid)) == []  # no on-chain approveHash was needed
    assert s.gov.state(Proposal.load(tmp_path, pid)) == "Waiting"


# ---------------------------------------------------------------- 3. powers that fit


def test_cancel_by_the_guardian_stops_a_hostile_operation(chain_stack, tmp_path):
    s = chain_stack
    hostile = schedule(s, hidden_grant(s))  # three owner keys are enough to schedule anything
    assert s.gov.operation_state(hostile.operation_id) == "Waiting"
    # someone without CANCELLER_ROLE cannot cancel
    send_reverting(s, ATTACKER, s.gov.timelock.functions.cancel(bytes.fromhex(hostile.operation_id[2:])),
                   "AccessControlUnauthorizedAccount(address,bytes32)")
    out = gov_cli(s, tmp_path)("guardian-cancel", hostile.operation_id, account=GUARDIAN_ACCOUNT)
    assert "RuleBasedPolicy.grantRole" in out.stdout and "cancelled in block" in out.stdout
    assert s.gov.operation_state(hostile.operation_id) == "Cancelled"
    s.time_travel(s.manifest.delay_seconds + 1)
    with pytest.raises(ChainError, match="TimelockUnexpectedOperationState"):
        s.gov.execute(hostile, ATTACKER)
    assert not s.gov.current_policy().functions.hasRole(role_id("POLICY_ADMIN_ROLE"), ATTACKER.address).call()


def test_guardian_cannot_cancel_its_own_rotation_and_the_new_guardian_takes_every_power(chain_stack, tmp_path):
    s = chain_stack
    old, new = s.guardian, dev_account(8)
    gov = gov_cli(s, tmp_path)
    before = roles_state(s, [old.address, new.address])
    assert all(v for (who, _c, role), v in before.items() if who == old.address and role in ("GUARDIAN_ROLE", "CANCELLER_ROLE"))
    pid = pid_of(gov("propose", "rotate-guardian", "--new", new.address))
    for account in OWNER_ACCOUNTS[:3]:
        out = gov("approve", pid[:14], account=account)
    assert "threshold reached" in out.stdout and "a guardian rotation: the guardian cannot cancel it" in out.stdout
    proposal = s.gov.verify(Proposal.load(tmp_path, pid))
    assert s.gov.timelock.functions.isGuardianRotation(bytes.fromhex(proposal.operation_id[2:])).call()
    # the (stolen) guardian key tries to block its replacement
    send_reverting(s, old, s.gov.timelock.functions.cancel(bytes.fromhex(proposal.operation_id[2:])),
                   "GuardianRotationNotCancellable(bytes32)")
    assert s.gov.operation_state(proposal.operation_id) == "Waiting"
    s.time_travel(s.manifest.delay_seconds + 1)
    gov("execute", pid[:14], account=9)
    after = roles_state(s, [old.address, new.address])
    for (who, c, role), held in after.items():
        if role in ("GUARDIAN_ROLE", "CANCELLER_ROLE"):
            assert held == (who == new.address), (who, c, role)
        else:
            assert held == before[(who, c, role)], (who, c, role)
    agent = text_id(s.spiffe_id("procurement-01"))
    send_reverting(s, old, s.registry.functions.revoke(agent), "AccessControlUnauthorizedAccount(address,bytes32)")
    assert s.registry.functions.agent(agent).call()[4] == 1  # still active
    # rotate back, for the other tests; a batch that smuggles another change in is not a rotation
    back = schedule(s, s.gov.rotate_guardian_changes(new.address, old.address))
    s.time_travel(s.manifest.delay_seconds + 1)
    s.gov.execute(back, ATTACKER)
    smuggled = schedule(s, [*s.gov.rotate_guardian_changes(old.address, new.address), hidden_grant(s)])
    assert not s.gov.timelock.functions.isGuardianRotation(bytes.fromhex(smuggled.operation_id[2:])).call()
    s.gov.guardian_cancel(smuggled.operation_id, old)
    assert s.gov.operation_state(smuggled.operation_id) == "Cancelled"


def test_renounce_of_the_guardian_role_and_of_timelock_powers_is_refused(chain_stack):
    s = chain_stack
    g = s.gov
    before = roles_state(s, [s.guardian.address, g.safe.address])
    for contract in (g.registry, g.models, g.approvers, g.current_policy()):
        send_reverting(s, s.guardian, contract.functions.renounceRole(role_id("GUARDIAN_ROLE"), s.guardian.address),
                       "GuardianRoleNotRenounceable()")
    send_reverting(s, s.guardian, g.timelock.functions.renounceRole(role_id("CANCELLER_ROLE"), s.guardian.address),
                   "TimelockRoleNotRenounceable(bytes32)")
    # three owners try to drop the Safe's proposer role (governance bricked, no delay): the timelock refuses
    renounce = g.timelock.functions.renounceRole(role_id("PROPOSER_ROLE"), g.safe.address)
    data = renounce._encode_transaction_data()
    nonce = g.safe.functions.nonce().call()
    h = g.safe.functions.getTransactionHash(g.timelock.address, 0, data, 0, 0, 0, 0, ZERO_ADDRESS, ZERO_ADDRESS, nonce).call()
    for owner in s.owners[:3]:
        s.chain.transact(owner, g.safe.functions.approveHash(h))
    sigs = b"".join(bytes(12) + bytes.fromhex(o[2:]) + bytes(32) + b"\x01"
                    for o in sorted((o.address for o in s.owners[:3]), key=lambda a: int(a, 16)))
    send_reverting(s, s.owners[0], g.safe.functions.execTransaction(g.timelock.address, 0, data, 0, 0, 0, 0, ZERO_ADDRESS,
                                                                     ZERO_ADDRESS, sigs))
    assert roles_state(s, [s.guardian.address, g.safe.address]) == before
    assert g.safe.functions.nonce().call() == nonce


def test_deprecation_is_reversible_through_governance_only(chain_stack):
    s = chain_stack
    m = s.manifest
    pinned = PinnedPolicy(m.rpc_url, m.policy_registry, bytes.fromhex(m.policy_id[2:]), watch=(m.registry, m.models))
    action = PolicyAction(text_id(s.spiffe_id("procurement-01")), s.agent_fingerprints["procurement-01"],
                          text_id("payment.transfer"), text_id("payments-api"), 100, 1)
    s.chain.transact(s.guardian, s.models.functions.deprecate(text_id("demo-model-v1")))
    pinned.refresh()
    assert pinned.evaluate(action).reason == "MODEL_NOT_APPROVED"
    send_reverting(s, s.guardian, s.models.functions.restore(text_id("demo-model-v1")),
                   "AccessControlUnauthorizedAccount(address,bytes32)")
    assert not s.models.functions.isApproved(text_id("demo-model-v1")).call()
    s.govern(s.gov.call_restore_model("demo-model-v1"))
    pinned.refresh()
    assert s.models.functions.isApproved(text_id("demo-model-v1")).call()
    assert pinned.evaluate(action).reason == "OK"
    with pytest.raises(ContractCustomError):
        s.models.functions.restore(text_id("demo-model-v1")).call({"from": m.timelock})  # ModelNotDeprecated


def _safe_self_call(stack, data: bytes | str, to: str | None = None, operation: int = 0):
    """Three owners approve and submit a Safe transaction (default: to the Safe itself)."""
    g = stack.gov
    to = to or g.safe.address
    nonce = g.safe.functions.nonce().call()
    h = g.safe.functions.getTransactionHash(to, 0, data, operation, 0, 0, 0, ZERO_ADDRESS, ZERO_ADDRESS, nonce).call()
    for owner in stack.owners[:3]:
        stack.chain.transact(owner, g.safe.functions.approveHash(h))
    sigs = b"".join(bytes(12) + bytes.fromhex(o[2:]) + bytes(32) + b"\x01"
                    for o in sorted((o.address for o in stack.owners[:3]), key=lambda a: int(a, 16)))
    return g.safe.functions.execTransaction(to, 0, data, operation, 0, 0, 0, ZERO_ADDRESS, ZERO_ADDRESS, sigs)


def test_owner_change_outside_the_timelock_is_refused_by_the_safe_guard(chain_stack, tmp_path):
    s = chain_stack
    g = s.gov
    before = safe_state(s)
    assert before["modules"] == [s.manifest.timelock] and before["guard"] != ZERO_ADDRESS
    owners = before["owners"]
    attempts = [
        g.safe.encode_abi("swapOwner", [SENTINEL, owners[0], ATTACKER.address]),
        g.safe.encode_abi("addOwnerWithThreshold", [ATTACKER.address, 1]),
        g.safe.encode_abi("changeThreshold", [1]),
        g.safe.encode_abi("setGuard", [ZERO_ADDRESS]),
        g.safe.encode_abi("enableModule", [ATTACKER.address]),
    ]
    for data in attempts:
        send_reverting(s, s.owners[0], _safe_self_call(s, data), "SafeSelfCallForbidden(bytes4)")
    # a delegatecall could rewrite the Safe's storage directly
    helper = s.chain.deploy(ATTACKER, "SafeGovernanceSetup")
    data = s.chain.contract("SafeGovernanceSetup", helper).encode_abi("enableModuleAndGuard", [ATTACKER.address, ZERO_ADDRESS])
    send_reverting(s, s.owners[0], _safe_self_call(s, data, to=helper, operation=1), "SafeDelegateCallForbidden(address)")
    assert safe_state(s) == before
    # the governed way: through the timelock, the Safe's module, after the delay
    gov = gov_cli(s, tmp_path)
    fresh = dev_account(8).address
    pid = pid_of(gov("propose", "swap-owner", "--old", owners[4], "--new", fresh))
    for account in OWNER_ACCOUNTS[:3]:
        out = gov("approve", pid[:14], account=account)
    assert "Safe.execTransactionFromModule" in out.stdout and "-> CALL Safe.swapOwner(" in out.stdout
    assert safe_state(s) == before  # scheduled, not in effect
    s.time_travel(s.manifest.delay_seconds + 1)
    gov("execute", pid[:14], account=9)
    assert safe_state(s)["owners"] == owners[:4] + [fresh]
    back = schedule(s, g.call_safe_owners("swap-owner", old=fresh, new=owners[4]))
    s.time_travel(s.manifest.delay_seconds + 1)
    g.execute(back, ATTACKER)
    assert safe_state(s) == before


# ---------------------------------------------------------------- 5. upgrades keep the brakes


def _v2(stack, admin=None, agents=None):
    m = stack.manifest
    return stack.chain.deploy(Account.from_key(DEV_KEYS["deployer"]), "RuleBasedPolicy", admin or m.timelock,
                              agents or m.registry, m.models)


def test_upgrade_while_paused_keeps_the_pause(chain_stack):
    s = chain_stack
    m, g = s.manifest, s.gov
    pid = bytes.fromhex(m.policy_id[2:])
    v1 = g.current_policy().address
    # proposed before the guardian pauses, so without pausing the new implementation
    unpaused = schedule(s, g.upgrade_policy_changes(_v2(s)))
    s.pause_policy()
    s.time_travel(m.delay_seconds + 1)
    version = s.policy_registry.functions.versionCount(pid).call()
    send_reverting(s, ATTACKER, execute_fn(g, unpaused), "UpgradeWouldLiftPause(bytes32,address)")
    assert s.policy_registry.functions.versionCount(pid).call() == version
    assert g.current_policy().address == v1 and g.current_policy().functions.paused().call()
    # the proposal kind pauses the new implementation in the same operation
    v2 = _v2(s)
    s.govern(g.upgrade_policy_changes(v2))
    assert g.current_policy().address == v2 and g.current_policy().functions.paused().call()
    pinned = PinnedPolicy(m.rpc_url, m.policy_registry, pid, watch=(m.registry, m.models))
    pinned.refresh()
    action = PolicyAction(text_id(s.spiffe_id("procurement-01")), s.agent_fingerprints["procurement-01"],
                          text_id("payment.transfer"), text_id("payments-api"), 100, 1)
    assert (pinned.evaluate(action).implementation, pinned.evaluate(action).reason) == (v2, "POLICY_PAUSED")
    s.govern(g.upgrade_policy_changes(v1))  # back to v1 (still paused), then unpause, for the other tests
    s.unpause_policy()
    assert g.current_policy().address == v1 and not g.current_policy().functions.paused().call()


def execute_fn(gov, proposal):
    """The timelock's execute (or executeBatch) call for a scheduled proposal, sent by the test itself."""
    salt = bytes.fromhex(proposal.salt[2:])
    if proposal.batch:
        return gov.timelock.functions.executeBatch(proposal.targets, proposal.values, proposal.datas, bytes(32), salt)
    c = proposal.calls[0]
    return gov.timelock.functions.execute(c.target, c.value, c.data_bytes, bytes(32), salt)


def test_v2_roles_are_granted_in_the_upgrade_and_governance_can_set_its_rules(chain_stack, tmp_path):
    s = chain_stack
    m, g = s.manifest, s.gov
    v1 = g.current_policy().address
    # a v2 the timelock does not administer, or that reads other registries, is refused before proposing
    with pytest.raises(ConfigError, match="not DEFAULT_ADMIN"):
        g.upgrade_policy_changes(_v2(s, admin=ATTACKER.address))
    with pytest.raises(ConfigError, match="the authorizer watches"):
        g.upgrade_policy_changes(_v2(s, agents=m.approvers))
    # and a bare upgrade to a v2 without the timelock as its POLICY_ADMIN reverts on-chain
    bare = schedule(s, g.call_upgrade_policy(_v2(s)))
    s.time_travel(m.delay_seconds + 1)
    send_reverting(s, ATTACKER, execute_fn(g, bare), "ImplementationNotGoverned(address,address)")
    assert g.current_policy().address == v1
    v2 = _v2(s)
    pid = pid_of(gov_cli(s, tmp_path)("propose", "upgrade-policy", "--implementation", v2))
    for account in OWNER_ACCOUNTS[:3]:
        gov_cli(s, tmp_path)("approve", pid[:14], account=account)
    s.time_travel(m.delay_seconds + 1)
    gov_cli(s, tmp_path)("execute", pid[:14], account=9)
    policy = g.current_policy()
    assert policy.address == v2
    assert policy.functions.hasRole(role_id("POLICY_ADMIN_ROLE"), m.timelock).call()
    assert policy.functions.hasRole(role_id("GUARDIAN_ROLE"), s.guardian.address).call()
    s.govern(g.call_set_rule("procurement", "payment.transfer", "payments-api", rule_tuple(1_000_000, max_risk_score=50)))
    pinned = PinnedPolicy(m.rpc_url, m.policy_registry, bytes.fromhex(m.policy_id[2:]), watch=(m.registry, m.models))
    pinned.refresh()
    action = PolicyAction(text_id(s.spiffe_id("procurement-01")), s.agent_fingerprints["procurement-01"],
                          text_id("payment.transfer"), text_id("payments-api"), 100, 1)
    assert (pinned.evaluate(action).implementation, pinned.evaluate(action).reason) == (v2, "OK")
    s.chain.transact(s.guardian, policy.functions.pause())  # the guardian's brake works on v2
    pinned.refresh()
    assert pinned.evaluate(action).reason == "POLICY_PAUSED"
    s.govern(g.upgrade_policy_changes(v1))
    s.unpause_policy()
    assert g.current_policy().address == v1 and not g.current_policy().functions.paused().call()


def test_unknown_model_id_and_zero_fields_are_refused_by_the_registry(chain_stack):
    s = chain_stack
    g = s.gov
    agent = "spiffe://sealgate.local/agent/ghost"
    assert g.preflight([g.call_register_agent(agent, "acme", "finance", "no-such-model")])  # warned before proposing
    cases = [
        (g.call_register_agent(agent, "acme", "finance", "no-such-model"), "ModelUnknown(bytes32)"),
        ((g.registry.address, g.registry.functions.register(text_id(agent), bytes(32), text_id("finance"),
                                                             text_id("demo-model-v1"), bytes(32)), "zero org"),
         "AgentFieldMissing(bytes32,string)"),
        ((g.registry.address, g.registry.functions.register(text_id(agent), text_id("acme"), bytes(32),
                                                             text_id("demo-model-v1"), bytes(32)), "zero role"),
         "AgentFieldMissing(bytes32,string)"),
        (g.call_set_model(s.spiffe_id("finance-03"), "no-such-model"), "ModelUnknown(bytes32)"),
    ]
    for change, error in cases:
        op = schedule(s, change)
        s.time_travel(s.manifest.delay_seconds + 1)
        send_reverting(s, ATTACKER, execute_fn(g, op), error)
        assert g.operation_state(op.operation_id) == "Ready"  # not executed
    assert s.registry.functions.agent(text_id(agent)).call()[4] == 0  # Unknown
    assert s.registry.functions.agent(text_id(s.spiffe_id("finance-03"))).call()[2] == text_id("demo-model-v1")


def test_deployment_leaves_the_deployer_no_timelock_role_and_the_safe_guarded(chain_stack):
    s = chain_stack
    g, m = s.gov, s.manifest
    deployer = Account.from_key(DEV_KEYS["deployer"]).address
    for role in ("DEFAULT_ADMIN_ROLE", "PROPOSER_ROLE", "CANCELLER_ROLE"):
        assert not g.timelock.functions.hasRole(role_id(role), deployer).call(), role
    assert g.timelock.functions.hasRole(role_id("DEFAULT_ADMIN_ROLE"), m.timelock).call()  # administers itself
    assert g.timelock.functions.hasRole(role_id("CANCELLER_ROLE"), m.guardian).call()
    assert not g.timelock.functions.hasRole(role_id("PROPOSER_ROLE"), m.guardian).call()
    state = safe_state(s)
    assert state["modules"] == [m.timelock]
    guard = s.chain.contract("SafeTimelockGuard", state["guard"])
    assert guard.functions.supportsInterface(bytes.fromhex("e6d7a83a")).call()  # Safe 1.4.1's Guard interface id


def test_authorizer_watches_the_registries_the_new_implementation_reads(chain_stack, tmp_path):
    s = chain_stack
    m, g = s.manifest, s.gov
    deployer = Account.from_key(DEV_KEYS["deployer"])
    other = s.chain.contract("AgentRegistry", s.chain.deploy(deployer, "AgentRegistry", deployer.address, m.models))
    for role in ("REGISTRAR_ROLE", "GUARDIAN_ROLE"):
        s.chain.transact(deployer, other.functions.grantRole(role_id(role), deployer.address))
    agent = text_id(s.spiffe_id("procurement-01"))
    s.chain.transact(deployer, other.functions.register(agent, text_id("acme"), text_id("procurement"),
                                                        text_id("demo-model-v1"), s.agent_fingerprints["procurement-01"]))
    v2 = s.chain.contract("RuleBasedPolicy", _v2(s, agents=other.address))
    with pytest.raises(ConfigError, match="the authorizer watches"):
        g.upgrade_policy_changes(v2.address)
    # three owners bypass the CLI's check with a hand-made batch: the authorizer must still follow the new registry
    rule = rule_tuple(1_000_000, max_risk_score=50)
    bypass = schedule(s, [(v2.address, v2.functions.grantRole(role_id("POLICY_ADMIN_ROLE"), m.timelock), "admin"),
                          (v2.address, v2.functions.setRule(text_id("procurement"), text_id("payment.transfer"),
                                                            text_id("payments-api"), rule), "rule"),
                          g.call_upgrade_policy(v2.address)])
    pending = gov_cli(s, tmp_path)("pending").stdout
    assert f"WARNING: the upgrade to {v2.address} leaves guardian {s.guardian.address} without GUARDIAN_ROLE" in pending
    assert f"WARNING: the upgrade to {v2.address} reads registries {other.address}" in pending
    assert f"the upgrade to {v2.address} leaves the timelock" not in pending  # granted earlier in the same batch
    s.time_travel(m.delay_seconds + 1)
    g.execute(bypass, ATTACKER)
    pinned = PinnedPolicy(m.rpc_url, m.policy_registry, bytes.fromhex(m.policy_id[2:]), watch=(m.registry, m.models))
    pinned.refresh()
    action = PolicyAction(agent, s.agent_fingerprints["procurement-01"], text_id("payment.transfer"),
                          text_id("payments-api"), 100, 1)
    assert (pinned.evaluate(action).implementation, pinned.evaluate(action).reason) == (v2.address, "OK")
    block = s.chain.transact(deployer, other.functions.revoke(agent)).blockNumber
    assert pinned.refresh() == block
    assert pinned.evaluate(action).reason == "AGENT_REVOKED"  # the new implementation's registry is watched
    s.govern(g.upgrade_policy_changes(m.policy))
    assert g.current_policy().address == m.policy


def test_forged_cancel_file_that_lists_other_calls_is_refused(chain_stack, tmp_path):
    """A cancel file whose hash is consistent (it hashes only `cancel(id)`) but whose listed calls are another
    operation's: owners would believe they stop the hostile operation while they cancel the honest one."""
    s = chain_stack
    honest = schedule(s, s.gov.call_register_model("honest-model", "6b" * 32, "sbom://honest"))
    hostile = schedule(s, hidden_grant(s))
    cancel = s.gov.propose_cancel(honest.operation_id)
    raw = json.loads(cancel.to_json())
    raw["calls"] = [{"target": c.target, "value": c.value, "data": c.data, "description": "stop the attacker"}
                    for c in hostile.calls]
    (tmp_path / f"{cancel.id}.json").write_text(json.dumps(raw))
    gov = gov_cli(s, tmp_path)
    for account in OWNER_ACCOUNTS[:3]:
        assert "the calls it lists are not the ones the chain scheduled" in gov("approve", cancel.id[:14],
                                                                                 account=account, code=2).stderr
    assert not any(s.gov.safe.functions.approvedHashes(o.address, bytes.fromhex(cancel.id[2:])).call() for o in s.owners)
    assert s.gov.operation_state(honest.operation_id) == "Waiting"
    s.gov.guardian_cancel(hostile.operation_id, s.guardian)  # the real way to stop it
    assert s.gov.operation_state(hostile.operation_id) == "Cancelled"
