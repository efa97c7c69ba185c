r"""What this machine can compute: the measured matmul limit and the theoretical peak.

    python benchmarks/hardware.py          # about a minute on 2 CPU cores; --json for JSON

The limit is the best rate of a large square matmul over several kernels (XLA,
TensorFlow's own ops, which run oneDNN on a CPU, NumPy's BLAS, and PyTorch's when it
is installed), several sizes, and repeated calls, each kernel and size timed for
at least a second after a warm-up, so that the clock has settled. No one kernel is
the fastest at every size here, and each moves by up to 20% between runs, so a
limit from one kernel at one size can fall below what a training loop reaches.

The theoretical peak is worked out from the CPU's facts in /proc/cpuinfo (cores,
SIMD width, FMA) at the highest clock the CPU reports, and says what it had to
assume; on a GPU, from a table of datasheet figures. A peak worked out below the
measured limit is wrong (a VM's nominal clock, say, or vCPUs that are not what they
seem): it is then reported as unknown, and MFU is taken against the measured limit.
"""

import glob
import json
import os
import re
import sys
import time

import numpy as np

SIZES = (1024, 2048, 4096)
# Dense (not sparse) tensor-core peaks from NVIDIA's datasheets, in TFLOP/s:
# (float32 without TF32, bfloat16 or float16).
GPU_PEAKS = {
    "H100": (67, 989),
    "H200": (67, 989),
    "A100": (19.5, 312),
    "L4": (30, 121),
    "A10": (31, 125),
    "V100": (15.7, 125),
    "T4": (8.1, 65),
}


def _best_rate(call, flops, seconds):
    """`call()`'s best rate in GFLOP/s over calls made for at least `seconds` (and
    twice at least), after one warm-up call; each timing spans whole calls, so the
    rate is never 0, whatever the load."""
    call()
    best, start = 0.0, time.perf_counter()
    calls = 0
    while calls < 2 or time.perf_counter() - start < seconds:
        tick = time.perf_counter()
        call()
        best = max(best, flops / max(time.perf_counter() - tick, 1e-9) / 1e9)
        calls += 1
    return best


def _rounded(rate):
    """A rate to 4 significant figures: a small matmul under load can run below 0.05
    GFLOP/s, which a fixed one decimal rounds to 0."""
    return float(f"{rate:.4g}")


def _kernels(dtype):
    """{name: make(size) -> call} for the kernels that compute `dtype` here."""
    import tensorflow as tf  # Here, so that keras_on_gpu.py can import this module without it.

    tf_dtype = tf.as_dtype(dtype)

    def tf_operands(size):
        a = tf.cast(tf.random.normal((size, size)) / size**0.5, tf_dtype)
        return a, tf.cast(tf.random.normal((size, size)), tf_dtype)

    def xla(size):
        a, b = tf_operands(size)
        matmul = tf.function(tf.matmul, jit_compile=True)
        return lambda: matmul(a, b).numpy()

    def tensorflow(size):
        a, b = tf_operands(size)
        return lambda: tf.matmul(a, b).numpy()

    kernels = {"xla": xla, "tensorflow": tensorflow}
    if dtype == "float32" and not tf.config.list_physical_devices("GPU"):

        def numpy(size):
            a, b = (np.random.default_rng(0).standard_normal((size, size), np.float32) for _ in "ab")
            return lambda: a @ b

        kernels["numpy"] = numpy
    torch = _torch()
    if torch is not None:

        def pytorch(size):
            device = "cuda" if torch.cuda.is_available() else "cpu"
            a, b = (torch.randn(size, size, device=device, dtype=getattr(torch, dtype)) for _ in "ab")
            sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
            return lambda: (a @ b, sync())

        kernels["torch"] = pytorch
    return kernels


def _torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count())
    return torch


def matmul_limit(dtype="float32", sizes=SIZES, seconds=1.0):
    """The best rate of a square `dtype` matmul here, in GFLOP/s, and every
    kernel's best at every size: `(best, {kernel: {size: GFLOP/s}})`."""
    rates = {}
    for name, make in _kernels(dtype).items():
        rates[name] = {size: _rounded(_best_rate(make(size), 2 * size**3, seconds)) for size in sizes}
    best = max(rate for by_size in rates.values() for rate in by_size.values())
    return best, rates


