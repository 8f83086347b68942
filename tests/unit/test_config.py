import pytest

from ext_authz.errors import ConfigError
from ext_authz.server.config import config_from_dict, load_config

ROUTE = {"method": "GET", "authority": "a", "path": "/x", "action_type": "t", "target": "s"}


@pytest.mark.parametrize(
    "raw,needle",
    [
        ({"sae_ttl_seconds": 10}, "sae_ttl_seconds"),
        ({"sae_ttl_seconds": 301}, "sae_ttl_seconds"),
        ({"trust_domain": "Bad Domain"}, "trust_domain"),
        ({"max_state_age_seconds": 0.1, "state_poll_seconds": 0.2}, "max_state_age_seconds"),
        ({"routes": [{**ROUTE, "data_class": "secret"}]}, "data_class"),
        ({"routes": [{**ROUTE, "method": "get"}]}, "upper case"),
        ({"routes": [ROUTE, ROUTE]}, "duplicate"),
        ({"routes": [{**ROUTE, "colour": "red"}]}, "unknown keys"),
        ({"limits": {"max_body": 1}}, "unknown keys"),
        ({"routes": [{"method": "GET"}]}, "routes[0]"),
        ({"issuer": "sealgate-authorizer"}, "issuer"),
        ({"issuer": "spiffe://sealgate.local/sealgate/authorizer two"}, "issuer"),
        ({"issuer": 'spiffe://x/"quoted"'}, "issuer"),
        ({"issuer": 7}, "issuer"),
    ],
)
def test_invalid_config_is_rejected_with_a_clear_message(raw, needle):
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert needle in str(err.value)


def test_local_stack_defaults_load(tmp_path):
    import yaml

    from ext_authz.local.stack import DEFAULT_SPEC

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(yaml.safe_load(DEFAULT_SPEC.read_text())["authorizer"]))
    cfg = load_config(path)
    assert cfg.routes and cfg.sae_ttl_seconds == 60
    assert cfg.issuer == "spiffe://sealgate.local/sealgate/authorizer"  # the local stack names its authorizer


def test_issuer_defaults_to_the_authorizers_spiffe_id_in_the_trust_domain():
    assert config_from_dict({}).issuer == "spiffe://sealgate.local/sealgate/authorizer"
    assert config_from_dict({"trust_domain": "corp.example"}).issuer == "spiffe://corp.example/sealgate/authorizer"
    assert config_from_dict({"issuer": "https://authz.corp.example"}).issuer == "https://authz.corp.example"


def test_unparseable_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{nope")
    with pytest.raises(ConfigError):
        load_config(path)
