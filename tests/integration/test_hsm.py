"""SAE signing with the key inside a PKCS#11 token: SoftHSM2 through python-pkcs11, and the
whole path (agent -> sidecar Envoy -> authorizer signing in the token -> PEP -> target).

SoftHSM reads SOFTHSM2_CONF once per process, so one token serves the whole module.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from joserfc import jws
from joserfc.jwk import KeySet

from ext_authz import reasons
from ext_authz.authz.decision import DecisionMaker
from ext_authz.envelope.jws import DENIAL_TYP, SAE_TYP, EnvelopeEncoder, verify
from ext_authz.errors import ConfigError
from ext_authz.local.net import http_get_json, wait_until
from ext_authz.local.stack import LocalStack
from ext_authz.policy.abi import Verdict
from ext_authz.server.config import config_from_dict
from ext_authz.server.grpc_service import AuthorizationService
from ext_authz.signing.base import jwks_of
from ext_authz.signing.pkcs11 import HSM_PIN_ENV, HsmKey, Pkcs11Signer, generate_hsm_key

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "4321"

if not (Path(MODULE).exists() and shutil.which("softhsm2-util")):
    pytest.skip(f"SoftHSM2 is not installed ({MODULE}, softhsm2-util): `make install` installs the softhsm2 package",
                allow_module_level=True)


@pytest.fixture(scope="module")
def token(tmp_path_factory):
    """A SoftHSM2 token with the SAE key created by `sealgate hsm keygen`."""
    home = tmp_path_factory.mktemp("softhsm")
    (home / "tokens").mkdir()
    conf = home / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {home / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    saved = {k: os.environ.get(k) for k in ("SOFTHSM2_CONF", HSM_PIN_ENV)}
    os.environ.update({"SOFTHSM2_CONF": str(conf), HSM_PIN_ENV: PIN})
    try:
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "sealgate-test", "--pin", PIN, "--so-pin", "87654321"],
                       check=True, capture_output=True)
        spec = HsmKey(MODULE, "sealgate-test", "sae-ed25519")
        out = subprocess.run([sys.executable, "-m", "ext_authz.cli", "hsm", "keygen", "--module", MODULE, "--token", spec.token,
                              "--key", spec.key], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        yield spec, json.loads(out.stdout)
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def test_keygen_prints_the_public_jwk_and_refuses_a_second_key_with_the_label(token):
    spec, jwk = token
    with Pkcs11Signer(spec) as signer:
        assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" and jwk == signer.public_jwk()
    again = subprocess.run([sys.executable, "-m", "ext_authz.cli", "hsm", "keygen", "--module", MODULE, "--token", spec.token,
                            "--key", spec.key], capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "already holds a key labelled 'sae-ed25519'" in again.stderr


def test_hsm_signed_sae_verifies_with_joserfc_and_kid_is_the_thumbprint(token):
    spec, jwk = token
    with Pkcs11Signer(spec) as signer:
        check_sae_signed_in_the_token(signer, jwk)


def check_sae_signed_in_the_token(signer, jwk):
    claims = {"iss": "spiffe://t/agent/a", "sub": "s", "aud": "s", "act": {"amt": 2**70}, "pol": {}, "inp": {}, "mod": "m", "iat": 100,
              "nbf": 100, "exp": 160, "jti": "j", "ctx": {}, "chain": {}}
    sae = EnvelopeEncoder(signer).encode(claims)
    keys = KeySet.import_key_set(jwks_of(signer))
    assert keys.keys[0].thumbprint() == signer.kid == jwk["kid"]
    assert jws.deserialize_compact(sae, keys, algorithms=["EdDSA"]).headers()["kid"] == signer.kid
    assert verify(sae, jwks_of(signer), now=120) == claims


def test_private_key_never_leaves_the_token(token):
    from pkcs11 import Attribute, KeyType, ObjectClass
    from pkcs11.exceptions import AttributeSensitive

    spec, _ = token
    with Pkcs11Signer(spec) as signer:
        private = signer._session.get_key(object_class=ObjectClass.PRIVATE_KEY, key_type=KeyType.EC_EDWARDS, label=spec.key)
        assert private[Attribute.SENSITIVE] and not private[Attribute.EXTRACTABLE]
        with pytest.raises(AttributeSensitive):
            private[Attribute.VALUE]


STRESS = """
import sys, threading
import nacl.signing
from ext_authz.signing.pkcs11 import HsmKey, Pkcs11Signer
with Pkcs11Signer(HsmKey(*sys.argv[1:4])) as signer:
    signed, failures = [], []
    def sign_many(n):
        for i in range(500):  # back to back, so the calls into the module overlap
            message = f"{n}:{i}".encode()
            try:
                signed.append((message, signer.sign(message)))
            except Exception as e:
                failures.append(repr(e))
    threads = [threading.Thread(target=sign_many, args=(n,)) for n in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    verify_key = nacl.signing.VerifyKey(signer._raw_public)
    for message, signature in signed:
        verify_key.verify(message, signature)
print(len(signed), len(failures))
"""


def test_eight_threads_signing_at_once_neither_crash_nor_corrupt(token):
    """The authorizer signs from `signing_threads` workers. python-pkcs11 initializes modules without
    locking; a first design with a session per thread made SoftHSM2 abort ("double free") as the
    threads opened sessions and looked keys up at once. Signing concurrently through one signer
    must neither crash nor return a bad signature."""
    spec, _ = token
    out = subprocess.run([sys.executable, "-c", STRESS, spec.module, spec.token, spec.key], capture_output=True, text=True,
                         timeout=120)  # a separate process: a crash must not take pytest down with it
    assert (out.returncode, out.stdout.strip()) == (0, "4000 0"), out.stderr[-2000:]


@pytest.mark.parametrize("change,message", [
    ({"pin": "0000"}, "PinIncorrect"),
    ({"pin": ""}, f"set {HSM_PIN_ENV}"),
    ({"key": "no-such-key"}, "NoSuchKey"),
    ({"token": "no-such-token"}, "no-such-token"),
    ({"module": "/nonexistent/libpkcs11.so"}, "does not exist"),
], ids=["wrong_pin", "pin_missing", "key_unknown", "token_unknown", "module_missing"])
def test_startup_errors_name_the_problem(token, monkeypatch, change, message):
    spec, _ = token
    monkeypatch.setenv(HSM_PIN_ENV, change.pop("pin", PIN))
    with pytest.raises(ConfigError, match=message):
        Pkcs11Signer(HsmKey(**{"module": spec.module, "token": spec.token, "key": spec.key, **change}))


def test_a_key_that_could_leave_the_token_is_refused(token):
    from pkcs11 import Attribute, KeyType, Mechanism

    from ext_authz.signing.pkcs11 import ED25519_OID_DER

    spec, _ = token
    with Pkcs11Signer(spec) as signer, signer._token.open(rw=True) as session:
        session.generate_keypair(KeyType.EC_EDWARDS, mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN, store=True, label="exportable",
                                 public_template={Attribute.EC_PARAMS: ED25519_OID_DER},
                                 private_template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True})
    with pytest.raises(ConfigError, match="can leave the token"):
        Pkcs11Signer(HsmKey(spec.module, spec.token, "exportable"))


class AllowPolicy:
    policy_registry = "0x" + "00" * 20
    policy_id = bytes(32)

    def evaluate(self, action):
        return Verdict("ALLOW", "OK", bytes(32), 1)


def test_a_key_gone_from_the_token_mid_flight_denies_unsigned_with_signing_failed(token):
    spec, _ = token
    doomed = HsmKey(spec.module, spec.token, "doomed")
    generate_hsm_key(doomed)
    with Pkcs11Signer(doomed) as signer:
        check_fails_closed_once_the_key_is_gone(signer, doomed)


def check_fails_closed_once_the_key_is_gone(signer, doomed):
    from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
    from pkcs11 import Attribute, ObjectClass

    config = config_from_dict({"routes": [{"method": "GET", "authority": "a.internal", "path": "/x", "action_type": "t", "target": "s"}]})
    maker = DecisionMaker(config, EnvelopeEncoder(signer), AllowPolicy(), 31337, "0xAnchor", jwks_of(signer))
    queued = []
    svc = AuthorizationService(config, maker, lambda *a: queued.append(a))
    req = auth_pb2.CheckRequest()
    req.attributes.source.principal = "spiffe://sealgate.local/agent/a"
    req.attributes.request.http.method, req.attributes.request.http.host, req.attributes.request.http.path = "GET", "a.internal", "/x"

    ok = svc.check(req)
    assert ok.status.code == 0
    verify({h.header.key: h.header.value for h in ok.ok_response.headers}["x-sae"], jwks_of(signer))

    with signer._token.open(rw=True) as session:  # the key is deleted from the token (an operator error, a reset)
        for obj in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: doomed.key}):
            obj.destroy()
    for _ in range(2):  # and stays failed closed while the key is absent
        denied = svc.check(req)
        headers = {h.header.key: h.header.value for h in denied.denied_response.headers}
        assert denied.status.code == 7 and denied.denied_response.status.code == 403
        assert headers["x-sealgate-reason"] == reasons.SIGNING_FAILED and "x-sae-denial" not in headers
    assert len(queued) == 1 and svc.counters[reasons.SIGNING_FAILED] == 2


@pytest.mark.slow
def test_whole_path_with_the_sae_key_in_the_hsm(token, tmp_path):
    spec, jwk = token
    with LocalStack(tmp_path, hsm=spec) as stack:
        assert stack.jwks == {"keys": [jwk]}
        r = stack.agent_call("procurement-01", "POST", "/v1/transfers", {"amount_cents": 50_000, "to": "vendor-42"})
        assert r.status == 200, r.body
        sae = r.json()["sae"]  # the PEP verified it against the HSM key's JWKS before the target ran
        assert jws.extract_compact(sae.encode()).headers() == {"alg": "EdDSA", "kid": jwk["kid"], "typ": SAE_TYP}
        assert verify(sae, stack.jwks)["act"]["amt"] == "50000"  # a decimal string (format v2)
        denied = stack.agent_call("procurement-01", "POST", "/v1/transfers", {"amount_cents": 5_000_000, "to": "vendor-42"})
        assert denied.status == 403
        assert verify(denied.headers["x-sae-denial"], stack.jwks, typ=DENIAL_TYP)["reason"] == "AMOUNT_OVER_LIMIT"
        assert http_get_json(f"http://127.0.0.1:{stack.ports.authz_admin}/jwks.json") == stack.jwks

        # decisions in flight at once, signed on the authorizer's worker threads
        from concurrent.futures import ThreadPoolExecutor

        def one(i):
            return stack.agent_call("procurement-01", "POST", "/v1/transfers", {"amount_cents": 1000 + i, "to": "vendor-42"})

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, range(48)))
        assert [a.status for a in answers] == [200] * 48
        assert sorted(int(verify(a.json()["sae"], stack.jwks)["act"]["amt"]) for a in answers) == [1000 + i for i in range(48)]


# ------------------------------------------------------------------ ES256: a P-256 SAE key in the token

@pytest.fixture(scope="module")
def p256_key(token):
    spec, _ = token
    p256 = HsmKey(spec.module, spec.token, "sae-p256")
    out = subprocess.run([sys.executable, "-m", "ext_authz.cli", "hsm", "keygen", "--type", "p256", "--module", MODULE,
                          "--token", spec.token, "--key", p256.key], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return p256, json.loads(out.stdout)


def test_p256_keygen_prints_an_es256_jwk_and_the_label_opens_the_matching_signer(p256_key, token):
    from ext_authz.signing.pkcs11 import Pkcs11P256Signer, hsm_signer

    spec, jwk = p256_key
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("EC", "P-256", "ES256")
    with hsm_signer(spec) as signer:
        assert isinstance(signer, Pkcs11P256Signer) and signer.public_jwk() == jwk
    with hsm_signer(token[0]) as signer:  # the Ed25519 label still opens the EdDSA signer
        assert isinstance(signer, Pkcs11Signer) and signer.alg == "EdDSA"


def test_token_ecdsa_signatures_become_low_s_jose_that_joserfc_and_pyjwt_verify(p256_key):
    """CKM_ECDSA returns r || s with s high about half the time: every SAE must carry the low-s form."""
    import jwt
    from pkcs11 import Mechanism

    from ext_authz.signing.ecdsa import P256_HALF_ORDER, is_low_s, verify_jose
    from ext_authz.signing.pkcs11 import PKCS11_LOCK, Pkcs11P256Signer

    spec, jwk = p256_key
    with Pkcs11P256Signer(spec) as signer:
        raw_high = 0
        for i in range(24):
            message = f"m{i}".encode()
            with PKCS11_LOCK:  # what the token itself returns, before conversion
                raw = bytes(signer._key.sign(hashlib.sha256(message).digest(), mechanism=Mechanism.ECDSA))
            assert len(raw) == 64  # PKCS#11: r || s
            raw_high += int.from_bytes(raw[32:], "big") > P256_HALF_ORDER
            signature = signer.sign(message)
            assert is_low_s(signature) and verify_jose(signer.public_key, message, signature)
        assert raw_high > 0  # the conversion was exercised (24 signatures all low: 2**-24)
        claims = {"iss": "spiffe://t/a", "sub": "s", "aud": "s", "act": {}, "pol": {}, "inp": {}, "mod": "m", "iat": 100,
                  "nbf": 100, "exp": 160, "jti": "j", "ctx": {}, "chain": {}}
        sae = EnvelopeEncoder(signer).encode(claims)
        assert verify(sae, jwks_of(signer), now=120) == claims
        assert jws.deserialize_compact(sae, KeySet.import_key_set(jwks_of(signer)), algorithms=["ES256"]).headers()["alg"] == "ES256"
        assert jwt.decode(sae, jwt.PyJWK(jwk).key, algorithms=["ES256"], audience="s",
                          options={"verify_exp": False, "verify_nbf": False, "verify_iat": False}) == claims


def test_the_p256_private_key_never_leaves_the_token(p256_key):
    from pkcs11 import Attribute, KeyType, ObjectClass
    from pkcs11.exceptions import AttributeSensitive

    from ext_authz.signing.pkcs11 import Pkcs11P256Signer

    spec, _ = p256_key
    with Pkcs11P256Signer(spec) as signer:
        private = signer._session.get_key(object_class=ObjectClass.PRIVATE_KEY, key_type=KeyType.EC, label=spec.key)
        assert private[Attribute.SENSITIVE] and not private[Attribute.EXTRACTABLE]
        with pytest.raises(AttributeSensitive):
            private[Attribute.VALUE]


def test_a_secp256k1_wallet_key_is_not_an_es256_signer(wallet_key):
    from ext_authz.signing.pkcs11 import Pkcs11P256Signer, hsm_signer

    spec, _ = wallet_key
    with pytest.raises(ConfigError, match="not on P-256"):
        Pkcs11P256Signer(spec)
    with pytest.raises(ConfigError, match="no Ed25519 or P-256 key pair"):
        hsm_signer(spec)


@pytest.mark.slow
def test_whole_path_with_an_es256_sae_key_in_the_hsm(p256_key, tmp_path):
    spec, jwk = p256_key
    with LocalStack(tmp_path, hsm=spec) as stack:
        assert stack.jwks == {"keys": [jwk]}
        r = stack.agent_call("procurement-01", "POST", "/v1/transfers", {"amount_cents": 50_000, "to": "vendor-42"})
        assert r.status == 200, r.body
        sae = r.json()["sae"]
        assert jws.extract_compact(sae.encode()).headers() == {"alg": "ES256", "kid": jwk["kid"], "typ": SAE_TYP}
        assert verify(sae, stack.jwks)["act"]["amt"] == "50000"


# ------------------------------------------------------------------ the anchoring wallet in the token

@pytest.fixture(scope="module")
def wallet_key(token):
    spec, _ = token
    wallet = HsmKey(spec.module, spec.token, "anchor-wallet")
    out = subprocess.run([sys.executable, "-m", "ext_authz.cli", "hsm", "keygen", "--type", "secp256k1", "--module", MODULE,
                          "--token", spec.token, "--key", wallet.key], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return wallet, json.loads(out.stdout)["address"]


def test_wallet_signatures_are_low_s_and_recover_to_its_address(wallet_key):
    from eth_keys import keys
    from eth_utils import keccak

    from ext_authz.chain.hsm_wallet import SECP256K1_N, HsmWallet

    spec, address = wallet_key
    with HsmWallet(spec) as wallet:
        assert wallet.address == address
        for i in range(64):  # ECDSA gives high s half the time: every one must come out low
            digest = keccak(i.to_bytes(4, "big"))
            signature = wallet.sign_msg_hash(digest)
            assert signature.s <= SECP256K1_N // 2
            assert keys.ecdsa_recover(digest, keys.Signature(vrs=signature.vrs)).to_checksum_address() == address


def test_an_ed25519_key_is_not_a_wallet(token):
    from ext_authz.chain.hsm_wallet import HsmWallet

    spec, _ = token
    with pytest.raises(ConfigError, match="NoSuchKey"):
        HsmWallet(spec)  # the SAE key's label holds an EC_EDWARDS pair, not a secp256k1 one


@pytest.mark.slow
def test_anchoring_from_the_hsm_wallet_needs_the_governed_role_then_anchors(wallet_key, chain_stack, tmp_path):
    from eth_account import Account

    from ext_authz.anchoring.anchorer import Anchorer
    from ext_authz.anchoring.queue import LeafQueue
    from ext_authz.anchoring.store import AnchorStore
    from ext_authz.chain.dev import DEV_KEYS
    from ext_authz.chain.hsm_wallet import SECP256K1_N, HsmWallet
    from ext_authz.errors import ChainError

    spec, address = wallet_key
    w3 = chain_stack.chain.w3
    funder = Account.from_key(DEV_KEYS["deployer"])
    w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(funder.sign_transaction({
        "to": address, "value": 10**18, "gas": 21000, "gasPrice": w3.eth.gas_price, "chainId": w3.eth.chain_id,
        "nonce": w3.eth.get_transaction_count(funder.address, "pending")}).raw_transaction))
    db = tmp_path / "anchor.sqlite3"
    queue = LeafQueue(AnchorStore(db))
    hashes = [bytes([0xB0 + i]) * 32 for i in range(3)]
    for i, h in enumerate(hashes):
        queue.enqueue(h, "sae", f"hsm{i}")
    queue.flush()

    with HsmWallet(spec) as wallet:
        anchorer = Anchorer(AnchorStore(db), chain_stack.chain, chain_stack.manifest.anchor, wallet, batch_max_leaves=8)
        with pytest.raises(ChainError, match="AccessControlUnauthorizedAccount"):
            anchorer.anchor_pending()  # a wallet nobody granted cannot anchor
        assert anchorer.store.counts()["batches_pending"] == 1

        chain_stack.govern(chain_stack.gov.call_anchorer(address))  # Safe 3-of-5 -> timelock -> grantRole
        assert anchorer.anchor_pending() == 1
    proof = anchorer.store.proof_for(hashes[0])
    tx = w3.eth.get_transaction(proof.tx_hash)
    assert tx["from"] == address
    s = tx["s"] if isinstance(tx["s"], int) else int.from_bytes(tx["s"], "big")
    assert s <= SECP256K1_N // 2
    assert chain_stack.anchor.functions.verifyInclusion(proof.root, hashes[0], proof.proof).call()

    # the same through the command: `sealgate anchor --hsm-*` holds no key material itself
    late = bytes([0xC7]) * 32
    queue.enqueue(late, "sae", "hsm-cli")
    queue.flush()
    config = tmp_path / "anchor.json"
    config.write_text(json.dumps({"anchor": {"db_path": str(db), "interval_seconds": 0.2}}))
    env = {k: v for k, v in os.environ.items() if k != "SEALGATE_ANCHORER_KEY"}
    proc = subprocess.Popen([sys.executable, "-m", "ext_authz.cli", "anchor", "--config", str(config),
                             "--manifest", str(chain_stack.workdir / "addresses.json"), "--hsm-module", spec.module,
                             "--hsm-token", spec.token, "--hsm-key", spec.key], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: (AnchorStore(db).proof_for(late) or None) and AnchorStore(db).proof_for(late).status == "anchored",
                   30, "the HSM-backed anchorer process to anchor")
    finally:
        proc.terminate()
        output = proc.communicate(timeout=10)[0]
    assert proc.returncode == 0, output
    assert w3.eth.get_transaction(AnchorStore(db).proof_for(late).tx_hash)["from"] == address

    chain_stack.govern(chain_stack.gov.call_anchorer(address, grant=False))
    assert not chain_stack.anchor.functions.hasRole(w3.keccak(text="ANCHORER_ROLE"), address).call()


@pytest.mark.slow
def test_a_token_losing_the_key_turns_healthz_red_and_a_new_key_under_the_label_is_not_used(token, tmp_path):
    from pkcs11 import Attribute, KeyType, Mechanism

    from ext_authz.signing.pkcs11 import ED25519_OID_DER


    spec, _ = token
    doomed = HsmKey(spec.module, spec.token, "sae-stack-doomed")
    generate_hsm_key(doomed)
    with LocalStack(tmp_path, hsm=doomed) as stack:
        published = stack.jwks
        assert stack.agent_call("procurement-01", "GET", "/v1/balance").status == 200
        with stack.signer._token.open(rw=True) as session:  # another process deletes the key pair from the token
            for obj in list(session.get_objects({Attribute.LABEL: doomed.key})):
                obj.destroy()
        denied = stack.agent_call("procurement-01", "GET", "/v1/balance")
        assert denied.status == 403 and denied.headers["x-sealgate-reason"] == reasons.SIGNING_FAILED
        assert "x-sae-denial" not in denied.headers and denied.json()["reason_code"] == reasons.SIGNING_FAILED
        status = stack.status()
        assert status["healthy"] is False and "HSM signing failed" in status["signing_error"]

        with stack.signer._token.open(rw=True) as session:  # someone re-creates a key with the same label
            session.generate_keypair(KeyType.EC_EDWARDS, mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN, store=True,
                                     label=doomed.key, public_template={Attribute.EC_PARAMS: ED25519_OID_DER},
                                     private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False})
        denied = stack.agent_call("procurement-01", "GET", "/v1/balance")
        assert denied.headers["x-sealgate-reason"] == reasons.SIGNING_FAILED
        assert "not the one this authorizer publishes" in stack.status()["signing_error"]
        assert http_get_json(f"http://127.0.0.1:{stack.ports.authz_admin}/jwks.json") == published


# ------------------------------------------------------------------ the agent PKI's CA keys in the token

def test_pki_with_root_and_intermediate_keys_in_the_token_issues_agent_certs(token, tmp_path):
    """`sealgate pki init` with both CA keys in the token (the root's used once, for the intermediate), then
    `sealgate pki issue` signing an agent certificate with the intermediate's token key."""
    from cryptography import x509

    spec, _ = token
    cli = [sys.executable, "-m", "ext_authz.cli"]
    for label in ("pki-root", "pki-agent-ca"):
        out = subprocess.run(cli + ["hsm", "keygen", "--module", MODULE, "--token", spec.token, "--key", label],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
    pki = tmp_path / "pki"
    out = subprocess.run(cli + ["pki", "init", "--dir", str(pki), "--module", MODULE, "--root-token", spec.token,
                                "--root-key", "pki-root", "--int-token", spec.token, "--int-key", "pki-agent-ca"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    on_disk = sorted(p.name for p in pki.rglob("*") if p.suffix in (".seed", ".key", ".pem"))
    assert on_disk == ["ocsp-signer.key"]  # the delegated OCSP signer only: no CA key on disk
    out = subprocess.run(cli + ["pki", "issue", "--dir", str(pki), "--spiffe-id", "spiffe://sealgate.local/agent/a",
                                "--out", str(tmp_path / "agents"), "--name", "a"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    leaf, intermediate = x509.load_pem_x509_certificates((tmp_path / "agents" / "a.crt").read_bytes())
    root = x509.load_pem_x509_certificate((pki / "root.crt").read_bytes())
    leaf.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root)
    with Pkcs11Signer(HsmKey(MODULE, spec.token, "pki-agent-ca")) as ca_key:  # the intermediate's key is the token's
        assert ca_key.raw_public == intermediate.public_key().public_bytes_raw()


# ------------------------------------------------------------------ HSM-endorsed short-lived keys

def test_the_token_endorses_in_memory_keys_and_signs_twice_for_any_number_of_saes(token):
    from ext_authz.signing.endorsed import EndorsedSigner, verify_endorsed

    spec, jwk = token
    with Pkcs11Signer(spec) as token_signer:
        calls = []
        real_sign = token_signer.sign
        token_signer.sign = lambda m: calls.append(m) or real_sign(m)  # count the round trips to the token
        endorsed = EndorsedSigner(token_signer, period_seconds=60)
        encoder = EnvelopeEncoder(endorsed)
        now = int(__import__("time").time())
        claims = {"iss": "spiffe://t/a", "sub": "s", "aud": "s", "act": {}, "pol": {}, "inp": {}, "mod": "m", "iat": now,
                  "nbf": now, "exp": now + 60, "jti": "j", "ctx": {}, "chain": {}}
        saes = [encoder.encode({**claims, "jti": f"j{i}"}) for i in range(200)]
        assert len(calls) == 2
        for sae in saes[:3]:
            assert verify_endorsed(sae, jwk)["iat"] == now  # the chain back to the token's key
        endorsed.rotate()
        assert len(calls) == 3
        assert verify_endorsed(encoder.encode(claims), jwk)["jti"] == "j"


@pytest.mark.slow
def test_whole_path_with_saes_signed_by_keys_the_hsm_endorses(token, tmp_path):
    from ext_authz.signing.endorsed import verify_endorsed

    spec, jwk = token
    with LocalStack(tmp_path, hsm=spec, endorse_period_seconds=60, jwks_cache_seconds=10) as stack:
        kids = [k["kid"] for k in stack.jwks["keys"]]
        assert kids[0] == jwk["kid"] and len(kids) == 3  # the token key, the current and the next endorsed key
        for i in range(5):
            r = stack.agent_call("procurement-01", "POST", "/v1/transfers", {"amount_cents": 100 + i, "to": "vendor-42"})
            assert r.status == 200, r.body
            sae = r.json()["sae"]
            assert verify_endorsed(sae, jwk, issuer=stack.issuer)["act"]["amt"] == str(100 + i)
            header = json.loads(__import__("base64").urlsafe_b64decode(sae.split(".")[0] + "==="))
            assert header["kid"] == kids[1] and len(header["x5c"]) == 1  # the endorsed key, with its endorsement
