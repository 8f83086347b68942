"""The three envelopes as typed models: the SAE, the signed denial record, a person's approval.

Each envelope is a frozen dataclass whose nested claim objects are typed too:

    Sae       iss sub aud act pol inp mod iat nbf exp jti ctx chain [apr]          typ application/sae.v3+jwt
    Denial    iss [sub] [tgt] [act] pol [inp] iat jti dec reason msg chain [apr_req] typ application/sae-denial.v3+jwt
    Approval  iss sub req iat exp jti                                               typ application/sae-approval.v2+jwt

    Action       act    {type, m, h, p, amt, dc, bd}         amt: a decimal string
    PolicyRef    pol    {registry, id, [addr, ver, block]}
    PolicyInputs inp    {kf, risk}                           what the policy read beyond act, sub and aud/tgt
    Context      ctx    {[sid], [parent], dc}
    ChainRef     chain  {id, anchor}
    ApprovalRef  apr    {by, jti, req, tok}

Who is who (RFC 7519, RFC 8725 §3.8): an SAE's and a denial's `iss` is the authorizer (its
configured issuer URI, e.g. spiffe://sealgate.local/sealgate/authorizer), the party whose JWKS
verifies it, so verifiers and the PEP's jwt_authn pin it; `sub` is the agent (its SPIFFE ID);
an SAE's `aud` is the target service. A denial names the target in `tgt` (it is not addressed
to the target, so not `aud`). An approval's `iss` is the approver (its key is the approver's)
and its `sub` the agent.

Fields carry readable names; `to_claims()` writes the wire names (the PEP's Lua reads `act.m`,
`act.h`, `act.p`, `iat`, `exp`, `jti` and the header's `typ`). `to_claims()` is written out by
hand because it sits on the decision path (`dataclasses.asdict` deep copies and costs several
times more). A claim that has no value is omitted, never JSON null (PyJWT >= 2.10 refuses a
non-string `sub`; RFC 7519 claims are strings or numbers): `apr`, `apr_req`, `ctx.sid`,
`ctx.parent`, and a denial's `sub` (no identity was read), `tgt` and `act` (no action was
mapped) and `pol.addr/ver/block` (no policy was read). `from_claims()` refuses null anywhere.
Amounts (`act.amt`, uint256) are decimal strings without sign or leading zeros: JavaScript
reads JSON integers above 2**53 wrongly (RFC 7493 §2.2).

Constructors do not validate: the decision path builds models from values it already
checked. `from_claims()` is the boundary for claims read from a token: it checks every
type, format and required member and raises `SaeInvalid` (reason `SAE_INVALID`) on
anything malformed, including claims the model does not know (a verifier never vouches
for a claim it did not check). What the values mean at a given time (expiry, lifetime,
binding to a request, who may approve) is checked where it is decided: `jws.verify()`,
`approvals.check_approval()`, `sdk.target.check_sae()`. `verify_sae()`, `verify_denial()` and `verify_approval()`
verify a token with `jws.verify()` (signature, typ, time, required claims) and then
return the model; `jws.verify()` itself keeps returning the verified payload dict.

Format version: the version of each envelope is its media type, not a claim. The SAE and the
denial are version 3 (`FORMAT_VERSION`; typ `application/sae.v3+jwt`, `application/sae-denial.v3+jwt`):
version 3 added `inp`, the policy inputs an envelope did not carry (the key fingerprint and the
risk score), so that a decision can be re-run from the envelope alone (`sealgate verify --replay`);
version 2 tokens are refused (`SAE_TYPE_INVALID` at the PEP). The approval is still version 2
(`APPROVAL_FORMAT_VERSION`, typ `application/sae-approval.v2+jwt`): its claims did not change.
Version 1 (typ `application/sae+jwt`, ...: iss the agent,
sub the target, integer amounts, nulls) is refused everywhere: nothing speaks it any more. The
approval's claims did not change, but the digest it signs did (`amt` a string, the agent under
`sub`), so it moved to version 2 with the others. Why not a `ver` claim: the typ is checked before any claim is interpreted,
by `jws.verify()` and by the PEP's Lua (an exact comparison), so a token of another
format is refused by every existing verifier without a change to the Lua; a claim would
be read only after the payload is parsed, would need its own check in the Lua, and a
top-level `ver` would sit next to `pol.ver` (the policy's version), which already means
something else. Since `from_claims()` refuses unknown claims, every change to the
claims, additive ones included, gets a new typ (e.g. `application/sae.v4+jwt`) and a
new `FORMAT_VERSION`; there are no deployed tokens of an older format to accept.

Issuers are URIs (`check_issuer()`): the configured issuer is validated once, where it is
configured (authorizer config, `sealgate pep serve --issuer`, `sealgate envoy pep --issuer`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from joserfc.jwk import KeySet

from ext_authz import reasons
from ext_authz.envelope.encoding import canonical_json
from ext_authz.envelope.jws import APPROVAL_TYP, DENIAL_TYP, SAE_TYP, verify
from ext_authz.errors import ConfigError, SaeInvalid

FORMAT_VERSION = 3  # of the SAE and the denial; carried by their typ (see the module docstring)
APPROVAL_FORMAT_VERSION = 2
MAX_RISK_SCORE = 255  # uint8 in the policy ABI (the operator's feed uses 0-100)
MAX_UINT256 = 2**256 - 1  # amounts are uint256 in the policy contract
MAX_MESSAGE_CHARS = 256  # a denial's msg is cut to this length when signed
MAX_APPROVAL_JTI_CHARS = 128
DENY = "DENY"  # the only value of a denial's dec

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_BYTES32 = re.compile(r"0x[0-9a-fA-F]{64}")
_MODEL_HASH = re.compile(r"sha256:[0-9a-f]{64}")
_REASON = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,77}")  # 2**256 - 1 has 78 digits
# an absolute URI (scheme ":" ...) of printable ASCII without space, quote or backslash: it is compared
# exactly, and written into Envoy's jwt_authn config
ISSUER_URI = re.compile(r"[a-z][a-z0-9+.\-]*:[!#-\[\]-~]{1,2000}")


def default_issuer(trust_domain: str = "sealgate.local") -> str:
    """The authorizer's issuer URI when its config names none: its SPIFFE ID in the trust domain. A verifier
    that defaults to it while the authorizer was configured otherwise refuses every SAE: it fails closed."""
    return f"spiffe://{trust_domain}/sealgate/authorizer"


DEFAULT_ISSUER = default_issuer()


def check_issuer(value: object, where: str = "issuer") -> str:
    """The configured issuer URI, validated once where it is configured; raises ConfigError."""
    if not isinstance(value, str) or not ISSUER_URI.fullmatch(value):
        raise ConfigError(f"{where} must be an absolute URI such as spiffe://sealgate.local/sealgate/authorizer "
                          f"(printable ASCII, no spaces or quotes, at most 2000 characters), found {value!r:.100}")
    return value

Claims = dict[str, Any]


# -- validation of untrusted claims ---------------------------------------------------------------

def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


def _invalid(where: str, expected: str, found: Any) -> SaeInvalid:
    return SaeInvalid(reasons.SAE_INVALID, f"claim {where}: expected {expected}, found {_show(found)}")


def _members(value: Any, where: str, required: frozenset[str], optional: frozenset[str] = frozenset()) -> Claims:
    """`value` is a JSON object with every required member and no member the format does not define."""
    if type(value) is not dict:
        raise _invalid(where, "a JSON object", value)
    keys = value.keys()
    if not keys >= required:
        raise SaeInvalid(reasons.SAE_INVALID, f"claim {where}: missing members {sorted(required - keys)}")
    if len(keys) > len(required):  # optional members, or unknown ones
        unknown = keys - required - optional
        if unknown:
            raise SaeInvalid(reasons.SAE_INVALID, f"claim {where}: members {sorted(unknown)} are not part of this format")
    return value


def _text(obj: Claims, key: str, where: str, *, pattern: re.Pattern[str] | None = None, expected: str = "",
          optional: bool = False, empty: bool = False, max_chars: int | None = None) -> Any:
    """A string member; `optional`: it may be absent (None), never null."""
    if optional and key not in obj:
        return None
    value = obj[key]
    if type(value) is not str or (not value and not empty) or (max_chars is not None and len(value) > max_chars) \
            or (pattern is not None and not pattern.fullmatch(value)):
        what = expected or ("a string" if empty else "a non-empty string")
        if max_chars is not None:
            what += f" of at most {max_chars} characters"
        raise _invalid(f"{where}.{key}" if where else key, what, value)
    return value


def _int(obj: Claims, key: str, where: str, *, optional: bool = False) -> Any:
    """A non-negative integer member; `optional`: it may be absent (None), never null."""
    if optional and key not in obj:
        return None
    value = obj[key]
    if type(value) is not int or value < 0:
        raise _invalid(f"{where}.{key}" if where else key, "a non-negative integer", value)
    return value


def _amount(obj: Claims, key: str, where: str) -> int:
    """A uint256 carried as a decimal string: digits only, no sign, no leading zero, at most 2**256 - 1."""
    value = obj[key]
    if type(value) is not str or not _DECIMAL.fullmatch(value) or int(value) > MAX_UINT256:
        raise _invalid(f"{where}.{key}", "a decimal string of an integer 0 to 2**256 - 1 (no sign, no leading zeros)",
                       value)
    return int(value)


# -- nested claim objects -------------------------------------------------------------------------

class RequestedAction(Protocol):
    """What `Action.of()` reads: the authorizer's ActionRequest (ext_authz.authz.actions) has it."""

    @property
    def action_type(self) -> str: ...
    @property
    def method(self) -> str: ...
    @property
    def authority(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def amount(self) -> int: ...
    @property
    def data_class(self) -> str: ...
    @property
    def body_sha256(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Action:
    """`act`: what the agent is allowed (or was refused) to do, bound to one HTTP request."""

    type: str  # act.type: the route's action type, e.g. payment.transfer
    method: str  # act.m
    authority: str  # act.h, lower case
    path: str  # act.p, with the query string
    amount: int  # act.amt, 0 to 2**256 - 1; on the wire a decimal string
    data_class: str  # act.dc
    body_sha256: str  # act.bd: hex SHA-256 of the body (the target checks it, the PEP cannot)

    MEMBERS: ClassVar[frozenset[str]] = frozenset({"type", "m", "h", "p", "amt", "dc", "bd"})

    @classmethod
    def of(cls, request: RequestedAction) -> Action:
        """The one place an action's claims are taken from the request."""
        return cls(request.action_type, request.method, request.authority, request.path, request.amount,
                   request.data_class, request.body_sha256)

    def to_claims(self) -> Claims:
        return {"type": self.type, "m": self.method, "h": self.authority, "p": self.path, "amt": str(self.amount),
                "dc": self.data_class, "bd": self.body_sha256}

    @classmethod
    def from_claims(cls, act: Any, where: str = "act") -> Action:
        c = _members(act, where, cls.MEMBERS)
        return cls(_text(c, "type", where), _text(c, "m", where), _text(c, "h", where), _text(c, "p", where),
                   _amount(c, "amt", where), _text(c, "dc", where),
                   _text(c, "bd", where, pattern=_SHA256_HEX, expected="64 lowercase hex digits (SHA-256)"))

    def approval_digest(self, agent: str, target: str) -> str:
        """What a person approves (an approval's `req`, a denial's `apr_req`): SHA-256 of the canonical
        JSON (sorted keys, no spaces, ASCII) of {sub, type, tgt, m, h, p, amt, dc, bd}: the agent, the
        target service and the action's claims as the envelopes carry them (`amt` a decimal string),
        `bd` included so that an approval of "pay vendor-7" cannot carry the same amount to someone else."""
        return hashlib.sha256(canonical_json({
            "sub": agent, "type": self.type, "tgt": target, "m": self.method, "h": self.authority, "p": self.path,
            "amt": str(self.amount), "dc": self.data_class, "bd": self.body_sha256,
        })).hexdigest()


@dataclass(frozen=True, slots=True)
class PolicyRef:
    """`pol`: which policy answered. `implementation`, `version` and `block` are None (omitted on the
    wire) only in a denial made before any policy was read; then all three are."""

    registry: str  # pol.registry: the PolicyRegistry address
    id: str  # pol.id: 0x + 32-byte policy id
    implementation: str | None  # pol.addr: the contract that evaluated
    version: int | None  # pol.ver
    block: int | None  # pol.block: the block the state was read at

    MEMBERS: ClassVar[frozenset[str]] = frozenset({"registry", "id"})
    EVALUATED: ClassVar[frozenset[str]] = frozenset({"addr", "ver", "block"})

    def to_claims(self) -> Claims:
        if self.implementation is None:
            return {"registry": self.registry, "id": self.id}
        return {"registry": self.registry, "id": self.id, "addr": self.implementation, "ver": self.version,
                "block": self.block}

    @classmethod
    def from_claims(cls, pol: Any, *, evaluated: bool) -> PolicyRef:
        """`evaluated`: the policy must have answered (an SAE), so addr, ver and block are set; else
        they are all present or all absent."""
        if evaluated:
            c = _members(pol, "pol", cls.MEMBERS | cls.EVALUATED)
        else:
            c = _members(pol, "pol", cls.MEMBERS, cls.EVALUATED)
            if c.keys() & cls.EVALUATED and not cls.EVALUATED <= c.keys():
                raise SaeInvalid(reasons.SAE_INVALID, "claim pol: addr, ver and block come together or not at all")
        return cls(_text(c, "registry", "pol"),
                   _text(c, "id", "pol", pattern=_BYTES32, expected="0x and 64 hex digits"),
                   _text(c, "addr", "pol", optional=True), _int(c, "ver", "pol", optional=True),
                   _int(c, "block", "pol", optional=True))


@dataclass(frozen=True, slots=True)
class PolicyInputs:
    """`inp`: the policy's inputs that the other claims do not carry, so the verdict can be re-run at `pol.block`
    from the envelope alone. With `sub` (agentId), `act.type`, `aud`/`tgt`, `act.amt` and `act.dc` they are the
    whole `IActionPolicy.Action`; the block's own timestamp is the only other thing the policy reads."""

    key_fingerprint: str  # inp.kf: hex SHA-256 of the agent certificate's SPKI (64 zeros: none presented)
    risk_score: int  # inp.risk: the operator's risk score for the agent when it was decided

    MEMBERS: ClassVar[frozenset[str]] = frozenset({"kf", "risk"})

    def to_claims(self) -> Claims:
        return {"kf": self.key_fingerprint, "risk": self.risk_score}

    @classmethod
    def from_claims(cls, inp: Any) -> PolicyInputs:
        c = _members(inp, "inp", cls.MEMBERS)
        risk = _int(c, "risk", "inp")
        if risk > MAX_RISK_SCORE:
            raise _invalid("inp.risk", f"an integer 0-{MAX_RISK_SCORE}", risk)
        return cls(_text(c, "kf", "inp", pattern=_SHA256_HEX, expected="64 lowercase hex digits (SHA-256)"), risk)


@dataclass(frozen=True, slots=True)
class Context:
    """`ctx`: the session and the parent SAE this action follows."""

    session_id: str | None  # ctx.sid: x-sealgate-session
    parent_sha256: str | None  # ctx.parent: hex SHA-256 of the parent SAE (x-sae-parent), verified first
    data_class: str  # ctx.dc

    MEMBERS: ClassVar[frozenset[str]] = frozenset({"dc"})
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"sid", "parent"})

    def to_claims(self) -> Claims:
        claims: Claims = {"dc": self.data_class}
        if self.session_id is not None:
            claims["sid"] = self.session_id
        if self.parent_sha256 is not None:
            claims["parent"] = self.parent_sha256
        return claims

    @classmethod
    def from_claims(cls, ctx: Any) -> Context:
        c = _members(ctx, "ctx", cls.MEMBERS, cls.OPTIONAL)
        return cls(_text(c, "sid", "ctx", optional=True, empty=True),
                   _text(c, "parent", "ctx", optional=True, pattern=_SHA256_HEX, expected="64 lowercase hex digits"),
                   _text(c, "dc", "ctx"))


