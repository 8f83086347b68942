"""Governance on anvil: Safe 3-of-5 -> TimelockController -> registries and policy; guardian path;
access control of every state-changing function; `sealgate gov` end to end."""

import subprocess
import sys

import pytest
from eth_account import Account
from web3.exceptions import ContractCustomError
from web3.logs import DISCARD

from ext_authz.chain.artifacts import role_id
from ext_authz.chain.dev import DEV_KEYS
from ext_authz.chain.governance import rule_tuple
from ext_authz.errors import ChainError, ConfigError
from ext_authz.policy.abi import ZERO_ADDRESS, PolicyAction, text_id
from ext_authz.policy.pinned import PinnedPolicy

pytestmark = pytest.mark.slow


def selector(stack, signature):
    return "0x" + stack.chain.w3.keccak(text=signature)[:4].hex()


def assert_custom_error(stack, fn, sender, signature):
    with pytest.raises(ContractCustomError) as err:
        fn.call({"from": sender})
    assert str(err.value.data).startswith(selector(stack, signature)), err.value.data


def test_ownership_is_handed_to_the_timelock(chain_stack):
    m = chain_stack.manifest
    safe, timelock = chain_stack.gov.safe, chain_stack.gov.timelock
    assert len(safe.functions.getOwners().call()) == 5 and safe.functions.getThreshold().call() == 3
    assert timelock.functions.getMinDelay().call() == m.delay_seconds == 3600
    assert timelock.functions.hasRole(role_id("PROPOSER_ROLE"), m.safe).call()
    assert timelock.functions.hasRole(role_id("EXECUTOR_ROLE"), ZERO_ADDRESS).call()  # anyone executes after the delay
    deployer = Account.from_key(DEV_KEYS["deployer"]).address
    admin = bytes(32)
    for name, address in (("AgentRegistry", m.registry), ("ModelRegistry", m.models), ("RuleBasedPolicy", m.policy),
                          ("PolicyRegistry", m.policy_registry), ("SaeAnchor", m.anchor), ("ApproverRegistry", m.approvers)):
        c = chain_stack.chain.contract(name, address)
        assert c.functions.hasRole(admin, m.timelock).call(), name
        assert not c.functions.hasRole(admin, deployer).call(), name
    for c, role in ((chain_stack.registry, "REGISTRAR_ROLE"), (chain_stack.models, "MODEL_ADMIN_ROLE"),
                    (chain_stack.policy, "POLICY_ADMIN_ROLE"), (chain_stack.policy_registry, "POLICY_ADMIN_ROLE"),
                    (chain_stack.approvers, "APPROVER_ADMIN_ROLE")):
        assert c.functions.hasRole(role_id(role), m.timelock).call()
        assert not c.functions.hasRole(role_id(role), deployer).call()
    # separate keys: deployer, anchorer, guardian, owners
    keys = {deployer, m.anchorer, m.guardian, *m.owners}
    assert len(keys) == 8


def test_deploy_is_idempotent(chain_stack):
    from ext_authz.chain.deploy import deploy_all

    block = chain_stack.chain.w3.eth.block_number
    again = deploy_all(chain_stack.rpc_url, chain_stack.workdir / "addresses.json")
    assert again == chain_stack.manifest
    assert chain_stack.chain.w3.eth.block_number == block  # nothing was sent


def test_two_of_five_cannot_schedule(chain_stack):
    gov = chain_stack.gov
    proposal = gov.propose(gov.call_unpause())
    for owner in chain_stack.owners[:2]:
        gov.approve(proposal, owner)
    assert len(gov.approvals(proposal)) == 2
    with pytest.raises(ChainError) as err:
        gov.submit(proposal, chain_stack.owners[0])
    assert "GS0" in str(err.value)  # Safe: not enough approvals
    assert gov.state(proposal) == "Unset"


def test_owner_cannot_bypass_the_safe(chain_stack):
    gov = chain_stack.gov
    owner = chain_stack.owners[0].address
    fn = gov.timelock.functions.schedule(chain_stack.manifest.registry, 0, b"", bytes(32), bytes(32), 3600)
    assert_custom_error(chain_stack, fn, owner, "AccessControlUnauthorizedAccount(address,bytes32)")


