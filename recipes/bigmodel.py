r"""The articles' BigModel (Dense 256-128-64-32-16-8 -> head), trained with the
shared custom loop and evaluated with accuracy, precision, recall, F1 and AUC-ROC.

    python -m recipes.bigmodel                      # MNIST, 10 classes
    python -m recipes.bigmodel --task=breast_cancer # binary, one sigmoid unit

mnist: the articles' input. Offline, the 5,000 embedded digits split into
4,050 train / 450 validation / 500 test; about 15 s on a 2-core CPU.
breast_cancer: scikit-learn's 569-tumour table (364 / 91 / 114); a few seconds.
Measured results are in the README ("BigModel").
"""
if __name__ == "__main__":  # Run as a program: set the process up before TensorFlow loads.
    from recipes.core import entry
    entry.handle_stop_signals()
    entry.set_up_process()

from absl import flags
import keras

import models
from recipes.core import data, metrics, serving, train
from recipes.core import flags as recipe_flags

flags.DEFINE_enum("task", "mnist", ["mnist", "breast_cancer"],
                  "mnist: 10 digit classes; breast_cancer: benign vs malignant.")

FLAGS = flags.FLAGS

# What each task needs: the head, the loss, and the input scaling.
TASKS = {
    "mnist": dict(num_classes=10, loss_fn=keras.losses.sparse_categorical_crossentropy,
                  preprocess=data.scale_pixels),
    "breast_cancer": dict(num_classes=1, loss_fn=keras.losses.binary_crossentropy,
                          preprocess=lambda features: features),  # Standardized already.
}
# Defaults where the shared ones do not suit this deep, narrow net.
RECIPE_DEFAULTS = {"mnist": dict(epochs=20, batch_size=64),
                   "breast_cancer": dict(epochs=30, batch_size=16)}


def load_data(recipe, data_source, data_dir):
    """The data of `recipe` (bigmodel_<task>), split as `run` trains on it."""
    if recipe == "bigmodel_breast_cancer":
        return data.load_breast_cancer()
    return data.load_mnist(data_source, data_dir).with_validation_split()


def signature(dataset):
    """What saved_model/ serves: the task's input (uint8 pixels, or the standardized
    features), probabilities and classes out."""
    task = "mnist" if dataset.name == "mnist" else "breast_cancer"
    return serving.Signature.for_data(dataset.x_train, TASKS[task]["preprocess"])


def run(config, strategy, dataset, task):
    """Trains and evaluates BigModel on `task`; a seam for tests to pass their own parts."""
    spec = TASKS[task]
    results, _ = train.train_model(
        config, strategy, dataset,
        lambda: models.BigModel(num_classes=spec["num_classes"], dropout_rate=config.dropout_rate,
                                l2=config.l2),
        loss_fn=spec["loss_fn"],
        metrics_fn=lambda: metrics.classification(spec["num_classes"]),
        train_metrics_fn=lambda: metrics.accuracy(spec["num_classes"]),
        preprocess=spec["preprocess"], recipe=f"bigmodel_{task}", signature=signature(dataset))
    return results


def main(argv):
    del argv  # Unused.
    config = recipe_flags.train_config(f"bigmodel_{FLAGS.task}", **RECIPE_DEFAULTS[FLAGS.task])
    strategy = recipe_flags.strategy_from_flags()
    run(config, strategy, load_data(f"bigmodel_{FLAGS.task}", FLAGS.data_source, FLAGS.data_dir),
        FLAGS.task)


if __name__ == "__main__":
    entry.run(main)
