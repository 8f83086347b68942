"""`sealgate envoy`: validated Envoy bootstraps for the agent sidecar and the target PEP."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from ext_authz.cli.common import command, group, load_jwks, port
from ext_authz.envelope.models import DEFAULT_ISSUER
from ext_authz.errors import UsageError

ENVOY_ENV = "ENVOY_BIN  the envoy binary used for validation (default: next to python, then PATH)"
ADMIN_HELP = ("Envoy admin interface: a Unix socket created mode 0600, so agents cannot reach it "
              "(it answers POST /quitquitquit without authentication)")


def unix_socket(value: str) -> str:
    if not value.startswith("unix:/"):
        raise argparse.ArgumentTypeError(f"expected unix:/absolute/path, found {value!r}")
    return value


def register(sub: Any) -> None:
    envoy = group(sub, "envoy", "generate Envoy configs for operators, checked by `envoy --mode validate`")
    p = command(envoy, "sidecar", "agent sidecar: mTLS listener + ext_authz (fail closed) -> upstream",
                "sealgate envoy sidecar --listen 15001 --admin unix:/run/sealgate/sidecar-admin.sock \\\n"
                "    --authorizer unix:/run/sealgate/authorizer.sock --upstream-port 16001 \\\n"
                "    --ca agents-ca.pem --cert sidecar.pem --key sidecar.key --out sidecar.json\n"
                "# authorizer on another host: mutual TLS, pinned to its SPIFFE ID\n"
                "sealgate envoy sidecar ... --authorizer authz.internal:9001 --mesh-cert mesh.pem --mesh-key mesh.key \\\n"
                "    --authorizer-ca mesh-ca.pem --authorizer-san spiffe://sealgate.local/sealgate/authorizer",
                env=ENVOY_ENV)
    p.add_argument("--listen", type=port, required=True, metavar="PORT", help="port agents connect to (mTLS)")
    p.add_argument("--admin", type=unix_socket, required=True, metavar="unix:PATH", help=ADMIN_HELP)
    p.add_argument("--authorizer", required=True, metavar="unix:PATH|HOST:PORT",
                   help="`sealgate serve`: its Unix socket on this host, or host:port with the --mesh-*/--authorizer-* TLS flags")
    p.add_argument("--mesh-cert", metavar="PEM", help="the sidecar's mesh client certificate (URI SAN in mesh_clients)")
    p.add_argument("--mesh-key", metavar="PEM", help="its private key")
    p.add_argument("--authorizer-ca", metavar="PEM", help="CA of the authorizer's certificate")
    p.add_argument("--authorizer-san", metavar="URI", help="the authorizer certificate's URI SAN, pinned")
    p.add_argument("--upstream-port", type=port, required=True, metavar="PORT", help="the target's PEP on 127.0.0.1")
    p.add_argument("--ca", required=True, metavar="PEM", help="CA bundle that issues agent certificates")
    p.add_argument("--cert", metavar="PEM", help="the sidecar's server certificate (or --cert-sds)")
    p.add_argument("--key", metavar="PEM", help="its private key")
    p.add_argument("--cert-sds", metavar="FILE",
                   help="instead of --cert/--key: the SDS file `sealgate pki renew --server` keeps fresh (NAME.sds.json); "
                        "Envoy picks up each renewal without a restart")
    p.add_argument("--trust-domain", default="sealgate.local", help="SPIFFE trust domain of the agents")
    p.add_argument("--max-body-bytes", type=int, default=64 * 1024, metavar="BYTES",
                   help="largest request body buffered for the authorizer (larger: 413)")
    p.add_argument("--out", default="-", metavar="FILE", help="where to write the JSON config (- for stdout)")
    p.set_defaults(func=cmd_envoy, kind="sidecar")
    p = command(envoy, "pep", "target PEP: jwt_authn with the authorizer's JWKS, the Lua binding filter, the verifier",
                "sealgate envoy pep --listen 16001 --admin unix:/run/sealgate/pep-admin.sock --target-port 8080 \\\n"
                "    --jwks http://127.0.0.1:9002/jwks.json --jwks-cache 60 --issuer spiffe://sealgate.local/sealgate/authorizer \\\n"
                "    --audience payments-api --verifier unix:/run/sealgate/pep-verifier.sock --out pep.json",
                env=ENVOY_ENV)
    p.add_argument("--listen", type=port, required=True, metavar="PORT", help="port the sidecars forward to")
    p.add_argument("--admin", type=unix_socket, required=True, metavar="unix:PATH", help=ADMIN_HELP)
    p.add_argument("--target-port", type=port, required=True, metavar="PORT", help="the target service on 127.0.0.1")
    keys = p.add_mutually_exclusive_group(required=True)
    keys.add_argument("--jwks", metavar="FILE|URL",
                      help="the authorizer's JWKS: a URL (its admin /jwks.json) is fetched by Envoy and refreshed, so key "
                           "rotations reach the PEP; a file is inlined")
    keys.add_argument("--jwks-from-chain", metavar="MANIFEST",
                      help="build the JWKS from the SigningKeyRegistry named in this address manifest: the keys "
                           "registered, not revoked and valid now (regenerate the config after a rotation)")
    p.add_argument("--jwks-cache", type=int, default=60, metavar="SECONDS",
                   help="with a URL: how long Envoy caches the JWKS (below `sealgate keys rotate --min-published`)")
    p.add_argument("--jwks-ca", metavar="PEM", help="with an https URL: the CA of the endpoint's certificate")
    p.add_argument("--inline-jwks", action="store_true", help="with a URL: fetch it now and inline it (no rotation)")
    p.add_argument("--issuer", default=DEFAULT_ISSUER, metavar="URI",
                   help="the authorizer's issuer URI (its config `issuer`, default spiffe://<trust_domain>/sealgate/authorizer), "
                        "pinned in jwt_authn")
    p.add_argument("--audience", required=True, help="the target service name SAEs are issued for (aud)")
    p.add_argument("--verifier", required=True, metavar="unix:PATH|PORT",
                   help="`sealgate pep serve` of this target: its Unix socket, or a port on 127.0.0.1")
    p.add_argument("--max-body-bytes", type=int, default=64 * 1024, metavar="BYTES",
                   help="largest request body buffered for the verifier (larger: 413)")
    p.add_argument("--max-sae-lifetime", type=int, default=300, metavar="SECONDS",
                   help="refuse SAEs whose exp - iat exceeds this (at most 300)")
    p.add_argument("--out", default="-", metavar="FILE", help="where to write the JSON config (- for stdout)")
    p.set_defaults(func=cmd_envoy, kind="pep")


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from e


def _sidecar(args: argparse.Namespace) -> dict[str, Any]:
    from ext_authz.mesh.configs import AuthorizerTls, SidecarPorts, sidecar_config

    tls_flags = (args.mesh_cert, args.mesh_key, args.authorizer_ca, args.authorizer_san)
    tls = None
    if any(tls_flags):
        if not all(tls_flags):
            raise UsageError("mutual TLS to the authorizer needs --mesh-cert, --mesh-key, --authorizer-ca and --authorizer-san")
        tls = AuthorizerTls(_read(args.mesh_cert), _read(args.mesh_key), _read(args.authorizer_ca), args.authorizer_san)
    if bool(args.cert_sds) == bool(args.cert or args.key):
        raise UsageError("give --cert and --key, or --cert-sds")
    if args.cert_sds:
        from ext_authz.mesh.configs import sds_from_file

        name = Path(args.cert_sds).name.removesuffix(".sds.json")
        return sidecar_config(SidecarPorts(args.listen, args.admin, args.authorizer, args.upstream_port),
                              _read(args.ca), "", "", args.trust_domain, max_body_bytes=args.max_body_bytes,
                              authorizer_tls=tls, cert_sds=sds_from_file(args.cert_sds, name))
    if not (args.cert and args.key):
        raise UsageError("--cert needs --key")
    return sidecar_config(SidecarPorts(args.listen, args.admin, args.authorizer, args.upstream_port),
                          _read(args.ca), _read(args.cert), _read(args.key), args.trust_domain,
                          max_body_bytes=args.max_body_bytes, authorizer_tls=tls)


def _pep_jwks(args: argparse.Namespace) -> dict[str, Any]:
    if args.jwks:
        return load_jwks(args.jwks)
    from ext_authz.chain.client import ChainClient
    from ext_authz.chain.keys import SigningKeys
    from ext_authz.chain.manifest import Manifest
    from ext_authz.errors import ChainError, SealgateError

    manifest = Manifest.load(args.jwks_from_chain)
    if not manifest.signing_keys:
        raise UsageError(f"{args.jwks_from_chain} names no SigningKeyRegistry (deployed before it existed)")
    try:
        jwks = SigningKeys(ChainClient(manifest.rpc_url), manifest.signing_keys).jwks()
    except SealgateError:
        raise
    except Exception as e:  # web3 raises many unrelated types; one boundary here
        raise ChainError(f"cannot read the SigningKeyRegistry at {manifest.rpc_url}: {e}") from e
    if not jwks["keys"]:
        raise UsageError(f"the SigningKeyRegistry {manifest.signing_keys} holds no key valid now: every SAE would be refused")
    return jwks


def cmd_envoy(args: argparse.Namespace) -> int:
    """Writes an Envoy bootstrap for the agent sidecar or the target PEP, checked by `envoy --mode validate`."""
    from ext_authz.mesh.configs import JwksUri, PepPorts, pep_config, validate

    if args.kind == "sidecar":
        config = _sidecar(args)
    else:
        verifier = int(args.verifier) if args.verifier.isdigit() else args.verifier
        jwks: Any = _pep_jwks(args)  # a URL is fetched now too: it must answer before the PEP relies on it
        if args.jwks and args.jwks.startswith(("http://", "https://")) and not args.inline_jwks:
            jwks = JwksUri(args.jwks, args.jwks_cache, _read(args.jwks_ca) if args.jwks_ca else None)
        config = pep_config(PepPorts(args.listen, args.admin, args.target_port), jwks, args.audience,
                            issuer=args.issuer, verifier=verifier, max_body_bytes=args.max_body_bytes,
                            max_sae_lifetime_seconds=args.max_sae_lifetime)
    with tempfile.TemporaryDirectory() as tmp:
        validate(config, Path(tmp))
    text = json.dumps(config, indent=2) + "\n"
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
        print(f"wrote {args.out} (envoy --mode validate: ok)", file=sys.stderr)
    return 0
