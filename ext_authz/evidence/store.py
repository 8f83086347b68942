"""The evidence store: every SAE and signed denial the authorizer issued, whole, durable before it is answered.

The interface (`EvidenceStore`) is what the rest of Sealgate uses; `ext_authz.evidence.sqlite` is the embedded
default (SQLite, one file shared with the anchor queue), and a shared engine (PostgreSQL) can implement the same
Protocol later. Contract every engine keeps:

- `append(records)` stores the tokens AND their anchor-queue rows (`leaves`, read by the anchoring worker) in ONE
  durable transaction: when it returns, both survive a crash or power loss; when it raises
  `EvidenceUnavailable`, nothing of the call may be relied on and the caller fails closed (the decisions are
  denied with EVIDENCE_UNAVAILABLE). The group committer (`ext_authz.evidence.commit`) calls it with the records
  of many concurrent decisions at once, so one fsync serves them all.
- Records are keyed by `jti` (the decision id) and unique by `token_hash` (the anchored value: SHA-256 of the token's
  JWS signing input, `ext_authz.envelope.encoding.sae_hash`); they are indexed by agent, session, parent, target,
  reason and issue time, for `find()`.
- `claim_approval(key, exp, now)` records a person's approval as used, durably, before the SAE it allows is
  issued; False when it was used before. Used approvals survive restarts and disk faults (synchronous commits),
  and are forgotten only after they expire.
- `purge(before)` applies the retention setting: drops the tokens of records issued before `before` whose
  anchor batch is anchored on-chain (their hashes and proofs stay in the anchor store); never an unanchored one.
- `probe()` is one small durable write: readiness (/healthz) is red while it fails.

Readers (`sealgate evidence export`, `sealgate verify --replay`) use `get`, `by_hash` and `find`; inclusion
proofs come from `ext_authz.anchoring.store.AnchorStore.proof_for(token_hash)` on the same database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ext_authz.errors import SealgateError

KINDS = ("sae", "denial")


class EvidenceUnavailable(SealgateError):
    """The store could not persist or read (disk full, read-only, I/O error): decisions fail closed."""


@dataclass(frozen=True, slots=True)
class EvidenceRecord:
    """One issued token and what it is found by. Built by the decision path from the claims it signed."""

    jti: str  # the decision id (the token's jti)
    kind: str  # "sae" or "denial"
    token: str  # the JWS compact token, exactly as issued
    token_hash: bytes  # the anchored value: SHA-256 of the token's JWS signing input (encoding.sae_hash)
    issued_at: int  # iat, seconds
    reason: str  # OK for an SAE, the reason code of a denial
    agent: str | None = None  # sub: the agent's SPIFFE ID (None: no identity was read)
    target: str | None = None  # aud of an SAE, tgt of a denial
    session: str | None = None  # ctx.sid
    parent: str | None = None  # ctx.parent: hex SHA-256 of the parent SAE


@dataclass(frozen=True, slots=True)
class EvidenceQuery:
    """Filters of `find()`; None means any. Times are inclusive `since`, exclusive `until` (iat, seconds)."""

    jti: str | None = None
    agent: str | None = None
    session: str | None = None
    parent: str | None = None
    target: str | None = None
    reason: str | None = None
    kind: str | None = None
    since: int | None = None
    until: int | None = None
    limit: int = 1000


class EvidenceStore(Protocol):
    """See the module docstring for the contract every engine keeps."""

    def append(self, records: Sequence[EvidenceRecord]) -> None:
        """Tokens and their anchor-queue rows, one durable transaction. Raises EvidenceUnavailable."""
        ...

    def claim_approval(self, key: str, exp: int, now: float) -> bool:
        """Durably records an approval as used; False if it was used before. Raises EvidenceUnavailable."""
        ...

    def get(self, jti: str) -> EvidenceRecord | None: ...

    def by_hash(self, token_hash: bytes) -> EvidenceRecord | None: ...

    def find(self, query: EvidenceQuery) -> list[EvidenceRecord]:
        """Records matching every given filter, oldest first, at most `query.limit`."""
        ...

    def purge(self, before: int) -> int:
        """Retention: drops anchored records issued before `before`; returns how many."""
        ...

    def probe(self) -> None:
        """One small durable write; raises EvidenceUnavailable while the store cannot persist."""
        ...

    def close(self) -> None: ...
