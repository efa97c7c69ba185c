"""Deployment: a model exported on the raw input a recipe reads, LiteRT
(TFLite) files converted from it, and one way to run any of a run's artifacts.

    signature = serving.Signature.for_data(dataset.x_train, data.scale_pixels)
    serving.export_saved_model(model, "runs/mnist/saved_model", signature)
    tflite = serving.to_litert("runs/mnist/saved_model", "int8", representative=x_train)
    served = serving.load("runs/mnist/compressed/int8.tflite")
    served(images)   # {"probabilities": [N, 10], "classes": [N]}

The exported SavedModel's `serving_default` takes what the recipe reads before
preprocessing (uint8 pixels [N, 28, 28] for MNIST) with the preprocessing
inside, so a server or a phone sends the raw input; `model.keras` stays the
plain Keras model on preprocessed input.
"""

import contextlib
import dataclasses
import os
import subprocess
import sys
import time
import warnings
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from recipes.core.errors import RecipeError, first_line

OUTPUTS = ("classes", "predictions", "next_token")
INPUT_NAME = "inputs"
# The LiteRT variants `to_litert` converts, smallest change first.
LITERT_VARIANTS = ("float32", "dynamic_range", "float16", "int8", "pruned_int8")
# Representative examples the int8 converter calibrates its activation ranges on.
CALIBRATION_EXAMPLES = 200


@dataclasses.dataclass(frozen=True)
class Signature:
    """What an exported model takes and returns.

    Args:
      input_shape: one raw example's shape, as the recipe reads it (no batch).
      input_dtype: its dtype name (`uint8` for pixels).
      preprocess: raw batch -> the model's input (inside the exported model).
      outputs: `classes`: `probabilities` [N, classes] and `classes` [N] (int32);
        a one-unit sigmoid head gives the probabilities [1 - p, p]. `predictions`:
        the model's output as it is. `next_token`: a language model's
        `probabilities` of the token after each sequence [N, vocabulary].
      endpoints: more signatures of the SavedModel: {name: (model -> function,
        its input signature)} (a language model's `generate`).
    """

    input_shape: tuple
    input_dtype: str
    preprocess: object
    outputs: str = "classes"
    endpoints: Optional[dict] = None

    def __post_init__(self):
        if self.outputs not in OUTPUTS:
            raise ValueError(f"`outputs` must be one of {OUTPUTS}. Received: {self.outputs!r}")

    @classmethod
    def for_data(cls, x, preprocess, outputs="classes"):
        """The signature of a model fed `preprocess(x[i:j])` for a raw array `x`."""
        return cls(tuple(x.shape[1:]), np.dtype(x.dtype).name, preprocess, outputs)

    @classmethod
    def for_spec(cls, x_spec, preprocess, outputs="classes"):
        """The signature of a model fed `preprocess(x)` for raw examples of `x_spec`
        (a `tf.TensorSpec` of one example)."""
        return cls(tuple(x_spec.shape.as_list()), x_spec.dtype.name, preprocess, outputs)

    def spec(self):
        return tf.TensorSpec((None, *self.input_shape), self.input_dtype, name=INPUT_NAME)

    def model_input_shape(self):
        """One example's shape as the model takes it: after the preprocessing."""
        raw = tf.zeros([1, *self.input_shape], self.input_dtype)
        return tuple(self.preprocess(raw).shape[1:])

    def serve(self, model, raw):
        """The exported outputs of `model` for a raw batch."""
        y = tf.cast(model(self.preprocess(raw), training=False), tf.float32)
        if self.outputs == "next_token":
            return {"probabilities": tf.nn.softmax(y[:, -1])}
        if self.outputs == "predictions":
            return {"predictions": y}
        probabilities = tf.concat([1.0 - y, y], axis=-1) if y.shape[-1] == 1 else y
        return {
            "probabilities": probabilities,
            "classes": tf.argmax(probabilities, axis=-1, output_type=tf.int32),
        }


