"""CSV files as a source: a header row, numeric feature columns and a label column
(class ids, class names, or values to fit). One pass in Python checks every cell and
notes where each block of rows starts; a block is then one byte range, read with a
seek (`sources.byte_range`): tf.data's CSV reader cannot start mid-file.
"""

import csv
import functools
import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from recipes.core.errors import RecipeError, first_line
from recipes.core.input.sources import BLOCK_SIZE, Source, _blocks, byte_range


def _scan_csv(path, label_column, values=False):
    """One pass over a CSV file in Python, which checks every cell: (header, the label
    column's index, each block's byte offset, the labels seen, rows, the end offset).
    With `values` the label is a number to fit, checked as the features are, and the
    labels seen are not kept."""
    offsets, labels, count = [], set(), 0
    try:
        with open(path, "rb") as f:  # Binary: tell() is the byte offset the blocks are read at.
            header = next(csv.reader([f.readline().decode("utf-8-sig")]), None)
            if not header or label_column not in header:
                raise RecipeError(
                    f"{path} has no column {label_column!r} (its columns: "
                    f"{', '.join(header or [])}); pass --label_column= one of them"
                )
            label_index = header.index(label_column)
            while True:
                position = f.tell()
                line = f.readline()
                if not line:
                    break
                if not line.strip():
                    continue
                cells = next(csv.reader([line.decode("utf-8")]))
                if len(cells) != len(header):
                    raise RecipeError(
                        f"{path}, line {count + 2}: {len(cells)} cells for {len(header)} columns; fix the row"
                    )
                for column, cell in enumerate(cells):
                    if column == label_index and not values:
                        labels.add(cell.strip())
                        continue
                    try:
                        if "_" in cell or not math.isfinite(float(cell)):  # What decode_csv refuses.
                            raise ValueError(cell)
                    except ValueError:
                        what = "the values to fit" if column == label_index else "the features"
                        raise RecipeError(
                            f"{path}, line {count + 2}, column {header[column]!r}: {cell!r} is not a "
                            f"finite number; {what} must be (encode, fill or drop that column)"
                        ) from None
                if count % BLOCK_SIZE == 0:
                    offsets.append(position)
                count += 1
            end = f.tell()
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise RecipeError(f"{path} cannot be read as CSV text ({first_line(e, 80)})") from None
    if count == 0:
        raise RecipeError(f"{path} has a header and no rows")
    return header, label_index, offsets, labels, count, end


def open_csv(
    path: str, label_column: str | None, class_names: Sequence[str] | None = None, targets: str = "classes"
) -> Source:
    """A CSV file with a header row: numeric feature columns and `label_column` (integer
    class ids, or names; or, with `targets="values"`, numbers to fit). One pass in
    Python checks every cell, counts the rows and notes where each block starts;
    blocks are then read by byte range. `class_names` are another split's, which
    this file's labels must be among."""
    values = targets == "values"
    if not label_column:
        raise RecipeError(
            f"{path} is a CSV file: pass --label_column=NAME, the column of "
            + ("the values to fit" if values else "class labels")
        )
    header, label_index, offsets, labels, count, end = _scan_csv(path, label_column, values)
    num_features = len(header) - 1
    ends = offsets[1:] + [end]
    table = tf.constant(np.asarray([offsets, ends], np.int64).T)

    def read(shard, start, count):  # `start` is a block's first row: blocks are read whole.
        del shard
        begin, stop = table[start // BLOCK_SIZE][0], table[start // BLOCK_SIZE][1]
        text = byte_range(tf.constant(path), begin, stop - begin)
        return tf.data.Dataset.from_tensor_slices(_non_empty(tf.strings.split(text, "\n"))).take(count)

    def columns(lines, label_default):
        cells = tf.io.decode_csv(
            lines, [label_default if column == label_index else [0.0] for column in range(len(header))]
        )
        features = tf.stack([cells[c] for c in range(len(header)) if c != label_index], axis=1)
        return tf.ensure_shape(features, [None, num_features]), cells[label_index]

    source = functools.partial(
        Source,
        path,
        _blocks([count]),
        tf.TensorSpec([num_features], tf.float32),
        read=read,
        files=(path,),
        service=False,
        feature_names=tuple(h for i, h in enumerate(header) if i != label_index),
    )
    if values:
        return source(
            y_spec=tf.TensorSpec([], tf.float32),
            class_names=None,
            decode_batch=lambda lines: columns(lines, [0.0]),
        )
    class_names, numeric, lookup = _class_lookup(path, label_column, labels, class_names)

    def decode_batch(lines):
        features, label = columns(lines, [""])
        label = tf.strings.strip(label)
        if numeric:  # "2" and "2.0" are class 2.
            label = tf.strings.as_string(tf.cast(tf.strings.to_number(label, tf.float64), tf.int64))
        return features, lookup.lookup(label)

    return source(y_spec=tf.TensorSpec([], tf.int32), class_names=class_names, decode_batch=decode_batch)


def _class_lookup(path, label_column, labels, class_names):
    """(class names, whether the labels are class ids, a table from a label's text to
    its class id) for the `labels` seen in the file: integer labels are class ids, and
    any other labels class names; a test split follows the training data's choice
    (its `class_names`)."""
    if "" in labels:
        raise RecipeError(
            f"{path}: a row has no label in column {label_column!r}; fill it in or drop the row"
        )
    ids_given = class_names is not None and tuple(class_names) == tuple(map(str, range(len(class_names))))
    numeric = ids_given if class_names is not None else all(_is_int(label) for label in labels)
    if numeric and not all(_is_int(label) for label in labels):
        raise RecipeError(
            f"{path}: labels {sorted(x for x in labels if not _is_int(x))[:5]} in column "
            f"{label_column!r} are not class ids like the training data's"
        )
    if class_names is None:
        class_names = (
            tuple(str(i) for i in range(max(int(float(v)) for v in labels) + 1))
            if numeric
            else tuple(sorted(labels))
        )
    ids = (
        {str(i): i for i in range(len(class_names))}
        if numeric
        else {name: i for i, name in enumerate(class_names)}
    )
    unknown = sorted(label for label in labels if (str(int(float(label))) if numeric else label) not in ids)
    if unknown:
        raise RecipeError(
            f"{path}: labels {unknown[:5]} in column {label_column!r} are not among the "
            f"training data's classes {list(class_names)[:10]}"
        )
    lookup = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(ids)), tf.constant(list(ids.values()), tf.int32)
        ),
        default_value=-1,
    )
    return tuple(class_names), numeric, lookup


def _is_int(text):
    try:
        return float(text) == int(float(text)) and int(float(text)) >= 0
    except (ValueError, OverflowError):
        return False


def _non_empty(lines):
    """The lines that hold anything, without their line ends (\r\n too)."""
    lines = tf.strings.strip(lines)
    return tf.boolean_mask(lines, tf.strings.length(lines) > 0)
