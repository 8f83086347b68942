"""The gRPC edge fails closed: every failure becomes a denial with its own reason code."""

import pytest
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2

from ext_authz import reasons
from ext_authz.authz.decision import DecisionMaker
from ext_authz.envelope.jws import DENIAL_TYP, EnvelopeEncoder, verify
from ext_authz.errors import ChainError, StateStale
from ext_authz.policy.abi import Verdict
from ext_authz.server.config import config_from_dict
from ext_authz.server.grpc_service import AuthorizationService
from ext_authz.signing.base import jwks_of
from ext_authz.signing.file_key import Ed25519Signer

SIGNER = Ed25519Signer(bytes(range(32)))
JWKS = jwks_of(SIGNER)
ROUTES = {"routes": [{"method": "GET", "authority": "a.internal", "path": "/x", "action_type": "t", "target": "s"}]}
CONFIG = config_from_dict(ROUTES)


class Policy:
    policy_registry = "0x" + "00" * 20
    policy_id = bytes(32)

    def __init__(self, behaviour):
        self.behaviour = behaviour

    def evaluate(self, action):
        if isinstance(self.behaviour, BaseException):
            raise self.behaviour
        return self.behaviour


def request():
    req = auth_pb2.CheckRequest()
    req.attributes.source.principal = "spiffe://sealgate.local/agent/a"
    h = req.attributes.request.http
    h.method, h.host, h.path = "GET", "a.internal", "/x"
    return req


def service(behaviour, queued):
    maker = DecisionMaker(CONFIG, EnvelopeEncoder(SIGNER), Policy(behaviour), 31337, "0xAnchor", JWKS)
    return AuthorizationService(CONFIG, maker, lambda *a: queued.append(a))


def denial_reason(resp):
    headers = {h.header.key: h.header.value for h in resp.denied_response.headers}
    assert resp.status.code == 7 and resp.denied_response.status.code == 403
    if "x-sae-denial" in headers:
        assert verify(headers["x-sae-denial"], JWKS, typ=DENIAL_TYP)["reason"] == headers["x-sealgate-reason"]
    return headers["x-sealgate-reason"], "x-sae-denial" in headers


@pytest.mark.parametrize("behaviour,expected", [
    (StateStale("pinned block 7 unconfirmed for 20s"), reasons.POLICY_STATE_STALE),
    (ChainError("Revert { output: 0x }"), reasons.POLICY_EVALUATION_FAILED),
    (ZeroDivisionError("bug"), reasons.INTERNAL_ERROR),
    (Verdict("ALLOW", "NEW_CODE", bytes(32), 1), reasons.POLICY_EVALUATION_FAILED),
])
def test_failures_become_signed_denials_and_are_queued_for_anchoring(behaviour, expected):
    queued = []
    reason, signed = denial_reason(service(behaviour, queued).check(request()))
    assert (reason, signed) == (expected, True)
    assert len(queued) == 1 and queued[0][0].kind == "denial" and queued[0][0].reason == expected


def test_when_even_signing_fails_the_answer_is_still_a_denial():
    queued = []
    svc = service(Verdict("ALLOW", "OK", bytes(32), 1), queued)
    svc._decider._encoder.encode = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("HSM gone"))
    reason, signed = denial_reason(svc.check(request()))
    assert (reason, signed) == (reasons.INTERNAL_ERROR, False)
    assert queued == [] and svc.counters[reasons.INTERNAL_ERROR] == 1


def test_allow_all_baseline_answers_ok_without_deciding():
    queued = []
    maker = DecisionMaker(CONFIG, EnvelopeEncoder(SIGNER), Policy(ZeroDivisionError()), 31337, "0xAnchor", JWKS)
    resp = AuthorizationService(CONFIG, maker, lambda *a: queued.append(a), allow_all=True).check(request())
    assert resp.status.code == 0 and queued == []


