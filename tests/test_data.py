"""The data sources and the distributed input pipelines."""
import socket
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import strategies
from recipes.core import data
from recipes.core.errors import RecipeError


def _first_batches(dataset, n):
    """The first n global batches of a distributed dataset, replicas concatenated."""
    batches = []
    for element, _ in zip(dataset, range(n)):
        batches.append(tuple(
            np.concatenate([np.asarray(t) for t in tf.nest.flatten(
                part.values if hasattr(part, "values") else part)])
            for part in element))
    return batches


def test_embedded_sample_is_real_mnist_split_stratified_without_overlap(mnist):
    assert mnist.source == "sample"
    assert mnist.x_train.shape == (4500, 28, 28) and mnist.x_test.shape == (500, 28, 28)
    assert mnist.x_train.dtype == np.uint8 and mnist.y_train.dtype == np.int32
    assert np.bincount(mnist.y_train).tolist() == [450] * 10
    assert np.bincount(mnist.y_test).tolist() == [50] * 10
    train_rows = {row.tobytes() for row in mnist.x_train}
    assert not any(row.tobytes() in train_rows for row in mnist.x_test)
    assert "4,500 train and 500 test" in mnist.describe()


def test_training_batches_are_scaled_shuffled_and_identical_over_replicas(mnist, strategy):
    x, y = mnist.x_train[:256], mnist.y_train[:256]
    reference = _first_batches(data.train_dataset(
        tf.distribute.get_strategy(), x, y, 64, preprocess=data.scale_pixels, seed=3), 6)
    batches = _first_batches(data.train_dataset(
        strategy, x, y, 64, preprocess=data.scale_pixels, seed=3), 6)
    for (xb, yb), (x_ref, y_ref) in zip(batches, reference):
        assert xb.shape == (64, 28, 28) and xb.dtype == np.float32
        assert 0.0 <= xb.min() and xb.max() <= 1.0
        np.testing.assert_array_equal(xb, x_ref)  # N replicas see the 1-replica batch.
        np.testing.assert_array_equal(yb, y_ref)
    epoch = np.concatenate([yb for _, yb in reference[:4]])
    assert sorted(epoch.tolist()) == sorted(y.tolist())  # An epoch is a permutation.
    assert not np.array_equal(epoch, y)


def test_start_step_resumes_the_same_stream(mnist):
    x, y = mnist.x_train[:256], mnist.y_train[:256]
    make = lambda start: data.train_dataset(  # noqa: E731
        tf.distribute.get_strategy(), x, y, 32, preprocess=data.scale_pixels, seed=1,
        start_step=start)
    full, resumed = _first_batches(make(0), 12), _first_batches(make(5), 7)
    for (xb, _), (x_ref, _) in zip(resumed, full[5:]):
        np.testing.assert_array_equal(xb, x_ref)


def test_eval_counts_every_example_exactly_once(mnist, strategy):
    x, y = mnist.x_test[:203], mnist.y_test[:203]  # Not a multiple of the batch.
    dataset, steps = data.eval_dataset(strategy, x, y, 64, preprocess=data.scale_pixels)
    assert steps == 4
    batches = _first_batches(dataset, steps + 1)
    assert len(batches) == steps
    xs, ys, ws = (np.concatenate(parts) for parts in zip(*batches))
    assert ws.sum() == 203
    np.testing.assert_array_equal(xs[ws == 1], x / np.float32(255))
    np.testing.assert_array_equal(ys[ws == 1], y)


def test_every_batch_has_a_static_shape_as_tpus_need(mnist, strategy):
    x, y = mnist.x_test[:203], mnist.y_test[:203]
    train = data.train_dataset(strategy, x, y, 64, preprocess=data.scale_pixels, seed=0)
    test, _ = data.eval_dataset(strategy, x, y, 64, preprocess=data.scale_pixels)
    per_replica = 64 // strategy.num_replicas_in_sync
    for dataset, fields in ((train, 2), (test, 3)):
        specs = [getattr(spec, "_value_specs", (spec,)) for spec in dataset.element_spec]
        assert len(specs) == fields
        for spec in (s for replicas in specs for s in replicas):
            assert spec.shape.is_fully_defined() and spec.shape[0] == per_replica, spec


def test_batch_that_replicas_cannot_split_is_a_clear_error(mnist):
    strategy = strategies.get_strategy("mirrored", num_cpu_devices=2)
    with pytest.raises(RecipeError, match="--batch_size=33 does not split evenly over 2"):
        data.train_dataset(strategy, mnist.x_train, mnist.y_train, 33,
                           preprocess=data.scale_pixels, seed=0)


def test_tfds_without_network_or_prepared_data_fails_fast(tmp_path):
    tick = time.monotonic()
    with pytest.raises(RecipeError, match="not prepared .* network is unreachable"):
        data.load_mnist("tfds", data_dir=str(tmp_path))
    assert time.monotonic() - tick < 120  # A guard against tfds' 200 s of retries, not a timing.


def test_auto_falls_back_to_the_sample_offline(tmp_path):
    assert data.load_mnist("auto", data_dir=str(tmp_path)).source == "sample"


def test_tfds_loading_code_path(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "network_available", lambda: True)
    with tfds.testing.mock_data(num_examples=24):  # Random images: exercises the code only.
        loaded = data.load_mnist("tfds", data_dir=str(tmp_path))
    assert loaded.source == "tfds"
    assert loaded.x_train.shape == (24, 28, 28) and loaded.x_train.dtype == np.uint8
    assert loaded.y_test.shape == (24,) and loaded.y_test.dtype == np.int32


def test_network_probe(monkeypatch):
    monkeypatch.delenv("RECIPES_OFFLINE")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert data.network_available(server.getsockname(), timeout=1)
        closed_port = server.getsockname()
    assert not data.network_available(closed_port, timeout=1)
    monkeypatch.setenv("RECIPES_OFFLINE", "1")
    assert not data.network_available(("127.0.0.1", 1), timeout=1)