def test_timelock_delay_is_enforced(chain_stack):
    gov = chain_stack.gov
    proposal = gov.propose(gov.call_register_model("delay-model", "11" * 32, "sbom://delay"))
    for owner in chain_stack.owners[:3]:
        gov.approve(proposal, owner)
    gov.submit(proposal, chain_stack.owners[2])
    assert gov.state(proposal) == "Waiting"
    with pytest.raises(ChainError) as err:
        gov.execute(proposal, chain_stack.owners[0])
    assert "TimelockUnexpectedOperationState" in str(err.value)
    chain_stack.time_travel(chain_stack.manifest.delay_seconds - 60)
    assert gov.state(proposal) == "Waiting"
    chain_stack.time_travel(61)
    assert gov.state(proposal) == "Ready"
    receipt = gov.execute(proposal, Account.from_key(DEV_KEYS["anchorer"]))  # anyone may execute
    assert gov.state(proposal) == "Done"
    registered = chain_stack.models.events.ModelRegistered().process_receipt(receipt, errors=DISCARD)
    assert registered[0]["args"]["modelId"] == text_id("delay-model")
    assert chain_stack.models.functions.isApproved(text_id("delay-model")).call()


def test_scheduled_upgrade_is_visible_before_it_takes_effect(chain_stack):
    m = chain_stack.manifest
    pinned = PinnedPolicy(m.rpc_url, m.policy_registry, bytes.fromhex(m.policy_id[2:]), watch=(m.registry, m.models))
    pinned.refresh()
    action = PolicyAction(text_id(chain_stack.spiffe_id("procurement-01")), chain_stack.agent_fingerprints["procurement-01"],
                          text_id("payment.transfer"), text_id("payments-api"), 100, 1)
    assert (pinned.evaluate(action).version, pinned.evaluate(action).reason) == (1, "OK")

    deployer = Account.from_key(DEV_KEYS["deployer"])
    v2 = chain_stack.chain.deploy(deployer, "RuleBasedPolicy", m.timelock, m.registry, m.models)  # no rules yet
    gov = chain_stack.gov
    proposal = gov.propose(gov.upgrade_policy_changes(v2))
    for owner in chain_stack.owners[:3]:
        gov.approve(proposal, owner)
    gov.submit(proposal, chain_stack.owners[0])
    pending = gov.pending()
    assert any(op["operation_id"] == proposal.operation_id and op["calls"][-1].target == m.policy_registry
               for op in pending)
    pinned.refresh()
    assert pinned.evaluate(action).version == 1  # scheduled, not in effect
    chain_stack.time_travel(m.delay_seconds + 1)
    receipt = gov.execute(proposal, chain_stack.owners[0])
    upgraded = chain_stack.policy_registry.events.PolicyUpgraded().process_receipt(receipt, errors=DISCARD)
    assert upgraded[0]["args"]["implementation"] == v2 and upgraded[0]["args"]["version"] == 2
    assert chain_stack.policy_registry.functions.versionAt(bytes.fromhex(m.policy_id[2:]), 1).call()[0] == m.policy
    pinned.refresh()
    v = pinned.evaluate(action)
    assert (v.version, v.implementation, v.reason) == (2, v2, "ACTION_NOT_PERMITTED")
    assert not any(op["operation_id"] == proposal.operation_id for op in gov.pending())
    # roll back through governance too: the history keeps all three versions
    back = gov.propose(gov.upgrade_policy_changes(m.policy))
    for owner in chain_stack.owners[2:5]:
        gov.approve(back, owner)
    gov.submit(back, chain_stack.owners[4])
    chain_stack.time_travel(m.delay_seconds + 1)
    gov.execute(back, chain_stack.owners[4])
    assert chain_stack.policy_registry.functions.versionCount(bytes.fromhex(m.policy_id[2:])).call() == 3
    pinned.refresh()
    assert pinned.evaluate(action).reason == "OK"


