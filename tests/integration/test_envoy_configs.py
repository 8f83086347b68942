"""Every generated Envoy config is accepted by the real binary in validate mode."""

import copy

import pytest

from ext_authz.envoyconf import PepPorts, SidecarPorts, pep_config, sidecar_config, validate
from ext_authz.errors import ConfigError
from ext_authz.pki import LocalCA
from ext_authz.signing import Ed25519Signer, jwks_of

CA = LocalCA()
SERVER = CA.issue_server()
JWKS = jwks_of(Ed25519Signer(bytes(32)))


def sidecar():
    return sidecar_config(SidecarPorts(10000, 10001, 10002, 10003), CA.cert_pem, SERVER.cert_pem, SERVER.key_pem, "sealgate.local")


@pytest.mark.parametrize("name,build", [
    ("sidecar", sidecar),
    ("pep", lambda: pep_config(PepPorts(10004, 10005, 10006), JWKS, "payments-api")),
    ("direct", lambda: sidecar_config(SidecarPorts(10007, 10008, None, 10009), CA.cert_pem, SERVER.cert_pem, SERVER.key_pem, "sealgate.local")),
])
def test_config_validates(tmp_path, name, build):
    validate(build(), tmp_path)


def test_sidecar_fails_closed_and_reads_the_body():
    authz = sidecar()["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]
    cfg = authz["typed_config"]
    assert cfg["failure_mode_allow"] is False
    assert cfg["with_request_body"]["allow_partial_message"] is False


def test_broken_config_is_rejected(tmp_path):
    broken = copy.deepcopy(sidecar())
    broken["static_resources"]["clusters"][0]["type"] = "NOT_A_TYPE"
    with pytest.raises(ConfigError):
        validate(broken, tmp_path)


def test_lua_syntax_error_is_rejected(tmp_path):
    with pytest.raises(ConfigError):
        validate(pep_config(PepPorts(1, 2, 3), JWKS, "payments-api", lua_source="function envoy_on_request(h"), tmp_path)
