r"""The articles' BigModel (Dense 256-128-64-32-16-8 -> head), trained with the
shared custom loop and evaluated with accuracy, precision, recall, F1 and AUC-ROC.

    python -m recipes.bigmodel                      # MNIST, 10 classes
    python -m recipes.bigmodel --task=breast_cancer # binary, one sigmoid unit
    python -m recipes.bigmodel --data=wine.csv --label_column=target   # your own table

mnist: the articles' input. Offline, the 5,000 embedded digits split into
4,050 train / 450 validation / 500 test; about 15 s on a 2-core CPU.
breast_cancer: scikit-learn's 569-tumour table (364 / 91 / 114); a few seconds.
Measured results are in the README ("BigModel").
"""

if __name__ == "__main__":  # Run as a program: set the process up before TensorFlow loads.
    from recipes.core.cli import entry

    entry.handle_stop_signals()
    entry.set_up_process()

import keras
from absl import flags

import models
from recipes.core.cli import flags as recipe_flags
from recipes.core.deploy import serving
from recipes.core.input import data
from recipes.core.training import metrics, step, train

flags.DEFINE_enum(
    "task",
    "mnist",
    ["mnist", "breast_cancer"],
    "The bundled sample, with --data=sample (the default): mnist, 10 digit classes; "
    "breast_cancer, benign vs malignant (one sigmoid unit). Your own --data sets the "
    "classes itself.",
)

FLAGS = flags.FLAGS

# Defaults where the shared ones do not suit this deep, narrow net.
RECIPE_DEFAULTS = {"mnist": dict(epochs=20, batch_size=64), "breast_cancer": dict(epochs=30, batch_size=16)}


def run(config, strategy, dataset, task="mnist"):
    """Trains and evaluates BigModel; a seam for tests to pass their own parts. Data
    with integer class ids gets a softmax over its classes; the bundled breast-cancer
    table (float 0/1 labels [N, 1]) one sigmoid unit."""
    dataset = data.as_data(dataset)
    binary = dataset.num_classes is None
    units = 1 if binary else dataset.num_classes
    preprocess = dataset.default_preprocessing()
    loss_fn = keras.losses.binary_crossentropy if binary else keras.losses.sparse_categorical_crossentropy
    recipe_task = train.Task(
        f"bigmodel_{task}",
        lambda: models.BigModel(num_classes=units, dropout_rate=config.dropout_rate, l2=config.l2),
        step.Objective(loss_fn),
        metrics_fn=lambda: metrics.classification(units),
        train_metrics_fn=lambda: metrics.accuracy(units),
        preprocess=preprocess,
        signature=serving.Signature.for_spec(dataset.x_spec, preprocess),
    )
    results, _ = train.train_model(recipe_task, dataset, config=config, strategy=strategy)
    return results


def main(argv):
    del argv  # Unused.
    own = FLAGS.data != "sample"
    task = "data" if own else FLAGS.task
    config = recipe_flags.train_config(
        f"bigmodel_{task}", **RECIPE_DEFAULTS.get(task, RECIPE_DEFAULTS["mnist"])
    )
    strategy = recipe_flags.strategy_from_flags()
    samples = {FLAGS.task: data.BUNDLED[FLAGS.task]}
    dataset = recipe_flags.data_from_flags(samples)
    if not own and FLAGS.task == "mnist":
        dataset = dataset.with_validation()  # The articles' split: 4,050 / 450 / 500.
    run(config, strategy, dataset, task)


if __name__ == "__main__":
    entry.run(main)
