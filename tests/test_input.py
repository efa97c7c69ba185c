"""The input engine on the user's own data: every form through `--data`, streams
that count right (epochs, shares of workers, evaluation), exact resume, tf.data
service, and bad data as one line each.

The data is real and ships with scikit-learn: its 1,797 8x8 digits written as a
folder of PNGs, a class folder for each digit by its name (and as TFRecord shards by
recipes.prepare), its wine table as CSV, each wine's class by the name scikit-learn
gives it.
"""

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from recipes.core.input import data, pipeline, shards, sources
from tests.helpers import REPO, assert_one_error_line, run_in_process, run_module, shared_strategy

# The digits' class folders. The classes are the folders in sorted order ("eight" is
# class 0), so a served name that is right shows that the order was kept.
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
WINE_NAMES = ("class_0", "class_1", "class_2")  # load_wine's target_names.


@pytest.fixture(scope="session")
def own(tmp_path_factory):
    """scikit-learn's digits as class folders of PNGs named by the digit and as 8 TFRecord
    shards, and its wine table as a CSV with the class names; {name: path}."""
    from PIL import Image
    from sklearn.datasets import load_digits, load_wine

    root = tmp_path_factory.mktemp("own")
    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        folder = root / "digits" / DIGIT_NAMES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255 / 16).astype(np.uint8)).save(folder / f"{i:04d}.png")
    wine = load_wine(as_frame=True)
    wine.frame.assign(target=wine.target_names[wine.target]).to_csv(root / "wine.csv", index=False)
    shards.write(str(root / "digits_tf"), data.open_data(str(root / "digits")), shards=8, progress=False)
    shards.write(str(root / "digits_tf1"), data.open_data(str(root / "digits")), shards=1, progress=False)
    from recipes.core.nlp import (
        text,  # The Python Language Reference's topics: real text that ships with Python.
    )

    (root / "reference.txt").write_text(text.reference_text())
    return {
        **{name: str(root / name) for name in ("digits", "digits_tf", "digits_tf1")},
        "wine": str(root / "wine.csv"),
        "reference": str(root / "reference.txt"),
    }


def _ids(stream, count):
    return [int(i) for i, _ in stream.take(count)]


# Each form opens with the right splits, shapes and classes.


def test_every_form_opens_with_its_splits_shapes_and_classes(own):
    images = data.open_data(own["digits"])
    assert images.x_spec.shape == (8, 8) and images.x_spec.dtype == tf.uint8
    assert images.class_names == tuple(sorted(DIGIT_NAMES))
    assert (images.train.num_examples, images.test.num_examples) == (1617, 180)  # 10% carved, fixed.
    prepared = data.open_data(own["digits_tf"])
    assert (prepared.train.num_examples, prepared.test.num_examples) == (1617, 180)
    assert prepared.class_names == images.class_names and not prepared.carved
    x, y = prepared.arrays("test")
    x_images, y_images = images.arrays("test")
    assert sorted(map(bytes, x)) == sorted(map(bytes, x_images))  # The same test digits.
    table = data.open_data(own["wine"], label_column="target")
    assert table.x_spec.shape == (13,) and table.class_names == WINE_NAMES
    preprocessing = table.default_preprocessing()
    standardized = preprocessing(table.arrays("train")[0])
    assert preprocessing.kind == "standardize"
    np.testing.assert_allclose(np.mean(standardized, axis=0), 0, atol=1e-4)


def test_a_csv_of_many_blocks_reads_every_row_once_whatever_its_line_ends(own, tmp_path):
    x, y = data.open_data(own["digits"]).arrays("train")  # 1,617 rows: 7 blocks of 256.
    rows = [",".join(map(str, row)) + f",{label}" for row, label in zip(x.reshape(len(x), -1), y)]
    header = ",".join(f"p{i}" for i in range(64)) + ",label"
    path = tmp_path / "digits.csv"
    path.write_bytes(("\r\n".join([header] + rows[:300] + [""] + rows[300:])).encode())  # No final newline.
    opened = data.open_data(str(path), label_column="label", test_data=str(path))
    assert opened.train.num_examples == len(x)
    x_back, y_back = opened.arrays("train")
    rows = lambda features, labels: sorted(zip(map(bytes, features), labels))  # noqa: E731
    assert rows(x_back.astype(np.uint8), y_back) == rows(x.reshape(len(x), -1), y)


def test_numpy_forms_are_read_memory_mapped_and_as_npz(own, tmp_path):
    x, y = data.open_data(own["digits"]).arrays("train")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    for path in (str(tmp_path), str(tmp_path / "d.npz")):
        opened = data.open_data(path)
        assert opened.train.num_examples + opened.test.num_examples == len(x)
        x_back, _ = opened.arrays("train")
        assert x_back.dtype == np.uint8 and x_back.shape[1:] == (8, 8)


def test_a_tf_data_dataset_and_arrays_train_through_the_api(own):
    x, y = data.open_data(own["digits"]).arrays("train")
    from_dataset = data.as_data(tf.data.Dataset.from_tensor_slices((x, y)))
    from_arrays = data.as_data((x, y))
    for opened in (from_dataset, from_arrays):
        assert opened.train.num_examples + opened.test.num_examples == len(x)
        assert opened.x_spec.shape == (8, 8)


