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
                "sealgate verify --bundle bundle.json [--rpc http://127.0.0.1:8545 --manifest addresses.json]\n"
                "exit status: 0 valid, 1 invalid (INVALID <REASON>: ...), 2 usage or I/O error")
    p.add_argument("sae", metavar="TOKEN", nargs="?",
                   help="the JWS compact token, @FILE to read it from a file, or - for stdin (not with --bundle)")
    p.add_argument("--bundle", metavar="FILE", help="an evidence bundle (`sealgate evidence export`): checked offline, "
                   "with no operator database; add --rpc (and --manifest) to check it against the chain too")
    p.add_argument("--rpc", metavar="URL", help="with --bundle: the chain's RPC endpoint")
    p.add_argument("--jwks", metavar="FILE|URL", help="the authorizer's JWKS (it serves /jwks.json); without it the "
                   "key comes from the chain's SigningKeyRegistry at the token's block (either way the key must be "
                   "registered there when the manifest names a registry)")
    p.add_argument("--manifest", metavar="FILE", help="address manifest written by `sealgate deploy`")
    p.add_argument("--anchor-db", metavar="FILE", help="the anchor store (SQLite) holding the Merkle batches")
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


def cmd_verify_bundle(args: argparse.Namespace) -> int:
    from ext_authz.anchoring.bundle import MAX_BUNDLE_BYTES, load_bundle, verify_bundle
    from ext_authz.chain.client import ChainClient
    from ext_authz.chain.manifest import Manifest, read_bounded

    if args.sae or args.anchor_db or args.jwks:
        raise UsageError("--bundle carries the tokens, proofs and keys: give no TOKEN, --anchor-db or --jwks with it")
    if args.rpc and not args.manifest:
        raise UsageError("--rpc needs --manifest (the deployment whose registries the bundle's keys are checked in)")
    data = read_bounded(args.bundle, MAX_BUNDLE_BYTES, "evidence bundle")
    client = ChainClient(args.rpc) if args.rpc else None
    manifest = Manifest.load(args.manifest) if args.manifest else None
    try:
        results = verify_bundle(load_bundle(data), client, manifest if client else None)
    except InputRejected as e:
        print(f"INVALID {e.reason}: {e.message}")
        return 1
    for r in results:
        c = r["claims"]
        print(f"VALID {c['jti']}  agent {c.get('sub', '-')}  value {r['value']}  root {r['root']}  block {r['block']}"
              f"  tx {r['txHash']}  key {r['key']}" + (f"  approved by {r['approval']['iss']}" if r["approval"] else ""))
    print(f"{len(results)} record(s) verified " + ("and checked against the chain" if client else
                                                     "offline (add --rpc to check the headers against the chain)"))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ext_authz.anchoring.store import AnchorStore
    from ext_authz.anchoring.verify import verify_anchored
    from ext_authz.chain.manifest import Manifest
    from ext_authz.envelope.jws import DENIAL_TYP, SAE_TYP

    if args.bundle:
        return cmd_verify_bundle(args)
    if not args.sae or not args.manifest or not args.anchor_db:
        raise UsageError("give TOKEN, --manifest and --anchor-db (or --bundle FILE)")
    token = read_token(args.sae, "denial" if args.denial else "SAE")
    typ = DENIAL_TYP if args.denial else SAE_TYP
    if not Path(args.anchor_db).is_file():
        raise UsageError(f"anchor store {args.anchor_db} does not exist")
    jwks, manifest = (load_jwks(args.jwks) if args.jwks else None), Manifest.load(args.manifest)
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
    if result.key is not None:
        k = result.key
        print(f"  key       {k.kid} ({k.jwk['alg']}) registered on-chain, valid [{k.valid_from}, {k.valid_until})")
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