@dataclass(frozen=True, slots=True)
class ChainRef:
    """`chain`: where the envelope's hash is anchored."""

    chain_id: int  # chain.id
    anchor: str  # chain.anchor: the SaeAnchor contract address

    MEMBERS: ClassVar[frozenset[str]] = frozenset({"id", "anchor"})

    def to_claims(self) -> Claims:
        return {"id": self.chain_id, "anchor": self.anchor}

    @classmethod
    def from_claims(cls, chain: Any) -> ChainRef:
        c = _members(chain, "chain", cls.MEMBERS)
        return cls(_int(c, "id", "chain"), _text(c, "anchor", "chain"))


@dataclass(frozen=True, slots=True)
class ApprovalRef:
    """`apr`: a person approved this action; the signed approval itself rides along (`tok`), so an
    auditor re-checks it against the approver's key at `pol.block` (`sealgate verify`)."""

    approver: str  # apr.by
    jti: str  # apr.jti: the approval's id
    request: str  # apr.req: the action digest the approval signed
    token: str  # apr.tok: the approval (a JWS, typ application/sae-approval.v2+jwt)

    MEMBERS: ClassVar[frozenset[str]] = frozenset({"by", "jti", "req", "tok"})

    def to_claims(self) -> Claims:
        return {"by": self.approver, "jti": self.jti, "req": self.request, "tok": self.token}

    @classmethod
    def from_claims(cls, apr: Any) -> ApprovalRef:
        c = _members(apr, "apr", cls.MEMBERS)
        return cls(_text(c, "by", "apr"), _text(c, "jti", "apr", max_chars=MAX_APPROVAL_JTI_CHARS),
                   _text(c, "req", "apr", pattern=_SHA256_HEX, expected="64 lowercase hex digits"),
                   _text(c, "tok", "apr"))


