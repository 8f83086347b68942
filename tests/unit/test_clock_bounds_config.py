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
