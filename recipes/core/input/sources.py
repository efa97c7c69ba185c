"""The user's data opened where it lies: a `--data` value -> a `Source` for each
split it holds. Nothing is read whole: a source says how many records it has,
in which files, and how to read any run of them (a block) and decode it.

    --data=sample                  the recipe's bundled sample (real data that packages ship)
    --data=digits/                 class folders of images, or train/ test/ [validation/] of them
    --data=shards/                 TFRecords written by `python -m recipes.prepare` (schema.json)
    --data='shards/*.tfrecord'     TFRecord files by glob (a schema.json beside them, or the
                                   first record's features)
    --data=wine.csv                a CSV file, with --label_column
    --data=arrays/  --data=a.npz   x.npy and y.npy (memory-mapped), or an .npz of x and y
    --data=mnist  --data=tfds:cifar10   any tensorflow-datasets name, from --data_dir

Where a well-kept library reads the format, it reads it here too: tf.data's
TFRecord reader (from a byte offset, so a block is one seek), `tf.io.decode_image`,
`tf.io.decode_csv`, `tf.io.parse_example`, tensorflow-datasets' own builders and
feature decoding. What is written by hand is the block index (record counts and
offsets) that makes every block readable on its own; see `recipes/core/input/data.py`.
"""

import dataclasses
import os
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from recipes.core.errors import RecipeError, first_line

# Records read as one unit: the grain of per-epoch shuffling, of worker sharding and of resume.
BLOCK_SIZE = 256
# A random-access source (images, arrays) is read in a fixed shuffled order, whatever
# --seed, so that a block holds every class even when the files are sorted by class.
ORDER_SEED = 0
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")
TF_IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP")  # What tf.io.decode_image reads, as Pillow names them.
SCHEMA = "schema.json"
SCHEMA_FORMAT = "recipes.tfrecord/1"
SPLITS = ("train", "validation", "test")
LABEL_NAMES = ("label", "y")  # The label feature of a TFRecord without a schema, by default.
# Images whose every pixel is checked (fully decoded) before training; above it, only the headers.
DECODE_CHECK_LIMIT = 20_000


@dataclasses.dataclass(frozen=True)
class Source:
    """Records addressable by index and read in blocks.

    Attributes:
      name: what the user passed, for messages (a path, a glob or a dataset name).
      blocks: int64 [K, 4]: (shard, first record in the shard, records, index of
        the first record); every record of the source is in exactly one block.
      x_spec, y_spec: one raw example and its label, as decoded.
      class_names: the classes' names in label order, or None (labels are ids).
      read: `(shard, start, count) -> tf.data.Dataset` of encoded records (tensors
        in, so that it runs inside tf.data).
      decode_batch: a batch of records -> (x, y); with `indexed`, (a batch of records,
        their indices in the source) -> (x, y), for decoding seeded by the record.
      files: the files it reads, for messages.
      service: whether tf.data service workers can run the reading (no Python in it).
      feature_names: the names of a table's feature columns, or None.
      indexed: `decode_batch` takes the records' indices too.
      per_epoch: `read` takes a fourth argument, the int64 pair (seed, epoch), and
        may read each training epoch differently (text windows on a shifted grid);
        evaluation reads epoch 0 of seed 0.
      shuffle_records: examples shuffled together in training, where this source
        reads cheaply enough to shuffle more than `pipeline.SHUFFLE_RECORDS`.
    """

    name: str
    blocks: np.ndarray
    x_spec: tf.TensorSpec
    y_spec: tf.TensorSpec
    class_names: tuple[str, ...] | None
    read: Callable[..., tf.data.Dataset]
    decode_batch: Callable
    files: tuple[str, ...] = ()
    service: bool = True
    feature_names: tuple[str, ...] | None = None
    indexed: bool = False
    per_epoch: bool = False
    shuffle_records: int | None = None

    @property
    def num_records(self) -> int:
        return int(self.blocks[:, 2].sum())


def _blocks(counts, block_size=BLOCK_SIZE):
    """The block table of shards holding `counts` records each."""
    rows, index = [], 0
    for shard, count in enumerate(counts):
        for start in range(0, count, block_size):
            length = min(block_size, count - start)
            rows.append((shard, start, length, index + start))
        index += count
    return np.asarray(rows, np.int64).reshape(-1, 4)


def _order(count):
    """The fixed shuffled order a random-access source is read in."""
    return np.random.default_rng(ORDER_SEED).permutation(count)


# NumPy arrays: in memory, memory-mapped .npy, or an .npz.


