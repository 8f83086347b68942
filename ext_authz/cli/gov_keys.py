"""`sealgate gov` for the SigningKeyRegistry: the governed change kinds `add-signing-key` and
`rotate-signing-key` (through the Safe and the timelock) and the guardian's `revoke-signing-key` (at once).

Kept apart from cli/gov_changes.py and cli/gov.py, which call in here at one place each.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ext_authz.cli.common import command
from ext_authz.errors import UsageError

KINDS = ("add-signing-key", "rotate-signing-key")
FOREVER = 2**64 - 1


def _jwk(value: str) -> dict[str, Any]:
    """A public JWK: inline JSON, @FILE, or a JWKS file holding exactly one key."""
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise UsageError(f"--jwk must be a public JWK as JSON (or @FILE): {e}") from e
    if isinstance(doc, dict) and isinstance(doc.get("keys"), list):
        if len(doc["keys"]) != 1:
            raise UsageError(f"--jwk: a JWKS with {len(doc['keys'])} keys; give the one key to register")
        doc = doc["keys"][0]
    if not isinstance(doc, dict) or "d" in doc:
        raise UsageError("--jwk must be a PUBLIC JWK object (no private 'd')")
    return doc


def _seconds(value: str) -> int:
    if not value.isdigit() or int(value) >= 2**64:
        raise argparse.ArgumentTypeError(f"expected unix seconds (0 .. 2^64-1), found {value!r}")
    return int(value)


def add_key_kinds(kinds: Any) -> None:
    k = command(kinds, "add-signing-key", "let a key sign SAEs and denials: SigningKeyRegistry.addKey (the public "
                "JWK `sealgate keys generate` or `hsm keygen` printed; kid = its RFC 7638 thumbprint)",
                "sealgate gov --manifest m.json propose add-signing-key --jwk @sae-jwk.json --valid-from 1767225600")
    k.add_argument("--jwk", required=True, metavar="JSON|@FILE", help="the public JWK (Ed25519 OKP or P-256 EC)")
    k.add_argument("--valid-from", type=_seconds, default=0, metavar="UNIX", help="first second it may sign (iat)")
    k.add_argument("--valid-until", type=_seconds, default=FOREVER, metavar="UNIX",
                   help="first second it may no longer sign (default: until rotated or revoked)")
    k = command(kinds, "rotate-signing-key", "rotate in one operation: add the new key and end the old key's window "
                "(keep an overlap of at least one SAE lifetime)",
                "sealgate gov --manifest m.json propose rotate-signing-key --old-kid <kid> --old-valid-until 1767312000 \\\n"
                "    --jwk @new-jwk.json --valid-from 1767311700")
    k.add_argument("--old-kid", required=True, metavar="KID", help="the kid of the key being replaced")
    k.add_argument("--old-valid-until", type=_seconds, required=True, metavar="UNIX", help="end of the old key's window")
    k.add_argument("--jwk", required=True, metavar="JSON|@FILE", help="the new public JWK")
    k.add_argument("--valid-from", type=_seconds, default=0, metavar="UNIX", help="first second the new key may sign")
    k.add_argument("--valid-until", type=_seconds, default=FOREVER, metavar="UNIX", help="end of the new key's window")


def key_change(gov: Any, args: argparse.Namespace) -> tuple[str, Any, str] | None:
    """The (target, call, description) of a signing-key change kind, or None for any other kind."""
    if args.what not in KINDS:
        return None
    from ext_authz.chain.keys import call_add_key, call_rotate_key

    registry = gov.manifest.signing_keys
    if not registry:
        raise UsageError("this manifest names no SigningKeyRegistry (a deployment made before it existed)")
    if args.what == "add-signing-key":
        return call_add_key(gov.client, registry, _jwk(args.jwk), args.valid_from, args.valid_until)
    return call_rotate_key(gov.client, registry, args.old_kid, args.old_valid_until, _jwk(args.jwk), args.valid_from,
                           args.valid_until)


def register_guardian(govsub: Any, env_help: str) -> None:
    p = command(govsub, "revoke-signing-key", "guardian: revoke an SAE signing key now, without the timelock; tokens it "
                "signed that were not anchored before this block no longer verify",
                "SEALGATE_GOV_KEY=0x... sealgate gov --manifest addresses.json revoke-signing-key --kid <kid>", env=env_help)
    p.add_argument("--kid", required=True, metavar="KID",
                   help="the key's kid (RFC 7638 thumbprint); write --kid=KID: a kid may start with -")
    p.set_defaults(func=cmd_revoke_signing_key)


def cmd_revoke_signing_key(args: argparse.Namespace) -> int:
    from ext_authz.chain.keys import kid_bytes
    from ext_authz.cli.gov import _account, _gov

    gov, _ = _gov(args)
    if not gov.manifest.signing_keys:
        raise UsageError("this manifest names no SigningKeyRegistry")
    registry = gov.client.contract("SigningKeyRegistry", gov.manifest.signing_keys)
    receipt = gov.client.transact(_account(args, gov), registry.functions.revokeKey(kid_bytes(args.kid)))
    print(f"revoke-signing-key: {args.kid} revoked in block {receipt.blockNumber}")
    return 0
