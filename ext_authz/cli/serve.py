"""`sealgate serve` (the authorizer) and `sealgate anchor` (the anchoring worker, which alone holds the wallet key)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from ext_authz.cli.common import HSM_PIN_HELP, add_signer_flags, command, hostport, signer_from_args, stop_on_signal
from ext_authz.errors import UsageError

ANCHORER_KEY_ENV = "SEALGATE_ANCHORER_KEY"


def register(sub: Any) -> None:
    p = command(sub, "serve", "run the ext_authz gRPC authorizer and its admin HTTP port",
                "sealgate serve --config authorizer.yaml --manifest addresses.json --key sae-ed25519.seed \\\n"
                "    --grpc unix:/run/sealgate/authorizer.sock --admin 127.0.0.1:9002\n"
                "# sidecars on other hosts: mutual TLS, callers allowlisted by mesh_clients in the config\n"
                "sealgate serve ... --grpc 0.0.0.0:9001 --tls-cert authz.pem --tls-key authz.key --client-ca mesh-ca.pem",
                env="SEALGATE_HSM_PIN  user PIN of the token (with --hsm-module)")
    p.add_argument("--config", required=True, metavar="FILE", help="authorizer config, YAML or JSON (README: Configuration)")
    p.add_argument("--manifest", required=True, metavar="FILE", help="address manifest written by `sealgate deploy`")
    add_signer_flags(p)
    p.add_argument("--grpc", default="unix:/run/sealgate/authorizer.sock", metavar="unix:PATH|HOST:PORT",
                   help="ext_authz gRPC listen address: a Unix socket (mode 0600) for sidecars on this host, "
                        "or host:port, which needs --tls-cert/--tls-key/--client-ca")
    p.add_argument("--tls-cert", metavar="PEM", help="the authorizer's certificate for mutual TLS with remote sidecars")
    p.add_argument("--tls-key", metavar="PEM", help="its private key")
    p.add_argument("--client-ca", metavar="PEM", help="CA of the sidecars' mesh certificates (their URI SANs must be "
                                                       "listed in mesh_clients)")
    p.add_argument("--admin", default="127.0.0.1:9002", type=hostport, metavar="HOST:PORT",
                   help="admin HTTP listen address (/status, /jwks.json, /healthz)")
    p.add_argument("--allow-all", action="store_true", help="benchmark baseline only: answer OK without deciding")
    p.set_defaults(func=cmd_serve)

    p = command(sub, "anchor", "anchor queued SAE / denial hashes on-chain in Merkle batches (holds the wallet key)",
                "SEALGATE_ANCHORER_KEY=0x... sealgate anchor --config authorizer.yaml --manifest addresses.json\n"
                "sealgate anchor --config authorizer.yaml --manifest addresses.json \\\n"
                "    --hsm-module /usr/lib/softhsm/libsofthsm2.so --hsm-token T --hsm-key anchor-wallet",
                env=f"{ANCHORER_KEY_ENV}  hex secp256k1 key of the anchoring wallet (unless --hsm-*)\n"
                    "SEALGATE_HSM_PIN       user PIN of the token (with --hsm-module)")
    p.add_argument("--config", required=True, metavar="FILE", help="the authorizer config (its anchor: section)")
    p.add_argument("--manifest", required=True, metavar="FILE", help="address manifest written by `sealgate deploy`")
    p.add_argument("--hsm-module", metavar="LIB", help=f"PKCS#11 library holding the wallet's secp256k1 key; {HSM_PIN_HELP}")
    p.add_argument("--hsm-token", metavar="LABEL", help="token label (with --hsm-module)")
    p.add_argument("--hsm-key", metavar="LABEL", help="label of the secp256k1 key pair (`sealgate hsm keygen --type secp256k1`)")
    p.add_argument("--listen", metavar="HOST:PORT", type=hostport,
                   help="read-only HTTP: GET /healthz (503 degraded: backlog, oldest unanchored age) and /v1/proofs/<hash>")
    p.set_defaults(func=cmd_anchor)


def cmd_serve(args: argparse.Namespace) -> int:
    from ext_authz.chain.manifest import Manifest
    from ext_authz.server.app import Authorizer
    from ext_authz.server.config import load_config

    authorizer = Authorizer(load_config(args.config), Manifest.load(args.manifest), signer_from_args(args),
                            allow_all=args.allow_all)
    port = authorizer.start(args.grpc, args.admin, mesh_tls(args))
    logging.getLogger("sealgate").info("authorizer listening: grpc %s, admin %s:%d", port, *args.admin)
    stop_on_signal().wait()
    authorizer.stop()  # flushes the anchor queue to disk
    return 0


def mesh_tls(args: argparse.Namespace) -> Any:
    from ext_authz.server.app import MeshTls

    files = (args.tls_cert, args.tls_key, args.client_ca)
    if not any(files):
        return None
    if not all(files):
        raise UsageError("mutual TLS needs all of --tls-cert, --tls-key and --client-ca")
    try:
        return MeshTls(*(Path(f).read_bytes() for f in files))
    except OSError as e:
        raise UsageError(f"cannot read {e.filename}: {e.strerror}") from e


def cmd_anchor(args: argparse.Namespace) -> int:
    from eth_account import Account

    from ext_authz.anchoring.anchorer import Anchorer, AnchoringPolicy
    from ext_authz.anchoring.http import serve_anchor_http
    from ext_authz.anchoring.store import AnchorStore
    from ext_authz.chain.client import ChainClient
    from ext_authz.chain.hsm_wallet import HsmWallet
    from ext_authz.chain.manifest import Manifest
    from ext_authz.errors import ChainError
    from ext_authz.server.config import load_config
    from ext_authz.signing.pkcs11 import HsmKey

    hsm = (args.hsm_module, args.hsm_token, args.hsm_key)
    key = os.environ.get(ANCHORER_KEY_ENV)
    if any(hsm):
        if not all(hsm):
            raise UsageError("the anchoring wallet in an HSM needs --hsm-module, --hsm-token and --hsm-key")
        wallet = HsmWallet(HsmKey(*hsm))
    elif key:
        wallet = Account.from_key(key)
    else:
        raise UsageError(f"no anchoring wallet: set {ANCHORER_KEY_ENV} (hex secp256k1 key) or give --hsm-*")
    config, manifest = load_config(args.config), Manifest.load(args.manifest)
    a = config.anchor
    policy = AnchoringPolicy(mode=a.mode, confirmations=a.confirmations, stuck_seconds=a.stuck_seconds,
                             fee_bump_percent=a.fee_bump_percent, degraded_after_seconds=a.degraded_after_seconds,
                             max_fee_gwei=a.max_fee_gwei)
    store = AnchorStore(a.db_path)
    anchorer = Anchorer(store, ChainClient(manifest.rpc_url, timeout=a.rpc_timeout_seconds), manifest.anchor,
                        wallet, interval_seconds=a.interval_seconds, batch_max_leaves=a.batch_max_leaves, policy=policy)
    try:
        held = anchorer.check_role()
    except ChainError as e:  # the chain may be down at start: say so and keep the backlog growing
        print(f"anchorer {wallet.address}: cannot check ANCHORER_ROLE yet ({e}); will retry while anchoring", flush=True)
    else:
        if not held:
            print(f"anchorer {wallet.address} does not hold ANCHORER_ROLE on SaeAnchor {manifest.anchor}", flush=True)
            return 2
        print(f"anchorer {wallet.address} holds ANCHORER_ROLE on SaeAnchor {manifest.anchor}", flush=True)
    if args.listen:
        serve_anchor_http(args.listen, store, anchorer.health, manifest.chain_id, manifest.anchor)
    logging.getLogger("sealgate").info("anchoring %s to %s (%s mode)", a.db_path, manifest.anchor, a.mode)
    anchorer.run(stop_on_signal())
    return 0