def from_arrays(x: np.ndarray, y: np.ndarray, name: str, class_names: Sequence[str] | None = None) -> Source:
    """A source over arrays `x` [N, ...] and `y` [N] (NumPy, or memory-mapped: rows are
    gathered a batch at a time, so a memory-mapped file is never read whole)."""
    if len(x) != len(y):
        raise RecipeError(f"{name}: x has {len(x)} examples and y {len(y)}; they must match")
    if len(x) == 0:
        raise RecipeError(f"{name} holds no examples")
    order = _order(len(x))
    x_spec = tf.TensorSpec(x.shape[1:], tf.as_dtype(x.dtype))
    y_spec = tf.TensorSpec(y.shape[1:], tf.as_dtype(y.dtype))

    def gather(positions):
        rows = order[positions]
        sort = np.argsort(rows)  # A memory-mapped file reads fastest in file order.
        xb, yb = np.empty((len(rows),) + x.shape[1:], x.dtype), np.empty((len(rows),) + y.shape[1:], y.dtype)
        xb[sort], yb[sort] = x[rows[sort]], y[rows[sort]]
        return xb, yb

    def decode_batch(positions):
        # Python reads the rows: tf.data has no reader for a memory-mapped array.
        xb, yb = tf.numpy_function(gather, [positions], [x_spec.dtype, y_spec.dtype], stateful=False)
        return (tf.ensure_shape(xb, [None, *x_spec.shape]), tf.ensure_shape(yb, [None, *y_spec.shape]))

    return Source(
        name,
        _blocks([len(x)]),
        x_spec,
        y_spec,
        class_names,
        read=lambda shard, start, count: tf.data.Dataset.range(start, start + count),
        decode_batch=decode_batch,
        service=False,
    )


def open_numpy(path: str, targets: str = "classes") -> Source:
    """A directory of x.npy and y.npy (memory-mapped), or an .npz holding x and y: y
    integer class ids, or with `targets="values"` numbers to fit ([N] or [N, k])."""
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as archive:  # Compressed members cannot be mapped.
                missing = {"x", "y"} - set(archive.files)
                if missing:
                    raise RecipeError(
                        f"{path} holds arrays {sorted(archive.files)}; it needs x and y "
                        "(np.savez(path, x=..., y=...))"
                    )
                x, y = archive["x"], archive["y"]
        else:
            for name in ("x.npy", "y.npy"):
                if not os.path.isfile(os.path.join(path, name)):
                    raise RecipeError(f"{path} has no {name}; a NumPy directory holds x.npy and y.npy")
            x, y = (
                np.load(os.path.join(path, f"{name}.npy"), mmap_mode="r", allow_pickle=False)
                for name in ("x", "y")
            )
    except (ValueError, OSError, EOFError) as e:
        raise RecipeError(f"{path} cannot be read as NumPy arrays ({first_line(e, 100)})") from None
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise RecipeError(f"{path}: x must be numeric; it is {x.dtype}")
    if targets == "values":
        if y.ndim not in (1, 2) or not np.issubdtype(y.dtype, np.number):
            raise RecipeError(
                f"{path}: y must hold the numbers to fit, one or a row per example; it is "
                f"{y.dtype} of shape {list(y.shape)}"
            )
        return from_arrays(x, y.astype(np.float32) if y.dtype != np.float32 else y, path)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise RecipeError(
            f"{path}: y must hold one integer class id per example; it is {y.dtype} of shape {list(y.shape)}"
        )
    return from_arrays(x, y.astype(np.int32) if y.dtype != np.int32 else y, path)


# Images: class folders.


def subfolders(folder):
    """The folder's subfolders, without hidden ones (.ipynb_checkpoints, .git)."""
    try:
        return sorted(
            d for d in os.listdir(folder) if not d.startswith(".") and os.path.isdir(os.path.join(folder, d))
        )
    except OSError as e:
        raise RecipeError(f"{folder} cannot be listed ({first_line(e, 80)})") from None


def _raise(error):
    raise error


def image_files(folder):
    """(paths, labels, class names) of a folder of class subfolders of images; a class
    folder without an image is a one-line error."""
    classes = subfolders(folder)
    paths, labels = [], []
    for label, name in enumerate(classes):
        found, where = [], os.path.join(folder, name)
        try:
            for root, dirs, files in os.walk(where, onerror=_raise):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [
                    os.path.join(root, file)
                    for file in sorted(files)
                    if file.lower().endswith(IMAGE_EXTENSIONS)
                ]
        except OSError as e:
            raise RecipeError(f"{where} cannot be listed ({first_line(e, 80)})") from None
        if not found and len(classes) > 1:
            raise RecipeError(
                f"{where} holds no image ({', '.join(IMAGE_EXTENSIONS)}); put the class's "
                "images in it, or remove it"
            )
        paths += found
        labels += [label] * len(found)
    return paths, np.asarray(labels, np.int32), tuple(classes)