# -- the envelopes --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Sae:
    """A Signed Action Envelope: the authorizer allowed exactly `action`, for `audience`, until `expires`."""

    issuer: str  # iss: the authorizer's issuer URI (the PEP's jwt_authn and check_sae pin it)
    subject: str  # sub: the agent's SPIFFE ID
    audience: str  # aud: the target service (the PEP's jwt_authn and check_sae check it)
    action: Action  # act
    policy: PolicyRef  # pol
    inputs: PolicyInputs  # inp
    model: str  # mod: sha256:<hex> of the agent's model artifact
    issued_at: int  # iat
    not_before: int  # nbf
    expires: int  # exp
    jti: str  # the decision id, the PEP's replay key
    context: Context  # ctx
    chain: ChainRef  # chain
    approval: ApprovalRef | None = None  # apr: only when a person approved the action

    TYP: ClassVar[str] = SAE_TYP
    FORMAT_VERSION: ClassVar[int] = FORMAT_VERSION
    REQUIRED: ClassVar[frozenset[str]] = frozenset(
        {"iss", "sub", "aud", "act", "pol", "inp", "mod", "iat", "nbf", "exp", "jti", "ctx", "chain"})
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"apr"})

    def to_claims(self) -> Claims:
        claims = {
            "iss": self.issuer, "sub": self.subject, "aud": self.audience, "act": self.action.to_claims(),
            "pol": self.policy.to_claims(), "inp": self.inputs.to_claims(), "mod": self.model,
            "iat": self.issued_at, "nbf": self.not_before,
            "exp": self.expires, "jti": self.jti, "ctx": self.context.to_claims(), "chain": self.chain.to_claims(),
        }
        if self.approval is not None:
            claims["apr"] = self.approval.to_claims()
        return claims

    @classmethod
    def from_claims(cls, claims: Any) -> Sae:
        c = _members(claims, "payload", cls.REQUIRED, cls.OPTIONAL)
        return cls(
            _text(c, "iss", "", pattern=ISSUER_URI, expected="an absolute URI"), _text(c, "sub", ""),
            _text(c, "aud", ""), Action.from_claims(c["act"]),
            PolicyRef.from_claims(c["pol"], evaluated=True), PolicyInputs.from_claims(c["inp"]),
            _text(c, "mod", "", pattern=_MODEL_HASH, expected="sha256: and 64 lowercase hex digits"),
            _int(c, "iat", ""), _int(c, "nbf", ""), _int(c, "exp", ""), _text(c, "jti", ""),
            Context.from_claims(c["ctx"]), ChainRef.from_claims(c["chain"]),
            ApprovalRef.from_claims(c["apr"]) if "apr" in c else None,
        )


