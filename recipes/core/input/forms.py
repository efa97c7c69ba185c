"""What a `--data` value names, opened as one `sources.Source` per split: a
tensorflow-datasets name, files by path or glob (TFRecords, CSV, NumPy, text), or a
folder (prepared shards, NumPy arrays, split folders or class folders of images).
A `DataSpec` is the value with its companions (--test_data, --label_column, ...);
`data.open_data` turns it into a `Data`.
"""

import dataclasses
import os

import tensorflow as tf

from recipes.core.errors import RecipeError
from recipes.core.input import corpus, sources, tables, tfrecords
from recipes.core.input.samples import network_available

TARGETS = ("classes", "values")


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What `data.open_data` opens: a --data value and its companions, the flags of the same
    names (docs/data.md). A run records it (`Data.spec`, as JSON), so that the commands
    that start from the run open the same data.

    Attributes:
      data: `sample` (the recipe's bundled sample) or `sample:NAME`; a file, folder or
        glob of your data; or a tensorflow-datasets name (recipes/core/input/sources.py has
        every form).
      test_data, validation_data: that split, in any `data` form, where `data` has none.
      label_column: a CSV file's label column, or the label feature of TFRecords
        without a schema.json.
      data_dir: tensorflow-datasets' data directory.
      text_window: a language recipe's context in bytes, for text files
        (recipes/core/input/corpus.py); None where the recipe reads no text.
      text_stride: how far apart held-out text windows start (default: the window).
      targets: "classes" (labels are classes) or "values" (numbers to fit: a
        regression's CSV column or NumPy y).
    """

    data: str
    test_data: str | None = None
    validation_data: str | None = None
    label_column: str | None = None
    data_dir: str | None = None
    text_window: int | None = None
    text_stride: int | None = None
    targets: str = "classes"

    def __post_init__(self):
        if self.targets not in TARGETS:
            raise ValueError(f"`targets` must be 'classes' or 'values'. Received: targets={self.targets!r}")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def open_splits(data, label_column, data_dir, class_names=None, text_window=(None, None), targets="classes"):
    """{split: Source} of one --data value (`DataSpec` has what the arguments mean;
    `text_window` is its (text_window, text_stride))."""
    if data.startswith("tfds:") or not (
        os.path.exists(data)
        or any(c in data for c in "*?[")
        or "://" in data
        or os.sep in data
        or file_kind(data)
    ):
        return tfrecords.open_tfds(data.removeprefix("tfds:"), data_dir, network_available)
    files = sources.expand(data)
    if len(files) == 1 and tf.io.gfile.isdir(files[0]):
        return open_folder(files[0], label_column, class_names, targets)
    kinds = {file_kind(f) for f in files}
    if len(kinds) != 1 or None in kinds:
        raise RecipeError(
            f"--data={data} names {', '.join(os.path.basename(f) for f in files[:4])}: "
            f"pass files of one kind ({', '.join(_FILE_KINDS)}) or a folder"
        )
    kind = kinds.pop()
    if kind == "text":
        if text_window[0] is None:
            raise RecipeError(
                f"--data={data} is text, which the language recipes read; this recipe "
                "takes images, tables, arrays or TFRecords (docs/data.md)"
            )
        return corpus.open_text(files, text_window[0], stride=text_window[1])
    if kind in ("csv", "npz") and len(files) > 1:
        raise RecipeError(f"--data={data} names {len(files)} {kind} files; pass one")
    if kind == "csv":
        return {"train": tables.open_csv(files[0], label_column, class_names, targets)}
    if kind == "npz":
        return {"train": sources.open_numpy(files[0], targets)}
    schema = tfrecords.read_schema(os.path.dirname(files[0]))
    return {"train": tfrecords.open_tfrecords(files, data, schema=schema, label_column=label_column)}


_FILE_KINDS = {
    ".csv": "csv",
    ".npz": "npz",
    ".txt": "text",
    ".tfrecord": "tfrecord",
    ".tfrecords": "tfrecord",
    ".tfrec": "tfrecord",
}


def file_kind(path: str) -> str | None:
    """A file's kind by its name (`train.tfrecord-00000-of-00004` is a TFRecord too)."""
    name = os.path.basename(path)
    kind = next((kind for ending, kind in _FILE_KINDS.items() if name.endswith(ending)), None)
    return kind or ("tfrecord" if ".tfrecord" in name else None)


def open_folder(folder, label_column, class_names, targets="classes"):
    """{split: Source} of a folder: prepared TFRecords (schema.json), NumPy arrays (x.npy,
    y.npy), train/ test/ [validation/] subfolders, or class folders of images."""
    schema = tfrecords.read_schema(folder)
    if schema is not None:
        found = {}
        for split, entry in schema.get("splits", {}).items():
            files = [os.path.join(folder, name) for name in entry["files"]]
            missing = [f for f in files if not tf.io.gfile.exists(f)]
            if missing:
                raise RecipeError(
                    f"{folder}: {missing[0]} named in {sources.SCHEMA} is missing; "
                    "write the data again with python -m recipes.prepare"
                )
            index = {name: tuple(value) for name, value in entry["index"].items()}
            found[split] = tfrecords.open_tfrecords(files, f"{folder} ({split})", schema=schema, index=index)
        if "train" not in found:
            raise RecipeError(f"{folder}/{sources.SCHEMA} lists no train split")
        return found
    if os.path.exists(os.path.join(folder, "x.npy")) or os.path.exists(os.path.join(folder, "y.npy")):
        return {"train": sources.open_numpy(folder, targets)}
    if targets == "values":
        raise RecipeError(
            f"--data={folder} is a folder of images, which hold classes; this recipe fits "
            "values: pass a CSV with --label_column, or x.npy and y.npy"
        )
    subfolders = set(sources.subfolders(folder))
    if "train" in subfolders:
        others = sorted(subfolders - set(sources.SPLITS))
        if others:
            raise RecipeError(
                f"--data={folder} holds train/ beside {', '.join(others)}/: a folder of "
                "splits holds only train/, test/ and validation/"
            )
        found = {"train": sources.open_image_folder(os.path.join(folder, "train"), class_names)}
        for split in sorted(subfolders - {"train"}):
            found[split] = sources.open_image_folder(os.path.join(folder, split), found["train"].class_names)
        return found
    if not subfolders:
        inside = [name for name in os.listdir(folder) if not name.startswith(".")]
        raise RecipeError(
            f"--data={folder} "
            + (
                "is empty"
                if not inside
                else f"holds files but no class subfolders ({', '.join(sorted(inside)[:3])}, ...)"
            )
            + "; an image folder holds one subfolder of images per class"
        )
    return {"train": sources.open_image_folder(folder, class_names)}
