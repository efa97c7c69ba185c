r"""The streaming input engine at scale: memory, speed and resume, against the anchors
the issue names, in one run.

    python benchmarks/input.py                          # about 10 minutes on 2 CPU cores
    python benchmarks/input.py --examples 200000        # smaller, quicker

It writes real digits as TFRecord shards (recipes/core/input/shards.py, as recipes.prepare
does): the 4,500 bundled MNIST training digits, and copies of them shifted by up to
7 pixels each way (zero-filled), up to --examples (1,012,500 by default), beside a
10,000-example set made the same way. Then, each in a fresh process:

  * memory: `python -m recipes.mnist --data=DIR` for --train_steps on each set; the
    peak RSS of the two runs (floor: within 150 MB of each other);
  * speed: the MNIST net's compiled loop (recipes/core/training/step.py) fed by the streaming
    pipeline from the large shards, against the same loop fed by an in-memory
    pipeline (`from_tensor_slices(x, y).cache().shuffle(N)`, the package's old one) at
    batch 256 and 1024, interleaved rounds, median examples/s (floor: 95%);
  * resume: a fresh process opens the large set and builds the stream at step 10 and
    at step 100,000 (batch 256): seconds to the first batch, and to the first
    training step (floor: 5 s);
  * input state: the size of the run's input state in a checkpoint, against
    `tf.train.Checkpoint(iterator=...)` over the same records with a 10,000-element
    shuffle buffer.

Writes benchmarks/results/input.json.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("RECIPES_OFFLINE", "1")

from benchmarks import benchmarked  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results", "input.json")
SMALL = 10_000
MAX_SHIFT = 7


def write_digits(folder, examples, shards):
    """The bundled digits and shifted copies of them, `examples` in all, as shards."""
    import numpy as np
    import tensorflow as tf

    from recipes.core.input import data
    from recipes.core.input import shards as shard_writer

    digits = data.load_mnist()
    x, y = digits.x_train, digits.y_train
    shifts = [(dy, dx) for dy in range(-MAX_SHIFT, MAX_SHIFT + 1) for dx in range(-MAX_SHIFT, MAX_SHIFT + 1)]
    shifts.sort(key=lambda s: (abs(s[0]) + abs(s[1]), s))  # The original first, then the nearest.

    def copies():
        for dy, dx in shifts:
            moved = np.zeros_like(x)
            moved[:, max(dy, 0) : 28 + min(dy, 0), max(dx, 0) : 28 + min(dx, 0)] = x[
                :, max(-dy, 0) : 28 + min(-dy, 0), max(-dx, 0) : 28 + min(-dx, 0)
            ]
            yield moved, y

    if examples > len(x) * len(shifts):
        sys.exit(f"--examples {examples} is more than the {len(x) * len(shifts):,} shifted digits there are")
    train = (
        tf.data.Dataset.from_generator(
            copies,
            output_signature=(tf.TensorSpec([None, 28, 28], tf.uint8), tf.TensorSpec([None], tf.int32)),
        )
        .unbatch()
        .take(examples)
    )
    test = tf.data.Dataset.from_tensor_slices((digits.x_test, digits.y_test))
    train = train.apply(tf.data.experimental.assert_cardinality(examples))
    shard_writer.write_datasets(folder, {"train": train, "test": test}, shards=shards)


def peak_rss_mb(folder, steps, model_dir):
    """Peak RSS (MB) of `python -m recipes.mnist --data=folder` training `steps` steps."""
    code = (
        "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024) if done.returncode == 0 "
        "else sys.exit(done.returncode)"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            sys.executable,
            "-m",
            "recipes.mnist",
            f"--data={folder}",
            f"--model_dir={model_dir}",
            f"--train_steps={steps}",
            "--batch_size=256",
            "--steps_per_loop=100",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        sys.exit(f"the memory run failed: {done.stderr.strip().splitlines()[-1:]}")
    return int(done.stdout.strip().splitlines()[-1])


def speed(folder, batch, rounds, seconds):
    """{streaming, in_memory: median examples/s} of the MNIST net's loop at `batch`."""
    import keras
    import tensorflow as tf

    from recipes.core.input import data
    from recipes.core.training import step

    strategy = tf.distribute.get_strategy()
    small = data.load_mnist()
    x, y = small.x_train, small.y_train
    streamed = data.open_data(folder).train

    def in_memory():  # The package's pipeline before the engine: everything in memory.
        ds = tf.data.Dataset.from_tensor_slices((x, y)).cache().shuffle(len(x), seed=0).repeat()
        return (
            ds.batch(batch, drop_remainder=True)
            .map(lambda a, b: (data.scale_pixels(a), b))
            .prefetch(tf.data.AUTOTUNE)
        )

    pipelines = {
        "streaming": iter(
            data.train_dataset(strategy, streamed, batch, preprocess=data.scale_pixels, seed=0)
        ),
        "in_memory": iter(strategy.distribute_datasets_from_function(lambda _: in_memory())),
    }
    trainers = {}
    for name in pipelines:
        model = benchmarked.build("mnist_dense")
        objective = step.Objective(keras.losses.sparse_categorical_crossentropy)
        trainers[name] = step.Trainer(
            strategy,
            model,
            keras.optimizers.Adam(),
            objective,
            global_batch_size=batch,
            metrics_fn=lambda: [keras.metrics.SparseCategoricalAccuracy("accuracy")],
        )
        trainers[name].train_loop(pipelines[name], tf.constant(20))  # Trace, compile, fill the buffers.
        trainers[name].train_results()
    rates = {name: [] for name in pipelines}
    for _ in range(rounds):  # Interleaved, so drift in the machine hits both.
        for name, iterator in pipelines.items():
            steps = max(20, int(seconds * 20_000 / batch))
            tick = time.perf_counter()
            trainers[name].train_loop(iterator, tf.constant(steps))
            trainers[name].train_results()
            rates[name].append(steps * batch / (time.perf_counter() - tick))
    return {name: statistics.median(r) for name, r in rates.items()}


