"""Shared test set-up: offline, the host CPU split into 4 logical devices, and the
fixtures. Helpers that tests import live in tests/helpers.py.

The split must happen before TensorFlow initializes, so it runs at import,
before any test module builds a tensor.
"""

import gc
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


def pytest_collection_finish(session):
    """TensorFlow, Keras and the package are imported now: about 450,000 objects that
    live as long as the process. Frozen out of the garbage collector's view, they are no
    longer traversed by each of its full passes, which took a quarter of a compress
    test's time (3-7 s of 15-21 s, `gc.callbacks` timed)."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _freeze_what_outlives_the_test():
    """What a test leaves alive (TensorFlow's caches of traced functions, the shared
    strategies' state, module fixtures) is frozen too, after the test's garbage is
    collected (a pass over its own objects only), so that full passes stay as cheap in
    the last test as in the first."""
    yield
    gc.collect()
    gc.freeze()
