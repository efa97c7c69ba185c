r"""Steady-state training throughput of the package's loop against its peers, and
against what the hardware can do.

    python benchmarks/throughput.py                 # about 15 minutes on 2 CPU cores
    python benchmarks/throughput.py --quick         # the MNIST net only, 1 round, no accuracy check

Each configuration runs in a fresh process, where its candidates are timed in
interleaved rounds (median of the rounds; warm-up and compilation left out):
  * loop       the package's Trainer (recipes/core/training/step.py), as the recipes run it;
  * fit        the articles' `model.fit`: `compile()` at Keras' defaults;
  * fit_tuned  Keras' `fit` tuned: `jit_compile=True, steps_per_execution=100`;
  * torch      a hand-written PyTorch eager loop, when PyTorch is installed.

The hardware's limit is the best measured matmul rate (benchmarks/hardware.py: the
best of XLA, TensorFlow's oneDNN, NumPy and PyTorch over sizes 1024-4096), printed
beside the theoretical peak (MFU: the share of that peak reached; where the peak
worked out from what the CPU reports falls below the measured limit, the peak is
unknown and MFU is the share of the limit). A
configuration's rate counts the matmul FLOPs of one training example from the
model's layers: the forward pass, the weight gradients, and the input gradients
of every layer but the first (no framework computes the gradient with respect to
the images). A rate above the limit means the limit was measured while the machine
was busier (other jobs): the limit is measured again and the best of the two kept;
a rate still above it is a measuring error: the script says so and exits non-zero.

The full run also trains the MNIST net (`python -m recipes.mnist`) for seeds 0-2
in float32 and in mixed_float16 and compares their test accuracy.

It writes benchmarks/results/<device>.json and, with matplotlib, a PNG plot.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("RECIPES_OFFLINE", "1")

import strategies  # noqa: E402
from recipes.core.cli import entry  # noqa: E402

# A recipe's process set-up (the BFC CPU allocator, quiet logs), before TensorFlow
# starts. A configuration's child process splits the CPU for `mirrored` only.
entry.set_up_process()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import benchmarked, hardware  # noqa: E402
from recipes.core.input import data
from recipes.core.training import optimization, train  # noqa: E402
from recipes.core.training.step import Objective, Trainer  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


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


def _strategy(name):
    # Two logical CPUs for `mirrored` only: a split CPU gives each device half the cores.
    return strategies.get_strategy(name, num_cpu_devices=2 if name == "mirrored" else 1)


def loop_candidate(model_name, x, y, batch_size, seconds, precision="float32", strategy="default"):
    strategy = _strategy(strategy)
    keras.mixed_precision.set_global_policy(train.precision_policy(precision, strategy))
    with strategy.scope():
        model = benchmarked.build(model_name)
        optimizer = optimization.with_loss_scaling(keras.optimizers.Adam())
    trainer = Trainer(
        strategy,
        model,
        optimizer,
        Objective(keras.losses.sparse_categorical_crossentropy),
        global_batch_size=batch_size,
        metrics_fn=lambda: [keras.metrics.SparseCategoricalAccuracy("accuracy")],
    )
    keras.mixed_precision.set_global_policy("float32")
    iterator = iter(
        data.train_dataset(
            strategy, data.from_arrays(x, y).train, batch_size, preprocess=data.scale_pixels, seed=0
        )
    )

    def run(steps):
        for start in range(0, steps, 100):
            trainer.train_loop(iterator, tf.constant(min(100, steps - start)))
        trainer.train_results()  # Waits for the steps to finish.

    run(100)  # Trace and compile.
    return _timed(run, batch_size, seconds)


def fit_candidate(model_name, x, y, batch_size, seconds, tuned=False):
    model = benchmarked.build(model_name)
    options = dict(jit_compile=True, steps_per_execution=100) if tuned else {}
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], **options)
    x = x.astype(np.float32) / 255.0
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)  # Trace and compile.
    steps_per_epoch = len(x) // batch_size

    def run(steps):
        epochs = max(1, round(steps / steps_per_epoch))
        model.fit(
            x[: steps_per_epoch * batch_size],
            y[: steps_per_epoch * batch_size],
            batch_size=batch_size,
            epochs=epochs,
            verbose=0,
        )
        return epochs * steps_per_epoch

    def measure():  # fit runs whole epochs, so it times itself.
        tick = time.perf_counter()
        steps = run(int(seconds * 2000 / batch_size) + 1)
        return steps * batch_size / (time.perf_counter() - tick)

    return measure


def torch_candidate(model_name, x, y, batch_size, seconds):
    import torch

    torch.manual_seed(0)
    model = benchmarked.torch_twin(model_name)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    xs = torch.from_numpy(x.astype(np.float32) / 255.0)
    ys = torch.from_numpy(y.astype(np.int64))
    n = len(xs) // batch_size

    def run(steps):
        for step in range(steps):
            i = step % n
            xb, yb = xs[i * batch_size : (i + 1) * batch_size], ys[i * batch_size : (i + 1) * batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()

    run(10)
    return _timed(run, batch_size, seconds)


def configurations(quick, has_torch, gpu=False):
    """(model, batch, precision, strategy, {candidate: factory args})."""
    rows = []
    for model_name in ("mnist_dense",) if quick else ("mnist_dense", "bigmodel"):
        for batch in (32, 256, 1024) + ((4096,) if gpu else ()):
            candidates = {"loop": {}, "fit": {}, "fit_tuned": {"tuned": True}}
            if has_torch:
                candidates["torch"] = {}
            rows.append((model_name, batch, "float32", "default", candidates))
        for batch in (256, 1024, 4096) if gpu else (1024,):
            precision = "auto" if gpu else "mixed_bfloat16"
            rows.append((model_name, batch, precision, "default", {"loop": {"precision": precision}}))
        for batch in (256, 1024):
            rows.append((model_name, batch, "float32", "mirrored", {"loop": {"strategy": "mirrored"}}))
    return rows


FACTORIES = {
    "loop": loop_candidate,
    "fit": fit_candidate,
    "fit_tuned": fit_candidate,
    "torch": torch_candidate,
}


def measure_configuration(index, quick, rounds, seconds):
    """Interleaved rounds of one configuration's candidates: {candidate: median ex/s},
    and the precision the loop ran in."""
    gpu = bool(tf.config.list_physical_devices("GPU"))
    model_name, batch, precision, strategy_name, candidates = configurations(quick, _torch_version(), gpu)[
        index
    ]
    mnist = data.load_mnist()
    measures = {
        name: FACTORIES[name](model_name, mnist.x_train, mnist.y_train, batch, seconds, **kwargs)
        for name, kwargs in candidates.items()
    }
    rates = {name: [] for name in measures}
    for _ in range(rounds):  # Interleaved, so drift in the machine hits every candidate.
        for name, measure in measures.items():
            rates[name].append(measure())
    precision = train.precision_policy(precision, _strategy(strategy_name))
    return {"precision": precision, "rates": {name: statistics.median(r) for name, r in rates.items()}}


def _in_child(script, *args):
    """A script's last line of output, as JSON, from a fresh Python process. Run one
    after another in one process, later configurations ran up to 40% slower
    (left-over threads and traced programs of the earlier ones), so each
    configuration, and the matmul limit, gets a clean process; this one stays idle."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", script), *args],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        sys.exit(f"{script} {' '.join(args)} failed (exit status {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _torch_version():
    # Triton, PyTorch's compiler, crashes the process when it loads beside TensorFlow
    # (a segfault, with torch 2.14 and TensorFlow 2.21); the eager loop timed here needs none of it.
    sys.modules.setdefault("triton", None)
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count())
    return torch.__version__