RESUME = """
import json, sys, time
start = time.perf_counter()
import keras, tensorflow as tf
from recipes.core.input import data
from recipes.core.training import step
from benchmarks import benchmarked
imported = time.perf_counter()
split = data.open_data(sys.argv[1]).train
strategy = tf.distribute.get_strategy()
iterator = iter(data.train_dataset(strategy, split, 256, preprocess=data.scale_pixels, seed=0,
                                   options=data.PipelineOptions(start_step=int(sys.argv[2]))))
next(iterator)
first_batch = time.perf_counter()
trainer = step.Trainer(strategy, benchmarked.build("mnist_dense"), keras.optimizers.Adam(),
                       step.Objective(keras.losses.sparse_categorical_crossentropy), global_batch_size=256)
trainer.train_loop(iterator, tf.constant(1))
trainer.train_results()
print(json.dumps({"import_s": imported - start, "first_batch_s": first_batch - imported,
                  "first_step_s": time.perf_counter() - imported}))
"""


def resume(folder, step):
    done = subprocess.run(
        [sys.executable, "-c", RESUME, folder, str(step)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    if done.returncode:
        sys.exit(f"the resume run failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def state_sizes(folder):
    """(bytes of the input state in a checkpoint, bytes of a checkpointed tf.data
    iterator over the same records with a 10,000-element shuffle buffer)."""
    import tensorflow as tf

    from recipes.core.input import data, pipeline

    sizes = []
    with tempfile.TemporaryDirectory() as tmp:
        state = pipeline.InputState(256)
        state.position.assign(100_000 * 256)
        iterator = iter(pipeline.records(data.open_data(folder).train, shuffle=False).shuffle(10_000, seed=0))
        for _ in range(100):
            next(iterator)
        for name, checkpoint in (
            ("ours", tf.train.Checkpoint(input=state)),
            ("iterator", tf.train.Checkpoint(iterator=iterator)),
        ):
            prefix = checkpoint.write(os.path.join(tmp, name, "ckpt"))
            sizes.append(
                sum(
                    os.path.getsize(os.path.join(os.path.dirname(prefix), f))
                    for f in os.listdir(os.path.dirname(prefix))
                )
            )
    return sizes


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=benchmarked.positive(int), default=1_012_500)
    parser.add_argument("--shards", type=benchmarked.positive(int), default=16)
    parser.add_argument(
        "--train_steps",
        type=benchmarked.positive(int),
        default=1000,
        help="steps of each memory run (batch 256)",
    )
    parser.add_argument("--rounds", type=benchmarked.positive(int), default=3)
    parser.add_argument("--seconds", type=benchmarked.positive(float), default=5.0)
    parser.add_argument("--workdir", default=None, help="where the shards go (default: a temporary folder)")
    args = parser.parse_args()
    from recipes.core.cli import entry

    entry.set_up_process()
    work = args.workdir or tempfile.mkdtemp(prefix="recipes-input-bench-")
    small, large = os.path.join(work, "small"), os.path.join(work, "large")
    try:
        for folder, count in ((small, SMALL), (large, args.examples)):
            if not os.path.exists(os.path.join(folder, "schema.json")):
                tick = time.perf_counter()
                write_digits(folder, count, args.shards)
                seconds = time.perf_counter() - tick
                print(f"wrote {count:,} examples into {folder} in {seconds:.0f} s", flush=True)
        results = {"examples": args.examples, "small_examples": SMALL, "shards": args.shards}
        memory = {
            name: peak_rss_mb(folder, args.train_steps, os.path.join(work, f"run_{name}"))
            for name, folder in (("small", small), ("large", large))
        }
        results["peak_rss_mb"] = {**memory, "difference": memory["large"] - memory["small"], "floor": 150}
        print(
            f"peak RSS: {memory['small']} MB on {SMALL:,} examples, {memory['large']} MB on "
            f"{args.examples:,}: {memory['large'] - memory['small']:+} MB (floor: within 150 MB)",
            flush=True,
        )
        results["speed"] = {}
        for batch in (256, 1024):
            rates = speed(large, batch, args.rounds, args.seconds)
            ratio = rates["streaming"] / rates["in_memory"]
            results["speed"][batch] = {**rates, "ratio": ratio, "floor": 0.95}
            print(
                f"batch {batch}: streaming {rates['streaming']:,.0f} ex/s, in memory "
                f"{rates['in_memory']:,.0f} ex/s: {ratio:.1%} (floor: 95%)",
                flush=True,
            )
        results["resume"] = {step: resume(large, step) for step in (10, 100_000)}
        for step, times in results["resume"].items():
            print(
                f"resume at step {step:,}: first batch after {times['first_batch_s']:.2f} s, first step "
                f"after {times['first_step_s']:.2f} s (floor: 5 s; import {times['import_s']:.1f} s "
                "before)"
            )
        ours, theirs = state_sizes(large)
        results["input_state_bytes"] = {"ours": ours, "checkpointed_iterator_shuffle_10000": theirs}
        print(
            f"input state: {ours:,} bytes in the checkpoint; tf.train.Checkpoint(iterator=...) with a "
            f"10,000-element shuffle buffer: {theirs:,} bytes ({theirs / ours:,.0f}x)"
        )
        benchmarked.write_json(RESULTS, results)
        print(f"wrote {RESULTS}")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
