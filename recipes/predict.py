r"""Predicts with a trained run's deployed model, as a server or a phone would:
raw input in, the class and its probability out.

    python -m recipes.predict --model_dir=runs/mnist digit.png other.jpg batch.npy
    python -m recipes.predict --model_dir=runs/mnist --model=compressed/int8.tflite digit.png
    python -m recipes.predict --model_dir=runs/linreg --value=6.5     # a 6.5-room house's price

FILE is a PNG, JPEG, GIF or BMP image (decoded and converted to the model's
input size and channels) or a .npy array of one example or a batch. --model
picks the artifact under --model_dir (relative to it, or a path from here into it):
saved_model/ (the default), a .tflite file (run with the LiteRT interpreter) or a
.keras file. Each file that cannot be used gets one `error:` line, and the exit
status is 1 if any did.
"""

if __name__ == "__main__":  # Run as a program: set the process up before TensorFlow loads.
    from recipes.core.cli import entry

    entry.handle_stop_signals()
    entry.set_up_process()

import os
import sys

import numpy as np
import tensorflow as tf
from absl import flags

from recipes.core.cli import flags as recipe_flags  # noqa: F401 - --model_dir, --data_dir.
from recipes.core.deploy import runs, serving
from recipes.core.errors import RecipeError, first_line

flags.DEFINE_string(
    "model",
    "saved_model",
    "The artifact to serve, inside --model_dir: saved_model, a .tflite or a .keras "
    "file, relative to --model_dir (compressed/int8.tflite) or as a path from here "
    "(runs/mnist/compressed/int8.tflite).",
)
flags.DEFINE_float(
    "value", None, "A one-feature model's input (linreg: rooms per dwelling), instead of FILEs."
)

FLAGS = flags.FLAGS

# What a regression run's prediction means, by recipe.
UNITS = {"linreg": "$1000s: the median house value where homes average {value:g} rooms"}


# Pixels an image may have: its size is read from the header before decoding, so a
# small file that decodes to gigabytes (20,000 x 20,000 PNG: 388 KB) is refused first.
MAX_PIXELS = 40_000_000


def read_input(path, input_shape, input_dtype):
    """A raw batch for the model from an image or .npy file; a file the model
    cannot take is a one-line `RecipeError`."""
    if not os.path.isfile(path):
        raise RecipeError(f"{path} does not exist")
    if path.endswith(".npy"):
        return _read_array(path, input_shape, input_dtype)
    wanted = f"[{', '.join(map(str, input_shape))}] {input_dtype}"
    if input_dtype != "uint8" or len(input_shape) not in (2, 3):
        raise RecipeError(f"the model takes {wanted}, not an image; pass {path} as a .npy array")
    _check_pixels(path)
    channels = input_shape[2] if len(input_shape) == 3 else 1
    try:  # In the file's own channels (GIF decodes only as RGB), then converted.
        image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
    except tf.errors.OpError:
        raise RecipeError(f"{path} cannot be decoded as an image (PNG, JPEG, GIF or BMP)") from None
    image = _in_channels(image, channels)
    if tuple(image.shape[:2]) != tuple(input_shape[:2]):
        image = tf.image.resize(image, input_shape[:2], antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8).numpy()
    return image.reshape((1, *input_shape))


