"""TFRecord files of tf.train.Examples, and tensorflow-datasets datasets (whose
prepared shards are TFRecords), as `sources.Source`s.

tf.data's own reader reads them, from a block's byte offset
(`TFRecordDatasetV2`'s `byte_offsets`), so any block is one seek away; the offsets
come from recipes.prepare's schema.json, or from one pass over the files' 12-byte
record headers, which tf.data cannot give.
"""

import dataclasses
import json
import os
import struct
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from recipes.core.errors import RecipeError, first_line
from recipes.core.input.sources import BLOCK_SIZE, LABEL_NAMES, SCHEMA, SCHEMA_FORMAT, SPLITS, Source, _blocks

# TFRecord files of tf.train.Example.


def _record_offsets(path, block_size=BLOCK_SIZE):
    """(records, byte offset of every block's first record) of a TFRecord file, from
    its length headers alone (TFRecord frames each record as an 8-byte length, a
    4-byte CRC, the data and a 4-byte CRC). tf.data cannot tell a file's length or
    start mid-file without this index; a truncated file is a one-line error."""
    offsets, count, position = [], 0, 0
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            size = f.size()
            while position + 8 <= size:
                header = f.read(8)
                (length,) = struct.unpack("<Q", header)
                if count % block_size == 0:
                    offsets.append(position)
                position += 16 + length
                count += 1
                if position < size:
                    f.seek(position)
    except (tf.errors.OpError, OSError) as e:
        raise RecipeError(f"{path} cannot be read ({first_line(getattr(e, 'message', e), 100)})") from None
    if position != size:
        raise RecipeError(
            f"{path} is truncated or not a TFRecord file (its record {count} runs past "
            "the end); write it again, or remove it"
        )
    return count, offsets


def _infer_schema(path, label_column):
    """The schema of a TFRecord file without schema.json, from its first record: the
    label feature (`label_column`, else `label` or `y`) and the one other feature."""
    try:
        first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
    except tf.errors.OpError as e:
        raise RecipeError(f"{path} cannot be read as TFRecords ({first_line(e.message, 100)})") from None
    if first is None:
        raise RecipeError(f"{path} holds no records")
    example = tf.train.Example()
    try:
        example.ParseFromString(first.numpy())
    except Exception:  # noqa: BLE001 - protobuf's DecodeError, whatever its module.
        raise RecipeError(f"{path}: its first record is not a tf.train.Example") from None
    features = dict(example.features.feature)
    names = [label_column] if label_column else list(LABEL_NAMES)
    label = next((name for name in names if name in features), None)
    if label is None:
        raise RecipeError(
            f"{path}: no label feature ({' or '.join(names)}) among its features "
            f"{sorted(features)}; pass --label_column=NAME or write a {SCHEMA} beside it"
        )
    label_feature = features[label]
    if label_feature.WhichOneof("kind") != "int64_list" or len(label_feature.int64_list.value) != 1:
        raise RecipeError(
            f"{path}: the label feature {label!r} is not one integer class id; write the "
            f"labels as int64, or describe the features in a {SCHEMA} beside the files"
        )
    others = sorted(set(features) - {label})
    if len(others) != 1:
        raise RecipeError(
            f"{path}: features {others} beside the label {label!r}; the input must be one "
            f"feature: describe it in a {SCHEMA} beside the files (recipes.prepare writes one)"
        )
    spec = {label: {"kind": "int64", "shape": []}}
    feature = features[others[0]]
    kind = feature.WhichOneof("kind")
    if kind == "bytes_list":
        contents = feature.bytes_list.value[0]
        try:
            image = tf.io.decode_image(contents, expand_animations=False)
        except tf.errors.OpError:
            raise RecipeError(
                f"{path}: feature {others[0]!r} holds bytes that are not an encoded image; "
                f"describe its dtype and shape in a {SCHEMA} beside the files"
            ) from None
        spec[others[0]] = {"kind": "image", "shape": list(image.shape), "dtype": "uint8"}
    else:
        values = getattr(feature, kind).value
        spec[others[0]] = {"kind": "float" if kind == "float_list" else "int64", "shape": [len(values)]}
    return {"format": SCHEMA_FORMAT, "features": spec, "x": others[0], "label": label}


def read_schema(folder: str) -> dict | None:
    """`folder`'s schema.json, or None; a damaged one is a one-line error."""
    path = os.path.join(folder, SCHEMA)
    if not tf.io.gfile.exists(path):
        return None
    try:
        with tf.io.gfile.GFile(path) as f:
            schema = json.load(f)
        _check_schema(schema)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise RecipeError(
            f"{path} cannot be read as a schema ({first_line(e, 80)}); write the "
            "data again with python -m recipes.prepare"
        ) from None
    return schema


