"""The layering the tree promises, checked on what a fresh interpreter actually loads."""

import json
import subprocess
import sys

import pytest


def loaded_after(*modules: str) -> set[str]:
    code = f"import sys, json; import {', '.join(modules)}; print(json.dumps(sorted(sys.modules)))"
    return set(json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout))


def roots(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


def test_hot_path_never_loads_web3_nor_the_chain_write_side():
    loaded = loaded_after("ext_authz.server.app", "ext_authz.server.grpc_service", "ext_authz.authz.decision")
    assert not roots(loaded) & {"web3", "eth_account", "eth_abi", "eth_keys", "eth_keyfile"}
    chain = {n for n in loaded if n.startswith("ext_authz.chain.")}
    assert chain <= {"ext_authz.chain.manifest"}, chain  # the address manifest is plain JSON


@pytest.mark.parametrize("module", ["ext_authz.authz.decision", "ext_authz.authz.actions", "ext_authz.authz.approvals",
                                    "ext_authz.authz.response"])
def test_authz_does_not_import_the_chain_package(module):
    assert not {n for n in loaded_after(module) if n.startswith("ext_authz.chain")}


def test_envelope_has_no_grpc_web3_or_pyrevm():
    assert not roots(loaded_after("ext_authz.envelope.jws", "ext_authz.envelope.encoding")) & {"grpc", "web3", "pyrevm"}


def test_what_a_target_imports_is_small():
    loaded = loaded_after("ext_authz.sdk.target")
    assert not roots(loaded) & {"grpc", "web3", "pyrevm", "eth_utils", "eth_hash", "nacl", "pkcs11", "yaml"}
    assert not any(n.startswith("eth") for n in loaded)


def test_the_readme_layout_table_names_every_module():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    readme = root.joinpath("README.md").read_text()
    layout = readme[readme.index("## Layout"):readme.index("## Commands")]
    missing = []
    for path in sorted(root.joinpath("ext_authz").rglob("*.py")):
        if path.name == "__init__.py":
            continue
        rel = path.relative_to(root / "ext_authz")
        if str(rel.with_suffix("")) not in layout:  # named by its path under ext_authz/, e.g. `authz/actions.py`
            missing.append(str(rel))
    assert not missing, missing
