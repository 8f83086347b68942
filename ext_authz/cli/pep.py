"""`sealgate pep serve`: the verifier next to a target's Envoy PEP (body digest, single use)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from ext_authz.cli.common import command, group, load_jwks, stop_on_signal
from ext_authz.envelope.models import DEFAULT_ISSUER


def register(sub: Any) -> None:
    pep = group(sub, "pep", "the enforcement point's verifier (called by the PEP Envoy's ext_authz filter)")
    p = command(pep, "serve", "verify SAEs for one target: signature, binding, body digest, and single use in a shared store",
                "sealgate pep serve --listen unix:/run/sealgate/pep-verifier.sock --jwks /etc/sealgate/jwks.json \\\n"
                "    --issuer spiffe://sealgate.local/sealgate/authorizer \\\n"
                "    --audience payments-api --redemptions sqlite:///var/lib/sealgate/redeemed.sqlite3\n"
                "# replicas of one target share a store: --redemptions redis://10.0.0.5:6379/0")
    p.add_argument("--listen", default="unix:/run/sealgate/pep-verifier.sock", metavar="unix:PATH|HOST:PORT",
                   help="where the PEP Envoy reaches it; a Unix socket is created mode 0600")
    p.add_argument("--jwks", required=True, metavar="FILE|URL",
                   help="the authorizer's JWKS: a file, read once; or its URL (/jwks.json), refreshed to follow key rotation")
    p.add_argument("--jwks-refresh", type=float, default=30.0, metavar="SECONDS",
                   help="with a URL: how often the JWKS is fetched again (below `sealgate keys rotate --min-published`)")
    p.add_argument("--jwks-max-stale", type=float, default=300.0, metavar="SECONDS",
                   help="with a URL: refuse every SAE (PEP_ERROR) once no fetch has succeeded for this long")
    p.add_argument("--issuer", default=DEFAULT_ISSUER, metavar="URI",
                   help="the authorizer's issuer URI (its config `issuer`, default spiffe://<trust_domain>/sealgate/authorizer): "
                        "the only SAE iss accepted")
    p.add_argument("--audience", required=True, help="this target's service name (the SAEs' aud)")
    p.add_argument("--max-sae-lifetime", type=int, default=300, metavar="SECONDS",
                   help="refuse SAEs whose exp - iat exceeds this (at most 300; as `sealgate envoy pep`)")
    p.add_argument("--redemptions", required=True, metavar="URL",
                   help="store of redeemed SAE ids: sqlite:///path (one host) or redis://host:port/db (replicas)")
    p.set_defaults(func=cmd_pep_serve)


def cmd_pep_serve(args: argparse.Namespace) -> int:
    from ext_authz.mesh.pep_verifier import PepVerifier, PepVerifierService
    from ext_authz.sdk.redemption import open_redemptions
    from ext_authz.server.grpc_loop import ExtAuthzServer

    keys: Any
    if args.jwks.startswith(("http://", "https://")):
        from ext_authz.sdk.jwks import RemoteJwks

        keys = RemoteJwks(args.jwks, args.jwks_refresh, args.jwks_max_stale).start()
    else:
        keys = load_jwks(args.jwks)
    store = open_redemptions(args.redemptions)
    verifier = PepVerifier(keys, args.audience, store, issuer=args.issuer,
                           max_lifetime_seconds=args.max_sae_lifetime)
    service = PepVerifierService(verifier)
    server = ExtAuthzServer(service, args.listen, name="sealgate-pep")
    server.start()
    logging.getLogger("sealgate.pep").info("PEP verifier for %s listening on %s", args.audience, args.listen)
    stop_on_signal().wait()
    server.stop(grace=1)
    service.close()
    store.close()
    return 0
