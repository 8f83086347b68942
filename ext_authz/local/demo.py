"""`make demo`: the scripted scenario on the local stack, with a readable summary."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ext_authz.anchoring.store import AnchorStore
from ext_authz.anchoring.verify import verify_anchored
from ext_authz.envelope.jws import DENIAL_TYP, SAE_TYP, verify
from ext_authz.errors import InputRejected, SealgateError
from ext_authz.local.net import wait_until
from ext_authz.local.stack import LocalStack


@dataclass
class Step:
    name: str
    expected: str
    observed: str
    ok: bool


def _reason(resp) -> str:
    return resp.headers.get("x-sealgate-reason", "-")


Record = Callable[[str, str, str, bool], None]


def run_scenario(stack: LocalStack) -> tuple[list[Step], list[str]]:
    steps: list[Step] = []
    details: list[str] = []

    def record(name: str, expected: str, observed: str, ok: bool) -> None:
        steps.append(Step(name, expected, observed, ok))

    sae, denial = enforcement_steps(stack, record)
    approval_and_revocation_steps(stack, record)
    # 8. a rogue agent process skips the mesh: the kernel refuses the connect
    kernel_step(stack, record, details)
    verification_steps(stack, record, details, sae, denial)
    return steps, details


def enforcement_steps(stack: LocalStack, record: Record) -> tuple[str | None, str | None]:
    """Steps 1-5: allowed, over the limit, no SAE, replay, unknown agent. Returns the SAE and the denial."""
    # 1. an allowed action: executes at the target with an SAE
    r = stack.agent_call("procurement-01", "POST", "/v1/transfers", {"amount_cents": 50_000, "to": "vendor-42"})
    sae = r.json().get("sae") if r.status == 200 else None
    record("procurement-01 pays $500", "200, executed with SAE", f"{r.status} {'SAE' if sae else 'no SAE'}", r.status == 200 and bool(sae))

    # 2. over the policy limit: signed denial
    r = stack.agent_call("procurement-01", "POST", "/v1/transfers", {"amount_cents": 5_000_000, "to": "vendor-42"})
    denial = r.headers.get("x-sae-denial")
    denial_ok = False
    if denial:
        claims = verify(denial, stack.jwks, typ=DENIAL_TYP, check_time=False)
        denial_ok = claims["reason"] == "AMOUNT_OVER_LIMIT"
    record("procurement-01 pays $50,000", "403 AMOUNT_OVER_LIMIT, signed denial",
           f"{r.status} {_reason(r)} {'signed' if denial_ok else 'unsigned'}",
           r.status == 403 and denial_ok)

    # 3. straight to the target, no SAE: the PEP rejects
    r = stack.pep_call("POST", "/v1/transfers", {"amount_cents": 100})
    record("direct call without SAE", "403 SAE_MISSING", f"{r.status} {_reason(r)}", r.status == 403 and _reason(r) == "SAE_MISSING")

    # 4. replaying the SAE from step 1 straight at the PEP
    if sae:
        r = stack.pep_call("POST", "/v1/transfers", {"amount_cents": 50_000, "to": "vendor-42"}, headers={"x-sae": sae})
        record("replay of the step-1 SAE", "403 SAE_REPLAYED", f"{r.status} {_reason(r)}", r.status == 403 and _reason(r) == "SAE_REPLAYED")

    # 5. a certificate from our CA, but an agent the registry never heard of
    r = stack.agent_call("rogue-07", "POST", "/v1/transfers", {"amount_cents": 100, "to": "vendor-42"})
    record("rogue-07 (not registered)", "403 AGENT_UNKNOWN", f"{r.status} {_reason(r)}", r.status == 403 and _reason(r) == "AGENT_UNKNOWN")
    return sae, denial


def approval_and_revocation_steps(stack: LocalStack, record: Record) -> None:

    # 6. over the rule's approval threshold: held, approved by a person, then executed once
    big = {"amount_cents": 2_000_000, "to": "vendor-7"}
    held = stack.agent_call("finance-03", "POST", "/v1/transfers", big)
    observed, ok = f"{held.status} {_reason(held)}", False
    if held.status == 403 and _reason(held) == "HUMAN_APPROVAL_REQUIRED":
        approval = stack.approve(held.headers["x-sae-denial"], big)
        r = stack.agent_call("finance-03", "POST", "/v1/transfers", big, headers={"x-sealgate-approval": approval})
        approved_by = verify(r.json()["sae"], stack.jwks).get("apr", {}).get("by") if r.status == 200 else None
        observed += f", then {r.status} approved by {approved_by}"
        ok = r.status == 200 and approved_by is not None
    record("finance-03 pays $20,000", "403 HUMAN_APPROVAL_REQUIRED, then 200 with approval", observed, ok)

    # 7. revoked on-chain: denied from the next pinned block
    before = stack.agent_call("finance-03", "GET", "/v1/balance")
    block = stack.revoke("finance-03")
    stack.wait_pinned(block)
    r = stack.agent_call("finance-03", "GET", "/v1/balance")
    record("finance-03 revoked on-chain", "200 before, 403 AGENT_REVOKED after", f"{before.status} before, {r.status} {_reason(r)} after",
           before.status == 200 and r.status == 403 and _reason(r) == "AGENT_REVOKED")


def verification_steps(stack: LocalStack, record: Record, details: list[str], sae: str | None, denial: str | None) -> None:
    # 9. verify the SAE and the denial on-chain once the anchor batch lands
    wait_until(lambda: (s := stack.status())["anchor_queue"] == 0 and s["anchor_store"]["unbatched"] == 0
               and s["anchor_store"]["batches_pending"] == 0, 30, "anchoring to settle")
    store = AnchorStore(stack.workdir / "anchor.sqlite3")
    for label, token, typ in (("SAE from step 1", sae, None), ("denial from step 2", denial, DENIAL_TYP)):
        if not token:
            record(f"verify {label}", "anchored on-chain", "no token", False)
            continue
        try:
            res = verify_anchored(token, stack.jwks, stack.manifest, store, typ or SAE_TYP)
            record(f"verify {label}", "anchored on-chain", f"block {res.block}", True)
            details.append(f"{label}: hash 0x{res.sae_hash[:16]}.. root 0x{res.root[:16]}.. block {res.block} tx {res.tx_hash}")
        except InputRejected as e:
            record(f"verify {label}", "anchored on-chain", f"{e.reason}", False)


ROGUE_PROBE = (
    "import json, socket, sys\n"
    "out = []\n"
    "for port in map(int, sys.argv[1:]):\n"
    "    s = socket.socket()\n"
    "    try:\n"
    "        s.connect(('127.0.0.1', port)); out.append(0)\n"
    "    except OSError as e:\n"
    "        out.append(e.errno)\n"
    "    finally:\n"
    "        s.close()\n"
    "print(json.dumps(out))\n"
)


def kernel_step(stack: LocalStack, record: Record, details: list[str]) -> None:
    """rogue-07 runs in its own cgroup, allowed to reach only its sidecar; it dials the PEP directly."""
    from ext_authz.egress.config import EgressConfig, agent_cgroup, parent_cgroup
    from ext_authz.egress.enforcer import EgressEnforcer, uninstall
    from ext_authz.egress.kernel import probe
    from ext_authz.egress.launcher import spawn_agent

    reason = probe()
    if reason:
        details.append(f"kernel egress step skipped: {reason}")
        return
    tag = f"sg-demo-{os.getpid()}"
    config = EgressConfig.from_dict({"pin_dir": f"/sys/fs/bpf/{tag}", "cgroup_parent": tag, "agents": [
        {"id": "rogue-07", "allow": [{"addr": "127.0.0.1", "port": stack.ports.sidecar, "proto": "tcp"}]}]})
    events: list[dict] = []
    enforcer = EgressEnforcer(config, sink=events.append)
    try:
        enforcer.load()
        enforcer.attach()
        enforcer.sync_maps()
        enforcer.start_reader()
        proc = spawn_agent(config, "rogue-07", [sys.executable, "-c", ROGUE_PROBE, str(stack.ports.sidecar),
                                                       str(stack.ports.pep)],
                           allow_root=True,  # the demo runs as root (bpf); a deployment gives each agent its own uid
                           stdout=subprocess.PIPE, text=True)
        via_mesh, direct = json.loads(proc.communicate(timeout=30)[0])
        wait_until(lambda: events, 5, "the kernel's block event")
        ev = events[0]
        record("rogue-07 dials the target directly", "EPERM from the kernel, event",
               f"sidecar {'ok' if via_mesh == 0 else errno.errorcode.get(via_mesh)}, direct {errno.errorcode.get(direct, direct)}, "
               f"{len(events)} event(s)", via_mesh == 0 and direct == errno.EPERM and ev["dst_endpoint"]["port"] == stack.ports.pep)
        details.append(f"kernel block: {ev['message']} -> {ev['dst_endpoint']['ip']}:{ev['dst_endpoint']['port']} "
                       f"pid {ev['actor']['process']['pid']} ({ev['actor']['process']['name']}), OCSF class {ev['class_uid']}")
    except SealgateError as e:
        record("rogue-07 dials the target directly", "EPERM from the kernel, event", f"error: {e}", False)
    finally:
        enforcer.close(detach=True)
        uninstall(config)
        for cg in (agent_cgroup(config, "rogue-07"), parent_cgroup(config)):
            try:
                cg.rmdir()
            except OSError:
                pass


def run_demo(workdir: Path) -> int:
    if workdir.exists():
        shutil.rmtree(workdir)
    started = time.monotonic()
    print(f"Sealgate demo: starting anvil, contracts, authorizer, Envoy sidecar, Envoy PEP, target in {workdir} ...")
    stack = LocalStack(workdir)
    try:
        with stack:
            print(f"  stack up in {time.monotonic() - started:.1f}s; contracts: {stack.manifest.to_json().strip()}")
            steps, details = run_scenario(stack)
            status = stack.status()
    except SealgateError as e:
        print(f"demo failed: {e}")
        return 1
    leftovers = [name for name, p in stack.procs.items() if p.poll() is None]
    width = max(len(s.name) for s in steps)
    print("\nScenario")
    for s in steps:
        print(f"  [{'PASS' if s.ok else 'FAIL'}] {s.name:<{width}}  expected {s.expected}; got {s.observed}")
    print("\nAnchoring and kernel")
    for d in details:
        print(f"  {d}")
    print(f"\nAuthorizer decisions: {status['decisions']}; anchored batches: {status['anchor_store']['batches_anchored']}")
    print(f"Shut down: {'all processes stopped' if not leftovers else 'LEFT RUNNING: ' + ', '.join(leftovers)}")
    ok = all(s.ok for s in steps) and not leftovers
    print(f"\nDemo {'succeeded' if ok else 'FAILED'} in {time.monotonic() - started:.1f}s")
    return 0 if ok else 1
