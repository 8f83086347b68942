"""`sealgate evidence export`: an evidence bundle of chosen SAEs and denials, verifiable without the operator."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ext_authz.cli.common import command, group
from ext_authz.errors import UsageError


def _time(value: str) -> int:
    """Unix seconds, or an ISO 8601 time (UTC unless it names a zone)."""
    if value.isdigit():
        return int(value)
    from datetime import UTC, datetime

    try:
        t = datetime.fromisoformat(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected unix seconds or an ISO 8601 time, found {value!r}") from e
    return int((t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp())


def register(sub: Any) -> None:
    ev = group(sub, "evidence", "the authorizer's records (SAEs and signed denials): export them as a bundle")
    p = command(ev, "export", "write an evidence bundle: the chosen tokens, their inclusion proofs, the anchoring "
                "transactions with receipts and block headers, the signing keys valid at issuance and the approvers' "
                "keys; `sealgate verify --bundle` checks it offline (docs/evidence-format.md)",
                "sealgate evidence export --db sealgate-anchor.sqlite3 --manifest addresses.json --jti d-81f2 --out b.json\n"
                "sealgate evidence export --db sealgate-anchor.sqlite3 --manifest addresses.json \\\n"
                "    --agent spiffe://sealgate.local/agent/procurement-01 --since 2026-12-01T00:00 --out b.json")
    p.add_argument("--db", required=True, metavar="FILE", help="the authorizer's store (config anchor.db_path)")
    p.add_argument("--manifest", required=True, metavar="FILE", help="address manifest written by `sealgate deploy`")
    pick = p.add_mutually_exclusive_group(required=True)
    pick.add_argument("--jti", action="append", metavar="ID", help="a decision id (repeat for several)")
    pick.add_argument("--agent", metavar="SPIFFE_ID", help="every record of this agent (with --since/--until)")
    pick.add_argument("--session", metavar="SID", help="every record of this session")
    p.add_argument("--since", type=_time, metavar="TIME", help="issued at or after (unix seconds or ISO 8601)")
    p.add_argument("--until", type=_time, metavar="TIME", help="issued before")
    p.add_argument("--limit", type=int, default=1000, metavar="N", help="at most this many records")
    p.add_argument("--out", default="-", metavar="FILE", help="where to write the bundle (- for stdout)")
    p.set_defaults(func=cmd_export)
    p = command(ev, "recover", "rebuild the anchored record set from chain data alone (no operator database): every "
                "batch's range and root, and for leaves-mode batches their values, each checked against its root",
                "sealgate evidence recover --manifest addresses.json [--from-block 100] --out recovered.json")
    p.add_argument("--manifest", required=True, metavar="FILE", help="address manifest (its rpc_url and anchor)")
    p.add_argument("--rpc", metavar="URL", help="another RPC endpoint than the manifest's")
    p.add_argument("--from-block", type=int, default=0, metavar="N", help="first block to read events from")
    p.add_argument("--out", default="-", metavar="FILE", help="where to write the JSON (- for stdout)")
    p.set_defaults(func=cmd_recover)


def cmd_export(args: argparse.Namespace) -> int:
    from ext_authz.anchoring.bundle import build_bundle, canonical
    from ext_authz.anchoring.store import AnchorStore
    from ext_authz.chain.client import ChainClient
    from ext_authz.chain.manifest import Manifest
    from ext_authz.evidence.sqlite import SqliteEvidenceStore
    from ext_authz.evidence.store import EvidenceQuery

    if not Path(args.db).is_file():
        raise UsageError(f"store {args.db} does not exist")
    if args.jti and (args.since or args.until):
        raise UsageError("--since/--until select among an agent's or a session's records, not with --jti")
    evidence, anchors, manifest = SqliteEvidenceStore(args.db), AnchorStore(args.db), Manifest.load(args.manifest)
    if args.jti:
        found = [evidence.get(j) for j in args.jti]
        missing = [j for j, r in zip(args.jti, found, strict=True) if r is None]
        if missing:
            print(f"no record of decision(s) {', '.join(missing)}", file=sys.stderr)
            return 1
        records = [r for r in found if r is not None]
    else:
        records = evidence.find(EvidenceQuery(agent=args.agent, session=args.session, since=args.since,
                                              until=args.until, limit=args.limit))
    anchored = []
    for r in records:
        proof = anchors.proof_for(r.token_hash)
        if proof is not None and proof.status == "anchored":
            anchored.append(r)
    waiting = len(records) - len(anchored)
    if not anchored:
        print(f"none of the {len(records)} selected record(s) is anchored yet: nothing to export", file=sys.stderr)
        return 1
    doc = build_bundle([r.token for r in anchored], anchors, ChainClient(manifest.rpc_url), manifest)
    data = canonical(doc) + b"\n"
    if args.out == "-":
        sys.stdout.buffer.write(data)
    else:
        Path(args.out).write_bytes(data)
    note = f"; {waiting} not yet anchored left out (export them later)" if waiting else ""
    print(f"exported {len(anchored)} record(s), {len(doc['transactions'])} anchoring transaction(s){note}", file=sys.stderr)
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    import json

    from ext_authz.anchoring.custody import recover_batches
    from ext_authz.chain.client import ChainClient
    from ext_authz.chain.manifest import Manifest
    from ext_authz.errors import InputRejected

    manifest = Manifest.load(args.manifest)
    try:
        batches = recover_batches(ChainClient(args.rpc or manifest.rpc_url), manifest.anchor, args.from_block)
    except InputRejected as e:
        print(f"INVALID {e.reason}: {e.message}")
        return 1
    doc = {"chain": {"id": manifest.chain_id, "anchor": manifest.anchor}, "batches": [
        {"root": "0x" + b.root.hex(), "firstSeq": b.first_seq, "lastSeq": b.last_seq, "txHash": b.tx_hash,
         "block": b.block, "values": None if b.values is None else ["0x" + v.hex() for v in b.values]}
        for b in batches]}
    text = json.dumps(doc, indent=1) + "\n"
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
    with_values = [b for b in batches if b.values is not None]
    print(f"recovered {len(batches)} batch(es); {len(with_values)} in leaves mode with "
          f"{sum(len(b.values or ()) for b in with_values)} value(s), each rebuilt to its root", file=sys.stderr)
    return 0
