"""A finished run read back, for the commands that start from one
(`recipes.compress`, `recipes.predict`): its metrics.json, the recipe that wrote
it, that recipe's data, and how its model is served.

A recipe whose runs these commands take defines, beside its `run`:

    load_data(recipe, data_source, data_dir) -> data.ArrayData   # as `run` trains on it
    signature(dataset) -> serving.Signature                      # what saved_model/ serves

(`recipe` is metrics.json's name for the run, `bigmodel_mnist` say.) The
recipe module is found by that name, so nothing here imports a recipe until a
run asks for it.
"""
import dataclasses
import importlib
import json
import os

import tensorflow as tf

from recipes.core.errors import RecipeError


@dataclasses.dataclass(frozen=True)
class Run:
    """A finished run in `model_dir`, as metrics.json records it."""

    model_dir: str
    metrics: dict

    @property
    def recipe(self):
        return self.metrics["recipe"]

    def _module(self):
        module = importlib.import_module(f"recipes.{self.recipe.split('_')[0]}")
        if not hasattr(module, "load_data"):
            raise RecipeError(
                f"{self.model_dir} is a {self.recipe} run, which this command does not take yet; "
                "it takes the classifier runs of recipes.mnist, bigmodel, cnn, mlp and lstm")
        return module

    def load_data(self, data_source, data_dir):
        """The run's data, with the run's own split; a different dataset (another
        --data_source, say) is a one-line error."""
        dataset = self._module().load_data(self.recipe, data_source, data_dir)
        trained = (self.metrics.get("data_source"), self.metrics.get("num_train_examples"))
        if (dataset.source, len(dataset.x_train)) != trained:
            raise RecipeError(
                f"{self.model_dir} was trained on {trained[1]:,} examples from the {trained[0]} source, "
                f"but --data_source gives {dataset.describe()}; pass --data_source={trained[0]}")
        return dataset

    def signature(self, dataset):
        """How the run's model is served (`serving.Signature`)."""
        return self._module().signature(dataset)

    def path(self, *parts):
        return os.path.join(self.model_dir, *parts)


def read(model_dir):
    """The finished run in `model_dir`; one without metrics.json is a one-line error."""
    path = os.path.join(model_dir, "metrics.json")
    if not tf.io.gfile.exists(path):
        raise RecipeError(
            f"{model_dir} holds no finished run (no metrics.json); train one there first, for "
            f"example python -m recipes.mnist --model_dir={model_dir}")
    try:
        with tf.io.gfile.GFile(path) as f:
            metrics = json.load(f)
        metrics["recipe"]
    except (ValueError, KeyError, TypeError):
        raise RecipeError(f"{path} cannot be read as a run's metrics; train the run again") from None
    return Run(model_dir, metrics)
