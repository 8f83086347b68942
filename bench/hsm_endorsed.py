#!/usr/bin/env python3
"""Per-action HSM signing against HSM-endorsed short-lived keys, with a token taking 100 ms per signature.

    .venv/bin/python bench/hsm_endorsed.py [--delay-ms 100] [--threads 8] [--seconds 3] [--rounds 3]

A SoftHSM2 token (made in a temporary directory) holds the Ed25519 SAE key; `SlowToken` wraps its
signer and holds a device lock for `--delay-ms` per signature, a token that serves one signature at
a time (SoftHSM2 itself is ~0.1 ms). Two ways to sign SAE-sized envelopes, from `--threads` workers
as the authorizer's `signing_threads` do, in blocks of `--seconds` taken in turns (`--rounds` each):

  per_action  EnvelopeEncoder(SlowToken): every envelope signed in the token
  endorsed    EnvelopeEncoder(EndorsedSigner(SlowToken)): the token endorses an in-memory key
              (two signatures at start, one per period); envelopes are signed in memory and carry
              the endorsement (x5c)

Reports envelopes/s and the p50/p99 latency of one envelope, per mode (medians over the rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ext_authz.envelope.jws import EnvelopeEncoder  # noqa: E402
from ext_authz.signing.endorsed import EndorsedSigner, verify_endorsed  # noqa: E402
from ext_authz.signing.pkcs11 import HSM_PIN_ENV, HsmKey, Pkcs11Signer, generate_hsm_key  # noqa: E402

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "4321"


class SlowToken:
    """A token answering one signature at a time, `delay` seconds each (a network HSM's round trip)."""

    blocking = True

    def __init__(self, inner: Pkcs11Signer, delay: float):
        self.inner, self.delay = inner, delay
        self.alg, self.kid = inner.alg, inner.kid
        self._device = threading.Lock()
        self.signatures = 0

    def sign(self, message: bytes) -> bytes:
        with self._device:
            time.sleep(self.delay)
            self.signatures += 1
            return self.inner.sign(message)

    def public_jwk(self) -> dict[str, str]:
        return self.inner.public_jwk()


def claims(i: int) -> dict:
    now = int(time.time())
    return {"iss": "spiffe://sealgate.local/sealgate/authorizer", "sub": "spiffe://sealgate.local/agent/procurement-01",
            "aud": "payments-api", "act": {"type": "payment.transfer", "m": "POST", "h": "payments.internal",
                                           "p": "/v1/transfers", "amt": str(50_000 + i), "dc": "internal", "bd": "ab" * 32},
            "pol": {"registry": "0x" + "11" * 20, "id": "0x" + "22" * 32, "addr": "0x" + "33" * 20, "ver": 1, "block": 12},
            "inp": {"kf": "ef" * 32, "risk": 20},
            "mod": "sha256:" + "cd" * 32, "iat": now, "nbf": now, "exp": now + 60, "jti": f"bench-{i}",
            "ctx": {"sid": "s", "dc": "internal"}, "chain": {"id": 31337, "anchor": "0x" + "44" * 20}}


def block(encoder: EnvelopeEncoder, threads: int, seconds: float) -> tuple[int, list[float]]:
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    counter = [0]

    def work() -> None:
        mine = []
        while time.monotonic() < stop:
            with lock:
                counter[0] += 1
                i = counter[0]
            t = time.perf_counter()
            encoder.encode(claims(i))
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    [t.start() for t in pool]
    [t.join() for t in pool]
    return len(latencies), latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--delay-ms", type=float, default=100.0)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--period", type=int, default=300, help="endorsement period (s)")
    args = ap.parse_args()
    if not (Path(MODULE).exists() and shutil.which("softhsm2-util")):
        sys.exit(f"SoftHSM2 is not installed ({MODULE})")
    home = Path(tempfile.mkdtemp(prefix="sealgate-hsm-bench-"))
    (home / "tokens").mkdir()
    (home / "softhsm2.conf").write_text(f"directories.tokendir = {home / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ.update({"SOFTHSM2_CONF": str(home / "softhsm2.conf"), HSM_PIN_ENV: PIN})
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin", PIN, "--so-pin", "87654321"],
                   check=True, capture_output=True)
    spec = HsmKey(MODULE, "bench", "sae")
    generate_hsm_key(spec)
    with Pkcs11Signer(spec) as token_signer:
        token = SlowToken(token_signer, args.delay_ms / 1000)
        endorsed = EndorsedSigner(token, period_seconds=args.period)
        encoders = {"per_action": EnvelopeEncoder(token), "endorsed": EnvelopeEncoder(endorsed)}
        check = encoders["endorsed"].encode(claims(0))
        verify_endorsed(check, token.public_jwk())  # the endorsed envelopes verify back to the token key
        results: dict[str, list[tuple[float, float, float]]] = {m: [] for m in encoders}
        token_signatures = {m: 0 for m in encoders}
        for _ in range(args.rounds):
            for mode, encoder in encoders.items():  # interleaved blocks
                before = token.signatures
                n, lat = block(encoder, args.threads, args.seconds)
                token_signatures[mode] += token.signatures - before
                results[mode].append((n / args.seconds, pct(lat, 0.5) * 1000, pct(lat, 0.99) * 1000))
    shutil.rmtree(home, ignore_errors=True)
    summary = {}
    for mode, rows in results.items():
        summary[mode] = {"envelopes_per_s": round(statistics.median(r[0] for r in rows), 1),
                         "p50_ms": round(statistics.median(r[1] for r in rows), 3),
                         "p99_ms": round(statistics.median(r[2] for r in rows), 3),
                         "token_signatures": token_signatures[mode]}
    summary["ratio_throughput_endorsed_over_per_action"] = round(
        summary["endorsed"]["envelopes_per_s"] / summary["per_action"]["envelopes_per_s"], 1)
    print(json.dumps({"args": vars(args), "results": summary}, indent=2))


if __name__ == "__main__":
    main()