def _check_schema(schema):
    """Raises ValueError, KeyError or TypeError where `schema` is not what
    recipes.prepare writes."""
    if schema.get("format") != SCHEMA_FORMAT:
        raise ValueError(f"format is not {SCHEMA_FORMAT}")
    x = schema["features"][schema["x"]]
    schema["features"][schema["label"]]
    if x["kind"] not in ("raw", "image", "float", "int64") or not all(int(d) > 0 for d in x["shape"]):
        raise ValueError(f"feature {schema['x']!r} is {x}")
    tf.as_dtype(x.get("dtype", "float32"))
    if not isinstance(schema.get("class_names", []), list):
        raise TypeError("class_names is not a list")
    for entry in dict(schema.get("splits", {})).values():
        for file in entry["files"]:
            count, offsets = entry["index"][file][:2]
            if len(offsets) != -(-int(count) // BLOCK_SIZE):
                raise ValueError(f"{file}'s index has {len(offsets)} block offsets for {count} records")


def open_tfrecords(
    files: list[str],
    name: str,
    schema: dict | None = None,
    label_column: str | None = None,
    index: dict | None = None,
) -> Source:
    """TFRecord `files` of tf.train.Examples described by `schema` (from schema.json,
    else the first record's features). `index` ({file: (count, offsets)}), written by
    recipes.prepare, spares scanning the files' headers."""
    files = sorted(files)
    counts, offsets = [], []
    for path in files:  # First: a damaged file is named before anything reads its records.
        count, block_offsets = ((index or {}).get(os.path.basename(path)) or _record_offsets(path))[:2]
        counts.append(count)
        offsets.extend(block_offsets)
    if not sum(counts):
        raise RecipeError(f"{name} holds no records")
    schema = schema or _infer_schema(files[counts.index(next(c for c in counts if c))], label_column)
    blocks = _blocks(counts)
    file_table, offset_table = tf.constant(files), tf.constant(np.asarray(offsets, np.int64))
    # Block i of the table starts at byte offset_table[i]; a file's blocks follow each other.
    first_block = tf.constant(np.cumsum([0] + [-(-count // BLOCK_SIZE) for count in counts])[:-1], tf.int64)

    def read(shard, start, count):  # `start` is a block's first record: blocks are read whole.
        block = tf.gather(first_block, shard) + start // BLOCK_SIZE
        records = tf.data.experimental.from_variant(
            tf.raw_ops.TFRecordDatasetV2(
                filenames=tf.reshape(tf.gather(file_table, shard), [1]),
                compression_type="",
                buffer_size=256 * 1024,
                byte_offsets=tf.reshape(tf.gather(offset_table, block), [1]),
            ),
            tf.TensorSpec([], tf.string),
        )
        return records.take(count)

    x_spec, y_spec, decode_batch = _example_decoder(schema)
    return Source(
        name,
        blocks,
        x_spec,
        y_spec,
        tuple(schema.get("class_names") or ()) or None,
        read,
        decode_batch,
        files=tuple(files),
    )


def _example_decoder(schema):
    """(x spec, y spec, decode_batch) for tf.train.Examples described by `schema`."""
    x_name, label = schema["x"], schema["label"]
    x_feature = schema["features"][x_name]
    shape = [int(d) for d in x_feature["shape"]]
    kind = x_feature["kind"]
    description = {label: tf.io.FixedLenFeature([], tf.int64)}
    if kind in ("raw", "image"):
        description[x_name] = tf.io.FixedLenFeature([], tf.string)
    else:
        description[x_name] = tf.io.FixedLenFeature(
            [int(np.prod(shape))], tf.float32 if kind == "float" else tf.int64
        )
    dtype = tf.as_dtype(x_feature.get("dtype", "float32" if kind == "float" else "int64"))
    channels = shape[2] if len(shape) == 3 else 1

    def decode_batch(records):
        parsed = tf.io.parse_example(records, description)
        y = tf.cast(parsed[label], tf.int32)
        if kind == "raw":
            x = tf.reshape(tf.io.decode_raw(parsed[x_name], dtype), [-1, *shape])
        elif kind == "image":
            x = tf.map_fn(
                lambda b: tf.io.decode_image(b, channels=channels, expand_animations=False),
                parsed[x_name],
                fn_output_signature=tf.TensorSpec([None, None, channels], tf.uint8),
            )
            x = tf.reshape(x, [-1, *shape])
        else:
            x = tf.reshape(tf.cast(parsed[x_name], dtype), [-1, *shape])
        return x, y

    return tf.TensorSpec(shape, dtype), tf.TensorSpec([], tf.int32), decode_batch


# tensorflow-datasets.


def open_tfds(name: str, data_dir: str | None, network_available: Callable[[], bool]) -> dict[str, Source]:
    """{split: Source} of a tensorflow-datasets dataset prepared in `data_dir`, read
    from its TFRecord shards and decoded by its own features. One that is not prepared
    is downloaded and prepared first when the network is up."""
    builder = _prepared_builder(name, data_dir, network_available)
    info = builder.info
    if info.supervised_keys is None or len(info.supervised_keys) != 2:
        raise RecipeError(
            f"{name} has no (input, label) pair in tensorflow-datasets; the recipes "
            "here train on supervised datasets"
        )
    x_spec, class_names, decode_batch = _tfds_decoder(name, info)
    sources = {}
    for split, split_info in info.splits.items():
        if split not in SPLITS:
            continue
        files = [os.path.join(builder.data_dir, f) for f in split_info.filenames]
        generic = open_tfrecords(files, f"{name} ({split})", schema=_RAW_SCHEMA)
        source = dataclasses.replace(
            generic, x_spec=x_spec, class_names=class_names, decode_batch=decode_batch
        )
        sources[split] = source
    if "train" not in sources:
        raise RecipeError(f"{name} has no train split (it has {', '.join(info.splits)})")
    return sources


def _prepared_builder(name, data_dir, network_available):
    """The tfds builder of `name` in `data_dir`, prepared: downloaded and prepared
    first where it is not and the network is up."""
    import tensorflow_datasets as tfds  # Imported here: only this source needs it.

    try:
        if data_dir and "://" in data_dir and not network_available():
            raise OSError("the network is unreachable")
        builder = tfds.builder(name, data_dir=data_dir)
        prepared = builder.is_prepared()
    except (tfds.core.registered.DatasetNotFoundError, ValueError, AssertionError):  # Unknown, or unparsable.
        raise RecipeError(
            f"--data={name} is neither a path that exists nor a tensorflow-datasets "
            "name; pass a folder, file or glob of your data, or a dataset from "
            "tfds.list_builders()"
        ) from None
    except (tf.errors.OpError, OSError) as e:
        reason = first_line(getattr(e, "message", e), 120)
        raise RecipeError(
            f"--data_dir={data_dir} cannot be read ({reason}); pass a --data_dir that can be read"
        ) from None
    if prepared:
        return builder
    if not network_available():
        raise RecipeError(
            f"{name} is not prepared in {builder.data_dir} and the network is "
            f"unreachable; prepare it on a connected machine (tfds build {name} "
            "--data_dir=DIR) and pass --data_dir=DIR, or use --data=sample"
        )
    try:
        builder.download_and_prepare()
    except Exception as e:  # noqa: BLE001 - tfds raises many kinds (manual downloads, checksums, I/O).
        raise RecipeError(
            f"{name} could not be downloaded and prepared ({type(e).__name__}: "
            f"{first_line(e, 120)}); prepare it with tfds build {name} and pass "
            "--data_dir"
        ) from None
    return builder


def _tfds_decoder(name, info):
    """(x spec, class names, decode_batch) of a supervised tfds dataset's records, by
    its own features."""
    x_key, y_key = info.supervised_keys
    x_feature, y_feature = info.features[x_key], info.features[y_key]
    class_names = tuple(y_feature.names) if hasattr(y_feature, "names") else None
    shape = [d for d in x_feature.shape]
    if None in shape:
        raise RecipeError(
            f"{name}'s {x_key} has no fixed shape ({shape}): its examples differ in size, "
            "and the recipes do not resize; prepare it at one size first"
        )
    if len(shape) == 3 and shape[-1] == 1:
        shape = shape[:2]  # Grey images: [28, 28, 1] -> [28, 28], as the bundled digits.
    x_spec = tf.TensorSpec(shape, tf.as_dtype(x_feature.np_dtype))

    def decode_batch(records):
        def one(record):
            example = info.features.deserialize_example(record)
            return tf.reshape(example[x_key], shape), tf.cast(example[y_key], tf.int32)

        return tf.map_fn(one, records, fn_output_signature=(x_spec, tf.TensorSpec([], tf.int32)))

    return x_spec, class_names, decode_batch


# A schema whose decoding is replaced (tensorflow-datasets decodes its own records).
_RAW_SCHEMA = {
    "format": SCHEMA_FORMAT,
    "x": "x",
    "label": "label",
    "features": {
        "x": {"kind": "raw", "shape": [1], "dtype": "uint8"},
        "label": {"kind": "int64", "shape": []},
    },
}
