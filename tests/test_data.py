"""The data sources and the distributed input pipelines."""

import socket
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import strategies
from recipes.core.errors import RecipeError
from recipes.core.input import data


def _first_batches(dataset, n):
    """The first n global batches of a distributed dataset, replicas concatenated."""
    batches = []
    for element, _ in zip(dataset, range(n)):
        batches.append(
            tuple(
                np.concatenate(
                    [np.asarray(t) for t in tf.nest.flatten(part.values if hasattr(part, "values") else part)]
                )
                for part in element
            )
        )
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


def _all_of(x, y):
    """A training split holding every row of (x, y): nothing carved out as a test split."""
    return data.from_arrays(x, y, test=(x, y)).train


def _rows(x, y):
    """(x, y) as a sorted list of rows: the examples as a multiset, whatever their order."""
    return sorted(zip((row.tobytes() for row in np.asarray(x)), np.asarray(y).tolist()))


def test_training_batches_are_scaled_shuffled_and_identical_over_replicas(mnist, strategy):
    x, y = mnist.x_train[:256], mnist.y_train[:256]
    reference = _first_batches(
        data.train_dataset(
            tf.distribute.get_strategy(), _all_of(x, y), 64, preprocess=data.scale_pixels, seed=3
        ),
        6,
    )
    batches = _first_batches(
        data.train_dataset(strategy, _all_of(x, y), 64, preprocess=data.scale_pixels, seed=3), 6
    )
    for (xb, yb), (x_ref, y_ref) in zip(batches, reference):
        assert xb.shape == (64, 28, 28) and xb.dtype == np.float32
        assert 0.0 <= xb.min() and xb.max() <= 1.0
        np.testing.assert_array_equal(xb, x_ref)  # N replicas see the 1-replica batch.
        np.testing.assert_array_equal(yb, y_ref)
    epoch_x = np.concatenate([xb for xb, _ in reference[:4]])
    epoch = np.concatenate([yb for _, yb in reference[:4]])
    # An epoch is a permutation of the examples.
    assert _rows(epoch_x, epoch) == _rows(x / np.float32(255), y)
    assert not np.array_equal(epoch, y)


def test_start_step_resumes_the_same_stream(mnist):
    x, y = mnist.x_train[:256], mnist.y_train[:256]
    make = lambda start: data.train_dataset(  # noqa: E731
        tf.distribute.get_strategy(),
        _all_of(x, y),
        32,
        preprocess=data.scale_pixels,
        seed=1,
        options=data.PipelineOptions(start_step=start),
    )
    full, resumed = _first_batches(make(0), 12), _first_batches(make(5), 7)
    for (xb, _), (x_ref, _) in zip(resumed, full[5:]):
        np.testing.assert_array_equal(xb, x_ref)


def test_eval_counts_every_example_exactly_once(mnist, strategy):
    x, y = mnist.x_test[:203], mnist.y_test[:203]  # Not a multiple of the batch.
    split = data.from_arrays(mnist.x_train, mnist.y_train, test=(x, y)).test
    dataset, steps = data.eval_dataset(strategy, split, 64, preprocess=data.scale_pixels)
    assert steps == 4
    batches = _first_batches(dataset, steps + 1)
    assert len(batches) == steps
    xs, ys, ws = (np.concatenate(parts) for parts in zip(*batches))
    assert ws.sum() == 203 and set(ws.tolist()) == {0.0, 1.0}
    # Arrays are read in a fixed shuffled order: every example once, whatever the order.
    assert _rows(xs[ws == 1], ys[ws == 1]) == _rows(x / np.float32(255), y)