def test_allow_answers_carry_their_own_sae_and_overwrite_the_agents():
    queued = []
    svc = service(Verdict("ALLOW", "OK", bytes(32), 1), queued)
    first, second = svc.check(request()), svc.check(request())
    tokens = []
    for resp in (first, second):
        assert resp.status.code == 0 and not resp.HasField("denied_response")
        headers = {h.header.key: h for h in resp.ok_response.headers}
        assert set(headers) == {"x-sae", "x-sealgate-decision-id"}
        assert all(h.append_action == h.OVERWRITE_IF_EXISTS_OR_ADD for h in headers.values())
        assert list(resp.ok_response.headers_to_remove) == ["x-sae-parent", "x-sealgate-approval"]
        claims = verify(headers["x-sae"].header.value, JWKS)
        assert claims["jti"] == headers["x-sealgate-decision-id"].header.value
        tokens.append(headers["x-sae"].header.value)
    assert tokens[0] != tokens[1] and [q[0].kind for q in queued] == ["sae", "sae"]
    assert [q[0].token for q in queued] == tokens  # the whole SAE is what gets recorded


def test_a_failing_signer_gives_an_unsigned_denial_with_its_own_reason():
    from ext_authz.errors import SigningError

    queued = []
    svc = service(Verdict("ALLOW", "OK", bytes(32), 1), queued)
    svc._decider._encoder.encode = lambda *a, **k: (_ for _ in ()).throw(SigningError("HSM: DeviceRemoved"))
    reason, signed = denial_reason(svc.check(request()))
    assert (reason, signed) == (reasons.SIGNING_FAILED, False)
    assert queued == [] and svc.counters == {reasons.SIGNING_FAILED: 1}


def test_with_a_device_signer_decisions_run_off_the_event_loop():
    import asyncio
    import threading

    maker = DecisionMaker(CONFIG, EnvelopeEncoder(SIGNER), Policy(Verdict("ALLOW", "OK", bytes(32), 1)), 31337, "0xAnchor", JWKS)
    svc = AuthorizationService(CONFIG, maker, lambda *a: None, signing_threads=2)
    ran_on = []
    decide = svc.decide_and_persist
    svc.decide_and_persist = lambda req, *a: (ran_on.append(threading.current_thread().name), decide(req, *a))[1]

    async def two_checks():
        return await asyncio.gather(svc.Check(request(), None), svc.Check(request(), None))

    try:
        responses = asyncio.run(two_checks())
    finally:
        svc.close()
    assert [r.status.code for r in responses] == [0, 0]
    assert len(ran_on) == 2 and all(name.startswith("sealgate-decide") for name in ran_on)


def test_health_probes_a_failed_signer_at_most_once_a_second_and_recovers():
    import types

    from ext_authz.errors import SigningError
    from ext_authz.server.app import Authorizer

    class FlakySigner:
        def __init__(self):
            self.up, self.calls = False, 0

        def sign(self, message):
            self.calls += 1
            if not self.up:
                raise SigningError("HSM signing failed: DeviceRemoved")
            return bytes(64)

    authorizer = Authorizer.__new__(Authorizer)
    authorizer.signer = FlakySigner()
    authorizer.service = types.SimpleNamespace(signing_error="HSM signing failed: DeviceRemoved")
    authorizer._last_probe = 0.0
    assert authorizer._signer_error() == "HSM signing failed: DeviceRemoved"
    assert authorizer._signer_error() is not None and authorizer.signer.calls == 1  # not probed again within a second
    authorizer.signer.up = True
    authorizer._last_probe -= Authorizer.SIGNER_PROBE_SECONDS
    assert authorizer._signer_error() is None and authorizer.service.signing_error is None


def failing_persist(error):
    import concurrent.futures

    def persist(record):
        future = concurrent.futures.Future()
        future.set_exception(error)
        return future
    return persist


def test_an_allow_whose_record_cannot_be_persisted_is_denied_with_evidence_unavailable():
    from ext_authz.evidence.store import EvidenceUnavailable

    maker = DecisionMaker(CONFIG, EnvelopeEncoder(SIGNER), Policy(Verdict("ALLOW", "OK", bytes(32), 1)), 31337,
                          "0xAnchor", JWKS)
    svc = AuthorizationService(CONFIG, maker, failing_persist(EvidenceUnavailable("disk I/O error")))
    resp = svc.check(request())
    reason, signed = denial_reason(resp)
    assert (reason, signed) == (reasons.EVIDENCE_UNAVAILABLE, True)
    assert "x-sae" not in {h.header.key for h in resp.denied_response.headers}  # no SAE leaves the authorizer
    assert svc.evidence_error == "disk I/O error" and svc.counters == {reasons.EVIDENCE_UNAVAILABLE: 1}