@dataclass(frozen=True, slots=True)
class Denial:
    """A signed denial record: why the authorizer refused. Made for every refusal it can sign, also
    before the request could be mapped to an action (then `target` and `action` are None) or before
    any identity was read (then `subject` is None too); None members are omitted on the wire."""

    issuer: str  # iss: the authorizer's issuer URI
    subject: str | None  # sub: the agent's SPIFFE ID, or the mTLS peer as reported when it is not a valid one
    target: str | None  # tgt: the target service the action was for
    action: Action | None  # act
    policy: PolicyRef  # pol
    issued_at: int  # iat
    jti: str  # the decision id
    reason: str  # a stable reason code (ext_authz.reasons)
    message: str  # msg, at most MAX_MESSAGE_CHARS
    chain: ChainRef  # chain
    approval_request: str | None = None  # apr_req: the action digest a person may approve (HUMAN_APPROVAL_REQUIRED)
    inputs: PolicyInputs | None = None  # inp: present exactly when the policy was read (pol.addr/ver/block)

    TYP: ClassVar[str] = DENIAL_TYP
    FORMAT_VERSION: ClassVar[int] = FORMAT_VERSION
    REQUIRED: ClassVar[frozenset[str]] = frozenset({"iss", "pol", "iat", "jti", "dec", "reason", "msg", "chain"})
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"sub", "tgt", "act", "apr_req", "inp"})

    def to_claims(self) -> Claims:
        claims: Claims = {
            "iss": self.issuer, "pol": self.policy.to_claims(), "iat": self.issued_at, "jti": self.jti, "dec": DENY,
            "reason": self.reason, "msg": self.message, "chain": self.chain.to_claims(),
        }
        if self.subject is not None:
            claims["sub"] = self.subject
        if self.target is not None:
            claims["tgt"] = self.target
        if self.action is not None:
            claims["act"] = self.action.to_claims()
        if self.approval_request is not None:
            claims["apr_req"] = self.approval_request
        if self.inputs is not None:
            claims["inp"] = self.inputs.to_claims()
        return claims

    @classmethod
    def from_claims(cls, claims: Any) -> Denial:
        c = _members(claims, "payload", cls.REQUIRED, cls.OPTIONAL)
        if c["dec"] != DENY:
            raise _invalid("dec", repr(DENY), c["dec"])
        if ("tgt" in c) != ("act" in c):
            raise SaeInvalid(reasons.SAE_INVALID, "claims tgt and act come together: the action and its target")
        if "apr_req" in c and not {"sub", "act"} <= c.keys():
            raise SaeInvalid(reasons.SAE_INVALID, "claim apr_req names an action: sub, tgt and act must be present")
        policy = PolicyRef.from_claims(c["pol"], evaluated=False)
        if ("inp" in c) != (policy.block is not None) or ("inp" in c and not {"sub", "act"} <= c.keys()):
            raise SaeInvalid(reasons.SAE_INVALID, "claim inp comes exactly with pol.addr/ver/block (the policy was "
                                                  "read), and with sub, tgt and act")
        return cls(
            _text(c, "iss", "", pattern=ISSUER_URI, expected="an absolute URI"), _text(c, "sub", "", optional=True),
            _text(c, "tgt", "", optional=True), Action.from_claims(c["act"]) if "act" in c else None,
            policy, _int(c, "iat", ""), _text(c, "jti", ""),
            _text(c, "reason", "", pattern=_REASON, expected="a reason code (A-Z, 0-9, _)"),
            _text(c, "msg", "", empty=True, max_chars=MAX_MESSAGE_CHARS), ChainRef.from_claims(c["chain"]),
            _text(c, "apr_req", "", pattern=_SHA256_HEX, expected="64 lowercase hex digits") if "apr_req" in c else None,
            PolicyInputs.from_claims(c["inp"]) if "inp" in c else None,
        )


