import pytest

from nac_hf import NACConfig


@pytest.fixture
def tiny_config():
    return NACConfig.from_preset("tiny", num_labels=3)
