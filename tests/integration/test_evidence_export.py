"""`sealgate evidence export` on the whole local stack: an agent's SAEs, its denial and an approved SAE, exported
from the evidence store and verified by `sealgate verify --bundle` offline (operator store gone) and with --rpc."""

import json
import subprocess
import sys
import time

import pytest

from ext_authz.envelope.encoding import sae_hash
from ext_authz.local.net import http_get_json, wait_until

pytestmark = pytest.mark.slow


def transfer(stack, agent, amount, **kw):
    return stack.agent_call(agent, "POST", "/v1/transfers", {"amount_cents": amount, "to": "vendor-42"}, **kw)


def anchored(stack, token):
    url = f"http://127.0.0.1:{stack.ports.anchor_http}/v1/proofs/{sae_hash(token).hex()}"
    try:
        return http_get_json(url).get("status") == "anchored"
    except Exception:
        return False


def cli(*args):
    return subprocess.run([sys.executable, "-m", "ext_authz.cli", *args], capture_output=True, text=True, timeout=120)


def test_export_by_agent_and_by_jti_verifies_offline_and_against_the_chain(stack, tmp_path):
    since = int(time.time()) - 1
    ok = transfer(stack, "finance-03", 1_000)
    held = transfer(stack, "finance-03", 2_000_000)
    assert ok.status == 200 and held.status == 403
    approval = stack.approve(held.headers["x-sae-denial"], {"amount_cents": 2_000_000, "to": "vendor-42"})
    approved = transfer(stack, "finance-03", 2_000_000, headers={"x-sealgate-approval": approval})
    assert approved.status == 200, approved.body
    other = transfer(stack, "procurement-01", 500)  # another agent's decision: must not be in the bundle
    tokens = [ok.json()["sae"], held.headers["x-sae-denial"], approved.json()["sae"], other.json()["sae"]]
    wait_until(lambda: all(anchored(stack, t) for t in tokens), 60, "the four tokens anchored")

    db, manifest = stack.workdir / "anchor.sqlite3", stack.workdir / "addresses.json"
    bundle = tmp_path / "finance-03.json"
    out = cli("evidence", "export", "--db", str(db), "--manifest", str(manifest), "--agent",
              stack.spiffe_id("finance-03"), "--since", str(since), "--out", str(bundle))
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(bundle.read_text())
    assert sorted(r["token"] for r in doc["records"]) == sorted(tokens[:3])
    assert tokens[3] not in bundle.read_text() and sae_hash(tokens[3]).hex() not in bundle.read_text()
    assert list(doc["approvers"]) and next(iter(doc["approvers"].values()))["name"] == "treasury-lead"

    moved = db.rename(db.with_name("elsewhere.sqlite3"))  # offline: the operator's store is not needed
    try:
        offline = cli("verify", "--bundle", str(bundle))
    finally:
        moved.rename(db)
    assert offline.returncode == 0 and offline.stdout.count("VALID ") == 3, offline.stdout + offline.stderr
    assert "approved by treasury-lead" in offline.stdout
    online = cli("verify", "--bundle", str(bundle), "--rpc", stack.rpc_url, "--manifest", str(manifest))
    assert online.returncode == 0 and "checked against the chain" in online.stdout, online.stdout + online.stderr

    jti = json.loads(__import__("base64").urlsafe_b64decode(tokens[3].split(".")[1] + "=="))["jti"]
    one = tmp_path / "one.json"
    out = cli("evidence", "export", "--db", str(db), "--manifest", str(manifest), "--jti", jti, "--out", str(one))
    assert out.returncode == 0, out.stderr
    assert [r["token"] for r in json.loads(one.read_text())["records"]] == [tokens[3]]
    assert cli("evidence", "export", "--db", str(db), "--manifest", str(manifest), "--jti", "no-such-decision",
               "--out", str(tmp_path / "none.json")).returncode == 1
