"""What compression costs and saves: Keras' own quantization, and one measured
row per compressed variant (bytes, gzip bytes, accuracy, agreement with the
float model, latency at batch 1, kernel sparsity), as a table and a plot.

    rows = [compression.measure(name, served, x_test, y_test, float_classes, sparsity), ...]
    print(compression.table(rows))
"""

import gzip
import io
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

# Keras' weight quantization: per-channel int8, or int4 packed two to a byte.
# ("float8" is for FP8 training and shrinks nothing; "gptq" needs a tokenizer
# and its models do not reload.)
KERAS_MODES = ("int8", "int4")


def quantize(model_path, mode):
    """A fresh copy of the Keras model in `model_path`, its kernels quantized to `mode`."""
    model = keras.saving.load_model(model_path)
    with warnings.catch_warnings():  # One per layer with no weights to quantize (Flatten, ...).
        warnings.filterwarnings("ignore", "Layer .* does not have a `quantize` method")
        model.quantize(mode)
    return model


def size_on_disk(path):
    """(bytes, gzip bytes) of a file, or of all the files of a directory."""
    files = (
        [path]
        if not tf.io.gfile.isdir(path)
        else [os.path.join(d, name) for d, _, names in tf.io.gfile.walk(path) for name in names]
    )
    contents = []
    for name in files:
        with tf.io.gfile.GFile(name, "rb") as f:
            contents.append(f.read())
    return sum(map(len, contents)), sum(len(gzip.compress(c, compresslevel=9)) for c in contents)


def measure(name, served, x_test, y_test, reference_classes, sparsity):
    """The row of one variant: `served` (a `serving.Served`) scored on the test
    split against `y_test` and against the float model's `reference_classes`."""
    classes = served.predict(x_test)["classes"]
    size, gzipped = size_on_disk(served.path)
    return {
        "variant": name,
        "path": served.path,
        "bytes": size,
        "gzip_bytes": gzipped,
        "accuracy": float(np.mean(classes == np.ravel(y_test).astype(np.int64))),
        "agreement": float(np.mean(classes == reference_classes)),
        "latency_ms": served.latency_ms(x_test),
        "runtime": served.runtime,
        "kernel_sparsity": sparsity,
    }


def table(rows):
    """The rows as a fixed-width text table, sizes relative to the first row."""
    base = rows[0]
    lines = [
        f"{'variant':<22}{'bytes':>12}{'(%)':>6}{'gzip':>12}{'(%)':>6}{'accuracy':>10}"
        f"{'agree':>8}{'ms/ex':>8}{'zeros':>7}  runtime"
    ]
    for row in rows:
        lines.append(
            f"{row['variant']:<22}{row['bytes']:>12,}{100 * row['bytes'] / base['bytes']:>6.0f}"
            f"{row['gzip_bytes']:>12,}{100 * row['gzip_bytes'] / base['gzip_bytes']:>6.0f}"
            f"{row['accuracy']:>10.2%}{row['agreement']:>8.1%}{row['latency_ms']:>8.3f}"
            f"{row['kernel_sparsity']:>7.0%}  {row['runtime']}"
        )
    return "\n".join(lines)


def figure_png(rows, title):
    """Accuracy against gzip bytes (what a download costs), one point per variant, as PNG bytes."""
    from matplotlib.figure import Figure  # No pyplot: no process-wide backend.

    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.add_subplot()
    for index, row in enumerate(rows):
        axes.scatter(row["gzip_bytes"] / 1e6, 100 * row["accuracy"], color=f"C{index % 10}")
        axes.annotate(
            row["variant"],
            (row["gzip_bytes"] / 1e6, 100 * row["accuracy"]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize="small",
        )
    axes.set(xscale="log", xlabel="gzip size (MB, log scale)", ylabel="test accuracy (%)", title=title)
    axes.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
