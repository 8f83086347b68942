"""The whole local stack: an SAE the target executed gets a proof from the anchoring service's HTTP, and
`sealgate verify` takes its key from the chain (no JWKS) while the SigningKeyRegistry holds it."""

import json
import subprocess
import sys

import pytest

from ext_authz.envelope.encoding import sae_hash
from ext_authz.local.net import http_get_json, wait_until

pytestmark = pytest.mark.slow


def test_executed_sae_is_proven_over_http_and_verified_with_keys_from_the_chain(stack):
    r = stack.agent_call("procurement-01", "POST", "/v1/transfers", {"amount_cents": 700, "to": "vendor-7"})
    assert r.status == 200 and r.json()["executed"] is True
    token = r.json()["sae"]
    url = f"http://127.0.0.1:{stack.ports.anchor_http}/v1/proofs/{sae_hash(token).hex()}"

    def anchored():
        try:
            doc = http_get_json(url)
        except Exception:
            return None
        return doc if doc.get("status") == "anchored" else None

    doc = wait_until(anchored, 60, "the SAE's batch anchored")
    assert doc["value"] == "0x" + sae_hash(token).hex()
    proof = [bytes.fromhex(p[2:]) for p in doc["proof"]]
    assert stack.anchor.functions.verifyInclusion(bytes.fromhex(doc["root"][2:]), sae_hash(token), proof).call()
    health = http_get_json(f"http://127.0.0.1:{stack.ports.anchor_http}/healthz")
    assert health["status"] == "ok" and health["mode"] == "root"
    (stack.workdir / "sae.jwt").write_text(token)
    out = subprocess.run([sys.executable, "-m", "ext_authz.cli", "verify", f"@{stack.workdir / 'sae.jwt'}", "--manifest",
                          str(stack.workdir / "addresses.json"), "--anchor-db", str(stack.workdir / "anchor.sqlite3")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "registered on-chain" in out.stdout, out.stdout + out.stderr
    assert json.loads(json.dumps(doc))["txHash"] in out.stdout