def _check_pixels(path):
    """Refuses an image of more than `MAX_PIXELS`, from its header (Pillow reads only
    that until asked for the pixels)."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # Pillow's own limit is higher (and raises, not says the size).
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - not an image Pillow knows: decoding says so in one line.
        return
    if width * height > MAX_PIXELS:
        raise RecipeError(
            f"{path} is {width:,} x {height:,} pixels, more than the {MAX_PIXELS:,} "
            "predict decodes; scale it down first"
        )


def _in_channels(image, channels):
    """`image` ([H, W, C], any C of 1-4) with `channels` channels: grey from colour by
    luminance, colour from grey repeated, alpha dropped."""
    if image.shape[-1] in (2, 4):  # Grey or RGB with alpha.
        image = image[..., :-1]
    if image.shape[-1] == channels:
        return image
    if channels == 1:
        return tf.image.rgb_to_grayscale(image)
    return tf.image.grayscale_to_rgb(image)


def _read_array(path, input_shape, input_dtype):
    """A batch from a .npy file of one example or several: values the model's input
    dtype holds as they are (no wrap-around, no NaN), at least one example."""
    wanted = f"[{', '.join(map(str, input_shape))}] {input_dtype}"
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise RecipeError(f"{path} cannot be read as a .npy array ({first_line(e, 80)})") from None
    shape = list(array.shape)  # The file's own, for the message.
    if tuple(array.shape) == input_shape:
        array = array[None]
    if tuple(array.shape[1:]) != input_shape or not np.can_cast(array.dtype, input_dtype, "same_kind"):
        raise RecipeError(
            f"{path} holds a {array.dtype} array of shape {shape}; the model "
            f"takes {wanted} (or a batch of them)"
        )
    if not len(array):
        raise RecipeError(f"{path} holds no examples (shape {shape}); pass at least one")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise RecipeError(f"{path} holds NaN or infinite values; the model needs numbers there")
    if np.issubdtype(np.dtype(input_dtype), np.integer) and array.size:
        limits = np.iinfo(input_dtype)
        if array.min() < limits.min or array.max() > limits.max:
            raise RecipeError(
                f"{path} holds values from {array.min()} to {array.max()}; the model takes "
                f"{input_dtype} ({limits.min} to {limits.max}): scale them into that range"
            )
    return array.astype(input_dtype)


def describe(outputs, index, class_names=None):
    """One prediction as words: the class (by name when the data had names) and its
    probability, or the value."""
    if "classes" in outputs:
        label = int(outputs["classes"][index])
        name = (
            f"{class_names[label]!r} (class {label}, "
            if class_names and label < len(class_names) and class_names[label] != str(label)
            else f"class {label} ("
        )
        return f"{name}probability {float(outputs['probabilities'][index][label]):.3f})"
    return ", ".join(f"{float(v):.4f}" for v in np.ravel(outputs["predictions"][index]))


def artifact_path(model_dir, model):
    """The path of the artifact `model` (--model): relative to `model_dir`, or, where no
    such file is there, a path from the current directory (or absolute) to a file
    inside `model_dir`. The run's metrics.json says how its own artifacts are served,
    so one outside it is a one-line `RecipeError` that says what to pass."""
    if "://" in model_dir:  # gs://...: paths as strings.
        path = model if model.startswith(model_dir.rstrip("/") + "/") else f"{model_dir.rstrip('/')}/{model}"
        inside = ".." not in path.split("/") and path.startswith(model_dir.rstrip("/") + "/")
    else:
        candidates = ([] if os.path.isabs(model) else [os.path.join(model_dir, model)]) + [model]
        path = next((found for found in candidates if os.path.exists(found)), candidates[0])
        inside = any(
            os.path.commonpath([resolve(model_dir), resolve(path)]) == resolve(model_dir)
            for resolve in (os.path.abspath, os.path.realpath)
        )
    if not inside:
        raise RecipeError(
            f"--model={model} is outside --model_dir={model_dir}: predict serves a run's own "
            "artifacts, as its metrics.json describes them; pass --model_dir= the run that "
            "wrote it (or copy it into that run's directory)"
        )
    return path


def served_model(run, model):
    """The artifact `model` (--model: `artifact_path`), ready to serve."""
    path = artifact_path(run.model_dir, model)
    signature = None
    if path.endswith(".keras") and os.path.isfile(path):  # The model on preprocessed input.
        signature = run.signature()
    return serving.load(path, signature)


def main(argv):
    files = argv[1:]
    if bool(files) == (FLAGS.value is not None):
        raise RecipeError(
            "pass FILEs to predict on, or --value for a one-feature model, "
            "e.g. python -m recipes.predict --model_dir=runs/mnist digit.png"
        )
    run = runs.read(FLAGS.model_dir or os.path.join("runs", "mnist"))
    served = served_model(run, FLAGS.model)
    print(f"Serving {served.path} with {served.runtime}.")
    if FLAGS.value is not None:
        if served.input_shape != (1,):
            raise RecipeError(
                f"--value needs a one-feature model; {served.path} takes "
                f"{list(served.input_shape)} inputs: pass FILEs"
            )
        data_flag = str((run.input.get("spec") or {}).get("data") or "sample")  # Bundled unless --data.
        on_sample = data_flag.startswith("sample")
        units = UNITS.get(run.recipe, "").format(value=FLAGS.value) if on_sample else ""
        print(
            f"--value={FLAGS.value:g}: {describe(served(np.float32([[FLAGS.value]])), 0)}"
            + (f" ({units})" if units else "")
        )
        return
    failed = 0
    for path in files:
        try:
            batch = read_input(path, served.input_shape, served.input_dtype)
        except RecipeError as e:
            print(e.line(), file=sys.stderr, flush=True)
            failed += 1
            continue
        outputs = served(batch)
        for index in range(len(batch)):
            print(
                f"{path}{f'[{index}]' if len(batch) > 1 else ''}: {describe(outputs, index, run.class_names)}"
            )
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    entry.run(main)
