"""Key commands: the SAE signing key (file or HSM), the anchoring wallet in an HSM, approvers' keys and approvals."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from ext_authz.cli.common import HSM_PIN_HELP, command, group, load_jwks, read_token
from ext_authz.errors import InputRejected, UsageError

HSM_ENV = "SEALGATE_HSM_PIN  the token's user PIN"


def register(sub: Any) -> None:
    keys = group(sub, "keys", "the authorizer's SAE signing key as a file")
    p = command(keys, "generate", "create the SAE signing key (file mode 0600); prints its public JWK",
                "sealgate keys generate --out /etc/sealgate/sae-ed25519.seed > sae-jwk.json\n"
                "sealgate keys generate --alg ES256 --out /etc/sealgate/sae-p256.pem > sae-jwk.json")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the key; never overwritten")
    p.add_argument("--alg", choices=("EdDSA", "ES256"), default="EdDSA",
                   help="EdDSA: a 32-byte Ed25519 seed; ES256: a P-256 private key in PKCS#8 PEM")
    p.set_defaults(func=cmd_keys_generate)

    p = command(keys, "init", "create a rotating keyring: a current and a next key, both in the published JWKS",
                "sealgate keys init --key-dir /etc/sealgate/sae-keys --alg ES256\n"
                "sealgate serve ... --key-dir /etc/sealgate/sae-keys   # follows rotations while running")
    p.add_argument("--key-dir", required=True, metavar="DIR", help="the key directory (created mode 0700)")
    p.add_argument("--alg", choices=("EdDSA", "ES256"), default="EdDSA", help="algorithm of the keys")
    p.set_defaults(func=cmd_keys_init)
    p = command(keys, "rotate", "promote the next key to current, retire the current one for a grace period, "
                                "publish a new next key",
                "sealgate keys rotate --key-dir /etc/sealgate/sae-keys --grace 900")
    p.add_argument("--key-dir", required=True, metavar="DIR", help="the key directory (`sealgate keys init`)")
    p.add_argument("--grace", type=int, default=900, metavar="SECONDS",
                   help="how long the retired key stays in the JWKS: above the SAE lifetime plus the PEPs' JWKS cache")
    p.add_argument("--min-published", type=int, default=120, metavar="SECONDS",
                   help="refuse unless the next key has been in the JWKS this long (above the PEPs' JWKS cache)")
    p.add_argument("--alg", choices=("EdDSA", "ES256"), help="algorithm of the new next key (default: as the promoted one)")
    p.set_defaults(func=cmd_keys_rotate)
    p = command(keys, "list", "the keyring: current, next and retired keys with their times",
                "sealgate keys list --key-dir /etc/sealgate/sae-keys")
    p.add_argument("--key-dir", required=True, metavar="DIR", help="the key directory")
    p.set_defaults(func=cmd_keys_list)

    hsm = group(sub, "hsm", "keys in a PKCS#11 token: the SAE signing key, the anchoring wallet")
    p = command(hsm, "keygen", "create a key pair in the token; prints its JWK (ed25519) or wallet address (secp256k1)",
                "sealgate hsm keygen --module /usr/lib/softhsm/libsofthsm2.so --token T --key sae-ed25519\n"
                "sealgate hsm keygen --module LIB --token T --key sae-p256 --type p256\n"
                "sealgate hsm keygen --module LIB --token T --key anchor-wallet --type secp256k1", env=HSM_ENV)
    p.add_argument("--module", required=True, metavar="LIB", help=f"PKCS#11 library; {HSM_PIN_HELP}")
    p.add_argument("--token", required=True, metavar="LABEL", help="token label")
    p.add_argument("--key", required=True, metavar="LABEL", help="label for the new key pair (must not exist)")
    p.add_argument("--type", choices=("ed25519", "p256", "secp256k1"), default="ed25519",
                   help="ed25519 (EdDSA) or p256 (ES256): SAE signing key (prints the JWK); "
                        "secp256k1: anchoring wallet (prints the address)")
    p.set_defaults(func=cmd_hsm_keygen)

    approver = group(sub, "approver", "people approving actions the policy holds for approval")
    p = command(approver, "keygen", "create an approver's Ed25519 key file (mode 0600); prints the public JWK",
                "sealgate approver keygen --out treasury-lead.seed   # its x goes to `gov propose register-approver`")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the seed; never overwritten")
    p.set_defaults(func=cmd_approver_keygen)
    p = command(approver, "sign", "approve the action named by a HUMAN_APPROVAL_REQUIRED denial; prints the approval",
                "sealgate approver sign --denial @denial.jwt --jwks http://127.0.0.1:9002/jwks.json \\\n"
                "    --body reviewed-body.json --name treasury-lead --key treasury-lead.seed --ttl 300")
    p.add_argument("--denial", required=True, metavar="TOKEN",
                   help="the x-sae-denial token, @FILE, or - for stdin")
    p.add_argument("--jwks", required=True, metavar="FILE|URL", help="the authorizer's JWKS the denial must verify against")
    p.add_argument("--name", required=True, help="the approver's name in the on-chain ApproverRegistry")
    p.add_argument("--key", required=True, metavar="FILE", help="the approver's key file (`sealgate approver keygen`)")
    p.add_argument("--ttl", type=int, default=300, metavar="SECONDS", help="how long the approval stays usable (max 900)")
    p.add_argument("--body", metavar="FILE", help="the request body you reviewed (needed when the request has one)")
    p.set_defaults(func=cmd_approver_sign)


def _new_seed_file(path: str) -> Any:
    from ext_authz.signing.file_key import Ed25519Signer

    if Path(path).exists():
        raise UsageError(f"{path} exists: a key file is never overwritten")
    return Ed25519Signer.from_file(path, create=True)


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from ext_authz.signing.file_key import new_key_file

    if Path(args.out).exists():
        raise UsageError(f"{args.out} exists: a key file is never overwritten")
    signer = new_key_file(args.out, args.alg)
    print(json.dumps(signer.public_jwk(), sort_keys=True))
    print(f"wrote {args.out} (mode 0600); kid {signer.kid}", file=sys.stderr)
    return 0


def cmd_keys_init(args: argparse.Namespace) -> int:
    from ext_authz.signing.keyring import init_keyring

    print(json.dumps(init_keyring(args.key_dir, args.alg).to_json(), indent=2, sort_keys=True))
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from ext_authz.signing.keyring import rotate_keyring

    state = rotate_keyring(args.key_dir, grace_seconds=args.grace, min_published_seconds=args.min_published, alg=args.alg)
    print(json.dumps(state.to_json(), indent=2, sort_keys=True))
    print(f"signing key now {state.current.kid}; {state.retired[0].kid} retired until {state.retired[0].retired_until}",
          file=sys.stderr)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from ext_authz.signing.keyring import read_state

    print(json.dumps(read_state(args.key_dir).to_json(), indent=2, sort_keys=True))
    return 0


def cmd_approver_keygen(args: argparse.Namespace) -> int:
    signer = _new_seed_file(args.out)
    print(json.dumps({k: signer.public_jwk()[k] for k in ("kty", "crv", "x")}, sort_keys=True))
    return 0


def cmd_hsm_keygen(args: argparse.Namespace) -> int:
    from ext_authz.chain.hsm_wallet import HsmWallet
    from ext_authz.signing.pkcs11 import HsmKey, Pkcs11P256Signer, Pkcs11Signer, generate_hsm_key

    spec = HsmKey(args.module, args.token, args.key)
    generate_hsm_key(spec, args.type)
    if args.type in ("ed25519", "p256"):
        with (Pkcs11Signer(spec) if args.type == "ed25519" else Pkcs11P256Signer(spec)) as signer:
            print(json.dumps(signer.public_jwk(), sort_keys=True))
    else:
        with HsmWallet(spec) as wallet:
            print(json.dumps({"address": wallet.address}))
    return 0


def cmd_approver_sign(args: argparse.Namespace) -> int:
    from ext_authz import reasons
    from ext_authz.authz.actions import EMPTY_BODY_SHA256
    from ext_authz.authz.approvals import sign_approval
    from ext_authz.envelope.models import verify_denial
    from ext_authz.signing.file_key import Ed25519Signer

    token = read_token(args.denial, "denial")
    try:  # the authorizer's signed denial (format version 2) tells the approver exactly what is being approved
        denial = verify_denial(token, load_jwks(args.jwks))
    except InputRejected as e:
        raise UsageError(f"not a denial signed by this authorizer: {e.message}") from e
    if denial.reason != reasons.HUMAN_APPROVAL_REQUIRED or denial.approval_request is None:
        raise UsageError(f"this denial does not ask for approval (reason {denial.reason})")
    act, agent, target = denial.action, denial.subject, denial.target
    if act is None or agent is None or target is None:
        raise UsageError("this denial names no agent, target or action to approve")
    if act.approval_digest(agent, target) != denial.approval_request:  # what is shown is what is signed
        raise UsageError("the denial's apr_req is not the digest of the action it describes")
    if act.body_sha256 != EMPTY_BODY_SHA256:  # the approval covers the body: the person must have seen it
        if not args.body:
            raise UsageError("the held request has a body: pass --body FILE with the body you approve")
        try:
            body = Path(args.body).read_bytes()
        except OSError as e:
            raise UsageError(f"cannot read --body {args.body}: {e.strerror}") from e
        if hashlib.sha256(body).hexdigest() != act.body_sha256:
            raise UsageError("the body you reviewed is not the one the agent sent (SHA-256 differs)")
        print(f"body: {body[:2048].decode('utf-8', 'replace')}", file=sys.stderr)
    print(f"approving for {args.ttl} s: {agent} {act.type} on {target}: {act.method} {act.authority}{act.path} "
          f"amount {act.amount} ({act.data_class}), request {denial.approval_request}", file=sys.stderr)
    print(sign_approval(Ed25519Signer.from_file(args.key), args.name, agent, denial.approval_request, args.ttl))
    return 0
