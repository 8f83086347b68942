"""The rotating keyring (signing/keyring.py) and the verifier's refreshing JWKS (sdk/jwks.py), without Envoy."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ext_authz.envelope.jws import EnvelopeEncoder, verify
from ext_authz.errors import ConfigError, SaeInvalid
from ext_authz.mesh.configs import JwksUri, PepPorts, pep_config
from ext_authz.sdk.jwks import JwksStale, RemoteJwks, check_jwks_url
from ext_authz.signing.file_key import load_file_signer
from ext_authz.signing.keyring import MANIFEST, Keyring, init_keyring, read_state, rotate_keyring

CLAIMS = {"iss": "spiffe://t/a", "sub": "s", "aud": "s", "act": {}, "pol": {}, "inp": {}, "mod": "m", "iat": 100, "nbf": 100,
          "exp": 160, "jti": "j", "ctx": {}, "chain": {}}


def kids(jwks):
    return [k["kid"] for k in jwks["keys"]]


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_init_publishes_current_and_next_and_files_are_private(tmp_path, alg):
    state = init_keyring(tmp_path / "ring", alg, now=1000)
    assert state.current.kid != state.next.kid and state.retired == ()
    assert (tmp_path / "ring").stat().st_mode & 0o777 == 0o700
    for entry in (state.current, state.next):
        assert (tmp_path / "ring" / entry.file).stat().st_mode & 0o777 == 0o600
        assert load_file_signer(tmp_path / "ring" / entry.file).alg == alg
    ring = Keyring(tmp_path / "ring", clock=lambda: 1000)
    assert ring.kid == state.current.kid and kids(ring.jwks) == [state.current.kid, state.next.kid]
    with pytest.raises(ConfigError, match="already holds a keyring"):
        init_keyring(tmp_path / "ring", alg)


def test_rotate_promotes_next_retires_current_and_refuses_a_next_key_too_new(tmp_path):
    first = init_keyring(tmp_path, now=1000)
    with pytest.raises(ConfigError, match="may not have fetched it yet"):
        rotate_keyring(tmp_path, min_published_seconds=120, now=1100)
    second = rotate_keyring(tmp_path, grace_seconds=900, min_published_seconds=120, now=1200)
    assert second.current == first.next and second.retired[0].kid == first.current.kid
    assert second.retired[0].retired_until == 2100 and second.next.published == 1200
    assert [e.kid for e in second.published(2099)] == [second.current.kid, second.next.kid, first.current.kid]
    assert [e.kid for e in second.published(2100)] == [second.current.kid, second.next.kid]


def test_a_retired_key_file_is_deleted_by_the_first_rotation_after_its_grace(tmp_path):
    first = init_keyring(tmp_path, now=1000)
    rotate_keyring(tmp_path, grace_seconds=100, min_published_seconds=0, now=1000)
    assert (tmp_path / first.current.file).exists()  # in its grace: kept
    third = rotate_keyring(tmp_path, grace_seconds=100, min_published_seconds=0, now=1200)
    assert not (tmp_path / first.current.file).exists()
    assert first.current.kid not in [r.kid for r in third.retired]


def test_the_keyring_follows_a_rotation_and_drops_a_retired_key_when_its_grace_ends(tmp_path):
    clock = [1000.0]
    first = init_keyring(tmp_path, now=1000)
    ring = Keyring(tmp_path, clock=lambda: clock[0])
    encoder = EnvelopeEncoder(ring)
    jwks = ring.jwks  # the admin endpoint and the decision maker hold this very dict
    old_token = encoder.encode(CLAIMS)
    rotate_keyring(tmp_path, grace_seconds=60, min_published_seconds=0, now=1000)
    ring._reload()
    assert ring.kid == first.next.kid
    new_token = encoder.encode(CLAIMS)
    assert json.loads(__import__("base64").urlsafe_b64decode(new_token.split(".")[0] + "==="))["kid"] == first.next.kid
    assert verify(new_token, jwks, now=120) == verify(old_token, jwks, now=120) == CLAIMS  # old key: in its grace
    assert jwks["keys"][2]["retired_until"] == 1060
    clock[0] = 1061
    ring._reload()  # the manifest did not change, the time did
    assert first.current.kid not in kids(jwks)
    with pytest.raises(SaeInvalid):
        verify(old_token, jwks, now=120)


def test_a_broken_manifest_keeps_the_last_good_key_and_says_why(tmp_path):
    init_keyring(tmp_path, now=1000)
    ring = Keyring(tmp_path, poll_seconds=0.05).start()
    kid = ring.kid
    (tmp_path / MANIFEST).write_text("{not json")
    threading.Event().wait(0.3)
    try:
        assert ring.kid == kid and ring.error is not None and "not JSON" in ring.error
        assert verify(EnvelopeEncoder(ring).encode(CLAIMS), ring.jwks, now=120) == CLAIMS
    finally:
        ring.close()


def test_a_manifest_naming_a_file_outside_the_directory_is_refused(tmp_path):
    state = init_keyring(tmp_path, now=1000)
    doc = state.to_json()
    doc["current"]["file"] = "../../etc/passwd"
    (tmp_path / MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="plain name"):
        read_state(tmp_path)


def test_a_key_file_swapped_under_the_manifest_is_refused(tmp_path):
    state = init_keyring(tmp_path, now=1000)
    (tmp_path / state.next.file).unlink()
    (tmp_path / state.next.file).write_bytes(bytes(32))  # another key under the name
    with pytest.raises(ConfigError, match="the keyring says"):
        Keyring(tmp_path, clock=lambda: 1000)


class _Jwks(BaseHTTPRequestHandler):
    doc: dict = {"keys": []}
    fail = False

    def do_GET(self):  # noqa: N802
        if type(self).fail:
            self.send_response(503)
            self.end_headers()
            return
        body = json.dumps(type(self).doc).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def jwks_server():
    handler = type("H", (_Jwks,), {"doc": {"keys": []}, "fail": False})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield handler, f"http://127.0.0.1:{httpd.server_port}/jwks.json"
    httpd.shutdown()


def test_remote_jwks_drops_a_retired_key_at_its_time_and_fails_closed_when_stale(tmp_path, jwks_server, monkeypatch):
    handler, url = jwks_server
    init_keyring(tmp_path, now=1000)
    rotate_keyring(tmp_path, grace_seconds=60, min_published_seconds=0, now=1000)
    ring = Keyring(tmp_path, clock=lambda: 1000)
    handler.doc = ring.jwks
    mono = [0.0]
    remote = RemoteJwks(url, refresh_seconds=1, max_stale_seconds=10, clock=lambda: mono[0])
    wall = [1059.0]
    monkeypatch.setattr(remote, "_wall", lambda: wall[0])
    remote._select()
    assert len(remote.keys().keys) == 3
    wall[0] = 1060  # the retired key's retired_until: gone without a fetch
    assert len(remote.keys().keys) == 2
    handler.fail = True
    with pytest.raises(ConfigError):
        remote.refresh()
    mono[0] = 11
    with pytest.raises(JwksStale):
        remote.keys()
    handler.fail = False
    remote.refresh()
    assert len(remote.keys().keys) == 2


@pytest.mark.parametrize("url", ["http://10.0.0.5:9002/jwks.json", "file:///etc/jwks.json", "ftp://x/jwks"])
def test_a_jwks_url_anyone_on_the_path_could_change_is_refused(url):
    with pytest.raises(ConfigError):
        check_jwks_url(url)


def test_pep_config_fetches_the_jwks_with_a_cache_duration_and_envoy_accepts_it(tmp_path):
    from ext_authz.mesh.configs import validate

    conf = pep_config(PepPorts(10001, 10002, 10003), JwksUri("http://127.0.0.1:9002/jwks.json", 30), "payments-api",
                      verifier="unix:/tmp/v.sock")
    provider = conf["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0][
        "typed_config"]["providers"]["sae"]
    assert provider["remote_jwks"]["cache_duration"] == "30s" and "local_jwks" not in provider
    assert "sealgate_jwks" in [c["name"] for c in conf["static_resources"]["clusters"]]
    validate(conf, tmp_path)
    https = pep_config(PepPorts(10001, 10002, 10003), JwksUri("https://authz.internal:9443/jwks.json", 30, ca_pem=_ca_pem()),
                       "payments-api", verifier="unix:/tmp/v.sock")
    validate(https, tmp_path)
    with pytest.raises(ConfigError, match="needs the CA"):
        JwksUri("https://authz.internal/jwks.json")


def _ca_pem():
    from ext_authz.local.pki import LocalCA

    return LocalCA().cert_pem


def test_the_pep_verifier_refuses_everything_once_its_jwks_is_stale(tmp_path, jwks_server):
    from ext_authz import reasons
    from ext_authz.mesh.pep_verifier import PepVerifier
    from ext_authz.sdk.redemption import SqliteRedemptions

    handler, url = jwks_server
    init_keyring(tmp_path / "ring", now=1000)
    handler.doc = Keyring(tmp_path / "ring", clock=lambda: 1000).jwks
    mono = [0.0]
    remote = RemoteJwks(url, refresh_seconds=1, max_stale_seconds=10, clock=lambda: mono[0])
    verifier = PepVerifier(remote, "a", SqliteRedemptions(str(tmp_path / "r.sqlite3")), issuer=ISSUER_FOR_PEP)
    fresh = verifier.check("GET", "/x", "h", {"x-sae": "not-a-token"}, b"")
    assert fresh.reason == reasons.SAE_INVALID  # keys usable: the token itself is judged
    mono[0] = 11
    stale = verifier.check("GET", "/x", "h", {"x-sae": "not-a-token"}, b"")
    assert (stale.reason, stale.message) == (reasons.PEP_ERROR, "the authorizer's JWKS could not be refreshed")


ISSUER_FOR_PEP = "spiffe://sealgate.local/sealgate/authorizer"