def test_guardian_deprecates_a_model_at_once(chain_stack):
    m = chain_stack.manifest
    gov = chain_stack.gov
    # a model only finance-03 could be moved to, so other tests are unaffected
    proposal = gov.propose(gov.call_register_model("short-lived", "22" * 32, "sbom://short-lived"))
    for owner in chain_stack.owners[:3]:
        gov.approve(proposal, owner)
    gov.submit(proposal, chain_stack.owners[0])
    chain_stack.time_travel(m.delay_seconds + 1)
    gov.execute(proposal, chain_stack.owners[0])
    chain_stack.govern((m.registry, chain_stack.registry.functions.setModel(
        text_id(chain_stack.spiffe_id("finance-03")), text_id("short-lived")), "move finance-03"))
    pinned = PinnedPolicy(m.rpc_url, m.policy_registry, bytes.fromhex(m.policy_id[2:]), watch=(m.registry, m.models))
    pinned.refresh()
    action = PolicyAction(text_id(chain_stack.spiffe_id("finance-03")), chain_stack.agent_fingerprints["finance-03"],
                          text_id("payment.read"), text_id("payments-api"), 0, 1)
    assert pinned.evaluate(action).model_hash == bytes.fromhex("22" * 32)
    assert pinned.evaluate(action).reason == "OK"
    chain_stack.chain.transact(chain_stack.guardian, chain_stack.models.functions.deprecate(text_id("short-lived")))
    pinned.refresh()
    assert pinned.evaluate(action).reason == "MODEL_NOT_APPROVED"
    chain_stack.govern((m.registry, chain_stack.registry.functions.setModel(
        text_id(chain_stack.spiffe_id("finance-03")), text_id("demo-model-v1")), "move back"))


def test_every_state_change_is_access_controlled(chain_stack):
    s = chain_stack
    outsider = Account.create().address
    guardian = s.guardian.address
    agent = text_id(s.spiffe_id("procurement-01"))
    pid = bytes.fromhex(s.manifest.policy_id[2:])
    unauthorized = "AccessControlUnauthorizedAccount(address,bytes32)"
    cases = [
        (s.registry.functions.register(text_id("x"), bytes(32), bytes(32), bytes(32), bytes(32)), guardian),
        (s.registry.functions.reactivate(agent), guardian),  # guardians revoke; restoring is governed
        (s.registry.functions.setModel(agent, bytes(32)), guardian),
        (s.registry.functions.setKey(agent, bytes(32)), guardian),
        (s.registry.functions.revoke(agent), outsider),
        (s.models.functions.register(text_id("m"), b"\x01" * 32, "sbom"), guardian),
        (s.models.functions.deprecate(text_id("demo-model-v1")), outsider),
        (s.policy.functions.setRule(bytes(32), bytes(32), bytes(32), rule_tuple(1)), guardian),
        (s.policy.functions.pause(), outsider),
        (s.policy.functions.unpause(), guardian),  # guardians pause; resuming is governed
        (s.policy_registry.functions.upgrade(pid, s.manifest.policy), guardian),
        (s.policy_registry.functions.deploy(text_id("other"), s.manifest.policy), outsider),
        (s.anchor.functions.anchor(b"\x01" * 32, 1), guardian),
        (s.registry.functions.grantRole(role_id("GUARDIAN_ROLE"), outsider), guardian),
        (s.approvers.functions.register(text_id("eve"), b"\x01" * 32), guardian),  # guardians revoke; adding is governed
        (s.approvers.functions.revoke(text_id("treasury-lead")), outsider),
    ]
    for fn, sender in cases:
        assert_custom_error(s, fn, sender, unauthorized)


