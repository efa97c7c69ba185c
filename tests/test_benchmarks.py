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


CLOCKS = [  # flags, model name, cpufreq's maximum, the peak, how it says it was worked out.
    (
        "fpu avx2 fma avx512f",
        "Intel(R) Xeon(R) Processor @ 2.50GHz",
        None,
        320.0,
        "16 float32 lanes (AVX-512)",
    ),
    ("fpu avx2 fma", "AMD EPYC 7B12", None, 2 * 2.25 * 8 * 2 * 2, "the highest current clock of any core"),
    # The highest clock reported wins: cpufreq's maximum over a VM's nominal clock.
    ("fpu avx2 fma", "AMD EPYC 7B12 @ 2.00GHz", 3.3, 2 * 3.3 * 8 * 2 * 2, "cpuinfo_max_freq"),
    ("fpu avx2 fma", "AMD EPYC 7B12 @ 2.00GHz", None, 2 * 2.25 * 8 * 2 * 2, "(cpu MHz)"),
]


@pytest.mark.parametrize("flags, model, max_ghz, peak, how", CLOCKS)
def test_the_theoretical_peak_comes_from_cores_lanes_fma_and_the_highest_clock(
    monkeypatch, flags, model, max_ghz, peak, how
):
    info = {"flags": flags, "model name": model, "cpu MHz": "2250.000"}
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: info)
    monkeypatch.setattr(hardware, "_cpufreq_max_ghz", lambda: max_ghz)
    monkeypatch.setattr(hardware.os, "cpu_count", lambda: 2)
    float32, bfloat16, explanation = hardware.cpu_peak()
    assert float32 == pytest.approx(peak) and bfloat16 == float32
    assert how in explanation and "assumed" in explanation


def test_a_peak_below_the_measured_limit_is_unknown_and_mfu_is_against_the_limit():
    """A 2-core EPYC VM reported 2.6 GHz: a worked-out peak of 166 GFLOP/s against a
    measured limit of 237, which made a training loop's MFU 104%."""
    assert hardware.peak_and_bound(100.0, 332.8) == (332.8, 332.8, "")
    peak, bound, note = hardware.peak_and_bound(237.0, 166.4)
    assert (peak, bound) == (None, 237.0)
    machine = {
        "matmul_limit_gflops": {"float32": 237.0},
        "matmul_gflops": {"float32": {"numpy": {1024: 237.0}}},
        "theoretical_peak_gflops": {"float32": peak},
        "peak_notes": {"float32": note},
        "theoretical_peak_how": "2 cores x 2.60 GHz x ...",
    }
    line = hardware.report(machine)[0]
    assert "theoretical peak unknown: the one worked out (166 GFLOP/s) is below the measured limit" in line
    assert "MFU is taken against the measured limit" in line and "%" not in line


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

    counted = {
        name: hardware.training_flops(benchmarked.build(name), (28, 28)) for name in benchmarked.MODELS
    }
    assert keras_on_gpu.FLOPS_PER_EXAMPLE == counted
    assert os.environ.get("KERAS_BACKEND") != "jax"  # Importing it changes nothing here.


def test_the_step_bound_times_every_large_matmul_of_the_step():
    from benchmarks import step_bound

    batch = 32
    timed = sum(
        step_bound.dot_flops(a, b, transpose_b) for a, b, _, transpose_b in step_bound.dots(batch).values()
    )
    last_layer = 3 * 2 * 1024 * 10  # Forward, weight and input gradients of the 10-wide layer, left out.
    assert timed + last_layer * batch == hardware.training_flops(models.mnist_dense(), (28, 28)) * batch


def test_two_measurements_of_the_machine_keep_the_best_limit_and_work_the_bound_out_again():
    def measured(limit):
        peak, bound, note = hardware.peak_and_bound(limit, 166.4)
        return {
            "matmul_limit_gflops": {"float32": limit},
            "matmul_gflops": {"float32": {"numpy": {"1024": limit}}},
            "theoretical_peak_gflops": {"float32": peak},
            "mfu_bound_gflops": {"float32": bound},
            "peak_notes": {"float32": note},
            "worked_out_peak_gflops": {"float32": 166.4},
        }

    busy, quiet = measured(105.0), measured(237.0)
    for first, second in ((busy, quiet), (quiet, busy)):
        best = hardware.best_of(first, second)
        assert best["matmul_limit_gflops"]["float32"] == best["mfu_bound_gflops"]["float32"] == 237.0
        assert best["theoretical_peak_gflops"]["float32"] is None
        assert "unknown" in best["peak_notes"]["float32"]
    assert busy["theoretical_peak_gflops"]["float32"] == 166.4  # Unchanged.
