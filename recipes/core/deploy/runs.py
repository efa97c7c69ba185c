"""A finished run read back, for the commands that start from one
(`recipes.compress`, `recipes.predict`, `recipes.distill`): its metrics.json, and
from its `input` record how its model is served and how its data opens again.

Every run records that itself (`input_record`): the --data value and the
splits carved from it, one raw example's shape and dtype, the preprocessing, the
class names, what the served model returns, and the modules that define its
model's classes (`model_modules`). So nothing here imports a recipe or guesses
one from a name: a run trained on your own files, or through the
Python API, is read back like any other.
"""

import dataclasses
import importlib
import json
import os

import keras
import tensorflow as tf
from absl import flags

from recipes.core.deploy import serving
from recipes.core.errors import RecipeError, first_line
from recipes.core.input import data as data_lib
from recipes.core.input import pipeline


@dataclasses.dataclass(frozen=True)
class Run:
    """A finished run in `model_dir`, as metrics.json records it."""

    model_dir: str
    metrics: dict

    @property
    def recipe(self):
        return self.metrics["recipe"]

    @property
    def input(self):
        return self.metrics["input"]

    @property
    def class_names(self):
        return self.input.get("class_names")

    def signature(self):
        """How the run's model is served (`serving.Signature`): the raw input it read,
        preprocessed inside, and what it returns."""
        if self.input.get("preprocessing") is None:
            raise RecipeError(
                f"{self.model_dir}'s preprocessing is a function of its recipe that the run "
                "cannot record; serve its saved_model/, which holds it"
            )
        return serving.Signature(
            tuple(self.input["x_shape"]),
            self.input["x_dtype"],
            data_lib.Preprocessing.from_json(self.input["preprocessing"]),
            self.input["outputs"],
        )

    def load_data(self, data=None, **options):
        """The run's data, split as the run split it: from the recorded --data, or from
        `data` (a --data value) with `options` (test_data=, label_column=, ...) when
        given (alone, `options` change the recorded ones). Data that differs from the
        run's (another count or shape) is a one-line error."""
        original = dict(self.input.get("spec") or {})
        # What the recipe reads (its context, classes or values) is the run's, whatever the data.
        spec = (
            original
            if data is None
            else {"data": data, **{k: original.get(k) for k in ("text_window", "text_stride", "targets")}}
        )
        spec.update({k: v for k, v in options.items() if v is not None})
        if not spec.get("data"):
            raise RecipeError(
                f"{self.model_dir} was trained on data passed in Python, which it cannot "
                "open again; pass --data= the same data (any form docs/data.md lists)"
            )
        dataset = data_lib.open_data(
            spec.pop("data"),
            **{
                k: spec.get(k)
                for k in (
                    "test_data",
                    "validation_data",
                    "label_column",
                    "data_dir",
                    "text_window",
                    "text_stride",
                )
            },
            targets=spec.get("targets") or "classes",
        )
        if "validation" in self.input.get("carved", ()):
            dataset = dataset.with_validation()
        recorded = self.input.get("carve_fingerprint")
        if (
            recorded
            and dataset.carved
            and recorded != pipeline.carve_fingerprint(dataset.train.source.num_records)
        ):
            raise RecipeError(
                f"{self.model_dir} carved its test split with another TensorFlow "
                f"({self.metrics.get('tensorflow_version')}), whose permutation this one "
                "does not repeat; pass --test_data, or train the run again"
            )
        trained = self.metrics.get("num_train_examples")
        shape = dataset.x_spec.shape.as_list()
        if dataset.train.num_examples != trained or shape != list(self.input["x_shape"]):
            raise RecipeError(
                f"{self.model_dir} was trained on {trained:,} examples of shape {self.input['x_shape']}, "
                f"but the data gives {dataset.describe()} of shape {dataset.x_spec.shape.as_list()}; "
                "pass --data= the data it was trained on"
            )
        return self._with_class_names(dataset)

    def _with_class_names(self, dataset):
        """`dataset` with the run's class names: where the data names its classes only by
        id (arrays, say, for a run trained on a named tf.data.Dataset), the run's
        names, so that what follows it serves them too. Other names are an error."""
        names = tuple(self.class_names or ())
        if not names or dataset.class_names == names:
            return dataset
        if dataset.class_names == tuple(str(i) for i in range(len(names))):
            return dataclasses.replace(dataset, class_names=names)
        raise RecipeError(
            f"{self.model_dir} was trained on classes {list(names)}, but the data has "
            f"{list(dataset.class_names or ())}; pass --data= the data it was trained on"
        )

    def path(self, *parts):
        return os.path.join(self.model_dir, *parts)


