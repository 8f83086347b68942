"""Rotating SAE signing keys: a key directory holding the current key, the next one and retired ones.

The JWKS the authorizer publishes holds the current key, the next key (published before it signs
anything, so every PEP that refreshes its JWKS already trusts it when it is promoted) and each
retired key until its grace period ends (SAEs it signed are still in flight: at most the SAE
lifetime, plus the PEPs' JWKS cache). `sealgate keys rotate` promotes the next key, retires the
current one and makes a new next key; it refuses when the next key has been published for less
than `min_published_seconds`, since a PEP may not have fetched it yet.

On disk, `keyring.json` names the files (replaced atomically; key files mode 0600, never
rewritten); a running authorizer polls it and swaps its signer and its JWKS between two
decisions. The JWKS is one dict whose "keys" entry is replaced, never mutated: whoever holds the
dict (the admin endpoint, the decision maker checking parent SAEs) sees the rotation at once.
Retired key files are deleted by the first rotation after their grace period ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ext_authz.errors import ConfigError, SigningError
from ext_authz.signing.file_key import ALGORITHMS, Ed25519Signer, P256Signer, load_file_signer, new_key_file

log = logging.getLogger("sealgate.keys")

MANIFEST = "keyring.json"
DEFAULT_GRACE_SECONDS = 900  # > the 300 s SAE lifetime bound + a PEP's JWKS cache
DEFAULT_MIN_PUBLISHED_SECONDS = 120  # > a PEP's JWKS cache duration (`sealgate envoy pep --jwks-cache`)
MAX_RETIRED = 8
RETIRED_UNTIL = "retired_until"  # JWK member of a retired key in the published JWKS (RFC 7517 §4 allows others)

FileSigner = Ed25519Signer | P256Signer


@dataclass(frozen=True)
class Entry:
    file: str  # a name inside the key directory
    kid: str
    published: int  # unix time the key entered the JWKS
    retired_until: int | None = None  # retired keys: end of the grace period

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"file": self.file, "kid": self.kid, "published": self.published}
        if self.retired_until is not None:
            doc["retired_until"] = self.retired_until
        return doc

    @classmethod
    def from_json(cls, doc: Any, where: str) -> Entry:
        if not isinstance(doc, dict) or set(doc) - {"file", "kid", "published", "retired_until"}:
            raise ConfigError(f"{where}: expected {{file, kid, published[, retired_until]}}")
        file, kid, published, until = doc.get("file"), doc.get("kid"), doc.get("published"), doc.get("retired_until")
        if not isinstance(file, str) or "/" in file or file.startswith(".") or not isinstance(kid, str):
            raise ConfigError(f"{where}: file must be a plain name in the key directory and kid a string")
        if type(published) is not int or (until is not None and type(until) is not int):
            raise ConfigError(f"{where}: published and retired_until must be integers (unix time)")
        return cls(file, kid, published, until)


@dataclass(frozen=True)
class KeyringState:
    current: Entry
    next: Entry
    retired: tuple[Entry, ...]

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "current": self.current.to_json(), "next": self.next.to_json(),
                "retired": [e.to_json() for e in self.retired]}

    @classmethod
    def from_json(cls, doc: Any, where: str) -> KeyringState:
        if not isinstance(doc, dict) or doc.get("version") != 1 or set(doc) != {"version", "current", "next", "retired"}:
            raise ConfigError(f"{where}: expected version 1 with current, next and retired")
        retired = doc["retired"]
        if not isinstance(retired, list) or len(retired) > MAX_RETIRED:
            raise ConfigError(f"{where}: retired must be a list of at most {MAX_RETIRED} keys")
        return cls(Entry.from_json(doc["current"], f"{where}.current"), Entry.from_json(doc["next"], f"{where}.next"),
                   tuple(Entry.from_json(r, f"{where}.retired[{i}]") for i, r in enumerate(retired)))

    def published(self, now: float) -> list[Entry]:
        """The keys in the JWKS at `now`: current, next, and the retired ones still in their grace period."""
        return [self.current, self.next, *(r for r in self.retired if r.retired_until is not None and r.retired_until > now)]


def _key_name(signer: FileSigner) -> str:
    return f"sae-{signer.kid}.{'seed' if signer.alg == 'EdDSA' else 'pem'}"


def _new_key(directory: Path, alg: str, now: int) -> Entry:
    tmp = directory / f".new-{os.getpid()}-{time.monotonic_ns()}"
    signer = new_key_file(tmp, alg)
    name = _key_name(signer)
    os.link(tmp, directory / name)  # never replaces an existing file
    tmp.unlink()
    return Entry(name, signer.kid, now)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One rotation at a time per key directory."""
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_state(directory: str | Path) -> KeyringState:
    path = Path(directory) / MANIFEST
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"key directory {directory}: cannot read {MANIFEST}: {e.strerror} (`sealgate keys init`)") from e
    except ValueError as e:
        raise ConfigError(f"{path}: not JSON: {e}") from e
    return KeyringState.from_json(doc, str(path))


def _write_state(directory: Path, state: KeyringState) -> None:
    tmp = directory / f".{MANIFEST}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state.to_json(), f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / MANIFEST)  # readers see the old manifest or the new one, never half of one
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def init_keyring(directory: str | Path, alg: str = "EdDSA", now: float | None = None) -> KeyringState:
    """Creates the key directory (mode 0700) with a current and a next key; refuses an existing keyring."""
    if alg not in ALGORITHMS:
        raise ConfigError(f"algorithm must be one of {ALGORITHMS}, found {alg!r}")
    d = Path(directory)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _locked(d):
        if (d / MANIFEST).exists():
            raise ConfigError(f"{d / MANIFEST} exists: this directory already holds a keyring (`sealgate keys rotate`)")
        t = int(time.time() if now is None else now)
        state = KeyringState(_new_key(d, alg, t), _new_key(d, alg, t), ())
        _write_state(d, state)
        return state


