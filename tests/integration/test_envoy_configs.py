"""Every generated Envoy config is accepted by the real binary in validate mode."""

import copy

import pytest

from ext_authz.errors import ConfigError
from ext_authz.local.pki import LocalCA
from ext_authz.mesh.configs import AuthorizerTls, PepPorts, SidecarPorts, pep_config, sidecar_config, validate
from ext_authz.signing.base import jwks_of
from ext_authz.signing.file_key import Ed25519Signer

CA = LocalCA()
SERVER = CA.issue_server()
JWKS = jwks_of(Ed25519Signer(bytes(32)))
ISSUER = "spiffe://sealgate.local/sealgate/authorizer"


MESH = CA.issue_service("spiffe://sealgate.local/mesh/sidecar")
AUTHZ_TLS = AuthorizerTls(MESH.cert_pem, MESH.key_pem, CA.cert_pem, "spiffe://sealgate.local/sealgate/authorizer")


def sidecar(authorizer="unix:/run/sealgate/authorizer.sock", tls=None, admin="unix:/run/sealgate/sidecar-admin.sock"):
    return sidecar_config(SidecarPorts(10000, admin, authorizer, 10003), CA.cert_pem, SERVER.cert_pem, SERVER.key_pem,
                          "sealgate.local", authorizer_tls=tls)


@pytest.mark.parametrize("name,build", [
    ("sidecar", sidecar),
    ("sidecar_remote_authorizer_mtls", lambda: sidecar("10.0.0.5:9001", AUTHZ_TLS)),
    ("sidecar_remote_authorizer_by_name", lambda: sidecar("authz.internal:9001", AUTHZ_TLS)),
    ("pep", lambda: pep_config(PepPorts(10004, 10005, 10006), JWKS, "payments-api", issuer=ISSUER, verifier="unix:/run/sealgate/v.sock")),
    ("pep_verifier_on_a_port", lambda: pep_config(PepPorts(10004, 10005, 10006), JWKS, "payments-api", issuer=ISSUER, verifier=10010)),
    ("direct", lambda: sidecar_config(SidecarPorts(10007, 10008, None, 10009), CA.cert_pem, SERVER.cert_pem, SERVER.key_pem, "sealgate.local")),
])
def test_config_validates(tmp_path, name, build):
    validate(build(), tmp_path)


def test_sidecar_fails_closed_and_reads_the_body():
    authz = sidecar()["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]
    cfg = authz["typed_config"]
    assert cfg["failure_mode_allow"] is False
    assert cfg["with_request_body"]["allow_partial_message"] is False


def test_a_plain_tcp_authorizer_is_refused():
    with pytest.raises(ConfigError, match="needs mutual TLS"):
        sidecar("127.0.0.1:9001")


def test_admin_interfaces_are_unix_sockets_only_their_user_can_open():
    admin = sidecar()["admin"]["address"]["pipe"]
    assert admin == {"path": "/run/sealgate/sidecar-admin.sock", "mode": 0o600}
    pep = pep_config(PepPorts(1, "unix:/run/sealgate/pep-admin.sock", 3), JWKS, "payments-api", issuer=ISSUER, verifier="unix:/v.sock")
    assert pep["admin"]["address"]["pipe"]["mode"] == 0o600


def jwt_provider(config):
    filters = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    return next(f for f in filters if f["name"] == "envoy.filters.http.jwt_authn")["typed_config"]["providers"]["sae"]


def test_the_pep_pins_the_issuer_and_speaks_format_version_2_only():
    pep = pep_config(PepPorts(1, 2, 3), JWKS, "payments-api", issuer=ISSUER, verifier="unix:/v.sock")
    assert jwt_provider(pep)["issuer"] == ISSUER and jwt_provider(pep)["audiences"] == ["payments-api"]
    lua = next(f for f in pep["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
               if f["name"] == "envoy.filters.http.lua")["typed_config"]["default_source_code"]["inline_string"]
    assert 'local SAE_TYP = "application/sae.v3+jwt"' in lua


@pytest.mark.parametrize("issuer", ["", "authorizer", "spiffe://x/a b", 'spiffe://x/"'])
def test_a_pep_without_a_valid_issuer_is_refused(issuer):
    with pytest.raises(ConfigError, match="issuer"):
        pep_config(PepPorts(1, 2, 3), JWKS, "payments-api", issuer=issuer, verifier="unix:/v.sock")


def test_remote_authorizer_link_pins_the_authorizer_identity():
    cluster = next(c for c in sidecar("10.0.0.5:9001", AUTHZ_TLS)["static_resources"]["clusters"]
                   if c["name"] == "sealgate_authorizer")
    tls = cluster["transport_socket"]["typed_config"]["common_tls_context"]
    assert tls["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"exact": "spiffe://sealgate.local/sealgate/authorizer"}}]
    assert tls["alpn_protocols"] == ["h2"] and tls["tls_certificates"][0]["certificate_chain"]["inline_string"] == MESH.cert_pem


def test_broken_config_is_rejected(tmp_path):
    broken = copy.deepcopy(sidecar())
    broken["static_resources"]["clusters"][0]["type"] = "NOT_A_TYPE"
    with pytest.raises(ConfigError):
        validate(broken, tmp_path)


def test_lua_syntax_error_is_rejected(tmp_path):
    with pytest.raises(ConfigError):
        validate(pep_config(PepPorts(1, 2, 3), JWKS, "payments-api", lua_source="function envoy_on_request(h", issuer=ISSUER,
                                verifier=None),
                 tmp_path)


def test_operator_cli_writes_validated_configs(tmp_path):
    import json
    import subprocess
    import sys

    ca, cert, key = tmp_path / "ca.pem", tmp_path / "srv.pem", tmp_path / "srv.key"
    ca.write_text(CA.cert_pem)
    cert.write_text(SERVER.cert_pem)
    key.write_text(SERVER.key_pem)
    (tmp_path / "jwks.json").write_text(json.dumps(JWKS))
    base = [sys.executable, "-m", "ext_authz.cli", "envoy"]
    out = subprocess.run(base + ["sidecar", "--listen", "15001", "--admin", "unix:/run/sealgate/sidecar-admin.sock",
                                 "--authorizer", "unix:/run/sealgate/authorizer.sock",
                                 "--upstream-port", "15101", "--ca", str(ca), "--cert", str(cert), "--key", str(key),
                                 "--out", str(tmp_path / "sidecar.json")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "validate: ok" in out.stderr, out.stderr
    sidecar = json.loads((tmp_path / "sidecar.json").read_text())
    assert sidecar["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] == 15001
    out = subprocess.run(base + ["pep", "--listen", "15101", "--admin", "unix:/run/sealgate/pep-admin.sock", "--target-port", "8080",
                                 "--jwks", str(tmp_path / "jwks.json"), "--issuer", ISSUER, "--audience", "payments-api",
                                 "--verifier", "unix:/run/sealgate/pep-verifier.sock"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "envoy.filters.http.jwt_authn" in out.stdout and '"path": "/run/sealgate/pep-verifier.sock"' in out.stdout
    assert jwt_provider(json.loads(out.stdout))["issuer"] == ISSUER
    bad = subprocess.run(base + ["pep", "--listen", "15101", "--admin", "unix:/run/a.sock", "--target-port", "8080",
                                 "--jwks", str(tmp_path / "missing.json"), "--issuer", ISSUER, "--audience", "x",
                                 "--verifier", "9999"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "JWKS" in bad.stderr and "Traceback" not in bad.stderr