def test_approvers_are_registered_through_the_timelock_and_revoked_by_the_guardian(chain_stack):
    from ext_authz.envelope.encoding import b64url
    from ext_authz.signing.file_key import Ed25519Signer

    s = chain_stack
    eve = Ed25519Signer(bytes([5]) * 32).raw_public
    assert s.approvers.functions.approverKey(text_id("treasury-lead")).call() == [s.approver.raw_public, True]
    assert s.approvers.functions.approverKey(text_id("eve")).call() == [bytes(32), False]
    s.govern(s.gov.call_register_approver("eve", b64url(eve)))
    assert s.approvers.functions.approverKey(text_id("eve")).call() == [eve, True]
    assert_custom_error(s, s.approvers.functions.register(text_id("eve"), eve), s.manifest.timelock,
                        "ApproverAlreadyActive(bytes32)")
    assert_custom_error(s, s.approvers.functions.register(text_id("zed"), bytes(32)), s.manifest.timelock,
                        "ApproverKeyMissing(bytes32)")
    s.chain.transact(s.guardian, s.approvers.functions.revoke(text_id("eve")))
    assert s.approvers.functions.approverKey(text_id("eve")).call() == [eve, False]
    assert_custom_error(s, s.approvers.functions.revoke(text_id("eve")), s.guardian.address, "ApproverNotActive(bytes32)")
    pinned = PinnedPolicy(s.manifest.rpc_url, s.manifest.policy_registry, bytes.fromhex(s.manifest.policy_id[2:]),
                          approvers=s.manifest.approvers)
    pinned.refresh()
    assert pinned.approver_key("treasury-lead") == s.approver.raw_public
    assert pinned.approver_key("eve") is None and pinned.approver_key("nobody") is None
    with pytest.raises(ConfigError, match="32 bytes"):
        s.gov.call_register_approver("short", b64url(b"\x01" * 31))
    with pytest.raises(ConfigError, match="approver name"):  # a name no approval could carry as its kid
        s.gov.call_register_approver("Treasury Lead", b64url(eve))


def test_registry_and_model_errors(chain_stack):
    s, timelock, guardian = chain_stack, chain_stack.manifest.timelock, chain_stack.guardian.address
    pid = bytes.fromhex(s.manifest.policy_id[2:])
    outsider = Account.create().address
    assert_custom_error(s, s.models.functions.register(text_id("demo-model-v1"), b"\x01" * 32, "x"), timelock,
                        "ModelAlreadyRegistered(bytes32)")
    assert_custom_error(s, s.models.functions.register(text_id("new"), bytes(32), "x"), timelock, "ArtifactHashMissing(bytes32)")
    assert_custom_error(s, s.models.functions.deprecate(text_id("nope")), guardian, "ModelNotRegistered(bytes32)")
    assert_custom_error(s, s.policy_registry.functions.upgrade(pid, outsider), timelock, "ImplementationInvalid(address)")
    assert_custom_error(s, s.policy_registry.functions.deploy(pid, s.manifest.policy), timelock, "PolicyAlreadyDeployed(bytes32)")
    assert_custom_error(s, s.policy_registry.functions.upgrade(text_id("nope"), s.manifest.policy), timelock, "PolicyUnknown(bytes32)")
    bad_rules = [rule_tuple(10, approval_threshold=11), rule_tuple(10, max_risk_score=101), rule_tuple(10, utc_hours=0),
                 rule_tuple(10, utc_hours=1 << 24), (True, 0x10, 0, 0x00FFFFFF, 10, 0, bytes(32))]
    for rule in bad_rules:
        assert_custom_error(s, s.policy.functions.setRule(bytes(32), bytes(32), bytes(32), rule), timelock,
                            "RuleInvalid(bytes32,bytes32,bytes32)")