def test_the_answer_leaves_only_after_the_record_is_durable():
    import asyncio
    import concurrent.futures

    pending = []

    def persist(record):
        pending.append(concurrent.futures.Future())
        return pending[-1]

    maker = DecisionMaker(CONFIG, EnvelopeEncoder(SIGNER), Policy(Verdict("ALLOW", "OK", bytes(32), 1)), 31337,
                          "0xAnchor", JWKS)
    svc = AuthorizationService(CONFIG, maker, persist)

    async def scenario():
        check = asyncio.ensure_future(svc.Check(request(), None))
        for _ in range(20):
            await asyncio.sleep(0.01)
        answered_before_commit = check.done()
        pending[0].set_result(None)  # the group's fsync returned
        return answered_before_commit, await check

    answered_before_commit, resp = asyncio.run(scenario())
    assert answered_before_commit is False
    assert resp.status.code == 0


def test_a_commit_that_does_not_return_in_time_fails_closed():
    import concurrent.futures

    config = config_from_dict({**ROUTES, "evidence": {"commit_timeout_seconds": 0.1}})
    maker = DecisionMaker(config, EnvelopeEncoder(SIGNER), Policy(Verdict("ALLOW", "OK", bytes(32), 1)), 31337,
                          "0xAnchor", JWKS)
    svc = AuthorizationService(config, maker, lambda record: concurrent.futures.Future())  # never resolves
    assert denial_reason(svc.check(request())) == (reasons.EVIDENCE_UNAVAILABLE, True)


class UncachedPolicy(Policy):
    """Raises StateNotCached until `fetch` ran, as PinnedPolicy does for state not fetched yet."""

    def __init__(self, fetch_works):
        super().__init__(Verdict("ALLOW", "OK", bytes(32), 1))
        self.fetched, self.fetch_works = False, fetch_works

    def evaluate(self, action):
        from ext_authz.errors import StateNotCached

        if not self.fetched:
            raise StateNotCached("0xPolicy", b"calldata", 7)
        return super().evaluate(action)

    def fetch(self, miss):
        if not self.fetch_works:
            raise ChainError("debug_traceCall timed out")
        self.fetched = True


@pytest.mark.parametrize("fetch_works,expected", [(True, reasons.OK), (False, reasons.POLICY_STATE_UNAVAILABLE)])
def test_state_not_cached_is_fetched_then_decided_or_that_request_fails_closed(fetch_works, expected):
    import asyncio

    policy = UncachedPolicy(fetch_works)
    maker = DecisionMaker(CONFIG, EnvelopeEncoder(SIGNER), policy, 31337, "0xAnchor", JWKS)
    svc = AuthorizationService(CONFIG, maker, lambda record: None, fetch_state=policy.fetch)
    try:
        resp = asyncio.run(svc.Check(request(), None))
    finally:
        svc.close()
    if expected == reasons.OK:
        assert resp.status.code == 0
    else:
        assert denial_reason(resp) == (expected, True)


def test_a_request_carrying_an_approval_is_decided_off_the_event_loop():
    """Claiming the approval is a durable write: a slow disk must hold a worker thread, never the loop."""
    import asyncio
    import threading

    maker = DecisionMaker(CONFIG, EnvelopeEncoder(SIGNER), Policy(Verdict("ALLOW", "OK", bytes(32), 1)), 31337,
                          "0xAnchor", JWKS)
    svc = AuthorizationService(CONFIG, maker, lambda record: None)
    ran_on = []
    decide = svc.decide_and_persist
    svc.decide_and_persist = lambda req, *a: (ran_on.append(threading.current_thread().name), decide(req, *a))[1]
    with_approval = request()
    with_approval.attributes.request.http.headers["x-sealgate-approval"] = "a.b.c"

    async def both():
        return await svc.Check(request(), None), await svc.Check(with_approval, None)

    try:
        asyncio.run(both())
    finally:
        svc.close()
    assert ran_on[0] == threading.main_thread().name and ran_on[1].startswith("sealgate-fetch")
