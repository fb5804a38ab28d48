import pytest

from nac_test_utils import tiny


@pytest.fixture
def tiny_config():
    return tiny()
