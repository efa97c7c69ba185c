r"""The GPT's speed beside nanoGPT's, in one run: training tokens/s, and generation
tokens/s with and without the key/value cache.

    python benchmarks/gpt.py            # about 5 minutes on 2 CPU cores
    python benchmarks/gpt.py --quick    # shorter rounds

Training, at nanoGPT's CPU configuration of shakespeare_char (4 layers, 4 heads,
128 wide, context 64, batch 12; AdamW with betas 0.9 and 0.99, weight decay 0.1,
global clipping 1.0):
  * recipe   the recipe's compiled step (the package's Trainer, XLA, as
             `python -m recipes.gpt` runs it) on the input engine's stream;
  * nanogpt  nanoGPT's model.py and training step, reimplemented faithfully in
             PyTorch (its `get_batch`, `configure_optimizers`, `clip_grad_norm_`),
             eager, float32; left out when PyTorch is not installed.
Both read the bundled text, and are timed in interleaved rounds (median of the
rounds; warm-up and compilation left out), each in its own process: TensorFlow and
PyTorch in one process crash (a segfault in libc, TF 2.21 with torch 2.14).

Generation: `generation.Generator` making 256 new tokens (greedy) with and without
the cache, at the CPU configuration (context 64) and at nanoGPT's shakespeare_char
GPU configuration (6 layers, 6 heads, 384 wide, context 256), where the context
the cache saves recomputing is long.

It writes benchmarks/results/gpt.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("RECIPES_OFFLINE", "1")

from recipes.core.cli import entry  # noqa: E402

entry.set_up_process()

import tensorflow as tf  # noqa: E402

import models  # noqa: E402
import strategies  # noqa: E402
from benchmarks.nanogpt import BATCH, CPU, timed  # noqa: E402 - no PyTorch at import.
from recipes import gpt  # noqa: E402
from recipes.core.input import data, samples
from recipes.core.nlp import generation, language
from recipes.core.training import config as config_lib  # noqa: E402
from recipes.core.training import optimization  # noqa: E402
from recipes.core.training.step import Objective, StepOptions, Trainer  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results", "gpt.json")
GPU = dict(num_layers=6, num_heads=6, hidden_size=384, max_length=256)


def _text(max_length):
    """The bundled text as the recipe reads it, and its vocabulary."""
    opened = data.open_data("sample:python_reference", text_window=max_length)
    vocabulary = language.Vocabulary.of_files([samples.reference_text_file()])
    return language.in_vocabulary(opened, vocabulary), vocabulary


def recipe_candidate(seconds):
    dataset, vocabulary = _text(CPU["max_length"])
    strategy = strategies.get_strategy("default")
    defaults = {k: v for k, v in gpt.RECIPE_DEFAULTS.items() if k not in ("train_steps",)}
    config = config_lib.TrainConfig(model_dir="unused", decay_steps=2000, **defaults)
    with strategy.scope():
        model = models.GPT(
            vocabulary.size,
            CPU["max_length"],
            **{k: CPU[k] for k in ("num_layers", "num_heads", "hidden_size")},
        )
        model.build((None, CPU["max_length"]))
        optimizer = optimization.make_optimizer(config)
    trainer = Trainer(
        strategy,
        model,
        optimizer,
        Objective(language.next_token_loss),
        global_batch_size=BATCH,
        options=StepOptions(jit_compile=config.jit_compile),
    )
    iterator = iter(data.train_dataset(strategy, dataset.train, BATCH, preprocess=lambda ids: ids, seed=0))

    def run(steps):
        for start in range(0, steps, 100):
            trainer.train_loop(iterator, tf.constant(min(100, steps - start)))
        trainer.train_results()

    run(20)  # Trace and compile.
    return timed(run, BATCH * CPU["max_length"], seconds)


def generation_speed(sizes, new_tokens=256, repeats=3):
    """{"cache": tokens/s, "no_cache": tokens/s} of greedy generation at `sizes`."""
    vocabulary = language.Vocabulary(tuple(range(32, 127)))
    model = models.GPT(
        vocabulary.size,
        sizes["max_length"],
        **{k: sizes[k] for k in ("num_layers", "num_heads", "hidden_size")},
    )
    model.build((None, None))
    rates = {}
    for name, kv_cache in (("cache", True), ("no_cache", False)):
        generator = generation.Generator(model, vocabulary, kv_cache=kv_cache)
        generator.generate("T", 8, generation.Sampling(temperature=0))  # Trace.
        times = []
        for _ in range(repeats):
            tick = time.perf_counter()
            generator.generate("T", new_tokens, generation.Sampling(temperature=0))
            times.append(time.perf_counter() - tick)
        rates[name] = new_tokens / statistics.median(times)
    return rates


def _torch_version():
    """PyTorch's version, asked of a fresh process (importing it here would crash
    TensorFlow), or None."""
    done = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True
    )
    return done.stdout.strip() or None


def serve(seconds):
    """A child process: builds the recipe's candidate, then answers each line on stdin
    with one measured rate (tokens/s) on stdout."""
    measure = recipe_candidate(seconds)
    print("ready", flush=True)
    for _ in sys.stdin:
        print(measure(), flush=True)


class Child:
    """A candidate in its own process, measured on request."""

    def __init__(self, command):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        self.process = subprocess.Popen(
            [sys.executable, *command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self._read()  # "ready"

    def _read(self):
        line = self.process.stdout.readline()
        if not line:
            sys.exit(f"a benchmark child failed (exit {self.process.wait()})")
        return line.strip()

    def measure(self):
        self.process.stdin.write("measure\n")
        self.process.stdin.flush()
        return float(self._read())

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="Shorter rounds.")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.seconds)
    seconds, rounds = (3, 2) if args.quick else (10, 5)
    torch_version = _torch_version()
    children = {"recipe": Child([os.path.abspath(__file__), "--serve", "--seconds", str(seconds)])}
    if torch_version:
        children["nanogpt"] = Child(
            [
                os.path.join(ROOT, "benchmarks", "nanogpt.py"),
                samples.reference_text_file(),
                "--seconds",
                str(seconds),
            ]
        )
    rates = {name: [] for name in children}
    for _ in range(rounds):  # Interleaved, so drift in the machine hits both.
        for name, child in children.items():
            rates[name].append(child.measure())
    for child in children.values():
        child.close()
    training = {name: statistics.median(r) for name, r in rates.items()}
    results = {
        "training_tokens_per_second": training,
        "training_ratio_recipe_to_nanogpt": (
            training["recipe"] / training["nanogpt"] if "nanogpt" in training else None
        ),
        "generation_tokens_per_second": {
            "cpu_config": generation_speed(CPU),
            "gpu_config": generation_speed(GPU),
        },
        "torch": torch_version,
        "tensorflow": tf.__version__,
        "cpu_count": os.cpu_count(),
        "rounds": rounds,
        "seconds_per_round": seconds,
    }
    for rate in results["generation_tokens_per_second"].values():
        rate["speedup"] = rate["cache"] / rate["no_cache"]
    print(
        f"Training tokens/s: recipe {training['recipe']:,.0f}"
        + (
            f", nanoGPT (PyTorch {torch_version}) {training['nanogpt']:,.0f}: "
            f"{results['training_ratio_recipe_to_nanogpt']:.2f}x"
            if torch_version
            else " (PyTorch not installed: no nanoGPT row)"
        )
    )
    for config_name, rate in results["generation_tokens_per_second"].items():
        print(
            f"Generation, {config_name}: {rate['cache']:,.0f} tokens/s with the cache, "
            f"{rate['no_cache']:,.0f} without: {rate['speedup']:.1f}x"
        )
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
