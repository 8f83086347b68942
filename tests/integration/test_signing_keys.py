"""SigningKeyRegistry on anvil: keys come from the chain at the token's block, governed adds and rotation,
the guardian's immediate revocation; a token signed by a key not registered at its block is invalid."""

import json
from pathlib import Path

import pytest
from eth_account import Account
from web3.exceptions import ContractCustomError

from ext_authz.anchoring.anchorer import Anchorer
from ext_authz.anchoring.queue import LeafQueue
from ext_authz.anchoring.store import AnchorStore
from ext_authz.anchoring.verify import verify_anchored
from ext_authz.chain.dev import DEV_KEYS
from ext_authz.chain.keys import SigningKeys, call_add_key, call_rotate_key, kid_bytes, registration_of
from ext_authz.envelope.encoding import sae_hash
from ext_authz.envelope.jws import EnvelopeEncoder
from ext_authz.errors import InputRejected
from ext_authz.signing.file_key import Ed25519Signer

pytestmark = pytest.mark.slow
VECTOR = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "sae_valid.json").read_text())["claims"]


def issue(stack, signer, jti, block=None, iat=None):
    w3 = stack.chain.w3
    block = w3.eth.block_number if block is None else block
    iat = int(w3.eth.get_block(block)["timestamp"]) if iat is None else iat
    claims = {**VECTOR, "jti": jti, "iat": iat, "nbf": iat, "exp": iat + 60,
              "chain": {"id": stack.manifest.chain_id, "anchor": stack.manifest.anchor},
              "pol": {**VECTOR["pol"], "block": block}}
    return EnvelopeEncoder(signer).encode(claims)


def anchored_store(stack, tmp_path, *tokens):
    db = tmp_path / f"a{len(list(tmp_path.iterdir()))}.sqlite3"
    q = LeafQueue(AnchorStore(db))
    for t in tokens:
        q.enqueue(sae_hash(t), "sae", t[-12:])
    q.flush()
    anchorer = Anchorer(AnchorStore(db), stack.chain, stack.manifest.anchor, Account.from_key(DEV_KEYS["anchorer"]))
    anchorer.anchor_pending()
    return anchorer.store


def new_signer(tmp_path, name):
    return Ed25519Signer.from_file(tmp_path / f"{name}.seed", create=True)


def rejected(stack, token, store, jwks=None):
    with pytest.raises(InputRejected) as err:
        verify_anchored(token, jwks, stack.manifest, store)
    return err.value.reason


def test_the_deployed_sae_key_is_read_from_the_chain_without_any_jwks(chain_stack, tmp_path):
    token = issue(chain_stack, chain_stack.sae_signer(), "k-1")
    store = anchored_store(chain_stack, tmp_path, token)
    result = verify_anchored(token, None, chain_stack.manifest, store)
    assert result.key.kid == chain_stack.sae_signer().kid and result.key.jwk["x"] == chain_stack.sae_signer().public_jwk()["x"]
    keys = SigningKeys(chain_stack.chain, chain_stack.manifest.signing_keys)
    assert [k["kid"] for k in keys.jwks()["keys"]] == [chain_stack.sae_signer().kid]


def test_sae_signed_by_an_unregistered_key_is_invalid_even_with_its_jwks(chain_stack, tmp_path):
    rogue = new_signer(tmp_path, "rogue")
    token = issue(chain_stack, rogue, "k-rogue")
    store = anchored_store(chain_stack, tmp_path, token)
    assert rejected(chain_stack, token, store) == "SIGNING_KEY_UNREGISTERED"
    assert rejected(chain_stack, token, store, {"keys": [rogue.public_jwk()]}) == "SIGNING_KEY_UNREGISTERED"


def test_key_registered_after_the_sae_block_does_not_cover_it_and_adds_are_governed(chain_stack, tmp_path):
    late = new_signer(tmp_path, "late")
    before = chain_stack.chain.w3.eth.block_number
    target, fn, _ = call_add_key(chain_stack.chain, chain_stack.manifest.signing_keys, late.public_jwk(), 0)
    for who in (chain_stack.guardian.address, Account.from_key(DEV_KEYS["anchorer"]).address):
        with pytest.raises(ContractCustomError):  # only the timelock adds keys
            fn.call({"from": who})
    chain_stack.govern((target, fn, "add late key"))
    early, now = issue(chain_stack, late, "k-early", block=before), issue(chain_stack, late, "k-now")
    store = anchored_store(chain_stack, tmp_path, early, now)
    assert rejected(chain_stack, early, store) == "SIGNING_KEY_UNREGISTERED"
    assert verify_anchored(now, None, chain_stack.manifest, store).key.kid == late.kid


def test_guardian_revokes_at_once_and_earlier_anchored_tokens_keep_verifying(chain_stack, tmp_path):
    k = new_signer(tmp_path, "revoked")
    chain_stack.govern(call_add_key(chain_stack.chain, chain_stack.manifest.signing_keys, k.public_jwk(), 0))
    anchored_before = issue(chain_stack, k, "k-before")
    store_before = anchored_store(chain_stack, tmp_path, anchored_before)
    registry = chain_stack.chain.contract("SigningKeyRegistry", chain_stack.manifest.signing_keys)
    pol_block = chain_stack.chain.w3.eth.block_number
    chain_stack.chain.transact(chain_stack.guardian, registry.functions.revokeKey(kid_bytes(k.kid)))
    # a thief with the key backdates pol.block to before the revocation: its anchoring comes after it
    backdated = issue(chain_stack, k, "k-stolen", block=pol_block)
    store_after = anchored_store(chain_stack, tmp_path, backdated)
    assert rejected(chain_stack, backdated, store_after) == "SIGNING_KEY_REVOKED"
    assert verify_anchored(anchored_before, None, chain_stack.manifest, store_before).key.kid == k.kid
    with pytest.raises(ContractCustomError):
        registry.functions.revokeKey(kid_bytes(k.kid)).call({"from": chain_stack.guardian.address})  # once
    assert k.kid not in [j["kid"] for j in SigningKeys(chain_stack.chain, registry.address).jwks()["keys"]]