def rotate_keyring(directory: str | Path, *, grace_seconds: int = DEFAULT_GRACE_SECONDS,
                   min_published_seconds: int = DEFAULT_MIN_PUBLISHED_SECONDS, alg: str | None = None,
                   now: float | None = None) -> KeyringState:
    """Promotes the next key, retires the current one for `grace_seconds`, publishes a new next key (of `alg`,
    default the promoted key's) and deletes retired keys whose grace has ended."""
    if type(grace_seconds) is not int or not 1 <= grace_seconds <= 30 * 86400:
        raise ConfigError(f"grace must be 1 s to 30 days, found {grace_seconds!r}")
    if type(min_published_seconds) is not int or min_published_seconds < 0:
        raise ConfigError(f"min published age must be a non-negative integer, found {min_published_seconds!r}")
    d = Path(directory)
    with _locked(d):
        state = read_state(d)
        t = int(time.time() if now is None else now)
        age = t - state.next.published
        if age < min_published_seconds:
            raise ConfigError(f"the next key {state.next.kid} has been published for {age} s, less than "
                              f"{min_published_seconds} s: a PEP may not have fetched it yet")
        promoted = load_file_signer(d / state.next.file)
        if promoted.kid != state.next.kid:
            raise ConfigError(f"{state.next.file} holds key {promoted.kid}, the keyring says {state.next.kid}")
        ended = [r for r in state.retired if r.retired_until is not None and r.retired_until <= t]
        kept = tuple(r for r in state.retired if r not in ended)
        retired = (Entry(state.current.file, state.current.kid, state.current.published, t + grace_seconds), *kept)
        new = KeyringState(state.next, _new_key(d, alg or promoted.alg, t), retired[:MAX_RETIRED])
        _write_state(d, new)
        for r in ended + list(retired[MAX_RETIRED:]):
            (d / r.file).unlink(missing_ok=True)  # past its grace: nothing may verify against it, nothing signs with it
        return new


class Keyring:
    """The authorizer's signer over a key directory: signs with the current key, publishes `jwks` (current, next,
    retired in grace) and follows `keyring.json` (polled every `poll_seconds` on a daemon thread).

    Implements the Signer protocol; `EnvelopeEncoder` asks `current()` once per envelope, so a header's kid
    and its signature always come from the same key."""

    blocking = False

    def __init__(self, directory: str | Path, poll_seconds: float = 0.5, clock: Any = time.time):
        self.directory = Path(directory)
        self._clock = clock
        self._poll = poll_seconds
        self.jwks: dict[str, Any] = {"keys": []}
        self._signers: dict[str, FileSigner] = {}
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self.error: str | None = None
        self._reload()  # at start a broken keyring is a ConfigError
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- the Signer protocol
    def current(self) -> FileSigner:
        return self._current

    @property
    def alg(self) -> str:
        return self._current.alg

    @property
    def kid(self) -> str:
        return self._current.kid

    def sign(self, message: bytes) -> bytes:
        return self._current.sign(message)

    def public_jwk(self) -> dict[str, str]:
        return self._current.public_jwk()

    # ---------------------------------------------------------------- following the directory
    def _reload(self) -> None:
        path = self.directory / MANIFEST
        try:
            st = path.stat()
        except OSError as e:
            raise ConfigError(f"key directory {self.directory}: no {MANIFEST} ({e.strerror}): `sealgate keys init`") from e
        stamp = (st.st_mtime_ns, st.st_ino)
        now = self._clock()
        with self._lock:
            if stamp != self._stamp:
                state = read_state(self.directory)
                signers: dict[str, FileSigner] = {}
                for entry in state.published(now):
                    signer = self._signers.get(entry.kid) or load_file_signer(self.directory / entry.file)
                    if signer.kid != entry.kid:
                        raise ConfigError(f"{entry.file} holds key {signer.kid}, the keyring says {entry.kid}")
                    signers[entry.kid] = signer
                self._state, self._signers, self._stamp = state, signers, stamp
                self._current = signers[state.current.kid]
                log.info("signing with %s (%s); next %s", state.current.kid, self._current.alg, state.next.kid)
            entries = self._state.published(now)
            if [k["kid"] for k in self.jwks["keys"]] != [e.kid for e in entries]:
                self.jwks["keys"] = [self._jwk(e) for e in entries]  # one assignment: atomic

    def _jwk(self, entry: Entry) -> dict[str, Any]:
        """A retired key says until when (`retired_until`, unix time): a live verifier (sdk.jwks) stops trusting it
        then, without waiting for its next fetch."""
        jwk: dict[str, Any] = dict(self._signers[entry.kid].public_jwk())
        if entry.retired_until is not None:
            jwk[RETIRED_UNTIL] = entry.retired_until
        return jwk

    def start(self) -> Keyring:
        if self._thread is None:
            self._thread = threading.Thread(target=self._follow, name="sealgate-keyring", daemon=True)
            self._thread.start()
        return self

    def _follow(self) -> None:
        while not self._stop.wait(self._poll):
            try:
                self._reload()
                self.error = None
            except (ConfigError, SigningError, OSError) as e:  # keep signing with the last good key; /status says why
                self.error = str(e)
                log.error("keyring %s: %s", self.directory, e)

    def close(self) -> None:
        self._stop.set()
