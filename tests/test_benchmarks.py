"""The benchmarks' denominators: FLOPs counted from the model, the CPU's theoretical
peak from its facts, and a matmul limit taken over every kernel; and that the GPU probe
and the step bound count the same FLOPs as the suite (no timing asserted)."""
import os

import keras
import pytest

import models
from benchmarks import benchmarked, hardware


def test_training_flops_are_counted_from_the_layers_without_the_input_gradient():
    forward = 2 * (784 * 1024 + 1024 * 1024 + 1024 * 10)
    first_input_gradient = 2 * 784 * 1024
    assert hardware.training_flops(models.mnist_dense(), (28, 28)) == 3 * forward - first_input_gradient
    assert hardware.training_flops(models.mnist_dense(), (28, 28)) == 9_564_160  # 6 x params: 11,182,140
    big = models.BigModel(num_classes=10)
    big.build((None, 28, 28))
    widths = [784, 256, 128, 64, 32, 16, 8, 10]
    forward = 2 * sum(a * b for a, b in zip(widths, widths[1:]))
    assert hardware.training_flops(big, (28, 28)) == 3 * forward - 2 * 784 * 256


@pytest.mark.parametrize("flags, model, peak, how", [
    ("fpu avx2 fma avx512f", "Intel(R) Xeon(R) Processor @ 2.50GHz", 320.0, "16 float32 lanes (AVX-512)"),
    ("fpu avx2 fma", "AMD EPYC 7B12", 2 * 2.25 * 8 * 2 * 2, "the current clock (cpu MHz)"),
])
def test_the_theoretical_peak_comes_from_cores_lanes_fma_and_clock(monkeypatch, flags, model, peak, how):
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: {"flags": flags, "model name": model, "cpu MHz": "2250.000"})
    monkeypatch.setattr(hardware.os, "cpu_count", lambda: 2)
    float32, bfloat16, explanation = hardware.cpu_peak()
    assert float32 == pytest.approx(peak) and bfloat16 == float32
    assert how in explanation and "assumed" in explanation


def test_the_limit_is_the_best_kernel_at_the_best_size():
    best, rates = hardware.matmul_limit("float32", sizes=(64, 128), seconds=0.01)
    assert {"xla", "tensorflow", "numpy"} <= set(rates)
    assert all(set(by_size) == {64, 128} and min(by_size.values()) > 0 for by_size in rates.values())
    assert best == max(rate for by_size in rates.values() for rate in by_size.values())
    keras.backend.clear_session()


def test_a_gpu_peak_is_looked_up_by_its_model_name():
    assert hardware.gpu_peak("Tesla T4")[:2] == (8100.0, 65000)
    assert hardware.gpu_peak("NVIDIA A100-SXM4-80GB")[:2] == (19500.0, 312000)
    assert hardware.gpu_peak("NVIDIA L40S")[:2] == (None, None)  # Not the L4's.


def test_the_gpu_probe_counts_the_same_flops():
    from benchmarks import keras_on_gpu

    counted = {name: hardware.training_flops(benchmarked.build(name), (28, 28))
               for name in benchmarked.MODELS}
    assert keras_on_gpu.FLOPS_PER_EXAMPLE == counted
    assert os.environ.get("KERAS_BACKEND") != "jax"  # Importing it changes nothing here.


def test_the_step_bound_times_every_large_matmul_of_the_step():
    from benchmarks import step_bound

    batch = 32
    timed = sum(step_bound.dot_flops(a, b, transpose_b)
                for a, b, _, transpose_b in step_bound.dots(batch).values())
    last_layer = 3 * 2 * 1024 * 10  # Forward, weight and input gradients of the 10-wide layer, left out.
    assert timed + last_layer * batch == hardware.training_flops(models.mnist_dense(), (28, 28)) * batch
