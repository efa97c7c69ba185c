r"""Steady-state training throughput of the package's loop against its peers, and
against what the hardware can do.

    python benchmarks/throughput.py                 # about 10 minutes on 2 CPU cores
    python benchmarks/throughput.py --quick         # the MNIST net only, 1 round

Each configuration runs in a fresh process, where its candidates are timed in
interleaved rounds (median of the rounds; warm-up and compilation left out):
  * loop       the package's Trainer (recipes/core/step.py), as the recipes run it;
  * fit        the articles' `model.fit`: `compile()` at Keras' defaults;
  * fit_tuned  Keras' `fit` tuned: `jit_compile=True, steps_per_execution=100`;
  * torch      a hand-written PyTorch eager loop, when PyTorch is installed.
The hardware's limit is a large XLA-compiled matmul in float32 and bfloat16;
each configuration's achieved rate counts 6 x parameters FLOPs per example (the
forward pass is 2 per weight, the backward pass 4).

It writes benchmarks/results/<device>.json and, with matplotlib, a PNG plot.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RECIPES_OFFLINE", "1")

import strategies  # noqa: E402
from recipes.core import entry  # noqa: E402

# A recipe's process set-up (the BFC CPU allocator, quiet logs), then two logical
# CPU devices, so that `mirrored` runs two real replicas on a CPU; both must happen
# before TensorFlow starts. (The default strategy uses the first device, with the
# same thread pools.)
entry.set_up_process()
strategies.configure_cpu_devices(2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import models  # noqa: E402
from recipes.core import data  # noqa: E402
from recipes.core.step import Trainer  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
MODELS = {"mnist_dense": models.mnist_dense, "bigmodel": lambda: models.BigModel(num_classes=10)}


def _build(model_name):
    model = MODELS[model_name]()
    model.build((None, 28, 28))
    return model


def _timed(run, batch_size, seconds):
    """A `measure()` that runs `run(steps)` for about `seconds` and returns examples/s."""
    steps = [10]

    def measure():
        while True:
            tick = time.perf_counter()
            run(steps[0])
            elapsed = time.perf_counter() - tick
            rate = steps[0] * batch_size / elapsed
            if elapsed >= seconds / 2:  # Long enough to count; aim the next one at `seconds`.
                steps[0] = max(10, int(steps[0] * seconds / elapsed))
                return rate
            steps[0] *= 4

    return measure


def loop_candidate(model_name, x, y, batch_size, seconds, precision="float32", strategy="default"):
    keras.mixed_precision.set_global_policy(precision)
    strategy = strategies.get_strategy(strategy, num_cpu_devices=2)
    with strategy.scope():
        model = _build(model_name)
        optimizer = keras.optimizers.Adam()
    trainer = Trainer(
        strategy, model, optimizer, keras.losses.sparse_categorical_crossentropy,
        lambda: [keras.metrics.SparseCategoricalAccuracy("accuracy")], batch_size)
    keras.mixed_precision.set_global_policy("float32")
    iterator = iter(data.train_dataset(strategy, x, y, batch_size, preprocess=data.scale_pixels, seed=0))

    def run(steps):
        for start in range(0, steps, 100):
            trainer.train_loop(iterator, tf.constant(min(100, steps - start)))
        trainer.train_results()  # Waits for the steps to finish.

    run(100)  # Trace and compile.
    return _timed(run, batch_size, seconds)


def fit_candidate(model_name, x, y, batch_size, seconds, tuned=False):
    model = _build(model_name)
    options = dict(jit_compile=True, steps_per_execution=100) if tuned else {}
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  **options)
    x = x.astype(np.float32) / 255.0
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)  # Trace and compile.
    steps_per_epoch = len(x) // batch_size

    def run(steps):
        epochs = max(1, round(steps / steps_per_epoch))
        model.fit(x[:steps_per_epoch * batch_size], y[:steps_per_epoch * batch_size],
                  batch_size=batch_size, epochs=epochs, verbose=0)
        return epochs * steps_per_epoch

    def measure():  # fit runs whole epochs, so it times itself.
        tick = time.perf_counter()
        steps = run(int(seconds * 2000 / batch_size) + 1)
        return steps * batch_size / (time.perf_counter() - tick)

    return measure


def torch_candidate(model_name, x, y, batch_size, seconds):
    import torch

    torch.manual_seed(0)
    widths = [784, 1024, 1024, 10] if model_name == "mnist_dense" else [784, 256, 128, 64, 32, 16, 8, 10]
    layers = [torch.nn.Flatten()]
    for a, b in zip(widths, widths[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])  # Logits; cross_entropy applies the softmax.
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    xs = torch.from_numpy(x.astype(np.float32) / 255.0)
    ys = torch.from_numpy(y.astype(np.int64))
    n = len(xs) // batch_size

    def run(steps):
        for step in range(steps):
            i = step % n
            xb, yb = xs[i * batch_size:(i + 1) * batch_size], ys[i * batch_size:(i + 1) * batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()

    run(10)
    return _timed(run, batch_size, seconds)


def matmul_gflops(dtype, size=2048, repeats=8, rounds=3):
    """The rate of an XLA-compiled chain of size x size matmuls, in GFLOP/s."""
    a = tf.random.normal((size, size), dtype=tf.float32)
    a = tf.cast(a / size ** 0.5, dtype)

    @tf.function(jit_compile=True)
    def chain(x):
        for _ in range(repeats):
            x = tf.matmul(x, a)
        return x

    chain(a).numpy()
    rates = []
    for _ in range(rounds):
        tick = time.perf_counter()
        chain(a).numpy()
        rates.append(2 * size ** 3 * repeats / (time.perf_counter() - tick) / 1e9)
    return max(rates)


def device_name():
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    model = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model} ({os.cpu_count()} cores)"


def configurations(quick, has_torch):
    """(label, model, batch, precision, strategy, {candidate: factory args})."""
    rows = []
    for model_name in ("mnist_dense",) if quick else ("mnist_dense", "bigmodel"):
        for batch in (32, 256, 1024):
            candidates = {"loop": {}, "fit": {}, "fit_tuned": {"tuned": True}}
            if has_torch:
                candidates["torch"] = {}
            rows.append((model_name, batch, "float32", "default", candidates))
        rows.append((model_name, 1024, "mixed_bfloat16", "default", {"loop": {"precision": "mixed_bfloat16"}}))
        for batch in (256, 1024):
            rows.append((model_name, batch, "float32", "mirrored", {"loop": {"strategy": "mirrored"}}))
    return rows


FACTORIES = {"loop": loop_candidate, "fit": fit_candidate, "fit_tuned": fit_candidate,
             "torch": torch_candidate}


def measure_configuration(index, quick, rounds, seconds):
    """Interleaved rounds of one configuration's candidates: {candidate: median ex/s}."""
    model_name, batch, _, _, candidates = configurations(quick, _torch_version())[index]
    mnist = data.load_mnist("sample")
    measures = {name: FACTORIES[name](model_name, mnist.x_train, mnist.y_train, batch, seconds, **kwargs)
                for name, kwargs in candidates.items()}
    rates = {name: [] for name in measures}
    for _ in range(rounds):  # Interleaved, so drift in the machine hits every candidate.
        for name, measure in measures.items():
            rates[name].append(measure())
    return {name: statistics.median(r) for name, r in rates.items()}


