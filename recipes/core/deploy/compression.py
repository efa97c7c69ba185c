"""What compression costs and saves: Keras' own quantization, and one measured
row per compressed variant (bytes, gzip bytes, accuracy, agreement with the
float model, latency at batch 1, kernel sparsity), as a table and a plot.

    rows = [compression.measure(name, served, x_test, y_test, float_classes, sparsity), ...]
    print(compression.table(rows))

Every variant is made from a float32 copy of the run's model (`float32_copy`): Keras'
int8 quantization refuses float16 layers, and the LiteRT converter has no float16,
bfloat16 or float64 kernels for most ops, so a run trained in `mixed_float16`,
`mixed_bfloat16` or `float64` is compressed from its weights cast to float32.
"""

import gzip
import hashlib
import io
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from models import _keras_compat

# Keras' weight quantization: per-channel int8, or int4 packed two to a byte.
# ("float8" is for FP8 training and shrinks nothing; "gptq" needs a tokenizer
# and its models do not reload.)
KERAS_MODES = ("int8", "int4")
# The dtypes and policies a float32 copy replaces (integer inputs stay as they are).
OTHER_FLOATS = ("float16", "bfloat16", "float64", "mixed_float16", "mixed_bfloat16")


def _float32_config(value, unroll):
    """A Keras config (nested dicts and lists) with every float dtype or dtype policy
    float32, and with `unroll=True` for recurrent layers when `unroll`."""
    if isinstance(value, list):
        return [_float32_config(item, unroll) for item in value]
    if not isinstance(value, dict):
        return value
    config = {key: _float32_config(item, unroll) for key, item in value.items()}
    dtype = config.get("dtype")
    if isinstance(dtype, str) and dtype in OTHER_FLOATS:
        config["dtype"] = "float32"
    elif isinstance(dtype, dict) and dtype.get("config", {}).get("name") in OTHER_FLOATS:
        config["dtype"] = {**dtype, "config": {**dtype["config"], "name": "float32"}}
    if unroll and config.get("unroll") is False:
        config["unroll"] = True
    return config


def float32_copy(model, input_shape, unroll=False):
    """`model` rebuilt from its config under a float32 policy, with its weights cast to
    float32 (`model` itself where it is float32 already and nothing changes).

    `unroll`: recurrent layers (LSTM, GRU) unrolled over their fixed number of steps,
    the same computation: the LiteRT converter lowers a rolled loop to tensor lists,
    which its built-in kernels lack. `input_shape`: one example's, as the model takes
    it (a subclassed model is built by calling it once)."""
    config = keras.saving.serialize_keras_object(model)
    copied = _float32_config(config, unroll)
    layers = [model, *_keras_compat.all_layers(model)]
    if copied == config and all(layer.dtype_policy.name == "float32" for layer in layers):
        return model
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")  # A subclassed model's layers take it.
    try:
        copy = keras.saving.deserialize_keras_object(copied)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    if not copy.built:
        copy(tf.zeros([1, *input_shape]), training=False)
    copy.set_weights(
        [
            weight.astype(np.float32) if np.issubdtype(weight.dtype, np.floating) else weight
            for weight in (np.asarray(w) for w in model.get_weights())
        ]
    )
    return copy


def weights_fingerprint(model):
    """The SHA-256 of `model`'s weights (values, shapes and dtypes, in order): what a
    derived result records of the model it came from."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        weight = np.ascontiguousarray(weight)
        digest.update(f"{weight.dtype.name}{weight.shape}".encode())
        digest.update(weight.tobytes())
    return digest.hexdigest()


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
    """The rows as a fixed-width text table, sizes relative to the first row; a
    skipped variant's row (`{"variant": ..., "skipped": why}`) says why."""
    base = rows[0]
    lines = [
        f"{'variant':<22}{'bytes':>12}{'(%)':>6}{'gzip':>12}{'(%)':>6}{'accuracy':>10}"
        f"{'agree':>8}{'ms/ex':>8}{'zeros':>7}  runtime"
    ]
    for row in rows:
        if "skipped" in row:  # A variant that cannot be made from this model.
            lines.append(f"{row['variant']:<22}skipped: {row['skipped']}")
            continue
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
        if "skipped" in row:
            continue
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