def read(model_dir):
    """The finished run in `model_dir`, with the modules that define its model's classes
    imported; one without metrics.json, or whose metrics.json lacks what these commands
    need, is a one-line error."""
    path = os.path.join(model_dir, "metrics.json")
    if not tf.io.gfile.exists(path):
        raise RecipeError(
            f"{model_dir} holds no finished run (no metrics.json); train one there first, for "
            f"example python -m recipes.mnist --model_dir={model_dir}"
        )
    try:
        with tf.io.gfile.GFile(path) as f:
            metrics = json.load(f)
        if not isinstance(metrics.get("recipe"), str):
            raise ValueError("no recipe")
    except (ValueError, TypeError, AttributeError, tf.errors.OpError):
        raise RecipeError(f"{path} cannot be read as a run's metrics; train the run again") from None
    run = Run(model_dir, metrics)
    _import_model_modules(run)
    try:
        tuple(run.input["x_shape"]), tf.as_dtype(run.input["x_dtype"]), run.input["outputs"]
        if run.input.get("preprocessing") is not None:
            run.signature()
    except (KeyError, TypeError, ValueError):
        raise RecipeError(
            f"{path} does not record the run's input (written by an older version, or "
            "damaged); train the run again"
        ) from None
    return run


def input_record(data, preprocess, outputs):
    """What the commands that start from a finished run need of its input
    (metrics.json's `input`, which `Run` reads back): how to open the data again, one
    raw example's shape and dtype, the class names, the preprocessing and `outputs`."""
    return {
        "spec": {k: v for k, v in (data.spec or {}).items() if v is not None},
        "x_shape": data.x_spec.shape.as_list(),
        "x_dtype": data.x_spec.dtype.name,
        "class_names": list(data.class_names) if data.class_names else None,
        "carved": list(data.carved),
        "carve_fingerprint": (
            pipeline.carve_fingerprint(data.train.source.num_records) if data.carved else None
        ),
        "preprocessing": preprocess.to_json() if isinstance(preprocess, data_lib.Preprocessing) else None,
        "outputs": outputs,
    }


# Keras imports the classes of its own packages when it loads a model, and no others.
KERAS_PACKAGES = ("keras", "keras_hub", "keras_cv", "keras_nlp", "builtins")


def model_modules(model):
    """The modules that define `model`'s own registered classes (`models.bigmodel` for a
    `models.BigModel`), from its Keras config: what a command imports before it loads
    the run's model.keras (metrics.json's `model_modules`)."""
    found = set()

    def walk(value):
        if isinstance(value, dict):
            module = value.get("module")
            if (
                value.get("registered_name")
                and isinstance(module, str)
                and module.split(".")[0] not in KERAS_PACKAGES
            ):
                found.add(module)
            value = list(value.values())
        if isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    try:
        walk(keras.saving.serialize_keras_object(model))
    except (TypeError, ValueError, AttributeError, NotImplementedError):
        return []  # Not serializable as it is (a split model): what saves it says so.
    return sorted(found)


def _import_model_modules(run):
    """Imports the modules that define the run's model classes, as the run recorded them,
    so that its model.keras loads in this process; one that cannot be imported (a
    class of a script, `__main__`) is a one-line error."""
    for module in run.metrics.get("model_modules") or ():
        if module == "__main__" or not isinstance(module, str):
            continue  # A script's class loads where the script registered it, or not at all.
        if module.split(".")[0] == "recipes" and module.count(".") == 1:
            raise RecipeError(
                f"{run.model_dir}/metrics.json names the command {module} as where its model's "
                "classes are; a command is not imported as a library: train the run again"
            )
        try:
            importlib.import_module(module)
        except (ImportError, flags.Error) as e:  # A flag defined twice: absl's error.
            raise RecipeError(
                f"{run.model_dir}'s model is built from classes in {module}, which cannot "
                f"be imported here ({first_line(e, 100)}); run where it can, or install "
                "it"
            ) from None


def output_units(model, input_shape):
    """The width of `model`'s output for examples of `input_shape` (as the model takes
    them). A subclassed model (`models.BigModel`) has no `output_shape`, so it is called
    once on zeros; one that cannot take that shape is a `ValueError`."""
    if hasattr(model, "output_shape"):
        return int(model.output_shape[-1])
    try:
        return int(model(tf.zeros([1, *input_shape]), training=False).shape[-1])
    except (ValueError, tf.errors.InvalidArgumentError) as e:
        raise ValueError(f"does not take inputs of shape {list(input_shape)} ({first_line(e, 80)})") from None
