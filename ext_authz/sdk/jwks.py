"""The authorizer's JWKS fetched from its admin endpoint and refreshed, for verifiers that follow key rotation.

The keyring publishes the next key before it signs and keeps a retired key for a grace period, so a
verifier refreshing more often than the rotation's `min_published` age never refuses a good SAE,
and drops a retired key within one refresh of its grace ending. When the endpoint cannot be reached
the last JWKS fetched stays in use for `max_stale_seconds`, then the verifier refuses everything
(`JwksStale`): an unreachable authorizer issues no new SAE, and a key retired meanwhile must not be
trusted for ever. A retired key carries `retired_until` (unix time): it is dropped at that second,
not at the next fetch.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
import urllib.request
from typing import Any

from joserfc.jwk import KeySet

from ext_authz.errors import ConfigError, SealgateError

log = logging.getLogger("sealgate.jwks")
MAX_JWKS_BYTES = 64 * 1024
MAX_KEYS = 16
RETIRED_UNTIL = "retired_until"  # as ext_authz.signing.keyring publishes it


class JwksStale(SealgateError):
    """No JWKS fetched within max_stale_seconds."""


def parse_jwks(raw: bytes, where: str) -> tuple[dict[str, Any], KeySet]:
    if len(raw) > MAX_JWKS_BYTES:
        raise ConfigError(f"JWKS {where}: larger than {MAX_JWKS_BYTES} bytes")
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list) or len(doc["keys"]) > MAX_KEYS:
            raise ValueError(f"expected an object with a 'keys' list of at most {MAX_KEYS}")
        return doc, KeySet.import_key_set(doc)  # type: ignore[arg-type]  # a JWKS dict
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"JWKS {where}: {e}") from e


def check_jwks_url(url: str) -> str:
    """http only to this host (the authorizer's admin endpoint next to it); https otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        return url
    if parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1"):
        return url
    raise ConfigError(f"JWKS URL {url!r}: https, or http to a loopback address (whoever can change the JWKS "
                      "in transit can sign SAEs)")


class RemoteJwks:
    """A JWKS URL fetched at start (failure: ConfigError) and every `refresh_seconds` on a daemon thread."""

    def __init__(self, url: str, refresh_seconds: float = 30.0, max_stale_seconds: float = 300.0, timeout: float = 5.0,
                 clock: Any = time.monotonic):
        if not 0 < refresh_seconds < max_stale_seconds:
            raise ConfigError(f"JWKS refresh ({refresh_seconds} s) must be positive and below max stale ({max_stale_seconds} s)")
        self.url = check_jwks_url(url)
        self._refresh = refresh_seconds
        self._max_stale = max_stale_seconds
        self._timeout = timeout
        self._clock = clock
        self._wall = time.time
        self.doc, self._all_keys = self._fetch()
        self._fetched = clock()
        self._select()
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _fetch(self) -> tuple[dict[str, Any], KeySet]:
        try:
            with urllib.request.urlopen(self.url, timeout=self._timeout) as r:
                raw = r.read(MAX_JWKS_BYTES + 1)
        except OSError as e:
            raise ConfigError(f"JWKS {self.url}: {e}") from e
        return parse_jwks(raw, self.url)

    def _select(self) -> None:
        """The keys usable now (retired ones before their `retired_until`) and when that set next shrinks."""
        now = self._wall()
        ends = [k[RETIRED_UNTIL] for k in self.doc["keys"] if isinstance(k.get(RETIRED_UNTIL), int)]
        live = {"keys": [k for k in self.doc["keys"] if not (isinstance(k.get(RETIRED_UNTIL), int) and k[RETIRED_UNTIL] <= now)]}
        self._keys = KeySet.import_key_set(live)  # type: ignore[arg-type]  # a JWKS dict
        self._next_change = min((e for e in ends if e > now), default=float("inf"))

    def refresh(self) -> None:
        doc, keys = self._fetch()
        if doc != self.doc:
            log.info("JWKS %s now holds %s", self.url, [k.get("kid") for k in doc["keys"]])
        self.doc, self._all_keys, self._fetched = doc, keys, self._clock()
        self._select()

    def keys(self) -> KeySet:
        """The keys to verify with now; JwksStale when the last good fetch is older than max_stale_seconds."""
        age = self._clock() - self._fetched
        if age > self._max_stale:
            raise JwksStale(f"JWKS {self.url} not fetched for {age:.0f} s (last error: {self.error})")
        if self._wall() >= self._next_change:  # a retired key's grace ended since the last fetch
            self._select()
        return self._keys

    def start(self) -> RemoteJwks:
        if self._thread is None:
            self._thread = threading.Thread(target=self._follow, name="sealgate-jwks", daemon=True)
            self._thread.start()
        return self

    def _follow(self) -> None:
        while not self._stop.wait(self._refresh):
            try:
                self.refresh()
                self.error = None
            except ConfigError as e:
                self.error = str(e)
                log.error("%s", e)

    def close(self) -> None:
        self._stop.set()
