"""`sealgate verify`: an SAE or a signed denial, its signature, claims and on-chain anchoring."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ext_authz.cli.common import command, load_jwks, read_token
from ext_authz.errors import InputRejected, UsageError


def register(sub: Any) -> None:
    p = command(sub, "verify", "verify an SAE or a signed denial: signature, claims, and its anchoring on-chain",
                "sealgate verify @sae.jwt --jwks http://127.0.0.1:9002/jwks.json --manifest addresses.json \\\n"
                "    --anchor-db sealgate-anchor.sqlite3\n"
                "exit status: 0 valid, 1 invalid (INVALID <REASON>: ...), 2 usage or I/O error")
    p.add_argument("sae", metavar="TOKEN", help="the JWS compact token, @FILE to read it from a file, or - for stdin")
    p.add_argument("--jwks", required=True, metavar="FILE|URL", help="the authorizer's JWKS (it serves /jwks.json)")
    p.add_argument("--manifest", required=True, metavar="FILE", help="address manifest written by `sealgate deploy`")
    p.add_argument("--anchor-db", required=True, metavar="FILE", help="the anchor store (SQLite) holding the Merkle batches")
    p.add_argument("--issuer", metavar="URI",
                   help="the authorizer's issuer URI (its config `issuer`): refuse a token whose iss differs")
    p.add_argument("--denial", action="store_true", help="the token is a signed denial record, not an SAE")
    p.add_argument("--trust-root", metavar="PEM",
                   help="the PKI's root certificate: also check, offline, the stapled x5c chain and OCSP answer "
                        "(the signing certificate was good when the token was issued)")
    _add_replay_flags(p)
    p.set_defaults(func=cmd_verify)


def _stapled(token: str, trust_root: str, typ: str, issuer: str | None) -> Any:
    from cryptography import x509

    from ext_authz.pki.stapling import verify_stapled

    try:
        root = x509.load_pem_x509_certificate(Path(trust_root).read_bytes())
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read the trust root {trust_root}: {e}") from e
    return verify_stapled(token, root, typ=typ, issuer=issuer)


def cmd_verify(args: argparse.Namespace) -> int:
    from ext_authz.anchoring.store import AnchorStore
    from ext_authz.anchoring.verify import verify_anchored
    from ext_authz.chain.manifest import Manifest
    from ext_authz.envelope.jws import DENIAL_TYP, SAE_TYP

    token = read_token(args.sae, "denial" if args.denial else "SAE")
    typ = DENIAL_TYP if args.denial else SAE_TYP
    if not Path(args.anchor_db).is_file():
        raise UsageError(f"anchor store {args.anchor_db} does not exist")
    jwks, manifest = load_jwks(args.jwks), Manifest.load(args.manifest)
    try:
        result = verify_anchored(token, jwks, manifest, AnchorStore(args.anchor_db), typ, issuer=args.issuer)
        stapled = _stapled(token, args.trust_root, typ, args.issuer) if args.trust_root else None
    except InputRejected as e:
        print(f"INVALID {e.reason}: {e.message}")
        return 1
    c = result.claims
    print("VALID")
    print(f"  issuer    {c['iss']}")
    print(f"  agent     {c.get('sub', '(no identity was read)')}")
    if "act" in c:  # a denial made before the request was mapped has none
        act = c["act"]
        print(f"  target    {c['aud'] if typ == SAE_TYP else c['tgt']}")
        print(f"  action    {json.dumps(act, sort_keys=True)}")
        print(f"  amount    {act['amt']}")
    if typ == DENIAL_TYP:
        print(f"  reason    {c['reason']}")
    if "addr" in c["pol"]:
        print(f"  policy    {c['pol']['addr']} at block {c['pol']['block']}")
    else:
        print("  policy    not read (denied before the policy was evaluated)")
    print(f"  sae hash  0x{result.sae_hash}")
    print(f"  anchored  root 0x{result.root} in block {result.block}, tx {result.tx_hash}")
    if typ == SAE_TYP:
        print(f"  expiry    {c['exp']} ({'expired' if result.expired else 'still valid'})")
    if stapled is not None:
        print(f"  signer    certificate {stapled.signer_cert.serial_number:x} chained to the trust root; OCSP "
              f"{stapled.ocsp.status} from {stapled.ocsp.this_update:%Y-%m-%dT%H:%M:%SZ} to "
              f"{stapled.ocsp.next_update:%Y-%m-%dT%H:%M:%SZ}, issued {stapled.issued_at:%Y-%m-%dT%H:%M:%SZ}")
    if result.approval is not None:
        a = result.approval
        print(f"  approved  by {a['iss']}: approval {a['jti']} signed with the key registered at block "
              f"{c['pol']['block']}, for request {a['req']}")
    return _replay(args, c, typ, manifest.rpc_url) if args.replay else 0


def _add_replay_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--replay", action="store_true",
                   help="also re-run the policy at the token's pol.block and check it gives the recorded verdict")
    p.add_argument("--archive-rpc", metavar="URL",
                   help="the archive node --replay runs the policy on (default: the manifest's rpc_url)")


def _replay(args: argparse.Namespace, claims: dict[str, Any], typ: str, rpc_url: str) -> int:
    """`--replay`: exit 0 when the policy at pol.block gives the recorded verdict, 1 when it does not."""
    from ext_authz import reasons
    from ext_authz.chain.client import ChainClient
    from ext_authz.errors import ChainError
    from ext_authz.evidence.replay import replay

    try:
        result = replay(claims, typ, ChainClient(args.archive_rpc or rpc_url))
    except ChainError as e:
        print(f"INVALID {reasons.REPLAY_FAILED}: {e}")
        return 1
    if result is None:
        print("  replay    nothing to re-run: the authorizer denied before (or apart from) the policy's verdict")
        return 0
    said, now = " ".join(result.expected), " ".join(result.replayed)
    if not result.matches:
        print(f"INVALID {reasons.REPLAY_MISMATCH}: the token records {said} by {result.recorded_implementation} "
              f"v{result.recorded_version}; the policy at block {result.block} answers {now} by "
              f"{result.implementation} v{result.version}")
        return 1
    print(f"  replay    {now} at block {result.block} by {result.implementation} v{result.version}: same verdict")
    return 0
