"""Only the mesh talks to the authorizer, and agents reach no admin interface: the authorizer listens on a Unix
socket only its user opens, or on TCP with mutual TLS and an allowlist of Envoy identities; Envoy admin
interfaces are Unix sockets of mode 0600; the authorizer's admin HTTP is read-only."""

import json
import os
import stat
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc

from ext_authz.local.net import free_port
from ext_authz.local.stack import LocalStack
from ext_authz.mesh.configs import AuthorizerTls, SidecarPorts

pytestmark = pytest.mark.slow
AUTHORIZER_ID = "spiffe://sealgate.local/sealgate/authorizer"
SIDECAR_ID = "spiffe://sealgate.local/mesh/sidecar-remote"
NOBODY = 65534


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with LocalStack(tmp_path_factory.mktemp("link")) as s:
        yield s


@pytest.fixture(scope="module")
def remote(stack):
    """A second authorizer on TCP with mutual TLS, and a sidecar that reaches it over TLS (as on another host)."""
    pki = stack.workdir / "pki"
    authz = stack.ca.issue_service(AUTHORIZER_ID)
    authz_cert, authz_key = authz.write(pki, "authorizer")
    mesh = stack.ca.issue_service(SIDECAR_ID)
    port, admin = free_port(), free_port()
    stack.spawn_authorizer("authorizer_tls", f"127.0.0.1:{port}", admin, False, stack.workdir / "tls.sqlite3",
                           extra_args=("--tls-cert", str(authz_cert), "--tls-key", str(authz_key),
                                       "--client-ca", str(pki / "ca.crt")),
                           config_overrides={"mesh_clients": [SIDECAR_ID]})
    sidecar_port = free_port()
    stack.spawn_sidecar("sidecar_remote", SidecarPorts(sidecar_port, stack.socket("sidecar-remote-admin"),
                                                       f"127.0.0.1:{port}", stack.ports.pep),
                        AuthorizerTls(mesh.cert_pem, mesh.key_pem, stack.ca.cert_pem, AUTHORIZER_ID))
    return port, sidecar_port, mesh, admin


def check_request(stack):
    req = auth_pb2.CheckRequest()
    req.attributes.source.principal = stack.spiffe_id("procurement-01")
    req.attributes.source.certificate = urllib.parse.quote(Path(stack.agent_certs["procurement-01"][0]).read_text())
    h = req.attributes.request.http
    h.method, h.host, h.path = "GET", "payments.internal", "/v1/balance"
    return req


def tls_channel(stack, port, cert=None):
    creds = grpc.ssl_channel_credentials(root_certificates=stack.ca.cert_pem.encode(),
                                         private_key=cert.key_pem.encode() if cert else None,
                                         certificate_chain=cert.cert_pem.encode() if cert else None)
    return grpc.secure_channel(f"127.0.0.1:{port}", creds, options=[("grpc.ssl_target_name_override", "localhost")])


def as_nobody(code):
    if os.geteuid() != 0:
        pytest.skip("needs root to run a probe as an unprivileged user (uid 65534)")
    if not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("no /usr/bin/python3 for the unprivileged probe (the venv's python lives under /root)")
    return subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True, timeout=30,
                          preexec_fn=lambda: (os.setgid(NOBODY), os.setuid(NOBODY)))


def test_authorizer_socket_is_mode_0600_in_a_private_directory(stack):
    path = Path(stack.authz_socket.removeprefix("unix:"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


@pytest.mark.parametrize("name", ["authorizer", "sidecar-admin", "pep-admin", "pep_verifier"])
def test_an_unprivileged_process_cannot_open_the_stacks_sockets(stack, name):
    path = stack.socket(name).removeprefix("unix:")
    out = as_nobody(f"import socket; s = socket.socket(socket.AF_UNIX)\n"
                    f"try:\n    s.connect({path!r}); print('connected')\nexcept OSError as e:\n    print(e.errno)")
    assert out.stdout.strip() == "13", out  # EACCES


def test_envoy_admin_answers_its_own_user_on_the_socket(stack):
    from ext_authz.local.net import envoy_admin

    status, body = envoy_admin(stack.socket("sidecar-admin"), "GET", "/ready")
    assert status == 200 and body.strip() == b"LIVE"


def test_a_plain_tcp_grpc_port_is_refused_at_start(stack, tmp_path):
    out = subprocess.run([sys.executable, "-m", "ext_authz.cli", "serve", "--config", str(stack.workdir / "authorizer.json"),
                          "--manifest", str(stack.workdir / "addresses.json"), "--key", str(stack.workdir / "keys/sae-ed25519.seed"),
                          "--grpc", f"127.0.0.1:{free_port()}", "--admin", f"127.0.0.1:{free_port()}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "needs mutual TLS" in out.stderr, out.stderr


def test_mutual_tls_without_an_allowlist_is_refused_at_start(stack):
    from ext_authz.errors import ConfigError
    from ext_authz.server.app import MeshTls, check_grpc_address

    with pytest.raises(ConfigError, match="without an allowlist"):
        check_grpc_address("0.0.0.0:9001", MeshTls(b"c", b"k", b"ca"), ())


def test_agent_through_the_remote_sidecar_executes_over_mutual_tls(stack, remote):
    _, sidecar_port, _, _ = remote
    r = stack.agent_call("procurement-01", "POST", "/v1/transfers", {"amount_cents": 100, "to": "vendor-42"}, port=sidecar_port)
    assert r.status == 200 and r.json()["executed"] is True


def test_plaintext_grpc_to_the_tls_port_gets_no_answer(stack, remote):
    port = remote[0]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch, pytest.raises(grpc.RpcError) as err:
        auth_grpc.AuthorizationStub(ch).Check(check_request(stack), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_without_a_client_certificate_gets_no_answer(stack, remote):
    with tls_channel(stack, remote[0]) as ch, pytest.raises(grpc.RpcError) as err:
        auth_grpc.AuthorizationStub(ch).Check(check_request(stack), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_an_agent_certificate_from_the_same_ca_is_not_a_mesh_client(stack, remote):
    agent = stack.ca.issue_agent(stack.spiffe_id("procurement-01"))
    before = stack_status(remote)
    with tls_channel(stack, remote[0], agent) as ch, pytest.raises(grpc.RpcError) as err:
        auth_grpc.AuthorizationStub(ch).Check(check_request(stack), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert stack_status(remote).get("MESH_CLIENT_REFUSED", 0) == before.get("MESH_CLIENT_REFUSED", 0) + 1


def test_the_allowlisted_mesh_identity_is_answered(stack, remote):
    with tls_channel(stack, remote[0], remote[2]) as ch:
        assert auth_grpc.AuthorizationStub(ch).Check(check_request(stack), timeout=5).status.code == 0


def stack_status(remote):
    """The TLS authorizer's decision counters."""
    with urllib.request.urlopen(f"http://127.0.0.1:{remote[3]}/status", timeout=5) as r:
        return json.loads(r.read())["decisions"]


def test_authorizer_admin_http_is_read_only(stack):
    import http.client

    for method in ("POST", "PUT", "DELETE"):
        conn = http.client.HTTPConnection("127.0.0.1", stack.ports.authz_admin, timeout=5)
        conn.request(method, "/status", body=b"{}")
        assert conn.getresponse().status == 501
        conn.close()
    assert json.loads(urllib.request.urlopen(f"http://127.0.0.1:{stack.ports.authz_admin}/status").read())["healthy"]