# The stream.


@pytest.mark.parametrize("carve", [False, True])
def test_an_epoch_reads_every_record_once_and_a_resume_continues_exactly(own, carve):
    prepared = data.open_data(own["digits_tf"])
    split = prepared.with_validation().train if carve else prepared.train
    count = split.num_examples
    full = _ids(pipeline.records(split, seed=3), 3 * count)
    for epoch in range(3):
        assert sorted(full[epoch * count : (epoch + 1) * count]) == sorted(set(full[:count]))
    assert full[:count] != full[count : 2 * count]  # Reshuffled each epoch.
    # Resumed anywhere (group, block and epoch edges included), it goes on exactly.
    for start in (1, 255, 256, 700, count - 1, count, count + 17, 2 * count + 5):
        assert _ids(pipeline.records(split, seed=3, start=start), 300) == full[start : start + 300], start


def test_text_is_windows_of_next_byte_targets_with_the_last_tenth_held_out(own):
    window = 64
    opened = data.open_data(own["reference"], text_window=window)
    raw = open(own["reference"], "rb").read()
    cut = int(len(raw) * 0.9)
    assert opened.x_spec == tf.TensorSpec([window], tf.int32) and opened.class_names is None
    x, y = opened.arrays("test")  # Held out: the same windows on every read.
    assert len(x) == (len(raw) - cut - 1) // window == opened.test.num_examples
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])  # y is x moved on by one byte.
    np.testing.assert_array_equal(x[3], np.frombuffer(raw[cut + 3 * window : cut + 4 * window], np.uint8))
    train = opened.train
    count = train.num_examples
    assert count == (cut - 1) // window - 1  # One window left over for the grid's shift.

    def shift_of_epoch(stream):
        """The offsets at which every window of the epoch lies on the text's grid."""
        shifts = set(range(window))
        for index, (x, y) in stream:
            begin = int(index) * window
            text = bytes(x.tolist() + y[-1:].tolist())
            shifts &= {s for s in shifts if raw[begin + s : begin + s + window + 1] == text}
        return shifts

    full = list(pipeline.records(train, seed=5).take(3 * count).as_numpy_iterator())
    assert sorted(int(i) for i, _ in full[:count]) == list(range(count))
    epochs = [shift_of_epoch(full[e * count : (e + 1) * count]) for e in range(3)]
    assert all(len(shifts) == 1 for shifts in epochs) and len(set.union(*epochs)) > 1, epochs
    for _, (x, y) in full[:100]:
        np.testing.assert_array_equal(y[:-1], x[1:])  # y is x moved on by one byte.
    for start in (7, 4096, count + 3):  # A resume reads the same windows, shifted alike.
        again = pipeline.records(train, seed=5, start=start).take(200).as_numpy_iterator()
        for (i, (x, _)), (j, (x0, _)) in zip(again, full[start : start + 200]):
            assert i == j and (x == x0).all()


def test_bert_masks_your_text_in_the_pipeline_the_same_way_on_every_read(own):
    """Masked-language-model data from a text file: [CLS] + word ids, 15% of the real
    tokens to predict (at least one a sequence), the mask seeded by the sequence's
    index, so a resume or another worker count masks it as before."""
    from recipes.core.nlp import text

    files = [own["reference"]]
    tokenizer = text.Tokenizer.fit(tf.data.TextLineDataset(files).batch(1024), 2000)
    masked = text.masked_lm_data(
        files, tokenizer, 32, open_text=lambda f, window: data.open_data(f[0], text_window=window)
    )
    x, y = masked.arrays("train")
    assert x.shape == y.shape and x.shape[1] == 32 and len(x) == masked.train.num_examples > 1000
    assert (x[:, 0] == tokenizer.cls_id).all() and (y[:, 0] == -1).all()
    chosen = y >= 0
    real = x > 1
    has_words = (real | chosen)[:, 1:].any(axis=1)  # After [CLS]; a window of punctuation has none.
    assert has_words.mean() > 0.9 and (chosen.any(axis=1) == has_words).all()
    assert 0.12 < chosen.sum() / (real | chosen).sum() < 0.18
    assert 0.75 < (x[chosen] == tokenizer.mask_id).mean() < 0.85  # 80% [MASK], the rest kept or swapped.
    # The training windows shift each epoch (corpus.py): a resume reads and masks what the run read.
    full = list(pipeline.records(masked.train, seed=3).take(150).as_numpy_iterator())
    again = list(pipeline.records(masked.train, seed=3, start=100).take(50).as_numpy_iterator())
    for (index, (inputs, labels)), (index0, (inputs0, labels0)) in zip(again, full[100:]):
        assert index == index0
        np.testing.assert_array_equal(inputs, inputs0)
        np.testing.assert_array_equal(labels, labels0)


