"""Writing data once as sharded TFRecords with a schema, so that `--data=DIR` streams
it back: what `python -m recipes.prepare` and `data.from_dataset` do.

    DIR/schema.json                      what the features are, the class names, and per
                                         split its shards with their record counts and
                                         block offsets (so no reader scans them again)
    DIR/train-00000-of-00004.tfrecord    tf.train.Examples: x (raw bytes), y (int64)

tfds' own builders write such shards too (`tfds.dataset_builders.store_as_tfds_dataset`),
but they need the whole split in memory as NumPy or a generator they iterate in one
process, and they keep no block offsets; this writer streams any `Data` split, names
each shard under a temporary name until it is whole, and skips the shards a killed
run already finished.
"""

import itertools
import json
import os
from collections.abc import Sequence

import keras
import tensorflow as tf

from recipes.core.errors import RecipeError, first_line
from recipes.core.input import sources


def shard_names(split, shards):
    return [f"{split}-{i:05d}-of-{shards:05d}.tfrecord" for i in range(shards)]


def _example(x, y):
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "x": tf.train.Feature(bytes_list=tf.train.BytesList(value=[x.tobytes()])),
                "y": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(y)])),
            }
        )
    ).SerializeToString()


def _examples(batches):
    """(x, y) one example at a time from batches of them."""
    for x, y in batches:
        yield from zip(x, y)


def _write_shard(path, examples, count, progress):
    """Writes `count` examples (None: all there are) from the iterator `examples` to
    `path` (under a temporary name, renamed when whole); returns its index entry
    (records, block offsets, the largest label)."""
    partial = path + ".partial"
    offsets, written, position, largest = [], 0, 0, -1
    with tf.io.TFRecordWriter(partial) as writer:
        for x, y in itertools.islice(examples, count):
            largest = max(largest, int(y))
            record = _example(x, y)
            if written % sources.BLOCK_SIZE == 0:
                offsets.append(position)
            writer.write(record)
            position += 16 + len(record)  # TFRecord's framing: length, CRC, data, CRC.
            written += 1
            if progress is not None:
                progress.add(1)
    if not written:
        tf.io.gfile.remove(partial)
        raise RecipeError(f"{path}: the data holds no examples")
    tf.io.gfile.rename(partial, path, overwrite=True)
    return [written, offsets, largest]


def _schema(x_spec, class_names, source):
    """schema.json's contents for examples of `x_spec` (raw bytes) and int64 labels."""
    return {
        "format": sources.SCHEMA_FORMAT,
        "x": "x",
        "label": "y",
        "source": source,
        "features": {
            "x": {"kind": "raw", "dtype": x_spec.dtype.name, "shape": x_spec.shape.as_list()},
            "y": {"kind": "int64", "shape": []},
        },
        "class_names": list(class_names or ()),
        "splits": {},
    }


def _write_schema(folder, schema):
    """schema.json, whole or not at all: it marks the folder's shards complete."""
    path = os.path.join(folder, sources.SCHEMA)
    with tf.io.gfile.GFile(path + ".partial", "w") as f:
        json.dump(schema, f, indent=1)
    tf.io.gfile.rename(path + ".partial", path, overwrite=True)


def _finished(path, origin, size):
    """The index of the shard at `path` if an earlier run of the same data wrote it whole
    (its .index.json says so), else None: it is written again."""
    try:
        with tf.io.gfile.GFile(path + ".index.json") as f:
            record = json.load(f)
        if (
            tf.io.gfile.exists(path)
            and {k: record.get(k) for k in origin} == origin
            and record["index"][0] == size
        ):
            return record["index"]
    except (tf.errors.OpError, OSError, ValueError, KeyError, TypeError, IndexError):
        pass
    return None