@dataclass(frozen=True, slots=True)
class Approval:
    """A person's approval of one action (`sealgate approver sign`), signed with the approver's key;
    the JWS `kid` is the approver's name, as `iss` is."""

    approver: str  # iss: the approver's name in the ApproverRegistry
    agent: str  # sub: the agent's SPIFFE ID
    request: str  # req: the action digest (Action.approval_digest)
    issued_at: int  # iat
    expires: int  # exp
    jti: str  # 1-128 characters; each approval is used once

    TYP: ClassVar[str] = APPROVAL_TYP
    FORMAT_VERSION: ClassVar[int] = APPROVAL_FORMAT_VERSION
    REQUIRED: ClassVar[frozenset[str]] = frozenset({"iss", "sub", "req", "iat", "exp", "jti"})

    def to_claims(self) -> Claims:
        return {"iss": self.approver, "sub": self.agent, "req": self.request, "iat": self.issued_at,
                "exp": self.expires, "jti": self.jti}

    @classmethod
    def from_claims(cls, claims: Any) -> Approval:
        c = _members(claims, "payload", cls.REQUIRED)
        return cls(_text(c, "iss", ""), _text(c, "sub", ""),
                   _text(c, "req", "", pattern=_SHA256_HEX, expected="64 lowercase hex digits"),
                   _int(c, "iat", ""), _int(c, "exp", ""), _text(c, "jti", "", max_chars=MAX_APPROVAL_JTI_CHARS))


# -- typed verification ---------------------------------------------------------------------------

def verify_sae(token: str, jwks: dict[str, Any] | KeySet, *, now: float | None = None, leeway: int = 0,
               check_time: bool = True, issuer: str | None = None) -> Sae:
    """`jws.verify()` (encoding, signature, typ, time, required claims, issuer when given), then every
    claim's type and format."""
    return Sae.from_claims(verify(token, jwks, typ=SAE_TYP, now=now, leeway=leeway, check_time=check_time,
                                  issuer=issuer))


def verify_denial(token: str, jwks: dict[str, Any] | KeySet, *, issuer: str | None = None) -> Denial:
    """A denial record signed by the authorizer (denials do not expire)."""
    return Denial.from_claims(verify(token, jwks, typ=DENIAL_TYP, issuer=issuer))


def verify_approval(token: str, keys: dict[str, Any] | KeySet) -> Approval:
    """Signature and claims of an approval; whether it is valid now, for this agent and this action,
    and signed by a registered approver is `ext_authz.authz.approvals.check_approval`."""
    return Approval.from_claims(verify(token, keys, typ=APPROVAL_TYP, check_time=False))
