r"""The articles' CNN (two convolutions with max pooling, two dense layers).

    python -m recipes.cnn
    python -m recipes.cnn --strategy=mirrored --num_cpu_devices=2

By default on the bundled MNIST sample (4,500 train / 500 test digits): 10
epochs take about 40 s on a 2-core CPU and reach 97-98% test accuracy (README,
"CNN"). `--data=cifar10` trains on CIFAR-10 from tensorflow-datasets (50,000 /
10,000 colour images, 32x32x3); `--data=FOLDER` on your own images.
"""

if __name__ == "__main__":  # Run as a program: set the process up before TensorFlow loads.
    from recipes.core.cli import entry

    entry.handle_stop_signals()
    entry.set_up_process()

import dataclasses

import models
from recipes.core.cli import flags as recipe_flags
from recipes.core.input import data
from recipes.core.training import train

RECIPE_DEFAULTS = dict(epochs=10, batch_size=64)


def run(config, strategy, dataset):
    """Trains and evaluates the CNN; a seam for tests to pass their own parts. Grey
    images [N, H, W] get their channel axis inside the model's preprocessing."""
    dataset = data.as_data(dataset)
    shape = dataset.x_spec.shape.as_list()
    grey = len(shape) == 2
    preprocess = dataclasses.replace(dataset.default_preprocessing(), add_channel=grey)
    task = train.Task.classifier(
        "cnn",
        lambda num_classes: models.cnn(input_shape=shape + [1] if grey else shape, num_classes=num_classes),
        dataset,
        preprocess=preprocess,
    )
    return train.train_classifier(task, dataset, config=config, strategy=strategy)


def main(argv):
    del argv  # Unused.
    config = recipe_flags.train_config("cnn", **RECIPE_DEFAULTS)
    strategy = recipe_flags.strategy_from_flags()
    run(config, strategy, recipe_flags.data_from_flags())


if __name__ == "__main__":
    entry.run(main)
