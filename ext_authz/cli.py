"""`sealgate` command line: serve, deploy, verify, demo."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import urllib.request
from pathlib import Path

from .errors import ConfigError, InputRejected, SealgateError


def _hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected host:port, found {value!r}")
    return host, int(port)


def _signer(args: argparse.Namespace):
    from .signing import Ed25519Signer, HsmKey, Pkcs11Signer

    hsm = (args.hsm_module, args.hsm_token, args.hsm_key)
    if args.key and any(hsm):
        raise ConfigError("give either --key or --hsm-module/--hsm-token/--hsm-key, not both")
    if args.key:
        return Ed25519Signer.from_file(args.key)
    if not all(hsm):
        raise ConfigError("an SAE signing key is needed: --key FILE, or --hsm-module, --hsm-token and --hsm-key")
    return Pkcs11Signer(HsmKey(*hsm))


def cmd_hsm_keygen(args: argparse.Namespace) -> int:
    from .signing import HsmKey, HsmWallet, Pkcs11Signer, generate_hsm_key

    spec = HsmKey(args.module, args.token, args.key)
    generate_hsm_key(spec, args.type)
    if args.type == "ed25519":
        with Pkcs11Signer(spec) as signer:
            print(json.dumps(signer.public_jwk(), sort_keys=True))
    else:
        with HsmWallet(spec) as wallet:
            print(json.dumps({"address": wallet.address}))
    return 0


def cmd_approver_keygen(args: argparse.Namespace) -> int:
    from .signing import Ed25519Signer

    if Path(args.out).exists():
        raise ConfigError(f"{args.out} exists: an approver key is never overwritten")
    signer = Ed25519Signer.from_file(args.out, create=True)
    print(json.dumps({k: signer.public_jwk()[k] for k in ("kty", "crv", "x")}, sort_keys=True))
    return 0


def cmd_approver_sign(args: argparse.Namespace) -> int:
    from . import reasons
    from .actions import EMPTY_BODY_SHA256
    from .approvals import sign_approval
    from .sae import DENIAL_TYP, verify
    from .signing import Ed25519Signer

    denial = sys.stdin.read().strip() if args.denial == "-" else args.denial.strip()
    try:  # the authorizer's signed denial tells the approver exactly what is being approved
        claims = verify(denial, _load_jwks(args.jwks), typ=DENIAL_TYP, check_time=False)
    except InputRejected as e:
        raise ConfigError(f"not a denial signed by this authorizer: {e.message}") from e
    if claims.get("reason") != reasons.HUMAN_APPROVAL_REQUIRED or not claims.get("apr_req"):
        raise ConfigError(f"this denial does not ask for approval (reason {claims.get('reason')})")
    act = claims["act"]
    if act.get("bd") != EMPTY_BODY_SHA256:  # the approval covers the body: the person must have seen it
        if not args.body:
            raise ConfigError("the held request has a body: pass --body FILE with the body you approve")
        body = Path(args.body).read_bytes()
        if hashlib.sha256(body).hexdigest() != act.get("bd"):
            raise ConfigError("the body you reviewed is not the one the agent sent (SHA-256 differs)")
        print(f"body: {body[:2048].decode('utf-8', 'replace')}", file=sys.stderr)
    print(f"approving for {args.ttl} s: {claims['iss']} {act['type']} {act['m']} {act['h']}{act['p']} "
          f"amount {act['amt']} ({act['dc']}), request {claims['apr_req']}", file=sys.stderr)
    print(sign_approval(Ed25519Signer.from_file(args.key), args.name, claims["iss"], claims["apr_req"], args.ttl))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .app import Authorizer
    from .chain import Manifest
    from .config import load_config

    authorizer = Authorizer(load_config(args.config), Manifest.load(args.manifest), _signer(args),
                            allow_all=args.allow_all)
    port = authorizer.start(args.grpc, _hostport(args.admin))
    logging.getLogger("sealgate").info("authorizer listening: grpc %s, admin %s", port, args.admin)
    _stop_on_signal().wait()
    authorizer.stop()  # flushes the anchor queue to disk
    return 0


def _stop_on_signal() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def cmd_anchor(args: argparse.Namespace) -> int:
    from eth_account import Account

    from .anchoring import Anchorer, AnchorStore
    from .chain import ChainClient, Manifest
    from .config import load_config
    from .signing import HsmKey, HsmWallet

    hsm = (args.hsm_module, args.hsm_token, args.hsm_key)
    key = os.environ.get("SEALGATE_ANCHORER_KEY")
    if any(hsm):
        if not all(hsm):
            raise ConfigError("the anchoring wallet in an HSM needs --hsm-module, --hsm-token and --hsm-key")
        wallet = HsmWallet(HsmKey(*hsm))
    elif key:
        wallet = Account.from_key(key)
    else:
        raise SealgateError("no anchoring wallet: set SEALGATE_ANCHORER_KEY (hex secp256k1 key) or give --hsm-*")
    config, manifest = load_config(args.config), Manifest.load(args.manifest)
    anchorer = Anchorer(AnchorStore(config.anchor.db_path), ChainClient(manifest.rpc_url), manifest.anchor,
                        wallet, interval_seconds=config.anchor.interval_seconds,
                        batch_max_leaves=config.anchor.batch_max_leaves)
    logging.getLogger("sealgate").info("anchoring %s to %s", config.anchor.db_path, manifest.anchor)
    anchorer.run(_stop_on_signal())
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from .chain import deploy_all

    manifest = deploy_all(args.rpc, args.manifest, delay_seconds=args.delay_seconds)
    print(manifest.to_json(), end="")
    return 0


def _load_jwks(source: str) -> dict:
    try:
        if source.startswith(("http://", "https://")):
            with urllib.request.urlopen(source, timeout=5) as r:
                doc = json.loads(r.read())
        else:
            doc = json.loads(Path(source).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"JWKS {source}: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ConfigError(f"JWKS {source}: expected an object with a 'keys' list")
    return doc


def cmd_verify(args: argparse.Namespace) -> int:
    from .anchoring import AnchorStore
    from .chain import Manifest
    from .sae import DENIAL_TYP, SAE_TYP
    from .verify import verify_anchored

    token = sys.stdin.read().strip() if args.sae == "-" else args.sae.strip()
    typ = DENIAL_TYP if args.denial else SAE_TYP
    if not Path(args.anchor_db).is_file():
        raise ConfigError(f"anchor store {args.anchor_db} does not exist")
    try:
        result = verify_anchored(token, _load_jwks(args.jwks), Manifest.load(args.manifest), AnchorStore(args.anchor_db), typ)
    except InputRejected as e:
        print(f"INVALID {e.reason}: {e.message}")
        return 1
    c = result.claims
    print("VALID")
    print(f"  agent     {c['iss']}")
    print(f"  action    {json.dumps(c['act'], sort_keys=True)}")
    print(f"  policy    {c['pol']['addr']} at block {c['pol']['block']}")
    print(f"  sae hash  0x{result.sae_hash}")
    print(f"  anchored  root 0x{result.root} in block {result.block}, tx {result.tx_hash}")
    if typ == SAE_TYP:
        print(f"  expiry    {c['exp']} ({'expired' if result.expired else 'still valid'})")
    if result.approval is not None:
        a = result.approval
        print(f"  approved  by {a['iss']}: approval {a['jti']} signed with the key registered at block "
              f"{c['pol']['block']}, for request {a['req']}")
    return 0


def cmd_egress_serve(args: argparse.Namespace) -> int:
    from .egress import EgressConfig, EgressEnforcer

    config = EgressConfig.load(args.config)
    enforcer = EgressEnforcer(config, debug=args.debug)
    if args.print_program:
        print(enforcer.program_text())
    enforcer.load()
    enforcer.attach()
    enforcer.sync_maps()
    enforcer.start_reader()
    log = logging.getLogger("sealgate.egress")
    log.info("egress ready: %d agents, programs attached at %s", len(config.agents), enforcer.parent)
    stop = _stop_on_signal()
    reload = threading.Event()
    signal.signal(signal.SIGHUP, lambda *_: reload.set())
    while not stop.wait(0.2):
        if reload.is_set():
            reload.clear()
            try:
                enforcer.config = EgressConfig.load(args.config)
                enforcer.sync_maps()
                log.info("egress maps synced from %s", args.config)
            except SealgateError as e:  # keep enforcing the last good policy
                log.error("egress reload rejected, keeping the current maps: %s", e)
    enforcer.close(detach=False)  # programs and pinned maps stay: enforcement outlives the daemon
    log.info("egress daemon stopped; programs remain attached (sealgate egress uninstall removes them)")
    return 0


def cmd_egress_uninstall(args: argparse.Namespace) -> int:
    from .egress import EgressConfig, require, uninstall

    require()
    for line in uninstall(EgressConfig.load(args.config)):
        print(line)
    return 0


def cmd_egress_probe(args: argparse.Namespace) -> int:
    from .egress import probe

    reason = probe()
    print("eBPF egress enforcement: available" if reason is None else f"eBPF egress enforcement unavailable: {reason}")
    return 0 if reason is None else 1


def cmd_agent_run(args: argparse.Namespace) -> int:
    from .egress import EgressConfig, spawn_agent

    argv = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not argv:
        raise SealgateError("agent run: give the command after --")
    proc = spawn_agent(EgressConfig.load(args.config), args.agent, argv, user=args.user, proxy_url=args.proxy)
    return proc.wait()


def _gov(args: argparse.Namespace):
    from .chain import ChainClient, Manifest
    from .governance import Governance

    manifest = Manifest.load(args.manifest)
    return Governance(ChainClient(manifest.rpc_url), manifest), Path(args.dir)


def _account(args: argparse.Namespace, gov) -> object:
    """The signing account: a key from an environment variable, or a dev account on a local anvil."""
    from eth_account import Account

    from .chain import dev_account

    if args.dev_account is not None:
        if gov.manifest.chain_id != 31337:
            raise SealgateError("--dev-account is for the local anvil chain (31337) only")
        return dev_account(args.dev_account)
    key = os.environ.get(args.key_env)
    if not key:
        raise SealgateError(f"no signing key: set {args.key_env} (hex) or use --dev-account on anvil")
    return Account.from_key(key)


def cmd_gov_propose(args: argparse.Namespace) -> int:
    from .config import DATA_CLASSES
    from .governance import rule_tuple

    gov, directory = _gov(args)
    if args.what == "upgrade-policy":
        call = gov.call_upgrade_policy(args.implementation)
    elif args.what == "set-rule":
        classes = tuple(DATA_CLASSES.index(c) for c in args.data_classes.split(","))
        rule = rule_tuple(args.max_amount, args.approval_threshold, classes, args.max_risk, args.utc_hours,
                          args.required_model, not args.disable)
        call = gov.call_set_rule(args.role, args.action_type, args.target, rule)
    elif args.what == "reactivate":
        call = gov.call_reactivate(args.agent)
    elif args.what == "register-approver":
        call = gov.call_register_approver(args.name, args.key_x)
    elif args.what in ("grant-anchorer", "revoke-anchorer"):
        call = gov.call_anchorer(args.address, grant=args.what == "grant-anchorer")
    elif args.what == "unpause":
        call = gov.call_unpause()
    elif args.what == "register-model":
        call = gov.call_register_model(args.model_id, args.sha256, args.sbom)
    elif args.what == "register-agent":
        key = bytes.fromhex(args.key_fingerprint.removeprefix("0x")) if args.key_fingerprint else bytes(32)
        if len(key) != 32:
            raise SealgateError("--key-fingerprint must be 32 bytes of hex (SHA-256 of the certificate's SPKI)")
        call = gov.call_register_agent(args.agent, args.org, args.role, args.model_id, key)
    else:
        raise SealgateError(f"unknown proposal kind {args.what}")
    proposal = gov.propose(call)
    path = proposal.save(directory)
    print(f"proposal {proposal.id}\n  {proposal.description}\n  timelock operation {proposal.operation_id}, "
          f"delay {proposal.delay}s\n  saved to {path}; owners approve with: sealgate gov approve {proposal.id[:12]}")
    return 0


def cmd_gov_approve(args: argparse.Namespace) -> int:
    from .governance import Proposal

    gov, directory = _gov(args)
    proposal = Proposal.load(directory, args.proposal)
    owner = _account(args, gov)
    gov.approve(proposal, owner)
    approvals = gov.approvals(proposal)
    print(f"approved by {owner.address}: {len(approvals)}/{gov.manifest.threshold}")
    if len(approvals) >= gov.manifest.threshold and gov.state(proposal) == "Unset":
        receipt = gov.submit(proposal, owner)
        ready = gov.timelock.functions.getTimestamp(bytes.fromhex(proposal.operation_id[2:])).call()
        print(f"threshold reached: scheduled in block {receipt.blockNumber}; executable from unix time {ready}")
    return 0


def cmd_gov_execute(args: argparse.Namespace) -> int:
    from .governance import Proposal

    gov, directory = _gov(args)
    proposal = Proposal.load(directory, args.proposal)
    state = gov.state(proposal)
    if state != "Ready":
        approvals = len(gov.approvals(proposal))
        print(f"not executable: operation is {state} ({approvals}/{gov.manifest.threshold} approvals)")
        return 1
    receipt = gov.execute(proposal, _account(args, gov))
    print(f"executed in block {receipt.blockNumber}: {proposal.description}")
    return 0


def cmd_gov_pending(args: argparse.Namespace) -> int:
    gov, _ = _gov(args)
    ops = gov.pending()
    for op in ops:
        print(f"{op['operation_id']} {op['state']:<7} ready_at {op['ready_at']} target {op['target']} "
              f"scheduled in block {op['scheduled_block']}")
    if not ops:
        print("no pending timelock operations")
    return 0


def cmd_gov_guardian(args: argparse.Namespace) -> int:
    """Emergency actions: no timelock (revoke an agent or an approver, pause the policy, deprecate a model)."""
    from .chain import text_id

    gov, _ = _gov(args)
    guardian = _account(args, gov)
    if args.action == "revoke":
        fn = gov.registry.functions.revoke(text_id(args.agent))
    elif args.action == "revoke-approver":
        fn = gov.approvers.functions.revoke(text_id(args.name))
    elif args.action == "pause":
        fn = gov.current_policy().functions.pause()
    else:
        fn = gov.models.functions.deprecate(text_id(args.model_id))
    receipt = gov.client.transact(guardian, fn)
    print(f"{args.action}: done in block {receipt.blockNumber}")
    return 0


def cmd_envoy(args: argparse.Namespace) -> int:
    """Writes an Envoy bootstrap for the agent sidecar or the target PEP, checked by `envoy --mode validate`."""
    import tempfile

    from .envoyconf import PepPorts, SidecarPorts, pep_config, sidecar_config, validate

    if args.kind == "sidecar":
        read = lambda p: Path(p).read_text()  # noqa: E731
        config = sidecar_config(SidecarPorts(args.listen, args.admin, args.authorizer_port, args.upstream_port),
                                read(args.ca), read(args.cert), read(args.key), args.trust_domain,
                                max_body_bytes=args.max_body_bytes)
    else:
        config = pep_config(PepPorts(args.listen, args.admin, args.target_port), _load_jwks(args.jwks), args.audience)
    with tempfile.TemporaryDirectory() as tmp:
        validate(config, Path(tmp))
    text = json.dumps(config, indent=2) + "\n"
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
        print(f"wrote {args.out} (envoy --mode validate: ok)", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(Path(args.workdir))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sealgate", description="Sealgate: signed, policy-bound AI agent actions")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the ext_authz gRPC authorizer")
    p.add_argument("--config", required=True)
    p.add_argument("--manifest", required=True, help="address manifest written by `sealgate deploy`")
    p.add_argument("--key", help="Ed25519 seed file for SAE signing")
    p.add_argument("--hsm-module", help="PKCS#11 library holding the SAE key instead (PIN in $SEALGATE_HSM_PIN)")
    p.add_argument("--hsm-token", help="token label")
    p.add_argument("--hsm-key", help="label of the Ed25519 key pair in the token")
    p.add_argument("--grpc", default="127.0.0.1:9001")
    p.add_argument("--admin", default="127.0.0.1:9002")
    p.add_argument("--allow-all", action="store_true", help="benchmark baseline: answer OK without deciding")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("anchor", help="anchor queued SAE / denial hashes in Merkle batches (holds the wallet key)")
    p.add_argument("--config", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--hsm-module", help="PKCS#11 library holding the wallet's secp256k1 key (PIN in $SEALGATE_HSM_PIN)")
    p.add_argument("--hsm-token", help="token label")
    p.add_argument("--hsm-key", help="label of the secp256k1 key pair (`sealgate hsm keygen --type secp256k1`)")
    p.set_defaults(func=cmd_anchor)

    p = sub.add_parser("deploy", help="deploy the contracts (idempotent) and write the address manifest")
    p.add_argument("--rpc", default="http://127.0.0.1:8545")
    p.add_argument("--manifest", default="addresses.json")
    p.add_argument("--delay-seconds", type=int, default=24 * 3600, help="timelock delay (default 24 h)")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("verify", help="verify an SAE: signature, claims, and on-chain anchoring")
    p.add_argument("sae", help="the JWS compact SAE, or - for stdin")
    p.add_argument("--jwks", required=True, help="JWKS file or URL (the authorizer serves /jwks.json)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--anchor-db", required=True, help="the authorizer's anchor store (holds the Merkle batches)")
    p.add_argument("--denial", action="store_true", help="the token is a signed denial record")
    p.set_defaults(func=cmd_verify)

    egress = sub.add_parser("egress", help="kernel egress enforcement (bcc)").add_subparsers(dest="egress_cmd", required=True)
    p = egress.add_parser("serve", help="load, attach and keep the programs in sync with the config (SIGHUP reloads)")
    p.add_argument("--config", required=True)
    p.add_argument("--print-program", action="store_true", help="print the BPF C program before loading it")
    p.add_argument("--debug", type=int, default=0, help="bcc debug flags (e.g. 4 prints the verifier log)")
    p.set_defaults(func=cmd_egress_serve)
    p = egress.add_parser("uninstall", help="detach every sealgate program and remove the pinned maps")
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_egress_uninstall)
    p = egress.add_parser("probe", help="say whether eBPF enforcement can run here, and why not")
    p.set_defaults(func=cmd_egress_probe)

    agent = sub.add_parser("agent", help="agent processes").add_subparsers(dest="agent_cmd", required=True)
    p = agent.add_parser("run", help="run a command inside the agent's cgroup, egress only through the mesh")
    p.add_argument("--agent", required=True)
    p.add_argument("--config", required=True, help="the egress config (names the agent cgroups)")
    p.add_argument("--user", help="run as this user (recommended: not root, so it cannot leave its cgroup)")
    p.add_argument("--proxy", help="HTTP(S)_PROXY for the agent: its Envoy sidecar, e.g. http://127.0.0.1:15001")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_agent_run)

    gov = sub.add_parser("gov", help="governance: Safe multisig -> timelock; guardian emergency actions")
    gov.add_argument("--manifest", required=True)
    gov.add_argument("--dir", default=".sealgate/gov", help="where proposals are kept for the other owners")
    gov.add_argument("--key-env", default="SEALGATE_GOV_KEY", help="env var holding the signer's hex key")
    gov.add_argument("--dev-account", type=int, help="anvil dev account index (local chain only)")
    govsub = gov.add_subparsers(dest="gov_cmd", required=True)
    p = govsub.add_parser("propose", help="propose a timelocked change through the Safe")
    kinds = p.add_subparsers(dest="what", required=True)
    k = kinds.add_parser("upgrade-policy")
    k.add_argument("--implementation", required=True)
    k = kinds.add_parser("set-rule")
    for flag in ("--role", "--action-type", "--target"):
        k.add_argument(flag, required=True)
    k.add_argument("--max-amount", type=int, required=True)
    k.add_argument("--approval-threshold", type=int, default=0)
    k.add_argument("--data-classes", default="public,internal")
    k.add_argument("--max-risk", type=int, default=100)
    k.add_argument("--utc-hours", type=lambda v: int(v, 0), default=0x00FFFFFF, help="bitmask of allowed UTC hours")
    k.add_argument("--required-model")
    k.add_argument("--disable", action="store_true")
    k = kinds.add_parser("reactivate")
    k.add_argument("--agent", required=True, help="SPIFFE ID")
    k = kinds.add_parser("register-approver", help="let a person approve held actions (key from `sealgate approver keygen`)")
    k.add_argument("--name", required=True)
    k.add_argument("--key-x", required=True, help="the `x` of the approver's public JWK")
    k = kinds.add_parser("grant-anchorer", help="let a wallet anchor batches (e.g. a new HSM wallet)")
    k.add_argument("--address", required=True)
    k = kinds.add_parser("revoke-anchorer", help="take anchoring away from a wallet (e.g. the old hot key)")
    k.add_argument("--address", required=True)
    kinds.add_parser("unpause")
    k = kinds.add_parser("register-model")
    k.add_argument("--model-id", required=True)
    k.add_argument("--sha256", required=True)
    k.add_argument("--sbom", required=True)
    k = kinds.add_parser("register-agent")
    for flag in ("--agent", "--org", "--role", "--model-id"):
        k.add_argument(flag, required=True)
    k.add_argument("--key-fingerprint", help="hex SHA-256 of the agent certificate's SPKI (omit: SPIFFE ID only)")
    p.set_defaults(func=cmd_gov_propose)
    p = govsub.add_parser("approve", help="an owner approves; the approval reaching the threshold schedules it")
    p.add_argument("proposal")
    p.set_defaults(func=cmd_gov_approve)
    p = govsub.add_parser("execute", help="run a scheduled operation once its delay has passed")
    p.add_argument("proposal")
    p.set_defaults(func=cmd_gov_execute)
    p = govsub.add_parser("pending", help="timelock operations scheduled and not yet executed")
    p.set_defaults(func=cmd_gov_pending)
    p = govsub.add_parser("revoke", help="guardian: revoke an agent now")
    p.add_argument("--agent", required=True, help="SPIFFE ID")
    p.set_defaults(func=cmd_gov_guardian, action="revoke")
    p = govsub.add_parser("revoke-approver", help="guardian: revoke an approver now")
    p.add_argument("--name", required=True)
    p.set_defaults(func=cmd_gov_guardian, action="revoke-approver")
    p = govsub.add_parser("pause", help="guardian: pause the current policy now")
    p.set_defaults(func=cmd_gov_guardian, action="pause")
    p = govsub.add_parser("deprecate-model", help="guardian: deprecate a model now")
    p.add_argument("--model-id", required=True)
    p.set_defaults(func=cmd_gov_guardian, action="deprecate")

    envoy = sub.add_parser("envoy", help="generate validated Envoy configs for operators").add_subparsers(
        dest="kind", required=True)
    p = envoy.add_parser("sidecar", help="agent sidecar: mTLS listener + ext_authz (fail closed) -> upstream")
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--admin", type=int, required=True)
    p.add_argument("--authorizer-port", type=int, required=True, help="sealgate serve gRPC port on 127.0.0.1")
    p.add_argument("--upstream-port", type=int, required=True, help="the target's PEP on 127.0.0.1")
    p.add_argument("--ca", required=True, help="CA bundle that issues agent certificates (PEM)")
    p.add_argument("--cert", required=True, help="the sidecar's server certificate (PEM)")
    p.add_argument("--key", required=True, help="its private key (PEM)")
    p.add_argument("--trust-domain", default="sealgate.local")
    p.add_argument("--max-body-bytes", type=int, default=64 * 1024)
    p.add_argument("--out", default="-")
    p.set_defaults(func=cmd_envoy)
    p = envoy.add_parser("pep", help="target PEP: jwt_authn with the authorizer's JWKS + the Lua binding filter")
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--admin", type=int, required=True)
    p.add_argument("--target-port", type=int, required=True)
    p.add_argument("--jwks", required=True, help="JWKS file or URL (the authorizer's /jwks.json)")
    p.add_argument("--audience", required=True, help="the target service name SAEs are issued for")
    p.add_argument("--out", default="-")
    p.set_defaults(func=cmd_envoy)

    hsm = sub.add_parser("hsm", help="keys in a PKCS#11 token: the SAE signing key, the anchoring wallet").add_subparsers(dest="hsm_cmd", required=True)
    p = hsm.add_parser("keygen", help="create a key pair in the token (PIN in $SEALGATE_HSM_PIN); prints its JWK or address")
    p.add_argument("--module", required=True, help="PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so")
    p.add_argument("--token", required=True, help="token label")
    p.add_argument("--key", required=True, help="label for the new key pair")
    p.add_argument("--type", choices=("ed25519", "secp256k1"), default="ed25519",
                   help="ed25519: SAE signing key (prints the JWK); secp256k1: anchoring wallet (prints the address)")
    p.set_defaults(func=cmd_hsm_keygen)

    approver = sub.add_parser("approver", help="people approving actions the policy holds for approval").add_subparsers(
        dest="approver_cmd", required=True)
    p = approver.add_parser("keygen", help="create an approver's Ed25519 key file; prints the public JWK (`gov propose register-approver`)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_approver_keygen)
    p = approver.add_parser("sign", help="approve the action named by a HUMAN_APPROVAL_REQUIRED denial; prints the approval")
    p.add_argument("--denial", required=True, help="the x-sae-denial token, or - for stdin")
    p.add_argument("--jwks", required=True, help="the authorizer's JWKS (file or URL) the denial must verify against")
    p.add_argument("--name", required=True, help="the approver's name in the on-chain ApproverRegistry")
    p.add_argument("--key", required=True, help="the approver's key file")
    p.add_argument("--ttl", type=int, default=300, help="seconds the approval stays usable (max 900)")
    p.add_argument("--body", help="file with the request body you reviewed (needed when the request has one)")
    p.set_defaults(func=cmd_approver_sign)

    p = sub.add_parser("demo", help="start the local stack, run the scripted scenario, shut down")
    p.add_argument("--workdir", default=".sealgate/demo")
    p.set_defaults(func=cmd_demo)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return args.func(args)
    except SealgateError as e:
        print(f"sealgate: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
