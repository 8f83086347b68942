"""`sealgate pki` and `sealgate keys init/rotate/list` through the command line (file CA keys)."""

import json
import subprocess
import sys

from cryptography import x509


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "ext_authz.cli", *args], capture_output=True, text=True, timeout=120,
                          env=env)


def test_pki_init_issue_renew_revoke_list_through_the_cli(tmp_path):
    pki, out = str(tmp_path / "pki"), str(tmp_path / "agents")
    assert cli("pki", "init", "--dir", pki, "--file-keys").returncode == 0
    again = cli("pki", "init", "--dir", pki, "--file-keys")
    assert again.returncode == 2 and "already holds a PKI" in again.stderr
    issued = cli("pki", "issue", "--dir", pki, "--spiffe-id", "spiffe://sealgate.local/agent/a", "--out", out, "--name", "a")
    assert issued.returncode == 0, issued.stderr
    serial = json.loads(issued.stdout)["serial"]
    renew = cli("pki", "renew", "--dir", pki, "--spiffe-id", "spiffe://sealgate.local/agent/a", "--out", out, "--name", "a")
    assert renew.returncode == 0 and json.loads(renew.stdout)["renewed"] is False  # fresh: not due
    revoked = cli("pki", "revoke", "--dir", pki, "--serial", serial, "--reason", "key_compromise")
    assert revoked.returncode == 0 and json.loads(revoked.stdout) == {"revoked": [serial]}
    assert cli("pki", "revoke", "--dir", pki, "--serial", serial).returncode == 1  # nothing left to revoke
    listed = {c["serial"]: c for c in json.loads(cli("pki", "list", "--dir", pki).stdout)}
    assert listed[serial]["reason"] == "key_compromise" and listed[serial]["kind"] == "agent"
    leaf = x509.load_pem_x509_certificates((tmp_path / "agents" / "a.crt").read_bytes())[0]
    assert f"{leaf.serial_number:x}" == serial


def test_pki_svid_without_a_workload_api_points_to_the_built_in_pki(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k != "SPIFFE_ENDPOINT_SOCKET"}
    out = cli("pki", "svid", "--out", str(tmp_path), "--name", "a", env=env)
    assert out.returncode == 2 and "sealgate pki renew" in out.stderr


def test_keys_init_rotate_list_through_the_cli(tmp_path):
    ring = str(tmp_path / "ring")
    first = json.loads(cli("keys", "init", "--key-dir", ring, "--alg", "ES256").stdout)
    rotated = cli("keys", "rotate", "--key-dir", ring, "--min-published", "0", "--grace", "60")
    assert rotated.returncode == 0, rotated.stderr
    state = json.loads(cli("keys", "list", "--key-dir", ring).stdout)
    assert state["current"] == first["next"] and state["retired"][0]["kid"] == first["current"]["kid"]
    too_soon = cli("keys", "rotate", "--key-dir", ring)  # the new next key was published just now
    assert too_soon.returncode == 2 and "may not have fetched it yet" in too_soon.stderr


def test_envoy_sidecar_with_the_renewed_sds_file_validates(tmp_path):
    pki, out = str(tmp_path / "pki"), str(tmp_path / "certs")
    assert cli("pki", "init", "--dir", pki, "--file-keys").returncode == 0
    renew = cli("pki", "renew", "--dir", pki, "--spiffe-id", "spiffe://sealgate.local/mesh/sidecar", "--server",
                "--out", out, "--name", "sidecar")
    assert renew.returncode == 0 and json.loads(renew.stdout)["renewed"] is True, renew.stderr
    conf = tmp_path / "sidecar.json"
    made = cli("envoy", "sidecar", "--listen", "15001", "--admin", f"unix:{tmp_path / 'admin.sock'}", "--authorizer",
               f"unix:{tmp_path / 'authz.sock'}", "--upstream-port", "16001", "--ca", f"{pki}/root.crt",
               "--cert-sds", f"{out}/sidecar.sds.json", "--out", str(conf))
    assert made.returncode == 0, made.stderr  # envoy --mode validate accepted it
    tls = json.loads(conf.read_text())["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"]
    sds = tls["typed_config"]["common_tls_context"]["tls_certificate_sds_secret_configs"][0]
    assert sds["name"] == "sidecar" and sds["sds_config"]["path_config_source"]["path"].endswith("sidecar.sds.json")
    both = cli("envoy", "sidecar", "--listen", "15001", "--admin", f"unix:{tmp_path / 'admin.sock'}", "--authorizer",
               f"unix:{tmp_path / 'authz.sock'}", "--upstream-port", "16001", "--ca", f"{pki}/root.crt",
               "--cert-sds", f"{out}/sidecar.sds.json", "--cert", f"{out}/sidecar.crt", "--key", f"{out}/sidecar.key")
    assert both.returncode == 2 and "--cert-sds" in both.stderr