def accuracy_check(seeds=(0, 1, 2)):
    """`python -m recipes.mnist` (offline, 5 epochs) for each seed in float32 and in
    mixed_float16: {precision: [test accuracy by seed]}."""
    accuracy = {}
    with tempfile.TemporaryDirectory() as scratch:
        for precision in ("none", "mixed_float16"):
            for seed in seeds:
                model_dir = os.path.join(scratch, f"{precision}-{seed}")
                benchmarked.run_recipe(
                    f"--seed={seed}", f"--mixed_precision={precision}", f"--model_dir={model_dir}"
                )
                with open(os.path.join(model_dir, "metrics.json")) as f:
                    accuracy.setdefault(precision, []).append(json.load(f)["test_accuracy"])
    return accuracy


def _arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the MNIST net only, 1 round, no accuracy check")
    parser.add_argument("--rounds", type=benchmarked.positive(int), default=3)
    parser.add_argument(
        "--seconds", type=benchmarked.positive(float), default=2.0, help="time per measurement"
    )
    parser.add_argument(
        "--output", default=None, help="JSON path (default: benchmarks/results/<device>.json)"
    )
    parser.add_argument("--configuration", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.rounds = 1
    return args


def main():
    args = _arguments()
    if args.configuration is not None:  # A child of `_in_child`: one configuration.
        print(json.dumps(measure_configuration(args.configuration, args.quick, args.rounds, args.seconds)))
        return
    torch_version = _torch_version()
    gpu = bool(tf.config.list_physical_devices("GPU"))  # Lists devices; starts nothing.
    machine = _in_child("hardware.py", "--json")
    print(
        f"{machine['device']}; TensorFlow {tf.__version__}, Keras {keras.__version__}, "
        f"PyTorch {torch_version or 'not installed'}"
    )
    measured = []
    for index, (model_name, batch, _, strategy_name, _) in enumerate(
        configurations(args.quick, torch_version, gpu)
    ):
        child = _in_child(
            "throughput.py",
            "--configuration",
            str(index),
            "--rounds",
            str(args.rounds),
            "--seconds",
            str(args.seconds),
            *["--quick"] * args.quick,
        )
        measured.append((model_name, batch, strategy_name, child))
        print(
            f"measured {model_name} batch {batch} {child['precision']} {strategy_name}: "
            + ", ".join(f"{name} {rate:,.0f}" for name, rate in child["rates"].items())
            + " examples/s",
            flush=True,
        )
    results = _rows(measured, machine)
    if any(row["fraction_of_limit"] > 1 for row in results):
        # The limit was measured while the machine was busier (other jobs): once more, the best of both.
        print("A training rate beat the matmul limit measured first; measuring the limit again.", flush=True)
        machine = hardware.best_of(machine, _in_child("hardware.py", "--json"))
        results = _rows(measured, machine)
    print("\n".join(hardware.report(machine)))
    _print_table(results)

    accuracy = None if args.quick else accuracy_check()
    if accuracy:
        means = {precision: 100 * float(np.mean(values)) for precision, values in accuracy.items()}
        print(
            f"MNIST net test accuracy, seeds 0-2: float32 {means['none']:.2f}%, mixed_float16 "
            f"{means['mixed_float16']:.2f}% ({means['mixed_float16'] - means['none']:+.2f} points)"
        )

    output = args.output or os.path.join(RESULTS, ("gpu" if gpu else "cpu") + ".json")
    benchmarked.write_json(
        output,
        {
            **machine,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "torch": torch_version,
            "results": results,
            "mnist_accuracy_by_seed": accuracy,
        },
    )
    print(f"wrote {output}")
    plot(output)
    over = [r for r in results if r["fraction_of_limit"] > 1]
    if over:
        sys.exit(
            "measuring error: "
            + "; ".join(
                f"{r['model']} batch {r['batch']} {r['candidate']} at {r['fraction_of_limit']:.0%}"
                for r in over
            )
            + " of the measured limit, measured twice; the limit or the FLOP count is wrong"
        )


def _rows(measured, machine):
    """The results' rows: each candidate's rate as GFLOP/s, its share of the measured
    limit and its MFU (of the theoretical peak, or of the limit where that is above it)."""
    rows, flops_by_model = [], {}
    for model_name, batch, strategy_name, child in measured:
        if model_name not in flops_by_model:
            flops_by_model[model_name] = hardware.training_flops(benchmarked.build(model_name), (28, 28))
        flops, medians = flops_by_model[model_name], child["rates"]
        for name, rate in medians.items():
            precision = child["precision"] if name == "loop" else "float32"
            gflops = flops * rate / 1e9
            kind = "float32" if precision in ("float32", "float64") else "bfloat16"  # float16: as bfloat16.
            limit, bound = machine["matmul_limit_gflops"][kind], machine["mfu_bound_gflops"][kind]
            rows.append(
                dict(
                    model=model_name,
                    batch=batch,
                    precision=precision,
                    strategy=strategy_name,
                    candidate=name,
                    examples_per_second=round(rate, 1),
                    flops_per_example=flops,
                    gflops=round(gflops, 1),
                    fraction_of_limit=round(gflops / limit, 3),
                    mfu=round(gflops / bound, 3),
                    loop_over_this=round(medians["loop"] / rate, 2),
                )
            )
    return rows


def _print_table(rows):
    print(
        f"{'model':<12}{'batch':>6} {'precision':<15}{'strategy':<9}{'candidate':<10}"
        f"{'ex/s':>9}{'GFLOP/s':>9}{'of limit':>9}{'MFU':>6}{'loop/x':>8}"
    )
    for row in rows:
        print(
            f"{row['model']:<12}{row['batch']:>6} {row['precision']:<15}{row['strategy']:<9}"
            f"{row['candidate']:<10}{row['examples_per_second']:>9,.0f}{row['gflops']:>9.1f}"
            f"{row['fraction_of_limit']:>9.0%}{row['mfu']:>6.0%}{row['loop_over_this']:>7.2f}x"
        )


def plot(path):
    """Achieved GFLOP/s, one panel per model, bars grouped by batch (and precision or
    strategy) with one bar per candidate, and the measured limit and theoretical peak
    as lines; next to the JSON."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed; no plot")
        return
    with open(path) as f:
        run = json.load(f)
    colors = {"loop": "tab:blue", "fit": "tab:gray", "fit_tuned": "tab:orange", "torch": "tab:red"}
    model_names = list(dict.fromkeys(r["model"] for r in run["results"]))
    fig, axes = plt.subplots(1, len(model_names), figsize=(6.5 * len(model_names), 4.2), squeeze=False)
    limit = run["matmul_limit_gflops"]["float32"]
    peak = run["theoretical_peak_gflops"]["float32"]
    for ax, model_name in zip(axes[0], model_names):
        rows = [r for r in run["results"] if r["model"] == model_name]
        groups = list(dict.fromkeys(_group(r) for r in rows))
        width = 0.8 / len(colors)
        for offset, candidate in enumerate(colors):
            mine = [r for r in rows if r["candidate"] == candidate]
            ax.bar(
                [groups.index(_group(r)) + (offset - (len(colors) - 1) / 2) * width for r in mine],
                [r["gflops"] for r in mine],
                width,
                label=candidate,
                color=colors[candidate],
            )
        ax.axhline(limit, color="black", label=f"measured limit {limit:.0f}")
        if peak:
            ax.axhline(peak, color="black", linestyle="--", label=f"theoretical peak {peak:.0f}")
        ax.set_xticks(range(len(groups)), groups, fontsize=8)
        ax.set_ylabel("training GFLOP/s (float32 matmul limit: solid line)")
        ax.set_title({"mnist_dense": "MNIST net", "bigmodel": "BigModel"}.get(model_name, model_name))
    axes[0][0].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"Training throughput on {run['device']}", fontsize=10)
    fig.tight_layout()
    png = os.path.splitext(path)[0] + ".png"
    fig.savefig(png, dpi=120)
    print(f"wrote {png}")


def _group(row):
    """A bar group's label: the batch, and what differs from the float32 default."""
    extra = [row["precision"].replace("mixed_", "")] if row["precision"] != "float32" else []
    extra += [row["strategy"]] if row["strategy"] != "default" else []
    return "\n".join([f"batch {row['batch']}"] + extra)


if __name__ == "__main__":
    main()