@pytest.mark.parametrize("name", ["digits_tf", "digits_tf1"])
@pytest.mark.parametrize("workers", [2, 3])
def test_workers_read_disjoint_balanced_shares_that_cover_every_record(own, name, workers):
    split = data.open_data(own[name]).train  # 8 shards, or 1: fewer files than workers.
    shares = [
        _ids(pipeline.records(split, shuffle=False, pipeline=p, num_pipelines=workers), split.num_examples)
        for p in range(workers)
    ]
    every = [i for share in shares for i in share]
    assert len(every) == len(set(every)) == split.num_examples
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_evaluation_counts_every_example_once_over_replicas(own, strategy):
    split = data.open_data(own["digits_tf"]).test
    dataset, steps = data.eval_dataset(strategy, split, 64, preprocess=data.scale_pixels)
    weights = sum(
        float(t.numpy().sum()) for _, _, w in dataset for t in strategy.experimental_local_results(w)
    )
    assert steps == 3 and weights == split.num_examples == 180


def test_n_replicas_take_the_batches_one_device_takes(own):
    split = data.open_data(own["digits_tf"]).train

    def batches(strategy):
        stream = data.train_dataset(
            strategy,
            split,
            64,
            preprocess=data.scale_pixels,
            seed=1,
            options=data.PipelineOptions(with_ids=True),
        )
        out = []
        for _, (_x, _y, ids) in zip(range(30), stream):
            out.append(np.concatenate([t.numpy() for t in strategy.experimental_local_results(ids)]))
        return np.concatenate(out)

    np.testing.assert_array_equal(batches(shared_strategy("mirrored")), batches(tf.distribute.get_strategy()))


def test_the_input_state_is_one_small_variable_against_a_checkpointed_iterator(own, tmp_path):
    """The size the issue asks for: our state against tf.train.Checkpoint(iterator=...)
    over the same records with a 10,000-element shuffle buffer."""
    split = data.open_data(own["digits_tf"]).train
    state = pipeline.InputState(32)
    state.position.assign(123_456)
    ours = tf.train.Checkpoint(input=state).write(str(tmp_path / "ours" / "ckpt"))
    stream = pipeline.records(split, shuffle=False).repeat().shuffle(10_000, seed=0)
    iterator = iter(stream)
    for _ in range(20):
        next(iterator)
    theirs = tf.train.Checkpoint(iterator=iterator).write(str(tmp_path / "theirs" / "ckpt"))
    size = lambda prefix: sum(
        os.path.getsize(os.path.join(os.path.dirname(prefix), f))  # noqa: E731
        for f in os.listdir(os.path.dirname(prefix))
        if f.startswith("ckpt")
    )
    assert size(ours) < 1000 < 100 * size(ours) < size(theirs)


# tf.data service.