def test_sealgate_gov_cli_end_to_end(chain_stack, tmp_path):
    m = chain_stack.manifest
    base = [sys.executable, "-m", "ext_authz.cli", "gov", "--manifest", str(chain_stack.workdir / "addresses.json"),
            "--dir", str(tmp_path)]

    def gov(*args, account=None, ok=True):
        cmd = base + (["--dev-account", str(account)] if account is not None else []) + list(args)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert (out.returncode == 0) == ok, out.stdout + out.stderr
        return out.stdout

    assert "pause: done" in gov("pause", account=2)  # guardian, immediate
    proposal_id = gov("propose", "unpause").split()[1]
    assert "1/3" in gov("approve", proposal_id[:12], account=3)
    assert "2/3" in gov("approve", proposal_id[:12], account=4)
    assert "not executable: operation is Unset" in gov("execute", proposal_id[:12], account=3, ok=False)
    assert "scheduled in block" in gov("approve", proposal_id[:12], account=5)
    assert "Waiting" in gov("pending")
    assert "not executable: operation is Waiting" in gov("execute", proposal_id[:12], account=3, ok=False)
    chain_stack.time_travel(m.delay_seconds + 1)
    assert "executed in block" in gov("execute", proposal_id[:12], account=3)
    assert not chain_stack.gov.current_policy().functions.paused().call()
    assert "no pending timelock operations" in gov("pending")
    # a non-owner's approval does not count
    p2 = gov("propose", "register-model", "--model-id", "cli-model", "--sha256", "33" * 32, "--sbom", "sbom://cli").split()[1]
    out = subprocess.run(base + ["--dev-account", "8", "approve", p2[:12]], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "GS030" in out.stderr  # Safe: only owners can approve a hash


def test_governed_key_rotation_and_rule_readback(chain_stack):
    s = chain_stack
    agent = text_id(s.spiffe_id("procurement-01"))
    old = s.registry.functions.agent(agent).call()[3]
    receipt = s.govern((s.manifest.registry, s.registry.functions.setKey(agent, b"\x07" * 32), "rotate key"))
    changed = s.registry.events.AgentKeyChanged().process_receipt(receipt, errors=DISCARD)[0]["args"]
    assert (changed["previousFingerprint"], changed["keyFingerprint"]) == (old, b"\x07" * 32)
    s.govern((s.manifest.registry, s.registry.functions.setKey(agent, old), "rotate back"))
    assert s.registry.functions.agent(agent).call()[3] == old
    rule = s.policy.functions.ruleOf(text_id("finance"), text_id("payment.transfer"), text_id("payments-api")).call()
    assert rule[0] is True and rule[4] == 5_000_000 and rule[5] == 1_000_000 and rule[2] == 50
    assert_custom_error(s, s.models.functions.deprecate(text_id("short-lived")), s.guardian.address,
                        "ModelAlreadyDeprecated(bytes32)")


# ------------------------------------------------------------ batches, cancel, set-key/set-model, pending, ready times


def gov_cli(chain_stack, directory, env=None):
    """`sealgate gov ...` in a subprocess; returns run(*args, account=, code=) -> CompletedProcess."""
    import os

    base = [sys.executable, "-m", "ext_authz.cli", "gov", "--manifest", str(chain_stack.workdir / "addresses.json"),
            "--dir", str(directory)]

    def run(*args, account=None, code=0):
        cmd = base + (["--dev-account", str(account)] if account is not None else []) + list(args)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})
        assert out.returncode == code, out.stdout + out.stderr
        return out

    return run


def proposal_id(out) -> str:
    assert out.stdout.startswith("proposal 0x"), out.stdout
    return out.stdout.split()[1][:14]


def approve_to_threshold(gov, pid, owners=(3, 4, 5)):
    outs = [gov("approve", pid, account=a).stdout for a in owners]
    assert "threshold reached" in outs[-1], outs[-1]
    return outs[-1]


def test_batch_of_two_changes_is_one_operation_and_both_take_effect(chain_stack, tmp_path):
    from ext_authz.chain.governance import Proposal

    s, m = chain_stack, chain_stack.manifest
    gov = gov_cli(s, tmp_path)
    agent = s.spiffe_id("finance-03")
    batch = tmp_path / "changes.yaml"
    batch.write_text(f"""
- kind: register-model
  model_id: batch-model
  sha256: 0x{'44' * 32}
  sbom: sbom://batch-model
- kind: set-model
  agent: {agent}
  model_id: batch-model
""")
    nonce = s.gov.safe.functions.nonce().call()
    out = gov("propose", "--batch", str(batch), "--description", "move finance-03 to batch-model")
    pid = proposal_id(out)
    assert "batch of 2 calls, one timelock operation (scheduleBatch)" in out.stdout
    assert "warning" not in out.stderr  # set-model's model is registered earlier in the same batch
    saved = Proposal.load(tmp_path, pid)
    assert saved.batch and [c.target for c in saved.calls] == [m.models, m.registry] and saved.safe_nonce == nonce
    approve_to_threshold(gov, pid)
    assert s.gov.safe.functions.nonce().call() == nonce + 1  # one Safe transaction for both changes
    logs = s.gov.timelock.events.CallScheduled().get_logs(
        from_block=m.deploy_block, argument_filters={"id": bytes.fromhex(saved.operation_id[2:])})
    assert sorted(e["args"]["index"] for e in logs) == [0, 1]
    pending = gov("pending").stdout
    assert f"operation {saved.operation_id} Waiting" in pending and "batch of 2 calls" in pending
    assert f"ModelRegistry.register(modelId=0x{text_id('batch-model').hex()}, artifactSha256=0x{'44' * 32}, " \
           'sbomRef="sbom://batch-model")' in pending
    assert f"AgentRegistry.setModel(agentId=0x{text_id(agent).hex()}, modelId=0x{text_id('batch-model').hex()})" in pending
    assert not s.models.functions.isApproved(text_id("batch-model")).call()
    s.time_travel(m.delay_seconds + 1)
    assert "executed in block" in gov("execute", pid, account=3).stdout
    assert s.models.functions.isApproved(text_id("batch-model")).call()
    assert s.registry.functions.agent(text_id(agent)).call()[2] == text_id("batch-model")
    assert s.gov.state(saved) == "Done" and "no pending timelock operations" in gov("pending").stdout
    s.govern(s.gov.call_set_model(agent, "demo-model-v1"))  # back, for the other tests
    assert s.registry.functions.agent(text_id(agent)).call()[2] == text_id("demo-model-v1")