def export_saved_model(model, path, signature):
    """Writes `model` as a SavedModel whose `serving_default` (also `serve`) takes
    the raw input of `signature` and returns its named outputs."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda raw: signature.serve(model, raw), input_signature=[signature.spec()])
    for name, (make, input_signature) in (signature.endpoints or {}).items():
        archive.add_endpoint(name, make(model), input_signature=input_signature)
    archive.write_out(path, verbose=False)


def to_litert(saved_model_dir, variant, representative=None):
    """A LiteRT flatbuffer (bytes) of `saved_model_dir`'s `serving_default`.

    `variant`: `float32`; `dynamic_range` (int8 weights, float activations);
    `float16` (float16 weights); `int8` (int8 weights and activations, ranges
    calibrated on `representative`, raw training inputs; a float input's element-wise
    standardization stays float: `_float_elementwise`); `pruned_int8` (`int8`
    with zero-heavy kernels stored sparsely: for a pruned model). A model the converter
    cannot convert (an op with no LiteRT kernel) is a `ConversionError`.
    """
    if variant not in LITERT_VARIANTS:
        raise ValueError(f"`variant` must be one of {LITERT_VARIANTS}. Received: {variant!r}")
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=["serving_default"])
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if variant in ("int8", "pruned_int8"):
        if representative is None:
            raise ValueError(f"the {variant} variant needs `representative` inputs to calibrate on")
        calibration = representative[:CALIBRATION_EXAMPLES]
        converter.representative_dataset = lambda: (
            {INPUT_NAME: calibration[i : i + 1]} for i in range(len(calibration))
        )
        # Every op in int8 (the input stays the raw uint8 pixels; the outputs float).
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if variant == "pruned_int8":
        converter.optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    try:
        with warnings.catch_warnings(), native_lines_dropped(CONVERTER_NOTES):
            # The converter calibrates with the deprecated tf.lite.Interpreter.
            warnings.filterwarnings("ignore", ".*tf.lite.Interpreter is deprecated")
            if variant in ("int8", "pruned_int8") and np.issubdtype(
                np.asarray(calibration).dtype, np.floating
            ):
                return _float_elementwise(converter)
            return converter.convert()
    except (_converter_error(), RuntimeError, ValueError, tf.errors.OpError) as e:
        raise ConversionError(f"the LiteRT converter cannot make it: {first_line(e, 200)}") from None


class ConversionError(RecipeError):
    """A model the LiteRT converter cannot convert to a variant (an op without a LiteRT kernel)."""


def _converter_error():
    """The converter's own error class, which the public `tf.lite` API does not name."""
    try:
        from tensorflow.lite.python.convert_phase import ConverterError
    except ImportError:  # Moved in another TensorFlow: what it raises is still caught below it.
        return RuntimeError
    return ConverterError


# Element-wise ops a float input goes through before the first layer (a table's
# standardization: subtract the mean, multiply by 1/std), kept in float by `int8`.
FLOAT_INPUT_OPS = ("SUB", "MUL", "DIV", "ADD", "RSQRT", "SQRT", "MAXIMUM")


def _float_elementwise(converter):
    """The int8 conversion with `FLOAT_INPUT_OPS` left in float. int8 quantizes the
    input tensor with one scale; a table's features span different ranges (load_wine:
    0.1 to 1,680), so the small ones would round to zero before they are standardized
    (39% accuracy against the float model's 100% on wine). Keeping the standardization
    in float quantizes what comes out of it instead. The converter's own way to keep
    ops in float is its quantization debugger's deny-list (`tf.lite.experimental`).

    The debugger would store `EXPERIMENTAL_SPARSITY`'s sparse kernels before it
    quantizes, and quantizing that model wires the raw input to `probabilities` (a
    breast-cancer run's 30 features came back as its probabilities): the model is
    sparsified after quantizing instead, as the converter's own path does."""
    sparse = tf.lite.Optimize.EXPERIMENTAL_SPARSITY in converter.optimizations
    converter.optimizations = [
        o for o in converter.optimizations if o != tf.lite.Optimize.EXPERIMENTAL_SPARSITY
    ]
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(FLOAT_INPUT_OPS))
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=converter.representative_dataset, debug_options=options
    )
    model = debugger.get_nondebug_quantized_model()
    if sparse:
        from tensorflow.lite.python.convert import mlir_sparsify  # What the converter calls; not public.

        model = mlir_sparsify(model)
    return model


# What the LiteRT converter and interpreter print as a matter of course, to stderr from
# C++: the quantizer's settings, and the CPU delegate it made.
CONVERTER_NOTES = r"^fully_quantize: \d+, inference_type: "
INTERPRETER_NOTES = r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$"
# The child process that passes stderr on: every line but those matching argv[1].
_FILTER = """import re, sys
drop = re.compile(sys.argv[1])
for line in sys.stdin.buffer:
    if not drop.search(line.decode("utf-8", "replace").rstrip("\\n")):
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
"""


@contextlib.contextmanager
def native_lines_dropped(pattern):
    """Runs the block with the lines written to this process's stderr (file descriptor
    2, where TensorFlow's and LiteRT's C++ write, beyond Python's reach) that match
    `pattern` (a regular expression) dropped, and every other line passed on as it
    comes. A child process passes them on, so what a crash writes still gets through."""
    if os.name != "posix":
        yield
        return
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    stderr = os.dup(2)
    try:  # Its own session: a Ctrl-C for this process leaves it to pass on the last lines.
        sink = subprocess.Popen(
            [sys.executable, "-S", "-c", _FILTER, pattern],
            stdin=read_end,
            stdout=stderr,
            start_new_session=True,
        )
    except OSError:
        sink = None
    os.close(read_end)
    if sink is not None:
        os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(stderr, 2)  # Closes the pipe's last writer: the child ends when it has passed all on.
        os.close(stderr)
        if sink is not None:
            sink.wait()


