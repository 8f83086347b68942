"""The attack suite's fixtures; helpers live in attack_helpers.py (importable: pytest puts this directory on
sys.path). Each module starts one LocalStack of its own (module scope)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ext_authz.local.stack import DEFAULT_SPEC, LocalStack


def spec_with_second_finance_agent(directory: Path) -> Path:
    """The local stack's spec plus finance-04 (same role as finance-03): an approval can be offered to another
    agent that the policy would also hold for approval."""
    spec = yaml.safe_load(DEFAULT_SPEC.read_text())
    spec["agents"].append({"name": "finance-04", "role": "finance", "org": "acme", "model": "demo-model-v1",
                           "bind_key": True})
    path = directory / "attack-spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def pep_stack(tmp_path_factory):
    """A stack whose target checks nothing: the PEP (jwt_authn + Lua + verifier) alone must stop attacks."""
    with LocalStack(tmp_path_factory.mktemp("attacks-pep"), target_checks_sae=False) as s:
        yield s


@pytest.fixture(scope="module")
def mesh_stack(tmp_path_factory):
    """A stack with a second finance agent, whose target checks nothing: the sidecar, the authorizer and the PEP
    must stop attacks."""
    workdir = tmp_path_factory.mktemp("attacks-mesh")
    with LocalStack(workdir, spec_path=spec_with_second_finance_agent(workdir), target_checks_sae=False) as s:
        yield s