def test_back_to_back_proposals_go_stale_clearly_while_a_batch_succeeds(chain_stack, tmp_path):
    s, m = chain_stack, chain_stack.manifest
    gov = gov_cli(s, tmp_path)
    nonce = s.gov.safe.functions.nonce().call()
    singles = []
    for name in ("nonce-a", "nonce-b", "nonce-c"):  # the old flow: one proposal per change, made back to back
        out = gov("propose", "register-model", "--model-id", name, "--sha256", "55" * 32, "--sbom", f"sbom://{name}")
        singles.append(proposal_id(out))
        assert f"Safe nonce {nonce}" in out.stdout
    assert "also wait(s) for Safe nonce" in out.stderr and "--batch" in out.stderr  # warned when made
    approve_to_threshold(gov, singles[0])  # the first one takes the nonce
    out = gov("approve", singles[1], account=3, code=2)
    assert f"was made for Safe nonce {nonce}, but the Safe is at nonce {nonce + 1}" in out.stderr
    assert f"sealgate gov repropose {singles[1][:12]}" in out.stderr and "propose --batch FILE" in out.stderr
    assert not s.gov.safe.functions.approvedHashes(s.owners[0].address, bytes.fromhex(
        gov_file_hash(tmp_path, singles[1]))).call()  # refused before the approval was recorded
    assert "will never be scheduled" in gov("execute", singles[2], account=3, code=1).stdout
    pending = gov("pending").stdout
    assert f"STALE (made for Safe nonce {nonce}): sealgate gov repropose {singles[1][:12]}" in pending
    # re-proposing makes the stale change approvable again
    again = proposal_id(gov("repropose", singles[1]))
    approve_to_threshold(gov, again)
    # the batch path: several changes, one nonce, nothing goes stale
    batch = tmp_path / "rest.yaml"
    batch.write_text("".join(f"- kind: register-model\n  model_id: {n}\n  sha256: {'66' * 32}\n  sbom: sbom://{n}\n"
                             for n in ("nonce-c", "nonce-d", "nonce-e")))
    batch_id = proposal_id(gov("propose", "--batch", str(batch)))
    approve_to_threshold(gov, batch_id)
    assert s.gov.safe.functions.nonce().call() == nonce + 3
    s.time_travel(m.delay_seconds + 1)
    for pid in (singles[0], again, batch_id):
        assert "executed in block" in gov("execute", pid, account=4).stdout
    for name in ("nonce-a", "nonce-b", "nonce-c", "nonce-d", "nonce-e"):
        assert s.models.functions.isApproved(text_id(name)).call(), name


def gov_file_hash(directory, pid):
    from ext_authz.chain.governance import Proposal

    return Proposal.load(directory, pid).safe_tx_hash[2:]


