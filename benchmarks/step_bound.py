r"""How fast one MNIST-net training step could be here: its costly operations, each
timed with every kernel at hand, and the sum of the best.

    python benchmarks/step_bound.py [--batch_size 32]     # about a minute on 2 CPU cores

The step's five large matmuls (forward through the two 1024-wide layers; the weight
gradients of both; the input gradient of the second; the 10-wide layer's are
negligible) are timed under XLA, TensorFlow's own op (oneDNN), NumPy and PyTorch
(when installed); Adam's update of the 1.86M parameters under XLA, as the loop
compiles it, and as TensorFlow's fused `ResourceApplyAdam` kernel. Each is the median
of interleaved rounds, repeated in a compiled loop so that no Python call is timed.
The sum of each operation's best kernel is a floor for the step that no single
library reaches: a step that picked the best kernel for every operation, with
nothing else in it.
"""

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from recipes.core.cli import entry  # noqa: E402

if __name__ == "__main__":  # A recipe's process set-up, before TensorFlow starts; not when a test imports it.
    entry.set_up_process()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import benchmarked, hardware  # noqa: E402


def dots(batch):
    """{name: (a's shape, b's shape, transpose_a, transpose_b)} of the step's large matmuls."""
    return {
        "forward 784x1024": ((batch, 784), (784, 1024), False, False),
        "forward 1024x1024": ((batch, 1024), (1024, 1024), False, False),
        "weight grad 1024x1024": ((batch, 1024), (batch, 1024), True, False),
        "input grad 1024x1024": ((batch, 1024), (1024, 1024), False, True),
        "weight grad 784x1024": ((batch, 784), (batch, 1024), True, False),
    }


def dot_flops(shape_a, shape_b, transpose_b):
    return 2 * int(np.prod(shape_a)) * shape_b[0 if transpose_b else 1]


def _repeated(op, jit_compile=False):
    """`run(n)`: `op()` n times in one compiled loop, each depending on the last."""

    @tf.function(jit_compile=jit_compile)
    def run(n):
        total = tf.zeros(())
        for _ in tf.range(n):
            total += op(total * 0.0)
        return total

    return lambda n: run(tf.constant(n)).numpy()


def matmul_kernels(a, b, transpose_a, transpose_b):
    """{kernel: run(n)} for one matmul."""
    ta, tb = tf.constant(a), tf.constant(b)

    def op(zero):
        return tf.matmul(ta + zero, tb, transpose_a=transpose_a, transpose_b=transpose_b)[0, 0]

    a, b = (a.T if transpose_a else a), (b.T if transpose_b else b)
    kernels = {
        "xla": _repeated(op, jit_compile=True),
        "tensorflow": _repeated(op),
        "numpy": lambda n: [a @ b for _ in range(n)],
    }
    torch = hardware._torch()
    if torch is not None:
        pa, pb = torch.from_numpy(np.ascontiguousarray(a)), torch.from_numpy(np.ascontiguousarray(b))
        kernels["torch"] = lambda n: [torch.mm(pa, pb) for _ in range(n)]
    return kernels


def adam_kernels():
    """{kernel: run(n)} for one Adam update of the MNIST net's parameters: Keras'
    Adam compiled by XLA, as the loop runs it, and TensorFlow's fused kernel on the
    same variables and slots."""
    params = benchmarked.build("mnist_dense").trainable_variables
    optimizer = keras.optimizers.Adam()
    optimizer.build(params)
    gradients = [tf.random.normal(p.shape) * 1e-3 for p in params]
    lr, beta_1, beta_2, epsilon = (tf.constant(c) for c in (1e-3, 0.9, 0.999, 1e-7))

    def xla(zero):
        optimizer.apply(gradients, params)
        return zero

    def fused(zero):
        for p, m, v, g in zip(params, optimizer._momentums, optimizer._velocities, gradients):
            tf.raw_ops.ResourceApplyAdam(
                var=p.value.handle,
                m=m.value.handle,
                v=v.value.handle,
                beta1_power=beta_1,
                beta2_power=beta_2,
                lr=lr,
                beta1=beta_1,
                beta2=beta_2,
                epsilon=epsilon,
                grad=g,
            )
        return zero

    return {"xla": _repeated(tf.function(xla, jit_compile=True)), "tensorflow": _repeated(fused)}


def median_ms(kernels, repeats, rounds):
    """{kernel: median milliseconds per call} over interleaved rounds."""
    times = {name: [] for name in kernels}
    for run in kernels.values():
        run(3)  # Trace, compile, warm up.
    for _ in range(rounds):
        for name, run in kernels.items():
            tick = time.perf_counter()
            run(repeats)
            times[name].append((time.perf_counter() - tick) / repeats * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=benchmarked.positive(int), default=32)
    parser.add_argument("--rounds", type=benchmarked.positive(int), default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for name, (shape_a, shape_b, transpose_a, transpose_b) in dots(args.batch_size).items():
        a, b = (rng.standard_normal(s, np.float32) for s in (shape_a, shape_b))
        flops = dot_flops(shape_a, shape_b, transpose_b)
        ms = median_ms(matmul_kernels(a, b, transpose_a, transpose_b), 200, args.rounds)
        rows.append((f"{name} ({flops / 1e6:.0f} MFLOP)", ms, {k: flops / t / 1e6 for k, t in ms.items()}))
    rows.append(("Adam, 1.86M parameters", median_ms(adam_kernels(), 100, args.rounds), None))
    print(f"batch {args.batch_size}, ms per call (GFLOP/s), median of {args.rounds} rounds")
    floor = 0.0
    for name, ms, gflops in rows:
        best = min(ms, key=ms.get)
        floor += ms[best]
        cells = "  ".join(f"{k} {t:.2f}" + (f" ({gflops[k]:.0f})" if gflops else "") for k, t in ms.items())
        print(f"{name:<36} {cells}  -> best {best}")
    print(f"sum of the best kernels: {floor:.2f} ms a step")


if __name__ == "__main__":
    main()
