"""Proposal file format, calldata decoding and batch files: no chain needed."""

import json
from datetime import datetime

import pytest
from eth_abi import encode
from eth_utils import keccak, to_checksum_address

from ext_authz.chain.artifacts import role_id
from ext_authz.chain.proposals import Call, Proposal, contract_names, decode_call, duration, local_time
from ext_authz.cli.gov_changes import batch_changes
from ext_authz.errors import ConfigError, UsageError

AGENT = keccak(text="spiffe://sealgate.local/agent/finance-03")
ADDR = "0x" + "ab" * 20


def calldata(signature: str, types: list[str], values: list) -> bytes:
    return keccak(text=signature)[:4] + encode(types, values)


def test_decodes_a_call_with_argument_names():
    data = calldata("setKey(bytes32,bytes32)", ["bytes32", "bytes32"], [AGENT, b"\x07" * 32])
    assert decode_call("AgentRegistry", data) == f"AgentRegistry.setKey(agentId=0x{AGENT.hex()}, keyFingerprint=0x{'07' * 32})"


def test_decodes_a_struct_argument_with_its_field_names():
    rule = (True, 3, 50, 0x00FFFFFF, 5_000_000, 1_000_000, bytes(32))
    data = calldata("setRule(bytes32,bytes32,bytes32,(bool,uint8,uint8,uint32,uint256,uint256,bytes32))",
                    ["bytes32", "bytes32", "bytes32", "(bool,uint8,uint8,uint32,uint256,uint256,bytes32)"],
                    [bytes(32), bytes(32), bytes(32), rule])
    text = decode_call("RuleBasedPolicy", data)
    assert text.startswith("RuleBasedPolicy.setRule(role=0x")
    assert "rule=(enabled=True, allowedDataClasses=3, maxRiskScore=50" in text and "maxAmount=5000000" in text


def test_names_well_known_roles_and_strings():
    data = calldata("grantRole(bytes32,address)", ["bytes32", "address"], [role_id("ANCHORER_ROLE"), ADDR])
    assert "role=0x" in decode_call("SaeAnchor", data) and "(ANCHORER_ROLE)" in decode_call("SaeAnchor", data)
    data = calldata("register(bytes32,bytes32,string)", ["bytes32", "bytes32", "string"], [AGENT, b"\x01" * 32, "sbom://x"])
    assert decode_call("ModelRegistry", data).endswith('sbomRef="sbom://x")')


def test_unknown_target_or_selector_prints_the_raw_selector():
    data = bytes.fromhex("deadbeef") + bytes(32)
    assert decode_call(None, data) == "unknown contract: selector 0xdeadbeef (36 bytes of calldata)"
    assert decode_call("AgentRegistry", data) == "AgentRegistry: unknown selector 0xdeadbeef (36 bytes of calldata)"
    truncated = calldata("setKey(bytes32,bytes32)", ["bytes32", "bytes32"], [AGENT, AGENT])[:40]
    assert "does not decode" in decode_call("AgentRegistry", truncated)


def test_contract_names_come_from_the_manifest():
    class M:
        registry, models, policy, policy_registry = "0x" + "01" * 20, "0x" + "02" * 20, "0x" + "03" * 20, "0x" + "04" * 20
        anchor, approvers, timelock, safe = "0x" + "05" * 20, "0x" + "06" * 20, "0x" + "07" * 20, "0x" + "08" * 20

    names = contract_names(M, {ADDR: "RuleBasedPolicy"})
    assert set(names.values()) == {"AgentRegistry", "ModelRegistry", "RuleBasedPolicy", "PolicyRegistry", "SaeAnchor",
                                   "ApproverRegistry", "SealgateTimelock", "Safe"}
    assert len(names) == 9


def proposal(**kw):
    base = dict(description="d", calls=[Call(ADDR, 0, "0x01", "one"), Call(ADDR, 0, "0x02", "two")], batch=True,
                salt="0x" + "00" * 32, delay=3600, safe_nonce=4, safe_tx_hash="0x" + "aa" * 32,
                operation_id="0x" + "bb" * 32)
    return Proposal(**{**base, **kw})


def test_batch_proposal_round_trips_with_every_call(tmp_path):
    p = proposal()
    path = p.save(tmp_path)
    raw = json.loads(path.read_text())
    assert raw["format"] == 2 and raw["batch"] is True and raw["action"] == "schedule"
    assert [c["data"] for c in raw["calls"]] == ["0x01", "0x02"]
    loaded = Proposal.load(tmp_path, "0xaaaaaa")
    assert loaded == p and loaded.targets == [to_checksum_address(ADDR)] * 2 and loaded.values == [0, 0]
    assert loaded.datas == [b"\x01", b"\x02"]


