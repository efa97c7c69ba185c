r"""The articles' CNN (two convolutions with max pooling, two dense layers).

    python -m recipes.cnn
    python -m recipes.cnn --strategy=mirrored --num_cpu_devices=2

Connected, it trains on CIFAR-10 from tensorflow-datasets (50,000 / 10,000 colour
images, 32x32x3). Offline, on the embedded MNIST sample (4,500 train / 500 test
digits): 10 epochs take about 40 s on a 2-core CPU and reach 97-98% test
accuracy (README, "CNN").
"""
if __name__ == "__main__":  # Run as a program: set the process up before TensorFlow loads.
    from recipes.core import entry
    entry.handle_stop_signals()
    entry.set_up_process()

import dataclasses

from absl import flags

import models
from recipes.core import data, serving, train
from recipes.core import flags as recipe_flags

FLAGS = flags.FLAGS

RECIPE_DEFAULTS = dict(epochs=10, batch_size=64)


def with_channels(dataset):
    """Grey images [N, H, W] -> [N, H, W, 1], the layout Conv2D reads."""
    if dataset.x_train.ndim == 4:
        return dataset
    return dataclasses.replace(dataset, x_train=dataset.x_train[..., None],
                               x_test=dataset.x_test[..., None])


def load_data(recipe, data_source, data_dir):
    """The run's data: uint8 images [N, H, W, C] and their labels."""
    del recipe  # One task.
    return with_channels(data.load_cifar10(data_source, data_dir))


def signature(dataset):
    """What saved_model/ serves: uint8 pixels in, probabilities and classes out."""
    return serving.Signature.for_data(with_channels(dataset).x_train, data.scale_pixels)


def run(config, strategy, dataset):
    """Trains and evaluates the CNN; a seam for tests to pass their own parts."""
    dataset = with_channels(dataset)
    return train.train_classifier(
        config, strategy, dataset,
        lambda num_classes: models.cnn(input_shape=dataset.x_train.shape[1:], num_classes=num_classes),
        recipe="cnn", preprocess=data.scale_pixels)


def main(argv):
    del argv  # Unused.
    config = recipe_flags.train_config("cnn", **RECIPE_DEFAULTS)
    strategy = recipe_flags.strategy_from_flags()
    run(config, strategy, load_data("cnn", FLAGS.data_source, FLAGS.data_dir))


if __name__ == "__main__":
    entry.run(main)
