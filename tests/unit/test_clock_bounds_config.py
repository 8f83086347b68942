"""The bounds between the chain's clock and the authorizer's: defaults on, validated, null only by choice."""

import pytest

from ext_authz.errors import ConfigError
from ext_authz.server.config import config_from_dict


def test_bounds_are_on_by_default():
    c = config_from_dict({})
    assert (c.max_head_age_seconds, c.max_clock_ahead_seconds) == (60.0, 60.0)


def test_null_bounds_are_accepted_for_the_local_chain():
    c = config_from_dict({"max_head_age_seconds": None, "max_clock_ahead_seconds": None})
    assert (c.max_head_age_seconds, c.max_clock_ahead_seconds) == (None, None)


@pytest.mark.parametrize("field", ["max_head_age_seconds", "max_clock_ahead_seconds"])
@pytest.mark.parametrize("value", [0, -1, 86401, "60", True])
def test_a_bound_that_is_not_a_positive_number_of_seconds_is_refused(field, value):
    with pytest.raises(ConfigError, match=field):
        config_from_dict({field: value})


def test_an_authorizer_without_clock_bounds_is_refused_on_a_real_chain(tmp_path):
    from ext_authz.chain.manifest import Manifest
    from ext_authz.server.app import Authorizer
    from ext_authz.signing.file_key import Ed25519Signer

    address = "0x" + "11" * 20
    manifest = Manifest(chain_id=8453, rpc_url="http://127.0.0.1:9", deploy_block=1, registry=address, models=address,
                        policy=address, policy_registry=address, policy_id="0x" + "22" * 32, anchor=address,
                        timelock=address, safe=address, owners=(address,), threshold=1, delay_seconds=3600,
                        guardian=address, anchorer=address, approvers=address)
    config = config_from_dict({"max_head_age_seconds": None})
    signer = Ed25519Signer.from_file(tmp_path / "k.seed", create=True)
    with pytest.raises(ConfigError, match="must be set on chain 8453"):
        Authorizer(config, manifest, signer).start(f"unix:{tmp_path / 'a.sock'}", ("127.0.0.1", 0))
