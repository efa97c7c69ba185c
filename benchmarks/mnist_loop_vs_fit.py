r"""Steady-state training throughput: the package's loop against the articles' `model.fit`.

    python benchmarks/mnist_loop_vs_fit.py            # about 1 minute on 2 CPU cores

Both train the MNIST dense net with Adam on the same embedded MNIST sample, in
one process, in interleaved rounds; warm-up and compilation are left out, and
each figure is the median over rounds. The baseline is the articles' code as
written: `compile(optimizer='adam', loss='sparse_categorical_crossentropy',
metrics=['accuracy'])` with every other setting at Keras' defaults.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RECIPES_OFFLINE", "1")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import models  # noqa: E402
from recipes import data, train  # noqa: E402


def fit_rate(x, y, batch_size, epochs):
    """The articles' model.fit; the first epoch (tracing) is left out of the timing."""
    model = models.mnist_dense()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)

    def measure():
        tick = time.perf_counter()
        model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
        return epochs * (len(x) // batch_size) * batch_size / (time.perf_counter() - tick)

    return measure


def loop_rate(mnist, batch_size, epochs, steps_per_loop):
    """The package's Trainer on the default strategy, fed by its tf.data pipeline."""
    strategy = tf.distribute.get_strategy()
    model = models.mnist_dense()
    trainer = train.Trainer(
        strategy, model, keras.optimizers.Adam(), keras.losses.sparse_categorical_crossentropy,
        lambda: [keras.metrics.SparseCategoricalAccuracy("accuracy")], batch_size)
    iterator = iter(data.train_dataset(strategy, mnist.x_train, mnist.y_train, batch_size,
                                       preprocess=data.scale_pixels, seed=0))
    steps = epochs * (len(mnist.x_train) // batch_size)

    def run(num_steps):
        done = 0
        while done < num_steps:
            n = min(steps_per_loop, num_steps - done)
            trainer.train_loop(iterator, tf.constant(n))
            done += n
        trainer.train_results()  # Waits for the steps to finish.

    run(steps_per_loop)  # Trace and compile.

    def measure():
        tick = time.perf_counter()
        run(steps)
        return steps * batch_size / (time.perf_counter() - tick)

    return measure


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_sizes", default="32,256")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed per round")
    parser.add_argument("--steps_per_loop", type=int, default=100)
    args = parser.parse_args()

    mnist = data.load_mnist("sample")
    x = mnist.x_train.astype("float32") / 255.0
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, "
          f"{os.cpu_count()} CPU cores, GPUs: {len(tf.config.list_physical_devices('GPU'))}; "
          f"{mnist.describe()}")
    print(f"{'batch':>6} {'model.fit ex/s':>15} {'loop ex/s':>10} {'loop / fit':>11}")
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        candidates = {"fit": fit_rate(x, mnist.y_train, batch_size, args.epochs),
                      "loop": loop_rate(mnist, batch_size, args.epochs, args.steps_per_loop)}
        rates = {name: [] for name in candidates}
        for _ in range(args.rounds):  # Interleaved, so drift in the machine hits both.
            for name, measure in candidates.items():
                rates[name].append(measure())
        fit, loop = (statistics.median(rates[name]) for name in ("fit", "loop"))
        print(f"{batch_size:>6} {fit:>15,.0f} {loop:>10,.0f} {loop / fit:>10.2f}x", flush=True)


if __name__ == "__main__":
    main()
