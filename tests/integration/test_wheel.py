"""The built wheel works outside the checkout: installed into a fresh virtualenv in a temporary directory, its
`sealgate` deploys the contracts to anvil, writes a PEP config that Envoy validates, and probes eBPF, reading
nothing from the repository or node_modules."""

import json
import os
import subprocess
import sys
import sysconfig
import urllib.request
import zipfile
from pathlib import Path

import pytest

from ext_authz.egress.kernel import probe
from ext_authz.local.net import anvil_binary, free_port, wait_until
from ext_authz.mesh.configs import envoy_binary

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DATA = ("ext_authz/chain/contracts/Safe.json", "ext_authz/chain/contracts/SafeProxyFactory.json",
                "ext_authz/chain/contracts/SaeAnchor.json", "ext_authz/mesh/pep.lua", "ext_authz/egress/bpf/egress.bpf.c",
                "ext_authz/egress/bpf/egress.h", "ext_authz/local/local-stack.yaml")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A venv outside the checkout holding only the wheel; its third-party dependencies come from the
    project's venv through a .pth line (which does not process the checkout's editable-install hook)."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp / "dist"), str(REPO)],
                   check=True, capture_output=True, timeout=300)
    wheel = next((tmp / "dist").glob("sealgate-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    workdir = tmp / "elsewhere"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ANVIL_BIN")}
    env["ENVOY_BIN"] = envoy_binary()
    return wheel, venv, workdir, env


def run(installed, *argv, check=True):
    _, venv, workdir, env = installed
    proc = subprocess.run([str(venv / "bin" / "sealgate"), *argv], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_wheel_carries_the_package_data(installed):
    names = set(zipfile.ZipFile(installed[0]).namelist())
    assert set(PACKAGE_DATA) <= names, set(PACKAGE_DATA) - names
    lua = zipfile.ZipFile(installed[0]).read("ext_authz/mesh/pep.lua").decode()
    assert lua == (REPO / "envoy" / "pep.lua").read_text()  # the real file, not a dangling link


def test_installed_package_is_imported_from_the_venv_not_the_checkout(installed):
    _, venv, workdir, env = installed
    out = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "import ext_authz.chain.artifacts as a, ext_authz.mesh.configs as m; "
                          "print(a.__file__); print(a.ARTIFACTS_DIR); print(m.PEP_LUA)"],
                         cwd=workdir, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert all(p.startswith(str(venv)) for p in out), out


def test_deploy_from_the_wheel_against_anvil(installed, tmp_path):
    port = free_port()
    anvil = subprocess.Popen([anvil_binary(), "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        manifest = tmp_path / "addresses.json"
        wait_until(lambda: run(installed, "deploy", "--rpc", f"http://127.0.0.1:{port}", "--manifest", str(manifest),
                               "--delay-seconds", "60", check=False).returncode == 0, 120, "deploy from the wheel")
        doc = json.loads(manifest.read_text())
        assert doc["chain_id"] == 31337 and doc["safe"].startswith("0x") and doc["anchor"].startswith("0x")
        # the Safe behind the proxy answers getThreshold() = 3: deployed from the vendored Safe artifacts
        call = {"jsonrpc": "2.0", "id": 1, "method": "eth_call",
                "params": [{"to": doc["safe"], "data": "0xe75235b8"}, "latest"]}
        request = urllib.request.Request(f"http://127.0.0.1:{port}", json.dumps(call).encode(),
                                         {"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert int(json.loads(reply.read())["result"], 16) == doc["threshold"] == 3
    finally:
        anvil.terminate()
        anvil.wait(10)


def test_pep_config_from_the_wheel_is_validated_by_envoy(installed, tmp_path):
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                                          "kid": "k1", "alg": "EdDSA", "use": "sig"}]}))
    out = tmp_path / "pep.json"
    proc = run(installed, "envoy", "pep", "--listen", "18001", "--admin", "unix:/run/sealgate/pep-admin.sock", "--target-port", "18080",
               "--jwks", str(jwks), "--audience", "payments-api", "--verifier", "unix:/run/sealgate/pep.sock",
               "--out", str(out))
    assert "envoy --mode validate: ok" in proc.stderr
    config = out.read_text()
    assert "SAE_BINDING_MISMATCH" in config  # the PEP Lua from package data is inlined


def test_egress_probe_from_the_wheel_finds_its_bpf_sources(installed):
    proc = run(installed, "egress", "probe", check=False)
    here = probe()
    if here is None:
        assert proc.returncode == 0 and "available" in proc.stdout, proc.stdout + proc.stderr
    else:
        assert proc.returncode == 1 and here in proc.stdout, proc.stdout + proc.stderr
    assert "No such file" not in proc.stdout + proc.stderr