def test_format_1_files_still_load(tmp_path):
    old = {"description": "unpause policy", "target": ADDR, "data": "0x3f4ba83a", "salt": "0x" + "00" * 32,
           "delay": 3600, "safe_nonce": 1, "safe_tx_hash": "0x" + "cc" * 32, "operation_id": "0x" + "dd" * 32}
    (tmp_path / f"{old['safe_tx_hash']}.json").write_text(json.dumps(old))
    p = Proposal.load(tmp_path, "0xcccccc")
    assert p.batch is False and p.calls == [Call(ADDR, 0, "0x3f4ba83a", "unpause policy")]


def test_malformed_proposals_are_refused():
    with pytest.raises(ConfigError, match="one call"):
        proposal(batch=False)
    with pytest.raises(ConfigError, match="action"):
        proposal(action="delete")
    with pytest.raises(ConfigError, match="malformed"):
        Proposal.from_dict({"format": 2, "description": "x"})


def test_ready_time_is_local_and_unix(monkeypatch):
    import time

    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        text = local_time(1_800_000_000)
        assert text == datetime.fromtimestamp(1_800_000_000).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z (UTC%z)") \
            + ", unix 1800000000"
        assert "(UTC+0530)" in text
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert duration(3600) == "1h 00m 00s" and duration(61) == "1m 01s" and duration(-5) == "0m 00s"


BATCH = """
- kind: register-model
  model_id: m-8
  sha256: 0x0011223344556677889900112233445566778899001122334455667788990011
  sbom: https://sbom.example/m-8
- kind: set-rule
  role: finance
  action-type: payment.transfer
  target: payments-api
  max_amount: 0500
  data_classes: [public, internal]
  disable: yes
- kind: set-key
  agent: spiffe://sealgate.local/agent/finance-03
  key_fingerprint: 0x0707070707070707070707070707070707070707070707070707070707070707
- unpause
"""


def test_batch_file_entries_parse_like_the_single_change_flags():
    entries = batch_changes(BATCH)
    assert [e.what for e in entries] == ["register-model", "set-rule", "set-key", "unpause"]
    assert entries[0].sha256 == "0x0011223344556677889900112233445566778899001122334455667788990011"  # hex stays text
    rule = entries[1]
    assert (rule.max_amount, rule.data_classes, rule.disable, rule.approval_threshold, rule.max_risk) == \
        (500, "public,internal", True, 0, 100)  # defaults as on the command line
    assert entries[2].key_fingerprint.startswith("0x0707") and entries[2].cert is None


@pytest.mark.parametrize("text, message", [
    ("", "non-empty YAML list"),
    ("kind: unpause", "non-empty YAML list"),
    ("- kind: nope", "entry 1: unknown kind 'nope'"),
    ("- {sbom: x}", "entry 1: expected a mapping with `kind`"),
    ("- kind: set-model\n  agent: a\n  model: m", "entry 1 (set-model): unknown field 'model'"),
    ("- unpause\n- kind: set-model\n  agent: a", "entry 2 (set-model): the following arguments are required: --model-id"),
    ("- kind: set-rule\n  role: r\n  action_type: a\n  target: t\n  max_amount: 1\n  disable: maybe", "true or false"),
    ("- kind: set-key\n  agent: a", "one of the arguments --key-fingerprint --cert is required"),
    ("- [", "not YAML"),
])
def test_batch_file_errors_name_the_entry(text, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        batch_changes(text)


def test_guardian_rotation_is_only_a_batch_of_guardian_power_grants_and_revokes():
    from eth_abi import encode
    from eth_utils import keccak

    from ext_authz.chain.artifacts import role_id
    from ext_authz.chain.proposals import Call, is_guardian_rotation

    def call(sig, role):
        return Call("0x" + "11" * 20, 0, "0x" + (keccak(text=sig)[:4] + encode(["bytes32", "address"], [role, "0x" + "22" * 20])).hex())

    grant, revoke = "grantRole(bytes32,address)", "revokeRole(bytes32,address)"
    assert is_guardian_rotation([call(revoke, role_id("GUARDIAN_ROLE")), call(grant, role_id("CANCELLER_ROLE"))])
    assert not is_guardian_rotation([call(grant, role_id("GUARDIAN_ROLE")), call(grant, role_id("POLICY_ADMIN_ROLE"))])
    assert not is_guardian_rotation([])
    smuggled = call(grant, role_id("GUARDIAN_ROLE"))
    assert not is_guardian_rotation([Call(smuggled.target, 0, smuggled.data + "00")])  # extra calldata


def test_the_pinned_policy_asks_the_implementation_for_its_registries_by_the_right_selector():
    from eth_utils import keccak

    from ext_authz.chain.artifacts import artifact
    from ext_authz.policy.pinned import REGISTRIES_SELECTOR

    assert REGISTRIES_SELECTOR == keccak(text="registries()")[:4]
    assert any(i.get("name") == "registries" for i in artifact("RuleBasedPolicy")["abi"])
