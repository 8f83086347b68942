import pytest

from ext_authz.local.stack import LocalStack


@pytest.fixture(scope="module")
def chain_stack(tmp_path_factory):
    """anvil with the contracts deployed and the demo agents and rules seeded."""
    stack = LocalStack(tmp_path_factory.mktemp("chain"))
    try:
        stack.make_pki()
        stack.start_chain()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The whole local stack: anvil, authorizer process, sidecar and PEP Envoys, target."""
    with LocalStack(tmp_path_factory.mktemp("stack"), authorizer_overrides={"max_state_age_seconds": 2.0}) as s:
        yield s
