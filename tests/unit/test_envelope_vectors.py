"""The committed vectors (tests/vectors): each file's outcome, and that they equal a fresh generation."""

import base64
import importlib.util
import json
from pathlib import Path

import pytest

from ext_authz.anchoring.merkle import MerkleTree, leaf_hash, verify_proof
from ext_authz.authz.approvals import check_approval, digest_of
from ext_authz.envelope.jws import DENIAL_TYP, verify
from ext_authz.envelope.models import Denial, Sae, verify_denial, verify_sae
from ext_authz.errors import InputRejected, SaeInvalid
from ext_authz.sdk.target import check_sae

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
JWKS = json.loads((VECTORS / "jwks.json").read_text())
FAMILIES = ("sae", "denial", "approval", "binding", "merkle")


def files(family):
    return sorted(VECTORS.glob(f"{family}_*.json"))


def load(path):
    return json.loads(path.read_text())


def generator():
    spec = importlib.util.spec_from_file_location("generate_vectors", VECTORS / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    return gen


def test_committed_vectors_equal_a_fresh_generation():
    fresh = generator().render()
    committed = {p.name: p.read_text() for p in VECTORS.glob("*.json")}
    assert sorted(committed) == sorted(fresh), "run tests/vectors/generate.py"
    drifted = [name for name, text in fresh.items() if committed[name] != text]
    assert not drifted, f"{drifted} drifted: run tests/vectors/generate.py"


def test_every_vector_belongs_to_a_family_and_names_an_outcome():
    names = {p.stem for p in VECTORS.glob("*.json")} - {"jwks"}
    assert names == {p.stem for f in FAMILIES for p in files(f)}
    for family in FAMILIES:
        outcomes = {load(p)["expect"] for p in files(family)}
        assert "VALID" in outcomes and len(outcomes) > 1, family  # each family has valid and invalid cases


def _expect_token(vec, typed, untyped, model):
    """`stage` "verify": jws.verify() refuses; "claims": jws.verify() passes, the model refuses."""
    if vec["expect"] == "VALID":
        envelope = typed()
        assert envelope.to_claims() == vec["claims"] == untyped()
        assert model.from_claims(vec["claims"]) == envelope
        return
    if vec["stage"] == "claims":
        untyped()  # signature, typ and time verify: only the model sees what is wrong
    else:
        with pytest.raises(SaeInvalid) as err:
            untyped()
        assert err.value.reason == vec["expect"], err.value.message
    with pytest.raises(SaeInvalid) as err:
        typed()
    assert err.value.reason == vec["expect"], err.value.message


@pytest.mark.parametrize("path", files("sae"), ids=lambda p: p.stem)
def test_sae_vector(path):
    vec = load(path)
    _expect_token(vec, lambda: verify_sae(vec["token"], JWKS, now=vec["now"]),
                  lambda: verify(vec["token"], JWKS, now=vec["now"]), Sae)


@pytest.mark.parametrize("path", files("denial"), ids=lambda p: p.stem)
def test_denial_vector(path):
    vec = load(path)
    _expect_token(vec, lambda: verify_denial(vec["token"], JWKS), lambda: verify(vec["token"], JWKS, typ=DENIAL_TYP), Denial)


def test_sae_vectors_chain_together():
    """sae_with_parent names sae_valid's hash; sae_with_approval carries approval_valid for its own action."""
    from ext_authz.envelope.encoding import sae_hash

    valid, child, approved = (load(VECTORS / f"sae_{n}.json") for n in ("valid", "with_parent", "with_approval"))
    assert child["claims"]["ctx"]["parent"] == sae_hash(valid["token"]).hex()
    approval = load(VECTORS / "approval_valid.json")
    c = approved["claims"]
    assert c["apr"]["tok"] == approval["token"] and c["apr"]["req"] == digest_of(c["sub"], c["aud"], c["act"])


@pytest.mark.parametrize("path", files("approval"), ids=lambda p: p.stem)
def test_approval_vector(path):
    vec = load(path)
    assert digest_of(vec["agent"], vec["target"], vec["action"]) == vec["request"]
    keys = {name: base64.urlsafe_b64decode(x + "=" * (-len(x) % 4)) for name, x in vec["approvers"].items()}

    def check():
        return check_approval(vec["token"], keys.get, vec["agent"], vec["request"], vec["now"])

    if vec["expect"] == "VALID":
        assert check() == vec["claims"]
    else:
        with pytest.raises(InputRejected) as err:
            check()
        assert err.value.reason == vec["expect"], err.value.message


@pytest.mark.parametrize("path", files("binding"), ids=lambda p: p.stem)
def test_binding_vector(path):
    vec = load(path)
    request = {**vec["request"], "body": vec["request"]["body"].encode()}

    def check():
        return check_sae(vec["token"], JWKS, now=vec["now"], **request)

    if vec["expect"] == "VALID":
        assert check()["act"]["bd"]
    else:
        with pytest.raises(InputRejected) as err:
            check()
        assert err.value.reason == vec["expect"], err.value.message


def _b(hexes):
    return [bytes.fromhex(h[2:]) for h in hexes]


@pytest.mark.parametrize("path", files("merkle"), ids=lambda p: p.stem)
def test_merkle_vector(path):
    vec = load(path)
    if vec["expect"] == "VALID":
        values = _b(vec["values"])
        tree = MerkleTree.build(values)
        assert "0x" + tree.root.hex() == vec["root"]
        assert [leaf_hash(v) for v in values] == _b(vec["leaves"])
        for value, proof in zip(values, vec["proofs"], strict=True):
            assert tree.proof(value) == _b(proof) and verify_proof(tree.root, value, _b(proof))
    elif vec["expect"] == "ANCHOR_MISMATCH":  # what `sealgate verify` reports when a proof does not lead to the root
        assert not verify_proof(_b([vec["root"]])[0], _b([vec["value"]])[0], _b(vec["proof"]))
    else:
        with pytest.raises(InputRejected) as err:
            if "values" in vec:
                MerkleTree.build(_b(vec["values"])).proof(_b([vec["value"]])[0])
            else:
                verify_proof(_b([vec["root"]])[0], _b([vec["value"]])[0], _b(vec["proof"]))
        assert err.value.reason == vec["expect"], err.value.message
