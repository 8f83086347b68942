"""`sealgate pki`: the agent identity PKI (root and intermediate CA, agent certificates, OCSP, renewal)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ext_authz.cli.common import HSM_PIN_HELP, command, group, hostport, stop_on_signal
from ext_authz.errors import UsageError

PKI_ENV = "SEALGATE_HSM_PIN  the tokens' user PIN (CA keys in a token)"
log = logging.getLogger("sealgate.pki")


def _dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", required=True, metavar="DIR", help="the PKI directory (`sealgate pki init`)")


def register(sub: Any) -> None:
    pki = group(sub, "pki", "agent identity PKI: root CA, intermediate CA, 24 h agent certificates, OCSP")
    p = command(pki, "init", "create the root CA (self-signed, 10 years) and the agent identity CA (2 years) it signs",
                "sealgate pki init --dir /etc/sealgate/pki --trust-domain sealgate.local \\\n"
                "    --module /usr/lib/softhsm/libsofthsm2.so --root-token root-ca --root-key root \\\n"
                "    --int-token agent-ca --int-key agent-ca --ocsp-url http://127.0.0.1:8888/\n"
                "sealgate pki init --dir ./pki --file-keys   # development: CA keys as files", env=PKI_ENV)
    _dir(p)
    p.add_argument("--trust-domain", default="sealgate.local", help="SPIFFE trust domain of the agents")
    p.add_argument("--module", metavar="LIB", help=f"PKCS#11 library holding both CA keys; {HSM_PIN_HELP}")
    p.add_argument("--root-token", metavar="LABEL", help="token of the root CA key (Ed25519 or P-256, `sealgate hsm keygen`)")
    p.add_argument("--root-key", metavar="LABEL", help="label of the root CA key pair")
    p.add_argument("--int-token", metavar="LABEL", help="token of the intermediate CA key")
    p.add_argument("--int-key", metavar="LABEL", help="label of the intermediate CA key pair")
    p.add_argument("--file-keys", action="store_true", help="development: CA keys as files in DIR/keys (never production)")
    p.add_argument("--ocsp-url", metavar="URL", help="the OCSP responder's URL, written into every certificate (AIA)")
    p.set_defaults(func=cmd_pki_init)

    p = command(pki, "issue", "issue an agent certificate (Ed25519, SPIFFE ID URI SAN) and write NAME.crt / NAME.key",
                "sealgate pki issue --dir /etc/sealgate/pki --spiffe-id spiffe://sealgate.local/agent/procurement-01 \\\n"
                "    --out /run/sealgate/agents --name procurement-01", env=PKI_ENV)
    _dir(p)
    p.add_argument("--spiffe-id", required=True, metavar="URI", help="the agent's SPIFFE ID")
    p.add_argument("--out", required=True, metavar="DIR", help="where NAME.crt (chain) and NAME.key (0600) go")
    p.add_argument("--name", required=True, help="file name stem")
    p.add_argument("--lifetime-hours", type=float, default=24, help="certificate lifetime (default 24 h, at most 7 days)")
    p.add_argument("--server", action="store_true", help="a mesh workload's TLS certificate (P-256, e.g. a sidecar)")
    p.set_defaults(func=cmd_pki_issue)

    p = command(pki, "certify-key", "certify the SAE signing key (its public JWK): the certificate SAEs carry in x5c",
                "sealgate pki certify-key --dir /etc/sealgate/pki --jwk sae-jwk.json \\\n"
                "    --spiffe-id spiffe://sealgate.local/sealgate/authorizer --out /etc/sealgate/sae-cert.pem", env=PKI_ENV)
    _dir(p)
    p.add_argument("--jwk", required=True, metavar="FILE", help="the public JWK (`sealgate keys generate` prints it)")
    p.add_argument("--spiffe-id", required=True, metavar="URI", help="the authorizer's SPIFFE ID (its issuer URI)")
    p.add_argument("--out", required=True, metavar="FILE", help="the chain: key certificate, then the intermediate")
    p.add_argument("--lifetime-hours", type=float, default=24 * 7, help="certificate lifetime (default 7 days)")
    p.set_defaults(func=cmd_pki_certify_key)

    p = command(pki, "revoke", "revoke one certificate, or every unexpired one of an agent; OCSP says so from now",
                "sealgate pki revoke --dir /etc/sealgate/pki --spiffe-id spiffe://sealgate.local/agent/x --reason key_compromise")
    _dir(p)
    p.add_argument("--serial", metavar="HEX", help="the certificate's serial number")
    p.add_argument("--spiffe-id", metavar="URI", help="every unexpired certificate of this SPIFFE ID")
    p.add_argument("--reason", default="unspecified", help="RFC 5280 revocation reason, in the OCSP answers",
                   choices=("unspecified", "key_compromise", "affiliation_changed", "superseded", "cessation_of_operation"))
    p.set_defaults(func=cmd_pki_revoke)

    p = command(pki, "list", "every certificate issued, with status", "sealgate pki list --dir /etc/sealgate/pki")
    _dir(p)
    p.set_defaults(func=cmd_pki_list)

    p = command(pki, "ocsp", "serve OCSP for the agent identity CA (HTTP on a loopback address by default)",
                "sealgate pki ocsp --dir /etc/sealgate/pki --listen 127.0.0.1:8888 --validity 300")
    _dir(p)
    p.add_argument("--listen", type=hostport, default=("127.0.0.1", 8888), metavar="HOST:PORT", help="HTTP listen address")
    p.add_argument("--validity", type=int, default=300, metavar="SECONDS",
                   help="nextUpdate - thisUpdate of each answer: how long a revocation may go unseen by a cache")
    p.set_defaults(func=cmd_pki_ocsp)

    p = command(pki, "renew", "keep agent certificates fresh: re-issue before expiry, write the files atomically "
                              "(and an Envoy SDS resource), warn before expiry",
                "sealgate pki renew --dir /etc/sealgate/pki --spiffe-id spiffe://sealgate.local/agent/a \\\n"
                "    --out /run/sealgate/agents --name a --lifetime-hours 24 --watch", env=PKI_ENV)
    _dir(p)
    p.add_argument("--spiffe-id", required=True, metavar="URI", help="the workload's SPIFFE ID")
    p.add_argument("--out", required=True, metavar="DIR", help="where NAME.crt / NAME.key (and NAME.sds.yaml) go")
    p.add_argument("--name", required=True, help="file name stem")
    p.add_argument("--server", action="store_true", help="a sidecar's TLS certificate (P-256) instead of an agent's")
    p.add_argument("--keep-key", action="store_true",
                   help="renew an agent's certificate for the same key (its fingerprint bound in the AgentRegistry)")
    p.add_argument("--lifetime-hours", type=float, default=24, help="lifetime of each certificate (default 24 h)")
    p.add_argument("--renew-at", type=float, default=2 / 3, metavar="FRACTION",
                   help="renew once this fraction of the lifetime has passed")
    p.add_argument("--watch", action="store_true", help="keep running; otherwise renew once if due and exit")
    p.set_defaults(func=cmd_pki_renew)

    p = command(pki, "svid", "where a SPIRE agent runs: write its X.509-SVID and bundle as `pki renew` writes "
                             "certificates (NAME.crt, NAME.key, NAME.sds.json, NAME.bundle.pem), following rotations",
                "SPIFFE_ENDPOINT_SOCKET=unix:/run/spire/agent.sock sealgate pki svid --out /run/sealgate/agents "
                "--name a --watch")
    p.add_argument("--socket", metavar="unix:PATH", help="the Workload API (default $SPIFFE_ENDPOINT_SOCKET)")
    p.add_argument("--out", required=True, metavar="DIR", help="where the files go")
    p.add_argument("--name", required=True, help="file name stem")
    p.add_argument("--watch", action="store_true", help="keep running and write every rotation SPIRE pushes")
    p.set_defaults(func=cmd_pki_svid)


def cmd_pki_svid(args: argparse.Namespace) -> int:
    from ext_authz.pki.spiffe_source import SvidWriter, fetch_once, watch, workload_api_socket

    socket = workload_api_socket(args.socket)
    if socket is None:
        raise UsageError("no SPIFFE Workload API socket (--socket or $SPIFFE_ENDPOINT_SOCKET): use the built-in "
                         "PKI (`sealgate pki renew`)")
    writer = SvidWriter(args.out, args.name)
    if not args.watch:
        fetch_once(socket, writer)
        print(json.dumps({"spiffe_id": writer.spiffe_id, "cert": str(Path(args.out) / f"{args.name}.crt")}))
        return 0
    client, handle = watch(socket, writer)
    stop_on_signal().wait()
    handle.cancel()
    client.close()
    return 0


def _ca(args: argparse.Namespace) -> Any:
    from ext_authz.pki.ca import CertificateAuthority

    return CertificateAuthority(args.dir)


def cmd_pki_init(args: argparse.Namespace) -> int:
    from ext_authz.pki.ca import KeySpec, init_pki
    from ext_authz.signing.pkcs11 import HsmKey

    token_flags = (args.module, args.root_token, args.root_key, args.int_token, args.int_key)
    if args.file_keys == any(token_flags):
        raise UsageError("give --file-keys, or --module with --root-token/--root-key/--int-token/--int-key")
    if args.file_keys:
        root, intermediate = KeySpec(file="keys/root-ca.seed"), KeySpec(file="keys/agent-ca.seed")
    else:
        if not all(token_flags):
            raise UsageError("CA keys in tokens need --module, --root-token, --root-key, --int-token and --int-key")
        root = KeySpec(pkcs11=HsmKey(args.module, args.root_token, args.root_key))
        intermediate = KeySpec(pkcs11=HsmKey(args.module, args.int_token, args.int_key))
    ca = init_pki(args.dir, args.trust_domain, root=root, intermediate=intermediate, ocsp_url=args.ocsp_url)
    print(json.dumps({"root": f"{ca.root.serial_number:x}", "intermediate": f"{ca.intermediate.serial_number:x}",
                      "trust_bundle": str(Path(args.dir) / "root.crt")}))
    ca.close()
    return 0


def _hours(value: float) -> dt.timedelta:
    return dt.timedelta(seconds=int(value * 3600))


def cmd_pki_issue(args: argparse.Namespace) -> int:
    ca = _ca(args)
    try:
        issued = (ca.issue_server(args.spiffe_id, lifetime=_hours(args.lifetime_hours)) if args.server
                  else ca.issue_agent(args.spiffe_id, _hours(args.lifetime_hours)))
        cert, key = issued.write(args.out, args.name)
    finally:
        ca.close()
    print(json.dumps({"serial": f"{issued.serial:x}", "cert": str(cert), "key": str(key),
                      "not_after": issued.cert.not_valid_after_utc.isoformat()}))
    return 0


def cmd_pki_certify_key(args: argparse.Namespace) -> int:
    from joserfc.jwk import ECKey, OKPKey

    try:
        jwk = json.loads(Path(args.jwk).read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read the JWK {args.jwk}: {e}") from e
    try:
        key = (OKPKey if jwk.get("kty") == "OKP" else ECKey).import_key(jwk)
        public = key.public_key  # cryptography object
    except (ValueError, TypeError, KeyError) as e:
        raise UsageError(f"{args.jwk}: not an Ed25519 or P-256 public JWK: {e}") from e
    ca = _ca(args)
    try:
        issued = ca.issue_sae_signer(args.spiffe_id, public, _hours(args.lifetime_hours))
    finally:
        ca.close()
    Path(args.out).write_bytes(issued.chain_pem)
    print(json.dumps({"serial": f"{issued.serial:x}", "chain": args.out}))
    return 0


def cmd_pki_revoke(args: argparse.Namespace) -> int:
    if bool(args.serial) == bool(args.spiffe_id):
        raise UsageError("give --serial or --spiffe-id")
    ca = _ca(args)
    try:
        revoked = ca.revoke(serial=int(args.serial, 16) if args.serial else None, subject=args.spiffe_id, reason=args.reason)
    except ValueError as e:
        raise UsageError(f"--serial must be hexadecimal: {e}") from e
    finally:
        ca.close()
    print(json.dumps({"revoked": [f"{s:x}" for s in revoked]}))
    return 0 if revoked else 1


def cmd_pki_list(args: argparse.Namespace) -> int:
    ca = _ca(args)
    try:
        print(json.dumps(ca.issued(), indent=2))
    finally:
        ca.close()
    return 0


def cmd_pki_ocsp(args: argparse.Namespace) -> int:
    from ext_authz.pki.ocsp import OcspResponder, serve_ocsp

    ca = _ca(args)
    responder = OcspResponder.from_directory(args.dir, ca.status, args.validity)
    httpd = serve_ocsp(args.listen, responder)
    log.info("OCSP for %s on http://%s:%d/ (answers valid %d s)", ca.intermediate.subject.rfc4514_string(),
             *httpd.server_address[:2], args.validity)
    stop_on_signal().wait()
    httpd.shutdown()
    ca.close()
    return 0


def cmd_pki_renew(args: argparse.Namespace) -> int:
    from ext_authz.pki.renewal import Renewer

    if not 0.1 <= args.renew_at <= 0.95:
        raise UsageError("--renew-at must be between 0.1 and 0.95")
    ca = _ca(args)
    renewer = Renewer(ca, args.spiffe_id, Path(args.out), args.name, _hours(args.lifetime_hours), args.renew_at,
                      server=args.server, keep_key=args.keep_key)
    try:
        if not args.watch:
            renewed = renewer.renew_if_due()
            print(json.dumps({"renewed": renewed, "cert": str(renewer.cert_path)}))
            return 0
        stop = stop_on_signal()
        renewer.renew_if_due()
        print(json.dumps({"watching": str(renewer.cert_path)}), flush=True)
        while not stop.wait(renewer.seconds_until_due()):
            renewer.renew_if_due()
    finally:
        ca.close()
    print("stopped", file=sys.stderr)
    return 0
