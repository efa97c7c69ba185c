"""What a `--data` value names, opened as one `sources.Source` per split: a
tensorflow-datasets name, files by path or glob (TFRecords, CSV, NumPy, text), or a
folder (prepared shards, NumPy arrays, split folders or class folders of images).
`data.open_data` turns these into a `Data`.
"""
import os

import tensorflow as tf

from recipes.core import corpus, sources, tables, tfrecords
from recipes.core.errors import RecipeError
from recipes.core.samples import network_available


def open_splits(data, label_column, data_dir, class_names=None, text_window=(None, None), targets="classes"):
    """{split: Source} of one --data value (`data.open_data` has what the arguments mean;
    `text_window` is its (text_window, text_stride))."""
    if data.startswith("tfds:") or not (os.path.exists(data) or any(c in data for c in "*?[")
                                        or "://" in data or os.sep in data or file_kind(data)):
        return tfrecords.open_tfds(data.removeprefix("tfds:"), data_dir, network_available)
    files = sources.expand(data)
    if len(files) == 1 and tf.io.gfile.isdir(files[0]):
        return open_folder(files[0], label_column, class_names, targets)
    kinds = {file_kind(f) for f in files}
    if len(kinds) != 1 or None in kinds:
        raise RecipeError(f"--data={data} names {', '.join(os.path.basename(f) for f in files[:4])}: "
                          f"pass files of one kind ({', '.join(_FILE_KINDS)}) or a folder")
    kind = kinds.pop()
    if kind == "text":
        if text_window[0] is None:
            raise RecipeError(f"--data={data} is text, which the language recipes read; this recipe "
                              "takes images, tables, arrays or TFRecords (docs/data.md)")
        return corpus.open_text(files, text_window[0], stride=text_window[1])
    if kind in ("csv", "npz") and len(files) > 1:
        raise RecipeError(f"--data={data} names {len(files)} {kind} files; pass one")
    if kind == "csv":
        return {"train": tables.open_csv(files[0], label_column, class_names, targets)}
    if kind == "npz":
        return {"train": sources.open_numpy(files[0], targets)}
    schema = tfrecords.read_schema(os.path.dirname(files[0]))
    return {"train": tfrecords.open_tfrecords(files, data, schema=schema, label_column=label_column)}


_FILE_KINDS = {".csv": "csv", ".npz": "npz", ".txt": "text", ".tfrecord": "tfrecord",
               ".tfrecords": "tfrecord", ".tfrec": "tfrecord"}


def file_kind(path):
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
                raise RecipeError(f"{folder}: {missing[0]} named in {sources.SCHEMA} is missing; "
                                  "write the data again with python -m recipes.prepare")
            index = {name: tuple(value) for name, value in entry["index"].items()}
            found[split] = tfrecords.open_tfrecords(files, f"{folder} ({split})", schema=schema, index=index)
        if "train" not in found:
            raise RecipeError(f"{folder}/{sources.SCHEMA} lists no train split")
        return found
    if os.path.exists(os.path.join(folder, "x.npy")) or os.path.exists(os.path.join(folder, "y.npy")):
        return {"train": sources.open_numpy(folder, targets)}
    if targets == "values":
        raise RecipeError(f"--data={folder} is a folder of images, which hold classes; this recipe fits "
                          "values: pass a CSV with --label_column, or x.npy and y.npy")
    subfolders = set(sources.subfolders(folder))
    if "train" in subfolders:
        others = sorted(subfolders - set(sources.SPLITS))
        if others:
            raise RecipeError(f"--data={folder} holds train/ beside {', '.join(others)}/: a folder of "
                              "splits holds only train/, test/ and validation/")
        found = {"train": sources.open_image_folder(os.path.join(folder, "train"), class_names)}
        for split in sorted(subfolders - {"train"}):
            found[split] = sources.open_image_folder(os.path.join(folder, split), found["train"].class_names)
        return found
    if not subfolders:
        inside = [name for name in os.listdir(folder) if not name.startswith(".")]
        raise RecipeError(f"--data={folder} " + ("is empty" if not inside else
                          f"holds files but no class subfolders ({', '.join(sorted(inside)[:3])}, ...)")
                          + "; an image folder holds one subfolder of images per class")
    return {"train": sources.open_image_folder(folder, class_names)}