def _in_child(index, args):
    """`measure_configuration` in a fresh Python process. Run one after another in one
    process, later configurations ran up to 40% slower (left-over threads and traced
    programs of the earlier ones), so each configuration gets a clean process."""
    command = [sys.executable, os.path.abspath(__file__), "--configuration", str(index),
               "--rounds", str(args.rounds), "--seconds", str(args.seconds)] + ["--quick"] * args.quick
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"configuration {index} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _torch_version():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count())
    return torch.__version__


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the MNIST net only, 1 round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--output", default=None, help="JSON path (default: benchmarks/results/<device>.json)")
    parser.add_argument("--configuration", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.rounds = 1
    if args.configuration is not None:  # A child of `_in_child`: one configuration.
        print(json.dumps(measure_configuration(args.configuration, args.quick, args.rounds, args.seconds)))
        return
    torch_version = _torch_version()
    rows = configurations(args.quick, torch_version)
    device = device_name()
    peaks = {"float32": matmul_gflops(tf.float32), "mixed_bfloat16": matmul_gflops(tf.bfloat16)}
    print(f"{device}; TensorFlow {tf.__version__}, Keras {keras.__version__}, "
          f"PyTorch {torch_version or 'not installed'}")
    print(f"matmul limit: float32 {peaks['float32']:.0f} GFLOP/s, bfloat16 {peaks['mixed_bfloat16']:.0f} GFLOP/s")
    print(f"{'model':<12}{'batch':>6} {'precision':<15}{'strategy':<9}{'candidate':<10}"
          f"{'ex/s':>9}{'GFLOP/s':>9}{'of peak':>8}{'loop/x':>8}")

    results = []
    for index, (model_name, batch, precision, strategy_name, candidates) in enumerate(rows):
        params = _build(model_name).count_params()
        medians = _in_child(index, args)
        for name, rate in medians.items():
            gflops = 6 * params * rate / 1e9
            peak = peaks[precision if name == "loop" else "float32"]
            row = dict(model=model_name, batch=batch, precision=precision if name == "loop" else "float32",
                       strategy=strategy_name, candidate=name, examples_per_second=round(rate, 1),
                       gflops=round(gflops, 1), fraction_of_peak=round(gflops / peak, 3),
                       loop_over_this=round(medians["loop"] / rate, 2))
            results.append(row)
            print(f"{model_name:<12}{batch:>6} {row['precision']:<15}{strategy_name:<9}{name:<10}"
                  f"{rate:>9,.0f}{gflops:>9.1f}{gflops / peak:>8.0%}{row['loop_over_this']:>7.2f}x", flush=True)

    output = args.output or os.path.join(
        RESULTS, ("gpu" if tf.config.list_physical_devices("GPU") else "cpu") + ".json")
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "w") as f:
        json.dump({"device": device, "tensorflow": tf.__version__, "keras": keras.__version__,
                   "torch": torch_version, "matmul_gflops": peaks, "results": results}, f, indent=1)
    print(f"wrote {output}")
    plot(output)


def plot(path):
    """A bar chart of examples/s by configuration, next to the JSON."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed; no plot")
        return
    with open(path) as f:
        run = json.load(f)
    rows = run["results"]
    labels = [f"{r['model']} b{r['batch']}\n{r['precision'].replace('mixed_', '')} {r['strategy']}"
              for r in rows]
    groups = list(dict.fromkeys(labels))
    colors = {"loop": "tab:blue", "fit": "tab:gray", "fit_tuned": "tab:orange", "torch": "tab:red"}
    fig, ax = plt.subplots(figsize=(max(8, len(groups) * 0.9), 4.5))
    width = 0.2
    for offset, candidate in enumerate(colors):
        xs = [groups.index(label) + (offset - 1.5) * width for label, r in zip(labels, rows)
              if r["candidate"] == candidate]
        ys = [r["examples_per_second"] for r in rows if r["candidate"] == candidate]
        if xs:
            ax.bar(xs, ys, width, label=candidate, color=colors[candidate])
    ax.set_xticks(range(len(groups)), groups, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("training examples / s")
    ax.set_title(f"Training throughput on {run['device']}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = os.path.splitext(path)[0] + ".png"
    fig.savefig(png, dpi=120)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