def test_cancel_stops_a_scheduled_operation(chain_stack, tmp_path):
    from ext_authz.chain.governance import Proposal

    s, m = chain_stack, chain_stack.manifest
    gov = gov_cli(s, tmp_path)
    key = (text_id("finance"), text_id("payment.transfer"), text_id("payments-api"))
    before = s.policy.functions.ruleOf(*key).call()
    pid = proposal_id(gov("propose", "set-rule", "--role", "finance", "--action-type", "payment.transfer",
                          "--target", "payments-api", "--max-amount", "1"))
    approve_to_threshold(gov, pid)
    op = Proposal.load(tmp_path, pid).operation_id
    out = gov("cancel", pid)
    cancel_id = proposal_id(out)
    assert f"cancels timelock operation {op} (Waiting" in out.stdout and "RuleBasedPolicy.setRule(" in out.stdout
    gov("approve", cancel_id, account=4)
    gov("approve", cancel_id, account=6)
    assert s.gov.operation_state(op) == "Waiting"  # 2 of 5 cannot cancel
    assert f"operation {op} cancelled in block" in gov("approve", cancel_id, account=7).stdout
    assert s.gov.operation_state(op) == "Cancelled"
    assert op not in gov("pending").stdout
    assert "nothing to execute" in gov("execute", cancel_id, account=3, code=1).stdout
    s.time_travel(m.delay_seconds + 1)
    assert "not executable: operation is Cancelled" in gov("execute", pid, account=3, code=1).stdout
    with pytest.raises(ChainError, match="TimelockUnexpectedOperationState"):  # the timelock itself refuses
        s.gov.execute(Proposal.load(tmp_path, pid), s.owners[0])
    assert s.gov.operation_state(op) == "Cancelled"
    assert s.policy.functions.ruleOf(*key).call() == before  # the change never happened
    assert "is Cancelled: only a Waiting or Ready operation" in gov("cancel", pid, code=2).stderr


def test_set_key_rotates_the_fingerprint_the_pinned_policy_checks(chain_stack, tmp_path):
    s, m = chain_stack, chain_stack.manifest
    gov = gov_cli(s, tmp_path)
    agent = s.spiffe_id("procurement-01")
    old, new = s.agent_fingerprints["procurement-01"], b"\x09" * 32
    pinned = PinnedPolicy(m.rpc_url, m.policy_registry, bytes.fromhex(m.policy_id[2:]), watch=(m.registry, m.models))

    def reason(fingerprint):
        pinned.refresh()
        return pinned.evaluate(PolicyAction(text_id(agent), fingerprint, text_id("payment.transfer"),
                                            text_id("payments-api"), 100, 1)).reason

    assert (reason(old), reason(new)) == ("OK", "KEY_NOT_BOUND")
    pid = proposal_id(gov("propose", "set-key", "--agent", agent, "--key-fingerprint", new.hex()))
    approve_to_threshold(gov, pid)
    pending = gov("pending").stdout
    assert f"AgentRegistry.setKey(agentId=0x{text_id(agent).hex()}, keyFingerprint=0x{new.hex()})" in pending
    assert f"proposal {pid[:12]}" in pending  # the proposal it came from (its file's own words are not repeated)
    s.time_travel(m.delay_seconds + 1)
    gov("execute", pid, account=3)
    assert s.registry.functions.agent(text_id(agent)).call()[3] == new
    assert (reason(old), reason(new)) == ("KEY_NOT_BOUND", "OK")
    s.govern(s.gov.call_set_key(agent, old))  # back, for the other tests
    assert reason(old) == "OK"
    assert "32 bytes" in gov("propose", "set-key", "--agent", agent, "--key-fingerprint", "abcd", code=2).stderr


def test_execute_before_ready_prints_the_local_ready_time_and_exits_1(chain_stack, tmp_path):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from ext_authz.chain.governance import Proposal

    s = chain_stack
    gov = gov_cli(s, tmp_path, env={"TZ": "Asia/Kolkata"})
    pid = proposal_id(gov("propose", "register-model", "--model-id", "ready-model", "--sha256", "77" * 32,
                          "--sbom", "sbom://ready"))
    approved = approve_to_threshold(gov, pid)
    ready = s.gov.ready_at(Proposal.load(tmp_path, pid))
    local = datetime.fromtimestamp(ready, ZoneInfo("Asia/Kolkata")).strftime("%Y-%m-%d %H:%M:%S IST (UTC+0530)")
    assert f"ready at {local}, unix {ready}" in approved
    out = gov("execute", pid, account=3, code=1).stdout
    assert f"not executable: operation is Waiting; ready at {local}, unix {ready}, in " in out
    assert "of chain time" in out
    assert not s.models.functions.isApproved(text_id("ready-model")).call()
    s.time_travel(s.manifest.delay_seconds + 1)
    gov("execute", pid, account=3)
    assert s.models.functions.isApproved(text_id("ready-model")).call()