@pytest.mark.slow
def test_tf_data_service_reads_each_record_once_per_epoch_and_trains(own, tmp_path):
    from recipes import mnist
    from recipes.core.training.config import TrainConfig

    service = tf.data.experimental.service
    dispatcher = service.DispatchServer(service.DispatcherConfig(port=0))
    address = dispatcher.target.split("://")[1]
    workers = [service.WorkerServer(service.WorkerConfig(dispatcher_address=address)) for _ in range(2)]
    opened = data.open_data(own["digits_tf"])
    count = opened.train.num_examples
    stream = data.train_dataset(
        tf.distribute.get_strategy(),
        opened.train,
        33,
        preprocess=data.scale_pixels,
        seed=0,
        options=data.PipelineOptions(data_service=dispatcher.target, with_ids=True),
    )
    ids = np.concatenate([ids.numpy() for _, _, ids in stream.take(2 * count // 33)])
    for epoch in range(2):  # An epoch is a job: it ends before the next begins.
        seen = collections.Counter(ids[epoch * count : (epoch + 1) * count].tolist())
        assert len(seen) == count and set(seen.values()) == {1}, epoch
    results = mnist.run(
        TrainConfig(
            model_dir=str(tmp_path / "run"), train_steps=60, batch_size=32, data_service=dispatcher.target
        ),
        tf.distribute.get_strategy(),
        opened,
    )
    assert results["test_accuracy"] > 0.5
    del workers


# Bad data: one line each, and nothing written.


def _bad_files(root):
    """Bad data on disk: {name: path}."""
    from PIL import Image

    made = {}
    (root / "empty").mkdir()
    made["empty"] = root / "empty"
    one = root / "one_class" / "cat"
    one.mkdir(parents=True)
    Image.new("L", (8, 8)).save(one / "a.png")
    made["one_class"] = root / "one_class"
    flat = root / "flat"
    flat.mkdir()
    Image.new("L", (8, 8)).save(flat / "a.png")
    made["flat"] = flat
    for name, second in (("corrupt", None), ("sizes", (9, 9))):
        for label in ("a", "b"):
            (root / name / label).mkdir(parents=True)
            Image.new("L", (8, 8)).save(root / name / label / "1.png")
        if second:
            Image.new("L", second).save(root / name / "b" / "2.png")
        else:
            (root / name / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
        made[name] = root / name
    (root / "text.csv").write_text("a,b,label\n1,2,0\n3,x,1\n")
    (root / "ragged.csv").write_text("a,b,label\n1,2,0\n3,1\n")
    (root / "header.csv").write_text("a,b,label\n")
    (root / "named.csv").write_text("a,b,price\n1,2,3.5\n3,4,cheap\n")
    for name in ("text", "ragged", "header", "named"):
        made[name] = root / f"{name}.csv"
    example = lambda features: tf.train.Example(features=tf.train.Features(feature=features))  # noqa: E731
    floats = lambda v: tf.train.Feature(float_list=tf.train.FloatList(value=v))  # noqa: E731
    ints = lambda v: tf.train.Feature(int64_list=tf.train.Int64List(value=v))  # noqa: E731
    for name, features in (
        ("nolabel", {"x": floats([1.0, 2.0])}),
        ("twofeatures", {"x": floats([1.0]), "z": floats([2.0]), "label": ints([1])}),
    ):
        (root / name).mkdir()
        with tf.io.TFRecordWriter(str(root / name / "a.tfrecord")) as writer:
            for _ in range(4):
                writer.write(example(features).SerializeToString())
        made[name] = root / name / "a.tfrecord"
    (root / "trunc").mkdir()
    with tf.io.TFRecordWriter(str(root / "trunc" / "a.tfrecord")) as writer:
        for i in range(10):
            writer.write(example({"x": floats([1.0, float(i)]), "label": ints([i % 2])}).SerializeToString())
    content = (root / "trunc" / "a.tfrecord").read_bytes()
    (root / "trunc" / "a.tfrecord").write_bytes(content[:-7])
    made["trunc"] = root / "trunc" / "a.tfrecord"
    (root / "noise.tfrecord").write_bytes(os.urandom(100))
    made["noise"] = root / "noise.tfrecord"
    np.savez(root / "noy.npz", x=np.zeros((4, 2)))
    made["noy"] = root / "noy.npz"
    (root / "npydir").mkdir()
    np.save(root / "npydir" / "x.npy", np.zeros((4, 2)))
    made["npydir"] = root / "npydir"
    np.savez(root / "floaty.npz", x=np.zeros((4, 2)), y=np.ones(4) * 0.5)
    made["floaty"] = root / "floaty.npz"
    np.savez(root / "mismatch.npz", x=np.zeros((4, 2)), y=np.ones(3, np.int64))
    made["mismatch"] = root / "mismatch.npz"
    for name in ("badschema", "noshard"):  # Prepared shards, then damaged.
        rows = np.arange(40, dtype=np.float32).reshape(20, 2)
        shards.write(str(root / name), data.from_arrays(rows, np.arange(20) % 2), shards=2, progress=False)
        made[name] = root / name
    (root / "badschema" / sources.SCHEMA).write_text('{"format": "recipes.tfrecord/1", "x": 3}')
    (root / "noshard" / "train-00001-of-00002.tfrecord").unlink()
    return {name: str(path) for name, path in made.items()}


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return _bad_files(tmp_path_factory.mktemp("bad"))


# (recipe, flags with {placeholders}, fragment of the error line). At least 25 cases.
BAD_DATA = [
    ("mnist", ["--data=/no/such/folder"], "matches no file or folder"),
    ("mnist", ["--data=/no/such/*.tfrecord"], "matches no file or folder"),
    ("mnist", ["--data={empty}"], "is empty"),
    ("mnist", ["--data={one_class}"], "needs at least two"),
    ("mnist", ["--data={flat}"], "no class subfolders"),
    ("mnist", ["--data={corrupt}"], "broken.png cannot be decoded as an image"),
    ("mnist", ["--data={sizes}"], "9x9 pixels"),
    ("bigmodel", ["--data={wine}"], "pass --label_column"),
    ("bigmodel", ["--data={wine}", "--label_column=species"], "has no column 'species'"),
    ("bigmodel", ["--data={text}", "--label_column=label"], "'x' is not a finite number"),
    ("bigmodel", ["--data={ragged}", "--label_column=label"], "2 cells for 3 columns"),
    ("bigmodel", ["--data={header}", "--label_column=label"], "has a header and no rows"),
    ("bigmodel", ["--data={nolabel}"], "no label feature"),
    ("bigmodel", ["--data={twofeatures}"], "the input must be one feature"),
    ("bigmodel", ["--data={trunc}"], "is truncated"),
    ("bigmodel", ["--data={noise}"], "is truncated or not a TFRecord file"),
    ("bigmodel", ["--data={noy}"], "it needs x and y"),
    ("bigmodel", ["--data={npydir}"], "has no y.npy"),
    ("bigmodel", ["--data={floaty}"], "y must hold one integer class id"),
    ("bigmodel", ["--data={mismatch}"], "x has 4 examples and y 3"),
    ("bigmodel", ["--data={badschema}"], "cannot be read as a schema"),
    ("bigmodel", ["--data={noshard}"], "train-00001-of-00002.tfrecord named in schema.json is missing"),
    ("mnist", ["--data={digits}", "--test_data={sizes}"], "classes ['a', 'b']"),
    ("mnist", ["--data={digits_tf}", "--test_data={digits}"], "has a test split of its own"),
    ("mnist", ["--data_source=tfds"], "--data_source is replaced by --data"),
    ("mnist", ["--data_dir={digits}"], "pass --data=NAME"),
    ("mnist", ["--data=sample:nope"], "no bundled sample of that name"),
    ("mnist", ["--data=no_such_dataset_anywhere"], "neither a path that exists nor a tensorflow-datasets"),
    ("mnist", ["--data={reference}"], "is text, which the language recipes read"),
    ("mnist", ["--data=mnist"], "not prepared"),
    ("lstm", ["--data={wine}", "--label_column=target"], "cannot build the model"),
    ("mnist", ["--data={digits}", "--batch_size=4096"], "is larger than the 1617 training examples"),
    ("bert", ["--data={wine}"], "wine.csv: BERT pre-trains on text files"),
    ("bert", ["--label_column=target"], "--label_column do not apply here: this recipe trains on the Python"),
    ("linreg", ["--data={digits}"], "is a folder of images, which hold classes"),
    ("linreg", ["--data={named}", "--label_column=price"], "line 3, column 'price': 'cheap' is not a finite"),
    ("linreg", ["--data={wine}"], "the column of the values to fit"),
    ("linreg", ["--label_column=target"], "--label_column do not apply here"),
    ("neuron", ["--data={wine}", "--label_column=target"], "--data and --label_column do not apply here"),
    ("prepare", ["--data={digits}"], "pass --output=DIR"),
    ("prepare", ["--data={digits}", "--output={digits_tf}"], "already holds prepared data"),
]


@pytest.mark.parametrize("recipe,flags,expected", BAD_DATA, ids=[" ".join(c[1]) for c in BAD_DATA])
def test_bad_data_is_one_error_line_and_nothing_is_written(
    recipe, flags, expected, bad, own, tmp_path, monkeypatch, capfd
):
    import importlib

    paths = {**bad, **own}
    module = importlib.import_module(f"recipes.{recipe}")
    model_dir = tmp_path / "run"
    args = [flag.format(**paths) for flag in flags] + [f"--model_dir={model_dir}"]
    code, _, err = run_in_process(module, args, monkeypatch, capfd)
    assert_one_error_line(code, err, expected)
    assert not model_dir.exists() or not any(model_dir.iterdir())


def test_the_bad_data_table_has_what_the_issue_asks():
    assert len(BAD_DATA) >= 25


# End to end, as the docs' commands: train, serve with class names, compress.


def _example_of(own, name):
    """The path of the first PNG of the digit `name`."""
    folder = os.path.join(own["digits"], name)
    return os.path.join(folder, sorted(os.listdir(folder))[0])


def _serves_with_class_names_and_compresses(run, example, name, monkeypatch, capfd):
    """`predict` serves the finished `run` (saved_model/), then `compress` compresses it
    (a short pruning), then `predict` serves its int8 LiteRT file: each prints the
    class name `name` for the file `example` (an image or a .npy row). Returns
    compression.json's rows by variant."""
    from recipes import compress, predict

    classes = json.loads((run / "metrics.json").read_text())["input"]["class_names"]
    said = f"{example}: {name!r} (class {classes.index(name)}, probability"
    code, out, err = run_in_process(predict, [f"--model_dir={run}", example], monkeypatch, capfd)
    assert code == 0 and said in out, out + err[-2000:]
    code, out, err = run_in_process(
        compress, [f"--model_dir={run}", "--pruning_steps=10", "--finetune_steps=5"], monkeypatch, capfd
    )
    assert code == 0, err[-3000:]
    rows = {
        row["variant"]: row
        for row in json.loads((run / "compressed" / "compression.json").read_text())["variants"]
    }
    assert {"int8.keras", "int4.keras", "pruned.keras", "int8.tflite", "pruned_int8.tflite"} <= set(rows)
    # Scored on the run's own test split, opened again from what the run recorded.
    metrics = json.loads((run / "metrics.json").read_text())
    assert rows["model.keras"]["accuracy"] == pytest.approx(
        metrics["test_accuracy"], abs=1.5 / metrics["num_test_examples"]
    )
    code, out, err = run_in_process(
        predict, [f"--model_dir={run}", "--model=compressed/int8.tflite", example], monkeypatch, capfd
    )
    assert code == 0 and "LiteRT" in out and said in out, out + err[-2000:]
    return rows


@pytest.mark.slow
def test_own_images_train_mnist_and_cnn_and_serve_with_class_names(own, tmp_path, monkeypatch, capfd):
    for recipe in ("mnist", "cnn"):
        done = run_module(
            f"recipes.{recipe}", f"--data={own['digits']}", f"--model_dir={tmp_path / recipe}", "--epochs=3"
        )
        assert done.returncode == 0, done.stderr[-3000:]
        metrics = json.loads((tmp_path / recipe / "metrics.json").read_text())
        assert metrics["input"]["class_names"] == sorted(DIGIT_NAMES)
        assert metrics["test_accuracy"] > 0.8 and metrics["num_test_examples"] == 180
        _serves_with_class_names_and_compresses(
            tmp_path / recipe, _example_of(own, "seven"), "seven", monkeypatch, capfd
        )


@pytest.mark.slow
def test_a_csv_trains_bigmodel_and_serves_raw_rows(own, tmp_path, monkeypatch, capfd):
    done = run_module(
        "recipes.bigmodel",
        f"--data={own['wine']}",
        "--label_column=target",
        f"--model_dir={tmp_path}",
        "--epochs=30",
        "--batch_size=16",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.8 and metrics["input"]["preprocessing"]["kind"] == "standardize"
    assert metrics["input"]["class_names"] == list(WINE_NAMES)
    import pandas as pd

    row = pd.read_csv(own["wine"]).iloc[:1]  # A class_0 wine, as the CSV holds it: raw, not standardized.
    np.save(tmp_path / "row.npy", row.drop(columns="target").to_numpy(np.float32))
    # The wine's features range from 0.1 to 1,680, and int8 quantizes the input with one
    # scale: the standardization stays float (serving._float_elementwise), so int8 keeps
    # the float model's accuracy (39% before, against 100%).
    rows = _serves_with_class_names_and_compresses(
        tmp_path, str(tmp_path / "row.npy"), row["target"][0], monkeypatch, capfd
    )
    assert rows["int8.tflite"]["accuracy"] >= rows["model.keras"]["accuracy"] - 0.06, rows
    # A subclassed teacher (models.BigModel) on a table's rows distills too.
    from recipes import distill, predict

    student = tmp_path.parent / f"{tmp_path.name}_student"  # Beside the teacher, never inside.
    code, _, err = run_in_process(
        distill,
        [f"--teacher_dir={tmp_path}", f"--model_dir={student}", "--train_steps=20", "--nobaseline"],
        monkeypatch,
        capfd,
    )
    assert code == 0, err[-3000:]
    code, out, err = run_in_process(
        predict, [f"--model_dir={student}", str(tmp_path / "row.npy")], monkeypatch, capfd
    )
    assert code == 0 and f"{tmp_path / 'row.npy'}: 'class_" in out, out + err[-2000:]


@pytest.mark.slow
def test_a_csv_of_values_fits_linreg_and_serves_raw_rows(tmp_path):
    """scikit-learn's diabetes table (442 patients, 10 features, a disease-progression
    value): the fit beats predicting the mean, as least squares does on it."""
    from sklearn.datasets import load_diabetes

    table = load_diabetes(as_frame=True).frame
    table.to_csv(tmp_path / "diabetes.csv", index=False)
    done = run_module(
        "recipes.linreg",
        f"--data={tmp_path / 'diabetes.csv'}",
        "--label_column=target",
        f"--model_dir={tmp_path / 'run'}",
        "--epochs=300",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["input"]["class_names"] is None and metrics["num_test_examples"] == 44
    assert 1 - metrics["test_loss"] / metrics["baseline_test_mse"] > 0.3  # R^2.
    assert "bmi=" in done.stdout  # The thetas are named by the table's columns.
    np.save(tmp_path / "rows.npy", table.drop(columns="target").to_numpy(np.float32)[:2])
    done = run_module("recipes.predict", f"--model_dir={tmp_path / 'run'}", str(tmp_path / "rows.npy"))
    values = [float(line.rpartition(": ")[2]) for line in done.stdout.splitlines() if "rows.npy[" in line]
    assert done.returncode == 0 and len(values) == 2 and all(25 < v < 346 for v in values), done.stdout


@pytest.mark.slow
def test_prepared_shards_train_and_the_run_serves_with_class_names_and_compresses(
    own, tmp_path, monkeypatch, capfd
):
    done = run_module("recipes.mnist", f"--data={own['digits_tf']}", f"--model_dir={tmp_path}", "--epochs=3")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "metrics.json").read_text())["input"]["class_names"] == sorted(DIGIT_NAMES)
    _serves_with_class_names_and_compresses(tmp_path, _example_of(own, "three"), "three", monkeypatch, capfd)


@pytest.mark.slow
def test_prepare_resumes_after_a_kill_and_writes_every_shard(own, tmp_path):
    out = tmp_path / "prepared"
    prepare = [
        sys.executable,
        "-m",
        "recipes.prepare",
        f"--data={own['digits']}",
        f"--output={out}",
        "--shards=8",
    ]
    process = subprocess.Popen(prepare, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(out.glob("*.index.json")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = subprocess.run(prepare, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not list(out.glob("*.partial")) and not list(out.glob("*.index.json"))
    again = data.open_data(str(out))
    assert (again.train.num_examples, again.test.num_examples) == (1617, 180)


# A record damaged mid-stream.


def _record_start(content, number):
    """The byte offset of record `number` (from 0) in TFRecord `content`: each is an
    8-byte length, a 4-byte CRC, the data and a 4-byte CRC."""
    position = 0
    for _ in range(number):
        position += 16 + int(np.frombuffer(content[position : position + 8], "<u8")[0])
    return position


@pytest.mark.slow
def test_a_record_damaged_mid_stream_stops_naming_file_and_record_and_keeps_the_checkpoint(
    own, tmp_path, monkeypatch, capfd
):
    """A real run on prepared shards, one of which is damaged after the run's first
    part (prepared shards are not read before training: their index spares it). The
    resumed run finds the record while streaming: one error line names the file and
    the record, nothing is written but the kept checkpoint, and once the file is
    replaced the run goes on from that checkpoint."""
    from recipes import mnist

    shutil.copytree(own["digits_tf"], tmp_path / "data")
    run = tmp_path / "run"
    args = [
        f"--data={tmp_path / 'data'}",
        f"--model_dir={run}",
        "--batch_size=32",
        "--checkpoint_steps=5",
        "--steps_per_loop=5",
    ]
    code, _, err = run_in_process(mnist, [*args, "--train_steps=10"], monkeypatch, capfd)
    assert code == 0, err[-3000:]
    shard = tmp_path / "data" / "train-00003-of-00008.tfrecord"
    good = shard.read_bytes()
    damaged = bytearray(good)
    damaged[_record_start(good, 100) + 12 + 5] ^= 0xFF  # A byte of record 100's data: its CRC fails.
    shard.write_bytes(bytes(damaged))
    code, _, err = run_in_process(mnist, [*args, "--train_steps=20"], monkeypatch, capfd)
    assert_one_error_line(code, err, f"record 100 of {shard} is damaged")
    assert "could not be read after step 10 (corrupted record at" in err and "ckpt-10)" in err, err[-2000:]
    assert tf.train.latest_checkpoint(run / "checkpoints").endswith("ckpt-10")
    assert json.loads((run / "metrics.json").read_text())["steps"] == 10  # The first part's, untouched.
    shard.write_bytes(good)
    code, out, err = run_in_process(mnist, [*args, "--train_steps=20"], monkeypatch, capfd)
    assert code == 0 and "Resuming from step 10" in out, err[-3000:]
    assert json.loads((run / "metrics.json").read_text())["steps"] == 20


# Exact resume after SIGKILL mid-epoch, on TFRecord shards, in float64.


@pytest.mark.slow
@pytest.mark.parametrize(
    "strategy_flags", [[], ["--strategy=mirrored", "--num_cpu_devices=2"]], ids=["default", "mirrored"]
)
def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_weights(own, tmp_path, strategy_flags):
    import keras

    args = [
        f"--data={own['digits_tf']}",
        "--mixed_precision=float64",
        # 51 steps an epoch (1,617 digits for training): killed at its first
        # checkpoint, mid-epoch, and resumed across two epoch boundaries.
        "--train_steps=120",
        "--checkpoint_steps=35",
        "--steps_per_loop=5",
        "--batch_size=32",
        *strategy_flags,
    ]
    whole = run_module("recipes.mnist", *args, f"--model_dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "recipes.mnist", *args, f"--model_dir={killed}"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while not (killed / "checkpoints" / "checkpoint").exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "metrics.json").exists()
    resumed = run_module("recipes.mnist", *args, f"--model_dir={killed}")
    assert resumed.returncode == 0 and "Resuming from step" in resumed.stdout, resumed.stderr[-3000:]
    for a, b in zip(
        keras.saving.load_model(tmp_path / "whole" / "model.keras").get_weights(),
        keras.saving.load_model(killed / "model.keras").get_weights(),
    ):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)


# Two local workers.

WORKER = """
import json, sys
import strategies
cluster = strategies.ClusterOptions(worker_hosts=sys.argv[1], task_index=int(sys.argv[2]))
strategy = strategies.get_strategy("multi_worker", cluster=cluster)
from recipes.core.input import data
split = data.open_data(sys.argv[3]).train
batch = 32
stream = iter(data.train_dataset(strategy, split, batch, preprocess=data.scale_pixels, seed=0,
                                 options=data.PipelineOptions(with_ids=True)))
share = int(split.plan(int(sys.argv[2]), 2)[:, 5].sum())
ids = []
while len(ids) < share:
    ids += strategy.experimental_local_results(next(stream)[2])[0].numpy().tolist()
print(json.dumps({"ids": ids[:share], "batches": -(-share // (batch // 2))}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digits_tf", "digits_tf1"], ids=["8 shards", "1 shard"])
def test_two_workers_read_every_record_once_in_an_epoch(own, name):
    from tests.test_multi_worker import _free_ports

    hosts = ",".join(f"127.0.0.1:{port}" for port in _free_ports(2))
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, hosts, str(i), own[name]],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [w.communicate(timeout=240) for w in workers]
    finally:
        for w in workers:
            w.kill()
    results = []
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    every = results[0]["ids"] + results[1]["ids"]
    assert len(every) == len(set(every)) == data.open_data(own[name]).train.num_examples
    assert abs(results[0]["batches"] - results[1]["batches"]) <= 1


# Memory does not grow with the data.

MEMORY = """
import resource, sys
from recipes.core.input import data, pipeline
split = data.open_data(sys.argv[1]).train
stream = data.train_dataset(__import__("tensorflow").distribute.get_strategy(), split, 256,
                            preprocess=data.scale_pixels, seed=0)
for _, batch in zip(range(int(sys.argv[2])), stream):
    pass
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_data(tmp_path):
    """The bundled digits, and 40 copies of them each shifted by up to 2 pixels (141 MB
    of pixels, as real as the originals), as shards, each streamed for one pass of
    the larger: peak RSS within 100 MB of each other. (benchmarks/input.py does the
    same at 1,000,000 examples.)"""
    x, y = data.load_mnist().x_train, data.load_mnist().y_train
    shifts = [(dy, dx) for dy in (-2, -1, 0, 1, 2) for dx in (-2, -1, 0, 1, 2)][:40]
    copies = 40
    peaks = []
    for name in ("small", "large"):
        folder = str(tmp_path / name)
        if name == "small":
            shards.write(folder, data.from_arrays(x, y, test=(x[:10], y[:10])), shards=4, progress=False)
        else:

            def shifted():
                for i in range(copies):
                    dy, dx = shifts[i % len(shifts)]
                    yield np.roll(x, (dy, dx), axis=(1, 2)), y

            spec = (tf.TensorSpec([None, 28, 28], tf.uint8), tf.TensorSpec([None], tf.int32))
            parts = tf.data.Dataset.from_generator(shifted, output_signature=spec)
            test = tf.data.Dataset.from_tensor_slices((x[:10], y[:10]))
            shards.write_datasets(folder, {"train": parts.unbatch(), "test": test})
        done = subprocess.run(
            [sys.executable, "-c", MEMORY, folder, str(copies * len(x) // 256)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        peaks.append(int(done.stdout.strip().splitlines()[-1]))
    assert peaks[1] - peaks[0] < 100, peaks


def test_predict_says_the_class_by_the_name_the_data_gave_it():
    from recipes import predict

    outputs = {"classes": np.array([1, 0]), "probabilities": np.array([[0.2, 0.8], [0.9, 0.1]])}
    assert predict.describe(outputs, 0, ("cat", "dog")) == "'dog' (class 1, probability 0.800)"
    assert predict.describe(outputs, 1, ("0", "1")) == "class 0 (probability 0.900)"  # Names that are ids.


@pytest.mark.slow
def test_a_run_trained_through_the_python_api_compresses_serves_and_distills(
    own, tmp_path, monkeypatch, capfd
):
    """The issue's case: `train.train_model` on tf.data.Datasets of (x, y) pairs (with
    the class names), a model built in Python and a recipe name that is no module
    (`digits_cnn`). predict, compress and distill start from its run directory; the
    data, passed in Python, is named again with --data and --test_data (the same
    digits as .npz files)."""
    import keras
    from sklearn.datasets import load_digits

    from recipes import compress, distill, predict
    from recipes.core.training import metrics, step, train
    from recipes.core.training.config import TrainConfig

    digits = load_digits()
    x, y = (digits.images * 255 / 16).astype(np.uint8), digits.target.astype(np.int64)
    np.savez(tmp_path / "train.npz", x=x[:1617], y=y[:1617])
    np.savez(tmp_path / "test.npz", x=x[1617:], y=y[1617:])
    given = [f"--data={tmp_path / 'train.npz'}", f"--test_data={tmp_path / 'test.npz'}"]

    def build_model():
        return keras.Sequential(
            [
                keras.Input((8, 8)),
                keras.layers.Reshape((8, 8, 1)),
                keras.layers.Conv2D(8, 3, activation="relu"),
                keras.layers.Flatten(),
                keras.layers.Dense(10, activation="softmax"),
            ]
        )

    run = tmp_path / "run"
    pairs = tf.data.Dataset.from_tensor_slices
    dataset = data.from_dataset(
        pairs((x[:1617], y[:1617])), test=pairs((x[1617:], y[1617:])), class_names=DIGIT_NAMES
    )
    task = train.Task(
        "digits_cnn",
        build_model,
        step.Objective(keras.losses.sparse_categorical_crossentropy),
        metrics_fn=lambda: metrics.classification(10),
    )
    results, _ = train.train_model(
        task, dataset, config=TrainConfig(model_dir=str(run), train_steps=150, batch_size=32)
    )
    assert results["input"]["class_names"] == list(DIGIT_NAMES) and results["input"]["outputs"] == "classes"
    assert results["test_accuracy"] > 0.7 and results["num_test_examples"] == 180

    image = _example_of(own, "seven")
    for model in ("saved_model", "model.keras"):
        code, out, err = run_in_process(
            predict, [f"--model_dir={run}", f"--model={model}", image], monkeypatch, capfd
        )
        assert code == 0 and f"{image}: 'seven' (class 7, probability" in out, out + err[-2000:]
    code, out, err = run_in_process(
        compress,
        [f"--model_dir={run}", *given, "--pruning_steps=10", "--finetune_steps=5"],
        monkeypatch,
        capfd,
    )
    assert code == 0, err[-3000:]
    rows = {
        row["variant"]: row
        for row in json.loads((run / "compressed" / "compression.json").read_text())["variants"]
    }
    assert rows["model.keras"]["accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-6)  # Same split.
    assert {"int8.keras", "int8.tflite", "pruned_int8.tflite"} <= set(rows)
    code, out, err = run_in_process(
        predict, [f"--model_dir={run}", "--model=compressed/int8.tflite", image], monkeypatch, capfd
    )
    assert code == 0 and f"{image}: 'seven' (class 7, probability" in out, out + err[-2000:]
    student = tmp_path / "student"
    code, out, err = run_in_process(
        distill,
        [f"--teacher_dir={run}", f"--model_dir={student}", *given, "--train_steps=20", "--nobaseline"],
        monkeypatch,
        capfd,
    )
    assert code == 0, err[-3000:]
    distilled = json.loads((student / "metrics.json").read_text())
    assert distilled["teacher_recipe"] == "digits_cnn" and distilled["input"]["class_names"] == list(
        DIGIT_NAMES
    )
    code, out, err = run_in_process(predict, [f"--model_dir={student}", image], monkeypatch, capfd)
    assert code == 0 and f"{image}: '" in out, out + err[-2000:]  # The student serves names too.
