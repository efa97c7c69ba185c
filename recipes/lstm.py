r"""An LSTM reading each MNIST digit row by row: 28 steps of 28 pixels.

    python -m recipes.lstm
    python -m recipes.lstm --strategy=mirrored --num_cpu_devices=2

Offline it trains on the embedded MNIST sample (4,500 train / 500 test digits);
connected, on tensorflow-datasets MNIST. The baseline it reports beside its test
accuracy is the majority class of the training labels, scored on the test set
(what a model that ignores the pixels gets: 10% here). README, "LSTM", has the
measured figures.
"""

if __name__ == "__main__":  # Run as a program: set the process up before TensorFlow loads.
    from recipes.core.cli import entry

    entry.handle_stop_signals()
    entry.set_up_process()

import models
from recipes.core.cli import flags as recipe_flags
from recipes.core.input import data
from recipes.core.training import metrics, train

RECIPE_DEFAULTS = dict(epochs=20, batch_size=64)


def run(config, strategy, dataset):
    """Trains and evaluates the LSTM; a seam for tests to pass their own parts."""
    dataset = data.as_data(dataset)
    baseline = metrics.majority_class_accuracy(dataset.labels("train"), dataset.labels("test"))
    task = train.Task.classifier(
        "lstm",
        lambda num_classes: models.lstm_classifier(input_shape=dataset.x_spec.shape, num_classes=num_classes),
        dataset,
        extra_metrics={"baseline": "majority class", "baseline_accuracy": baseline},
    )
    results = train.train_classifier(task, dataset, config=config, strategy=strategy)
    print(
        f"Test accuracy {results['test_accuracy']:.2%} against {baseline:.2%} for the majority "
        "class baseline."
    )
    return results


def main(argv):
    del argv  # Unused.
    config = recipe_flags.train_config("lstm", **RECIPE_DEFAULTS)
    strategy = recipe_flags.strategy_from_flags()
    run(config, strategy, recipe_flags.data_from_flags())


if __name__ == "__main__":
    entry.run(main)
