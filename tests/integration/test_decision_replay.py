"""Decision replay: every input the policy read is in the SAE or the denial, so `sealgate verify --replay` re-runs
`PolicyRegistry.evaluate` at the envelope's `pol.block` on an archive node (anvil keeps history) and gets the
recorded verdict. A few hundred decisions of every verdict are recorded by real authorizers (ALLOW; DENY with
AMOUNT_OVER_LIMIT, ACTION_NOT_PERMITTED, AGENT_UNKNOWN, KEY_NOT_BOUND, RISK_TOO_HIGH, AGENT_REVOKED,
POLICY_PAUSED; REQUIRE_APPROVAL held and approved), with the chain state changing between them (a revocation, a
pause), then replayed from the evidence store: each at its own block."""

import collections
import json
import subprocess
import sys
import urllib.parse
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc

from ext_authz import reasons
from ext_authz.authz.approvals import sign_approval
from ext_authz.chain.dev import DEV_KEYS
from ext_authz.envelope.jws import DENIAL_TYP, SAE_TYP, verify
from ext_authz.evidence.replay import replay
from ext_authz.evidence.sqlite import SqliteEvidenceStore
from ext_authz.evidence.store import EvidenceQuery
from ext_authz.local.net import free_port, wait_until
from ext_authz.local.stack import APPROVER
from ext_authz.signing.base import jwks_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(chain_stack):
    chain_stack.jwks = jwks_of(chain_stack.sae_signer())
    return chain_stack


class Client:
    def __init__(self, stack, name, **config):
        self.stack, self.admin, self.db = stack, free_port(), stack.workdir / f"{name}.sqlite3"
        stack.spawn_authorizer(name, stack.socket(name), self.admin, False, self.db, config_overrides=config)
        self.stub = auth_grpc.AuthorizationStub(grpc.insecure_channel(stack.socket(name)))

    def check(self, agent, path="/v1/transfers", amount=500, approval=None, certificate=True):
        req = auth_pb2.CheckRequest()
        req.attributes.source.principal = self.stack.spiffe_id(agent)
        if certificate:
            req.attributes.source.certificate = urllib.parse.quote(Path(self.stack.agent_certs[agent][0]).read_text())
        h = req.attributes.request.http
        h.method, h.host, h.path = "POST", "payments.internal", path
        h.body = json.dumps({"amount_cents": amount, "to": "vendor-42"} if path == "/v1/transfers" else {})
        h.headers["content-type"] = "application/json"
        if approval is not None:
            h.headers["x-sealgate-approval"] = approval
        resp = self.stub.Check(req, timeout=30)
        if resp.status.code == 0:
            return reasons.OK, None
        return ({x.header.key: x.header.value for x in resp.denied_response.headers}["x-sealgate-reason"],
                json.loads(resp.denied_response.body))


def record_decisions(stack):
    main = Client(stack, "authz_replay")
    risky = Client(stack, "authz_replay_risk", risk_scores={stack.spiffe_id("procurement-01"): 80})
    seen = collections.Counter()

    def expect(outcome, reason):
        assert outcome[0] == reason, outcome
        seen[reason] += 1
        return outcome

    for i in range(120):
        expect(main.check("procurement-01", amount=100 + 7919 * i), reasons.OK)
    for i in range(30):
        expect(main.check("procurement-01", amount=1_000_001 + i), reasons.AMOUNT_OVER_LIMIT)
    for _ in range(20):
        expect(main.check("procurement-01", path="/v1/exports"), reasons.ACTION_NOT_PERMITTED)
        expect(main.check("rogue-07"), reasons.AGENT_UNKNOWN)
        expect(main.check("procurement-01", certificate=False), reasons.KEY_NOT_BOUND)
        expect(risky.check("procurement-01"), reasons.RISK_TOO_HIGH)
    for i in range(20):
        _, held = expect(main.check("finance-03", amount=2_000_000 + i), reasons.HUMAN_APPROVAL_REQUIRED)
        if i < 5:
            approval = sign_approval(stack.approver, APPROVER, stack.spiffe_id("finance-03"), held["approval_request"])
            expect(main.check("finance-03", amount=2_000_000 + i, approval=approval), reasons.OK)
    for i in range(10):
        expect(main.check("finance-03", amount=300 + i), reasons.OK)
    block = stack.revoke("finance-03")  # the state changes: earlier decisions must still replay as they were
    wait_until(lambda: main.check("finance-03")[0] == reasons.AGENT_REVOKED, 30, "the revocation to be pinned")
    for _ in range(20):
        expect(main.check("finance-03"), reasons.AGENT_REVOKED)
    stack.pause_policy()
    wait_until(lambda: main.check("procurement-01")[0] == reasons.POLICY_PAUSED, 30, "the pause to be pinned")
    for _ in range(20):
        expect(main.check("procurement-01"), reasons.POLICY_PAUSED)
    return main, risky, seen, block