def test_every_batch_has_a_static_shape_as_tpus_need(mnist, strategy):
    x, y = mnist.x_test[:203], mnist.y_test[:203]
    splits = data.from_arrays(x, y, test=(x, y))
    train = data.train_dataset(strategy, splits.train, 64, preprocess=data.scale_pixels, seed=0)
    test, _ = data.eval_dataset(strategy, splits.test, 64, preprocess=data.scale_pixels)
    per_replica = 64 // strategy.num_replicas_in_sync
    for dataset, fields in ((train, 2), (test, 3)):
        specs = [getattr(spec, "_value_specs", (spec,)) for spec in dataset.element_spec]
        assert len(specs) == fields
        for spec in (s for replicas in specs for s in replicas):
            assert spec.shape.is_fully_defined() and spec.shape[0] == per_replica, spec


def test_batch_that_replicas_cannot_split_is_a_clear_error(mnist):
    strategy = strategies.get_strategy("mirrored", num_cpu_devices=2)
    with pytest.raises(RecipeError, match="^batch_size=33 does not split evenly over 2"):
        data.train_dataset(
            strategy,
            data.from_arrays(mnist.x_train, mnist.y_train).train,
            33,
            preprocess=data.scale_pixels,
            seed=0,
        )


def test_tfds_without_network_or_prepared_data_fails_fast(tmp_path):
    tick = time.monotonic()
    with pytest.raises(RecipeError, match="not prepared .* network is unreachable"):
        data.open_data("mnist", data_dir=str(tmp_path))
    assert time.monotonic() - tick < 120  # A guard against tfds' 200 s of retries, not a timing.


def test_the_default_data_is_the_bundled_sample_offline():
    dataset = data.open_data("sample")
    assert dataset.spec["data"] == "sample:mnist"
    assert dataset.train.num_examples == 4500 and dataset.test.num_examples == 500
    assert dataset.x_spec == tf.TensorSpec([28, 28], tf.uint8)
    assert dataset.class_names == tuple(str(i) for i in range(10))


class RecipesTestDigits(tfds.core.GeneratorBasedBuilder):
    """A real tensorflow-datasets dataset, prepared offline: example i is an image whose
    pixels (0, 0) and (0, 1) spell i in base 256, labelled i % 10."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            supervised_keys=("image", "label"),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(28, 28, 1)),
                    "label": tfds.features.ClassLabel(names=[f"digit{i}" for i in range(10)]),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 300), "test": self._generate_examples(300, 340)}

    def _generate_examples(self, first, end):
        for i in range(first, end):
            image = np.zeros((28, 28, 1), np.uint8)
            image[0, :2, 0] = divmod(i, 256)
            yield i, {"image": image, "label": i % 10}


def test_a_prepared_tfds_dataset_is_read_from_its_shards(tmp_path):
    RecipesTestDigits(data_dir=str(tmp_path)).download_and_prepare()
    dataset = data.open_data("recipes_test_digits", data_dir=str(tmp_path))  # Offline: prepared.
    assert dataset.x_spec == tf.TensorSpec([28, 28], tf.uint8)  # Grey: as the bundled digits.
    assert dataset.class_names == tuple(f"digit{i}" for i in range(10)) and not dataset.carved
    assert dataset.train.num_examples == 300 and dataset.test.num_examples == 40
    for split, ids in (("train", range(300)), ("test", range(300, 340))):
        x, y = dataset.arrays(split)
        assert x.shape == (len(ids), 28, 28) and x.dtype == np.uint8 and y.dtype == np.int32
        read = x[:, 0, 0].astype(int) * 256 + x[:, 0, 1]
        assert sorted(read.tolist()) == list(ids)  # Every example once.
        np.testing.assert_array_equal(y, read % 10)  # Each with its own label.
    ((xb, yb),) = _first_batches(
        data.train_dataset(
            tf.distribute.get_strategy(), dataset.train, 32, preprocess=data.scale_pixels, seed=0
        ),
        1,
    )
    assert xb.shape == (32, 28, 28) and xb.dtype == np.float32
    np.testing.assert_array_equal(yb, np.rint(xb[:, 0, 0] * 255 * 256 + xb[:, 0, 1] * 255) % 10)


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