def write(folder: str, data, *, shards: int = 1, progress: bool = True, source: str | None = None) -> dict:
    """Writes every split of `data` (a `data.Data`) into `folder` as `shards` TFRecord
    shards each, in a fixed shuffled order, then schema.json. A rerun after a kill keeps
    the shards that were finished (their index sits beside them until schema.json is
    written) and writes the rest. Returns the schema."""
    from recipes.core.input import data as data_lib

    if shards < 1:
        raise RecipeError(f"--shards must be at least 1; received {shards}")
    tf.io.gfile.makedirs(folder)
    schema = _schema(data.x_spec, data.class_names, source)
    for split in sources.SPLITS:
        part = getattr(data, split)
        if part is None:
            continue
        total = part.num_examples
        count = min(shards, total)
        names = shard_names(split, count)
        sizes = [total * (i + 1) // count - total * i // count for i in range(count)]
        bar = keras.utils.Progbar(total, unit_name="example") if progress else None
        if bar is not None:
            print(f"{split}: {total:,} examples into {count} shard(s)")
        index = {}
        done = 0
        # What a shard finished by an earlier, killed run must have come from to be kept.
        origin = {"source": source, "split_examples": total, "x": schema["features"]["x"]}
        for name, size in zip(names, sizes):
            path = os.path.join(folder, name)
            finished = _finished(path, origin, size)
            if finished is not None:
                index[name] = finished
                done += size
                if bar is not None:
                    bar.add(size)
                continue
            # The split's first epoch, shuffled (fixed), from this shard's first record on.
            stream = data_lib.records(part, seed=0, start=done)
            batches = stream.take(size).batch(1024).map(lambda _, examples: examples).as_numpy_iterator()
            try:
                index[name] = _write_shard(path, _examples(batches), size, bar)
            except tf.errors.OpError as e:
                reason = first_line(e.message, 120)
                raise RecipeError(
                    f"{part.source.name}: a record cannot be read ({reason}); the shards "
                    "written so far are kept: fix the data and run again"
                ) from None
            with tf.io.gfile.GFile(path + ".index.json", "w") as f:
                json.dump({**origin, "index": index[name]}, f)
            done += size
        schema["splits"][split] = {"files": names, "index": index}
    _write_schema(folder, schema)
    for split in schema["splits"].values():
        for name in split["files"]:
            tf.io.gfile.remove(os.path.join(folder, name) + ".index.json")
    return schema


def write_datasets(
    folder: str,
    datasets: dict[str, tf.data.Dataset | None],
    *,
    class_names: Sequence[str] | None = None,
    shards: int = 1,
) -> None:
    """Writes {split: tf.data.Dataset of (x, y)} (None for a split that is absent) into
    `folder` and schema.json, streaming: nothing is held whole. A split of known
    cardinality goes into `shards` files of equal counts, else into one."""
    tf.io.gfile.makedirs(folder)
    schema = None
    for split, dataset in datasets.items():
        if dataset is None:
            continue
        if not isinstance(dataset, tf.data.Dataset) or len(dataset.element_spec) != 2:
            raise TypeError(
                f"the {split} data must be a tf.data.Dataset of (x, y) pairs. Received: {dataset!r}"
            )
        x_spec = dataset.element_spec[0]
        if not x_spec.shape.is_fully_defined():
            raise ValueError(f"every x of the {split} data must have one static shape. Received: {x_spec}")
        schema = schema or _schema(x_spec, class_names, "tf.data.Dataset")
        if _schema(x_spec, class_names, "tf.data.Dataset")["features"] != schema["features"]:
            raise ValueError(
                f"the {split} data's x is {x_spec}; the training data's is {schema['features']['x']}"
            )
        total = int(dataset.cardinality())
        if total == tf.data.INFINITE_CARDINALITY:
            raise ValueError(f"the {split} data is an endless tf.data.Dataset (repeat()?); pass a finite one")
        if dataset.element_spec[1].shape.rank != 0 or not dataset.element_spec[1].dtype.is_integer:
            raise ValueError(
                f"the {split} data's y must be one integer class id per example. "
                f"Received: {dataset.element_spec[1]}"
            )
        count = min(shards, total) if total > 0 else 1
        examples = _examples(dataset.batch(1024).as_numpy_iterator())
        names, index = shard_names(split, count), {}
        for i, name in enumerate(names):
            size = None if count == 1 else total * (i + 1) // count - total * i // count
            index[name] = _write_shard(os.path.join(folder, name), examples, size, None)
        schema["splits"][split] = {"files": names, "index": index}
        largest = max(entry[2] for entry in index.values())
        if not class_names and split == "train":
            schema["class_names"] = [str(i) for i in range(largest + 1)]
    if schema is None:
        raise ValueError("`datasets` holds no tf.data.Dataset; pass at least the train split")
    _write_schema(folder, schema)