def test_sealgate_verify_replay_shows_the_same_verdict_for_an_anchored_sae_and_denial(stack):
    """Runs first: the next test revokes and pauses."""
    main = Client(stack, "authz_replay_cli")
    for i in range(3):
        main.check("procurement-01", amount=400 + i)
    main.check("procurement-01", amount=5_000_000)
    stack._spawn("anchorer_replay", [sys.executable, "-m", "ext_authz.cli", "anchor", "--config",
                                     str(stack.workdir / "authz_replay_cli.json"), "--manifest",
                                     str(stack.workdir / "addresses.json")],
                 env={"SEALGATE_ANCHORER_KEY": DEV_KEYS["anchorer"]})
    store = SqliteEvidenceStore(main.db)
    sae = store.find(EvidenceQuery(kind="sae", limit=1))[0]
    denial = store.find(EvidenceQuery(reason=reasons.AMOUNT_OVER_LIMIT, limit=1))[0]
    (stack.workdir / "jwks.json").write_text(json.dumps(stack.jwks))

    def verify_cli(token, *extra):
        path = stack.workdir / "token.jwt"
        path.write_text(token)
        return subprocess.run([sys.executable, "-m", "ext_authz.cli", "verify", f"@{path}", "--jwks",
                               str(stack.workdir / "jwks.json"), "--manifest", str(stack.workdir / "addresses.json"),
                               "--anchor-db", str(main.db), "--replay", *extra],
                              capture_output=True, text=True, timeout=120)

    wait_until(lambda: verify_cli(sae.token).returncode == 0, 60, "the SAE to be anchored")
    out = verify_cli(sae.token)
    assert "replay    ALLOW OK at block" in out.stdout and "same verdict" in out.stdout, out.stdout + out.stderr
    out = verify_cli(denial.token, "--denial")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "replay    DENY AMOUNT_OVER_LIMIT at block" in out.stdout
    stack.stop_process("anchorer_replay")


def test_a_few_hundred_recorded_decisions_of_every_verdict_replay_to_the_same_verdict(stack):
    main, risky, seen, revoked_at = record_decisions(stack)
    records = [r for c in (main, risky) for r in SqliteEvidenceStore(c.db).find(EvidenceQuery(limit=10_000))]
    assert len(records) >= sum(seen.values()) >= 300  # every decision was recorded (and the waits added some)
    verdicts, blocks, mismatched = collections.Counter(), set(), []
    for record in records:
        typ = SAE_TYP if record.kind == "sae" else DENIAL_TYP
        claims = verify(record.token, stack.jwks, typ=typ, check_time=False)
        result = replay(claims, typ, stack.chain)
        assert result is not None, f"{record.reason} has no policy verdict to replay"
        if not result.matches:
            mismatched.append((record.reason, result))
        verdicts[result.replayed] += 1
        blocks.add(result.block)
    assert mismatched == []
    assert {decision for decision, _ in verdicts} == {"ALLOW", "DENY", "REQUIRE_APPROVAL"}
    denied = {reason for decision, reason in verdicts if decision == "DENY"}
    assert denied == {reasons.AMOUNT_OVER_LIMIT, reasons.ACTION_NOT_PERMITTED, reasons.AGENT_UNKNOWN,
                      reasons.KEY_NOT_BOUND, reasons.RISK_TOO_HIGH, reasons.AGENT_REVOKED, reasons.POLICY_PAUSED}
    assert verdicts[("REQUIRE_APPROVAL", reasons.HUMAN_APPROVAL_REQUIRED)] == 25  # 20 held, 5 approved SAEs
    assert min(blocks) < revoked_at <= max(blocks)  # replayed at several blocks, across the state changes

    # the replay can fail: the same decision with one input changed no longer gives its recorded verdict
    allowed = next(r for r in records if r.kind == "sae" and r.agent == stack.spiffe_id("procurement-01"))
    claims = verify(allowed.token, stack.jwks, typ=SAE_TYP, check_time=False)
    changed = {**claims, "inp": {**claims["inp"], "risk": 90}}
    assert replay(changed, SAE_TYP, stack.chain).replayed == ("DENY", reasons.RISK_TOO_HIGH)
