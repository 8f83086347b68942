#!/usr/bin/env python3
"""What the PKI adds per envelope and per decision, measured in this process (file CA keys, OCSP over HTTP on
loopback):

    .venv/bin/python bench/pki_costs.py [--n 200]

  envelope bytes       an SAE-sized token without and with the staple (x5c + OCSP answer)
  verify_stapled       offline check of a stapled token (chain, signature, OCSP at iat), median
  ocsp miss / hit      the authorizer's CertStatus.check on a certificate not yet cached (one HTTP round trip
                       to the responder) and cached (until nextUpdate), medians
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ext_authz.envelope.jws import EnvelopeEncoder  # noqa: E402
from ext_authz.pki.ca import KeySpec, init_pki  # noqa: E402
from ext_authz.pki.ocsp import CertStatus, OcspResponder, serve_ocsp  # noqa: E402
from ext_authz.pki.stapling import Stapler, verify_stapled  # noqa: E402
from ext_authz.pki.x509sign import public_key_of  # noqa: E402
from ext_authz.signing.file_key import Ed25519Signer  # noqa: E402

ISSUER = "spiffe://sealgate.local/sealgate/authorizer"


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ca = init_pki(Path(tmp) / "pki", "sealgate.local", root=KeySpec(file="r.seed"), intermediate=KeySpec(file="i.seed"))
        httpd = serve_ocsp(("127.0.0.1", 0), OcspResponder.from_directory(ca.directory, ca.status, 300))
        url = f"http://127.0.0.1:{httpd.server_port}/"
        signer = Ed25519Signer(bytes(32))
        chain = ca.issue_sae_signer(ISSUER, public_key_of(signer), dt.timedelta(days=1))
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": "spiffe://sealgate.local/agent/procurement-01", "aud": "payments-api",
                  "act": {"type": "payment.transfer", "m": "POST", "h": "payments.internal", "p": "/v1/transfers",
                          "amt": "50000", "dc": "internal", "bd": "ab" * 32},
                  "pol": {"registry": "0x" + "11" * 20, "id": "0x" + "22" * 32, "addr": "0x" + "33" * 20, "ver": 1,
                          "block": 12},
                  "inp": {"kf": "ef" * 32, "risk": 20}, "mod": "sha256:" + "cd" * 32, "iat": now, "nbf": now,
                  "exp": now + 60, "jti": "bench", "ctx": {"sid": "s", "dc": "internal"},
                  "chain": {"id": 31337, "anchor": "0x" + "44" * 20}}
        plain = EnvelopeEncoder(signer).encode(claims)
        stapled = EnvelopeEncoder(signer, staple=Stapler(chain.chain_pem, url, signer)).encode(claims)
        verify = []
        for _ in range(args.n):
            t = time.perf_counter()
            verify_stapled(stapled, ca.root)
            verify.append(time.perf_counter() - t)
        pems = [ca.issue_agent(f"spiffe://sealgate.local/agent/a{i}").cert_pem.decode() for i in range(args.n)]
        status = CertStatus(ca.intermediate, url)
        miss, hit = [], []
        for pem in pems:
            t = time.perf_counter()
            status.check(pem)
            miss.append(time.perf_counter() - t)
        for pem in pems:
            t = time.perf_counter()
            status.check(pem)
            hit.append(time.perf_counter() - t)
        httpd.shutdown()
        ca.close()
    print(json.dumps({"envelope_bytes": {"plain": len(plain), "stapled": len(stapled)},
                      "verify_stapled_ms": median_ms(verify), "ocsp_check_miss_ms": median_ms(miss),
                      "ocsp_check_hit_ms": median_ms(hit), "n": args.n}, indent=2))


if __name__ == "__main__":
    main()