class Served:
    """One of a run's artifacts, ready to predict on raw input.

    Args:
      path: a SavedModel directory, a `.tflite` file, or a `.keras` file (which
        is the model on preprocessed input, so it needs `signature`).
      signature: the `Signature` a `.keras` file is served with.

    Attributes: `input_shape` (one example's), `input_dtype`, and `runtime` (what
    runs it: TensorFlow or the LiteRT interpreter).
    """

    def __init__(self, path, signature=None):
        self.path = path
        kind = artifact_kind(path)
        if kind == "saved_model":
            function = tf.saved_model.load(path).signatures["serving_default"]
            spec = function.structured_input_signature[1][INPUT_NAME]
            self.input_shape, self.input_dtype = tuple(spec.shape[1:]), spec.dtype.name
            self._predict = lambda raw: function(**{INPUT_NAME: tf.constant(raw)})
            self.runtime = f"TensorFlow {tf.__version__} (SavedModel signature)"
        elif kind == "keras":
            if signature is None:
                raise ValueError(f"{path} is a Keras model on preprocessed input: pass its `signature`")
            model = keras.saving.load_model(path)
            function = tf.function(lambda raw: signature.serve(model, raw), reduce_retracing=True)
            self.input_shape, self.input_dtype = signature.input_shape, signature.input_dtype
            self._predict = lambda raw: function(tf.constant(raw))
            self.runtime = f"TensorFlow {tf.__version__} (tf.function)"
            try:  # Another run's model (another input) fails here, not on the user's files.
                self._predict(np.zeros([1, *self.input_shape], self.input_dtype))
            except (ValueError, TypeError, tf.errors.OpError):
                shape = list(self.input_shape)
                raise ValueError(
                    f"it does not take this run's input ({shape} {self.input_dtype}); "
                    "serve it with --model_dir= the run that wrote it"
                ) from None
        else:
            self._load_litert(path)

    def _load_litert(self, path):
        from ai_edge_litert import interpreter as litert

        def runner(resolver):
            with native_lines_dropped(INTERPRETER_NOTES):  # The first call applies the delegate.
                interpreter = litert.Interpreter(model_path=path, experimental_op_resolver_type=resolver)
                signature_runner = interpreter.get_signature_runner("serving_default")
                details = signature_runner.get_input_details()[INPUT_NAME]
                signature_runner(**{INPUT_NAME: np.zeros([1, *details["shape"][1:]], details["dtype"])})
            return signature_runner, details

        try:
            (signature_runner, details), delegate = runner(litert.OpResolverType.AUTO), "XNNPACK"
        except RuntimeError:  # XNNPACK, the default CPU delegate, refuses sparse int8 kernels.
            (signature_runner, details), delegate = (
                runner(litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES),
                "built-in kernels",
            )
        self.input_shape, self.input_dtype = tuple(details["shape"][1:]), np.dtype(details["dtype"]).name
        self._predict = lambda raw: signature_runner(**{INPUT_NAME: raw})
        self.runtime = f"LiteRT interpreter ({delegate})"

    def __call__(self, raw):
        """The outputs (name -> NumPy array) for a raw batch."""
        raw = np.asarray(raw, dtype=self.input_dtype)
        return {name: np.asarray(value) for name, value in self._predict(raw).items()}

    def predict(self, raw, batch_size=500):
        """`__call__` over `raw` in batches, concatenated."""
        parts = [self(raw[i : i + batch_size]) for i in range(0, len(raw), batch_size)]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def latency_ms(self, raw, examples=200):
        """The median milliseconds to predict one example (batch 1), after a warm-up."""
        self(raw[:1])
        times = []
        for example in raw[:examples]:
            start = time.perf_counter()
            self(example[None])
            times.append(time.perf_counter() - start)
        return 1000 * float(np.median(times))


def artifact_kind(path):
    """`saved_model`, `keras` or `litert`; a path that is none of these is a `RecipeError`."""
    if tf.io.gfile.isdir(path):
        if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
            return "saved_model"
    elif path.endswith(".keras"):
        return "keras"
    elif path.endswith(".tflite"):
        return "litert"
    raise RecipeError(
        f"{path} is not a model this package writes (a saved_model/ directory, a .keras or a .tflite file)"
    )


def load(path, signature=None):
    """`Served(path, signature)`, with a file that cannot be read as a one-line `RecipeError`."""
    if not tf.io.gfile.exists(path):
        raise RecipeError(f"{path} does not exist")
    try:
        return Served(path, signature)
    except (ValueError, RuntimeError, OSError, tf.errors.OpError) as e:
        raise RecipeError(f"{path} cannot be loaded as a model: {first_line(e, 160)}") from None