def _cpuinfo():
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return {}
    first = text.split("\n\n")[0]  # The first core's block.
    info = {
        key.strip(): value.strip()
        for key, value in (line.split(":", 1) for line in first.splitlines() if ":" in line)
    }
    clocks = [float(mhz) for mhz in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", text, re.MULTILINE)]
    if clocks:  # The highest of any core's.
        info["cpu MHz"] = str(max(clocks))
    return info


def _cpufreq_max_ghz():
    """The highest maximum clock cpufreq reports for any core (cpuinfo_max_freq), in GHz;
    None where the kernel has no cpufreq (many VMs)."""
    clocks = []
    for path in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/cpuinfo_max_freq"):
        try:
            with open(path) as f:
                clocks.append(int(f.read().strip()) / 1e6)  # kHz.
        except (OSError, ValueError):
            continue
    return max(clocks) if clocks else None


def _clock(info):
    """The highest clock the CPU reports, in GHz, and where it was read: cpufreq's
    maximum, the highest current clock of any core (cpu MHz), or the model name's."""
    ghz = re.search(r"@\s*([\d.]+)\s*GHz", info.get("model name", ""))
    clocks = {
        "the maximum clock cpufreq reports (cpuinfo_max_freq)": _cpufreq_max_ghz(),
        "the highest current clock of any core (cpu MHz)": float(info.get("cpu MHz", 0)) / 1000 or None,
        "the clock in the model name": float(ghz.group(1)) if ghz else None,
    }
    source = max((name for name, clock in clocks.items() if clock), key=clocks.get, default=None)
    return (clocks[source], source) if source else (0.0, "no clock reported")


def cpu_peak():
    """The CPU's theoretical float32 and bfloat16 peaks in GFLOP/s, and how they were
    worked out: `(float32, bfloat16, explanation)`. None when /proc/cpuinfo is missing."""
    info = _cpuinfo()
    if not info:
        return None, None, "no /proc/cpuinfo to work it out from"
    flags = set(info.get("flags", "").split())
    cores = os.cpu_count()
    if "avx512f" in flags:
        lanes, isa = 16, "AVX-512"
    elif "avx2" in flags or "avx" in flags:
        lanes, isa = 8, "AVX2" if "avx2" in flags else "AVX"
    else:
        lanes, isa = 4, "SSE"
    fma_units = 2 if "fma" in flags else 1
    clock, clock_source = _clock(info)
    per_fma = 2 if "fma" in flags else 1
    float32 = cores * clock * lanes * fma_units * per_fma
    # AVX512_BF16's dot product does two bfloat16 multiply-adds per float32 lane;
    # without it bfloat16 is converted to float32 and runs at float32's rate.
    bfloat16 = float32 * (2 if "avx512_bf16" in flags else 1)
    explanation = (
        f"{cores} cores x {clock:.2f} GHz x {lanes} float32 lanes ({isa}) x "
        f"{fma_units} FMA units x {per_fma} FLOPs per FMA; assumed: {fma_units} FMA "
        f"units per core and {clock_source}"
        + ("" if "cpufreq" in clock_source else ", turbo unknown")
        + (
            "; bfloat16 x2 (AVX512_BF16)"
            if "avx512_bf16" in flags
            else "; bfloat16 at float32's rate (no AVX512_BF16)"
        )
    )
    if "amx_bf16" in flags:
        explanation += "; AMX tiles not counted"
    return round(float32, 1), round(bfloat16, 1), explanation


def peak_and_bound(limit, peak):
    """`(theoretical, bound, note)` for a measured `limit` and a worked-out `peak`
    (GFLOP/s): a peak below the limit is wrong, so the theoretical peak is unknown
    (None), and the bound MFU is taken against is the limit; the note says so."""
    if peak and peak >= limit:
        return peak, peak, ""
    if not peak:
        return None, limit, "unknown; MFU is taken against the measured limit"
    return (
        None,
        limit,
        (
            f"unknown: the one worked out ({peak:.0f} GFLOP/s) is below the measured limit, "
            "so the clock or the cores this machine reports understate it (a VM's nominal "
            "clock, say); MFU is taken against the measured limit"
        ),
    )


def gpu_peak(name):
    """A GPU's datasheet float32 and bfloat16 peaks in GFLOP/s, by its name."""
    for key, (float32, half) in GPU_PEAKS.items():
        if re.search(rf"\b{key}\b", name.upper()):  # "L4" is not the "L40S".
            return float32 * 1000, half * 1000, f"NVIDIA's datasheet for the {key} (dense)"
    return None, None, f"no datasheet figures for {name}"


def training_flops(model, input_shape):
    """Matmul FLOPs of one training example, counted from the model's layers
    (`strategies.model_parallel.layer_costs`): the forward pass, the weight gradients
    (as many again), and the input gradients (as many again) of every layer but the
    first, since no framework computes the gradient with respect to the input."""
    from strategies import model_parallel

    costs = model_parallel.layer_costs(model_parallel.layer_stack(model), input_shape)
    return 3 * sum(costs) - next(cost for cost in costs if cost)


def device_name():
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    model = _cpuinfo().get("model name", "CPU")
    return f"{model} ({os.cpu_count()} cores)"


def describe(seconds=1.0):
    """The limit, the peak and every measured rate, as a dict."""
    import tensorflow as tf

    name = device_name()
    float32_peak, bfloat16_peak, how = (
        gpu_peak(name) if tf.config.list_physical_devices("GPU") else cpu_peak()
    )
    limit, rates, peak, bound, notes = {}, {}, {}, {}, {}
    for dtype, worked_out in (("float32", float32_peak), ("bfloat16", bfloat16_peak)):
        limit[dtype], rates[dtype] = matmul_limit(dtype, seconds=seconds)
        peak[dtype], bound[dtype], notes[dtype] = peak_and_bound(limit[dtype], worked_out)
    return {
        "device": name,
        "matmul_limit_gflops": limit,
        "matmul_gflops": rates,
        "theoretical_peak_gflops": peak,
        "mfu_bound_gflops": bound,
        "peak_notes": notes,
        "worked_out_peak_gflops": {"float32": float32_peak, "bfloat16": bfloat16_peak},
        "theoretical_peak_how": how,
    }


def best_of(first, second):
    """Two measurements of this machine (`describe`'s) as one: for each dtype, the limit
    and rates of the one that measured more, and the peak and bound worked out again."""
    merged = json.loads(json.dumps(first))
    for dtype, limit in first["matmul_limit_gflops"].items():
        better = second if second["matmul_limit_gflops"][dtype] > limit else first
        merged["matmul_limit_gflops"][dtype] = better["matmul_limit_gflops"][dtype]
        merged["matmul_gflops"][dtype] = better["matmul_gflops"][dtype]
        peak, bound, note = peak_and_bound(
            better["matmul_limit_gflops"][dtype], first["worked_out_peak_gflops"][dtype]
        )
        merged["theoretical_peak_gflops"][dtype], merged["mfu_bound_gflops"][dtype] = peak, bound
        merged["peak_notes"][dtype] = note
    return merged


def report(hardware):
    """Lines that print the limit beside the theoretical peak."""
    lines = []
    for dtype, limit in hardware["matmul_limit_gflops"].items():
        by = ", ".join(
            f"{kernel} " + "/".join(f"{rate:.0f}" for rate in by_size.values())
            for kernel, by_size in hardware["matmul_gflops"][dtype].items()
        )
        peak = hardware["theoretical_peak_gflops"][dtype]
        note = hardware.get("peak_notes", {}).get(dtype) or "unknown"
        lines.append(
            f"{dtype} matmul limit {limit:.0f} GFLOP/s (best of {by} at sizes "
            f"{'/'.join(map(str, SIZES))}); theoretical peak "
            + (f"{peak:.0f} GFLOP/s ({limit / peak:.0%} of it measured)" if peak else note)
        )
    lines.append(f"theoretical peak worked out as: {hardware['theoretical_peak_how']}")
    return lines


if __name__ == "__main__":
    result = describe()
    if "--json" in sys.argv:  # For benchmarks/throughput.py, which runs it in a fresh process.
        print(json.dumps(result))
    else:
        print("\n".join(report(result)))
