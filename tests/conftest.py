import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")   # never wait on the network in tests

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    """The embedded benchmark with its default source (mnist) and all targets."""
    from sdgdml.datasets import DigitsDG

    return DigitsDG()
