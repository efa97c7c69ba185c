"""A finished run read back, for the commands that start from one
(`recipes.compress`, `recipes.predict`, `recipes.distill`): its metrics.json, and
from its `input` record how its model is served and how its data opens again.

Every run records that itself (`train.input_record`): the --data value and the
splits carved from it, one raw example's shape and dtype, the preprocessing, the
class names and what the served model returns. So nothing here imports a recipe
or guesses one from a name: a run trained on your own files, or through the
Python API, is read back like any other.
"""
import dataclasses
import json
import os

import tensorflow as tf

from recipes.core import data as data_lib
from recipes.core import pipeline, serving
from recipes.core.errors import RecipeError


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
            raise RecipeError(f"{self.model_dir}'s preprocessing is a function of its recipe that the run "
                              "cannot record; serve its saved_model/, which holds it")
        return serving.Signature(tuple(self.input["x_shape"]), self.input["x_dtype"],
                                 data_lib.Preprocessing.from_json(self.input["preprocessing"]),
                                 self.input["outputs"])

    def load_data(self, data=None, **options):
        """The run's data, split as the run split it: from the recorded --data, or from
        `data` (a --data value) with `options` (test_data=, label_column=, ...) when
        given (alone, `options` change the recorded ones). Data that differs from the
        run's (another count or shape) is a one-line error."""
        original = dict(self.input.get("spec") or {})
        # What the recipe reads (its context, classes or values) is the run's, whatever the data.
        spec = original if data is None else {"data": data, **{k: original.get(k) for k in (
            "text_window", "text_stride", "targets")}}
        spec.update({k: v for k, v in options.items() if v is not None})
        if not spec.get("data"):
            raise RecipeError(f"{self.model_dir} was trained on data passed in Python, which it cannot "
                              "open again; pass --data= the same data (any form docs/data.md lists)")
        dataset = data_lib.open_data(spec.pop("data"), **{k: spec.get(k) for k in (
            "test_data", "validation_data", "label_column", "data_dir", "text_window", "text_stride")},
            targets=spec.get("targets") or "classes")
        if "validation" in self.input.get("carved", ()):
            dataset = dataset.with_validation()
        recorded = self.input.get("carve_fingerprint")
        if recorded and dataset.carved and \
                recorded != pipeline.carve_fingerprint(dataset.train.source.num_records):
            raise RecipeError(f"{self.model_dir} carved its test split with another TensorFlow "
                              f"({self.metrics.get('tensorflow_version')}), whose permutation this one "
                              "does not repeat; pass --test_data, or train the run again")
        trained = self.metrics.get("num_train_examples")
        shape = dataset.x_spec.shape.as_list()
        if dataset.train.num_examples != trained or shape != list(self.input["x_shape"]):
            raise RecipeError(
                f"{self.model_dir} was trained on {trained:,} examples of shape {self.input['x_shape']}, "
                f"but the data gives {dataset.describe()} of shape {dataset.x_spec.shape.as_list()}; "
                "pass --data= the data it was trained on")
        return dataset

    def path(self, *parts):
        return os.path.join(self.model_dir, *parts)


def read(model_dir):
    """The finished run in `model_dir`; one without metrics.json, or whose metrics.json
    lacks what these commands need, is a one-line error."""
    path = os.path.join(model_dir, "metrics.json")
    if not tf.io.gfile.exists(path):
        raise RecipeError(
            f"{model_dir} holds no finished run (no metrics.json); train one there first, for "
            f"example python -m recipes.mnist --model_dir={model_dir}")
    try:
        with tf.io.gfile.GFile(path) as f:
            metrics = json.load(f)
        if not isinstance(metrics.get("recipe"), str):
            raise ValueError("no recipe")
    except (ValueError, TypeError, AttributeError, tf.errors.OpError):
        raise RecipeError(f"{path} cannot be read as a run's metrics; train the run again") from None
    run = Run(model_dir, metrics)
    try:
        tuple(run.input["x_shape"]), tf.as_dtype(run.input["x_dtype"]), run.input["outputs"]
        if run.input.get("preprocessing") is not None:
            run.signature()
    except (KeyError, TypeError, ValueError):
        raise RecipeError(f"{path} does not record the run's input (written by an older version, or "
                          "damaged); train the run again") from None
    return run
