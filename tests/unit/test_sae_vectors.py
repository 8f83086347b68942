import json
from pathlib import Path

import pytest

from ext_authz.envelope.jws import verify
from ext_authz.errors import SaeInvalid

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
JWKS = json.loads((VECTORS / "jwks.json").read_text())
FILES = sorted(p for p in VECTORS.glob("sae_*.json"))


def test_vectors_are_reproducible():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen", VECTORS / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    fresh = gen.vectors()
    assert sorted(fresh) == sorted(p.stem for p in FILES)
    for name, vec in fresh.items():
        committed = json.loads((VECTORS / f"{name}.json").read_text())
        assert committed["token"] == vec["token"], f"{name} drifted: run tests/vectors/generate.py"
        assert committed["expect"] == vec["expect"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_vector_outcome(path):
    vec = json.loads(path.read_text())
    if vec["expect"] == "VALID":
        claims = verify(vec["token"], JWKS, now=vec["now"])
        assert claims["jti"] == "vector-jti-0001"
    else:
        with pytest.raises(SaeInvalid) as err:
            verify(vec["token"], JWKS, now=vec["now"])
        assert err.value.reason == vec["expect"], err.value.message
