r"""The articles' two-layer MLP (`LargeModel`: fc1 -> ReLU -> fc2) on MNIST, reported
like the article: the average training loss of every epoch, then the accuracy.

    python -m recipes.mlp
    python -m recipes.mlp --strategy=mirrored --num_cpu_devices=2

Offline, on the embedded MNIST sample (4,500 train / 500 test digits), 5 epochs
take about 10 s on a 2-core CPU. README, "Two-layer MLP", has the figures.
"""

if __name__ == "__main__":  # Run as a program: set the process up before TensorFlow loads.
    from recipes.core.cli import entry

    entry.handle_stop_signals()
    entry.set_up_process()

import models
from recipes.core.cli import flags as recipe_flags
from recipes.core.input import data
from recipes.core.training import train


def run(config, strategy, dataset):
    """Trains and evaluates the MLP; a seam for tests to pass their own parts."""
    dataset = data.as_data(dataset)
    task = train.Task.classifier(
        "mlp",
        lambda num_classes: models.two_layer_mlp(input_shape=dataset.x_spec.shape, num_classes=num_classes),
        dataset,
    )
    results = train.train_classifier(task, dataset, config=config, strategy=strategy)
    steps_per_epoch = results["num_train_examples"] // config.batch_size
    first = results["steps"] // steps_per_epoch - len(results["train_loss_by_epoch"])
    for epoch, loss in enumerate(results["train_loss_by_epoch"], start=first + 1):
        print(f"Epoch {epoch}, average loss: {loss:.4f}")
    print(f"Accuracy: {results['test_accuracy']:.2%} on {results['num_test_examples']} test examples")
    return results


def main(argv):
    del argv  # Unused.
    config = recipe_flags.train_config("mlp")
    strategy = recipe_flags.strategy_from_flags()
    run(config, strategy, recipe_flags.data_from_flags())


if __name__ == "__main__":
    entry.run(main)