def test_rotation_ends_the_old_window_and_starts_the_new_key_in_one_operation(chain_stack, tmp_path):
    old, new = new_signer(tmp_path, "old"), new_signer(tmp_path, "new")
    chain_stack.govern(call_add_key(chain_stack.chain, chain_stack.manifest.signing_keys, old.public_jwk(), 0))
    w3 = chain_stack.chain.w3
    cutover = int(w3.eth.get_block("latest")["timestamp"]) + 100_000  # after the timelock delay
    chain_stack.govern(call_rotate_key(chain_stack.chain, chain_stack.manifest.signing_keys, old.kid, cutover,
                                       new.public_jwk(), cutover - 60))
    inside, after = issue(chain_stack, old, "r-in", iat=cutover - 10), issue(chain_stack, old, "r-out", iat=cutover + 1)
    fresh = issue(chain_stack, new, "r-new", iat=cutover + 1)
    store = anchored_store(chain_stack, tmp_path, inside, after, fresh)
    assert verify_anchored(inside, None, chain_stack.manifest, store).key.kid == old.kid  # overlap
    assert rejected(chain_stack, after, store) == "SIGNING_KEY_REVOKED"
    assert verify_anchored(fresh, None, chain_stack.manifest, store).key.kid == new.kid


def test_registry_refuses_a_jwk_whose_kid_is_not_its_thumbprint_and_malformed_keys(chain_stack, tmp_path):
    from ext_authz.errors import ConfigError

    jwk = new_signer(tmp_path, "x").public_jwk()
    with pytest.raises(ConfigError):
        registration_of({**jwk, "kid": new_signer(tmp_path, "y").kid})
    registry = chain_stack.chain.contract("SigningKeyRegistry", chain_stack.manifest.signing_keys)
    kid, _alg, public = registration_of(jwk)
    with pytest.raises(ContractCustomError) as err:
        registry.functions.addKey(kid, 1, public[:31], 0, 10).call({"from": chain_stack.manifest.timelock})
    assert str(err.value.data).startswith("0x" + chain_stack.chain.w3.keccak(text="InvalidKey(bytes32,uint8,uint256)")[:4].hex())
    with pytest.raises(ContractCustomError) as err:
        registry.functions.addKey(kid, 1, public, 10, 10).call({"from": chain_stack.manifest.timelock})
    assert str(err.value.data).startswith("0x" + chain_stack.chain.w3.keccak(text="InvalidWindow(bytes32,uint64,uint64)")[:4].hex())


def test_envoy_pep_builds_its_jwks_from_the_chain(chain_stack, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "pep.json"
    proc = subprocess.run([sys.executable, "-m", "ext_authz.cli", "envoy", "pep", "--listen", "16001", "--admin",
                           f"unix:{tmp_path / 'admin.sock'}", "--target-port", "8080", "--jwks-from-chain",
                           str(chain_stack.workdir / "addresses.json"), "--audience", "payments-api",
                           "--verifier", "unix:/run/x.sock", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    valid_now = SigningKeys(chain_stack.chain, chain_stack.manifest.signing_keys).jwks()["keys"]
    assert chain_stack.sae_signer().kid in text and all(k["x"] in text for k in valid_now)
    revoked = [k for k in chain_stack.chain.contract("SigningKeyRegistry", chain_stack.manifest.signing_keys)
               .functions.keyIds().call() if k not in {kid_bytes(j["kid"]) for j in valid_now}]
    assert revoked  # the earlier tests revoked or ended some keys: they are not in the PEP's JWKS


def test_gov_cli_adds_a_signing_key_through_safe_and_timelock_and_the_guardian_revokes_it(chain_stack, tmp_path):
    import subprocess
    import sys

    base = [sys.executable, "-m", "ext_authz.cli", "gov", "--manifest", str(chain_stack.workdir / "addresses.json"),
            "--dir", str(tmp_path / "gov")]

    def gov(*args, account=None):
        cmd = base + (["--dev-account", str(account)] if account is not None else []) + list(args)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    k = new_signer(tmp_path, "cli")
    (tmp_path / "jwk.json").write_text(json.dumps(k.public_jwk()))
    keys = SigningKeys(chain_stack.chain, chain_stack.manifest.signing_keys)
    proposal = gov("propose", "add-signing-key", "--jwk", f"@{tmp_path / 'jwk.json'}").split()[1]
    for owner in (3, 4, 5):
        gov("approve", proposal[:12], account=owner)
    assert keys.record(k.kid) is None  # scheduled, not yet executed: the delay protects the registry
    chain_stack.time_travel(chain_stack.manifest.delay_seconds + 1)
    gov("execute", proposal[:12], account=3)
    assert keys.record(k.kid).revoked_at == 0
    assert "revoked in block" in gov("revoke-signing-key", f"--kid={k.kid}", account=2)  # a kid may start with "-"
    assert keys.record(k.kid).revoked_at > 0
