"""`sealgate serve` takes exactly one SAE key source; a half-given HSM is an error, not a fallback."""

import argparse

import pytest

from ext_authz.cli.common import signer_from_args
from ext_authz.errors import ConfigError


def args(**kw):
    return argparse.Namespace(**{"key": None, "hsm_module": None, "hsm_token": None, "hsm_key": None, **kw})


@pytest.mark.parametrize("kw,message", [
    ({}, "an SAE signing key is needed"),
    ({"key": "k.seed", "hsm_module": "/usr/lib/softhsm/libsofthsm2.so"}, "not both"),
    ({"hsm_module": "/usr/lib/softhsm/libsofthsm2.so", "hsm_token": "t"}, "an SAE signing key is needed"),
], ids=["no_key_source", "key_file_and_hsm", "hsm_without_key_label"])
def test_ambiguous_or_missing_key_sources_are_refused(kw, message):
    with pytest.raises(ConfigError, match=message):
        signer_from_args(args(**kw))


def test_a_missing_key_file_is_not_created_by_serve(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        signer_from_args(args(key=str(tmp_path / "absent.seed")))
    assert not (tmp_path / "absent.seed").exists()
