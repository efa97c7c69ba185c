"""Shared test set-up: offline, the host CPU split into 4 logical devices, and the
fixtures. Helpers that tests import live in tests/helpers.py.

The split must happen before TensorFlow initializes, so it runs at import,
before any test module builds a tensor.
"""

import os

# Tests never touch the network: the data code treats it as down.
os.environ["RECIPES_OFFLINE"] = "1"
# TensorFlow's PreemptionCheckpointHandler asks the GCE metadata server whether it
# runs on Google Cloud; point it at a closed local port so the answer is a quick no.
os.environ["GCE_METADATA_IP"] = "127.0.0.1:9"

import pytest  # noqa: E402

import strategies  # noqa: E402
from tests.helpers import SPLIT_CPU_DEVICES, shared_strategy  # noqa: E402

strategies.configure_cpu_devices(SPLIT_CPU_DEVICES)


@pytest.fixture(scope="session")
def mnist():
    from recipes.core.input import data

    return data.load_mnist()


@pytest.fixture(params=["default", "mirrored"])
def strategy(request):
    """The default strategy, and MirroredStrategy over 2 logical CPUs."""
    return shared_strategy(request.param)