def check_images(paths, name):
    """The shape (height, width, channels) all of `paths` share, checked with Pillow
    before training: a file that is not an image, or of another size, is a one-line
    error naming it. Up to DECODE_CHECK_LIMIT images are decoded whole; beyond that
    only their headers are read (a damaged body then stops the run mid-stream)."""
    from PIL import Image, UnidentifiedImageError

    shape, gif = None, False
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                if image.format not in TF_IMAGE_FORMATS:
                    raise ValueError(f"it is {image.format}, which TensorFlow does not decode")
                if i < DECODE_CHECK_LIMIT:
                    image.load()
                gif = gif or image.format == "GIF"
                channels = (
                    1
                    if image.mode in ("L", "1", "I", "I;16", "F")
                    else (4 if image.mode in ("RGBA", "LA") else 3)
                )  # Palette images decode to RGB.
                size = (image.height, image.width, channels)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise RecipeError(
                f"{path} cannot be decoded as an image ({first_line(e, 80)}); remove or replace it"
            ) from None
        if shape is None:
            shape, first = size, path
        elif size[:2] != shape[:2]:
            raise RecipeError(
                f"{path} is {size[1]}x{size[0]} pixels but {first} is {shape[1]}x{shape[0]}; the "
                f"recipes do not resize: resize {name} to one size first"
            )
        else:
            shape = shape[:2] + (max(shape[2], size[2]),)  # Grey and colour mixed: read all in colour.
    if gif and shape[2] != 3:  # TensorFlow decodes a GIF to RGB only.
        shape = shape[:2] + (3,)
    return shape


def open_image_folder(folder: str, class_names: Sequence[str] | None = None) -> Source:
    """A folder of class subfolders of PNG, JPEG, GIF or BMP images; the classes are
    the folder names (or `class_names`, another split's, which these must match)."""
    paths, labels, classes = image_files(folder)
    if not paths:
        raise RecipeError(
            f"{folder} holds no images in class subfolders (folder/CLASS/*.png, "
            f"{', '.join(IMAGE_EXTENSIONS)})"
        )
    if len(classes) < 2:
        raise RecipeError(
            f"{folder} has {len(classes)} class folder ({', '.join(classes)}); a "
            "classifier needs at least two, one folder per class"
        )
    if class_names is not None and classes != tuple(class_names):
        raise RecipeError(
            f"{folder} has classes {list(classes)}, but the training data has "
            f"{list(class_names)}; every split needs the same class folders"
        )
    height, width, channels = check_images(paths, folder)
    order = _order(len(paths))
    paths, labels = tf.constant(np.asarray(paths)[order]), tf.constant(labels[order])

    def read(shard, start, count):
        del shard  # One list of files.
        return tf.data.Dataset.range(start, start + count).map(
            lambda i: (tf.gather(paths, i), tf.gather(labels, i))
        )

    def decode_one(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
        return tf.ensure_shape(image, [height, width, channels]), label

    def decode_batch(records):
        return tf.map_fn(
            lambda record: decode_one(*record),
            records,
            fn_output_signature=(
                tf.TensorSpec([height, width, channels], tf.uint8),
                tf.TensorSpec([], tf.int32),
            ),
        )

    x_shape = [height, width] if channels == 1 else [height, width, channels]
    return Source(
        folder,
        _blocks([len(order)]),
        tf.TensorSpec(x_shape, tf.uint8),
        tf.TensorSpec([], tf.int32),
        classes,
        read,
        _squeezed(decode_batch, channels == 1),
        files=(folder,),
    )


def _squeezed(decode_batch, grey):
    """Grey images as [N, H, W], the layout of the bundled digits and MNIST."""
    if not grey:
        return decode_batch
    return lambda records: (lambda x, y: (x[..., 0], y))(*decode_batch(records))


def byte_range(path, begin, length):
    """Bytes [begin, begin + length) of the file `path` (tensors in), as a scalar string.
    Python reads them, with a seek: tf.data's text and CSV readers cannot start
    mid-file, and its fixed-length reader reads its way to an offset, so a block read
    there would cost its position in the file."""

    def read(file, start, size):
        with tf.io.gfile.GFile(file.decode(), "rb") as f:
            f.seek(int(start))
            return np.asarray(f.read(int(size)), dtype=object)

    return tf.reshape(tf.numpy_function(read, [path, begin, length], tf.string, stateful=False), [])


# What a --data value names.


def expand(pattern: str) -> list[str]:
    """The files a path or glob names, sorted; none is a one-line error."""
    files = (
        sorted(tf.io.gfile.glob(pattern))
        if any(c in pattern for c in "*?[")
        else ([pattern] if tf.io.gfile.exists(pattern) else [])
    )
    if not files:
        raise RecipeError(
            f"--data={pattern} matches no file or folder; check the path (relative to {os.getcwd()})"
        )
    return files
