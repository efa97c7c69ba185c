"""Real English text that ships with Python, for the BERT recipe offline.

* Pre-training corpus: the Python Language Reference's topics (`pydoc_data.topics`,
  the text `help()` shows; about 75,000 words).
* Fine-tuning task: topic classification of standard-library docstrings. Each
  docstring of a class, function or method is labelled with the package it
  documents (asyncio, email, logging, unittest, xml): real text with real labels,
  written by different authors about different subjects.

Tokens are lower-cased words from Keras' `TextVectorization`; ids 0 and 1 are its
padding and out-of-vocabulary tokens, and two more are added after its vocabulary:
[CLS], which starts every sequence, and [MASK].
"""

import dataclasses
import importlib
import inspect
import math
import pkgutil

import keras
import numpy as np
import tensorflow as tf

from recipes.core.errors import RecipeError
from recipes.core.input import corpus
from recipes.core.input.data import SAMPLE_SPLIT_SEED, SAMPLE_TEST_FRACTION, ArrayData
from recipes.core.input.samples import reference_text

TOPICS = ("asyncio", "email", "logging", "unittest", "xml")
MIN_DOCSTRING_WORDS = 8
MASK_RATE = 0.15  # BERT's share of tokens to predict.


def docstrings(package):
    """Docstrings (at least MIN_DOCSTRING_WORDS words) of the classes, functions and
    methods defined in `package` and its importable submodules, in a fixed order."""
    root = importlib.import_module(package)
    modules = [root]
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        if ".test" in info.name or info.name.endswith("__main__"):
            continue
        try:
            modules.append(importlib.import_module(info.name))
        except Exception:  # noqa: BLE001 - platform-only modules (asyncio.windows_events).
            continue
    found = {}
    for module in modules:
        for name, obj in vars(module).items():
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            members = [(name, obj)]
            if inspect.isclass(obj):
                members += [
                    (f"{name}.{attr}", value)
                    for attr, value in vars(obj).items()
                    if inspect.isfunction(value)
                ]
            for qualified, member in members:
                if inspect.isclass(member) or inspect.isfunction(member):
                    doc = inspect.getdoc(member)
                    if doc and len(doc.split()) >= MIN_DOCSTRING_WORDS:
                        found[f"{module.__name__}.{qualified}"] = doc
    return [found[key] for key in sorted(found)]


@dataclasses.dataclass
class Tokenizer:
    vectorizer: keras.layers.TextVectorization

    @classmethod
    def fit(cls, texts, vocab_size):
        vectorizer = keras.layers.TextVectorization(max_tokens=vocab_size - 2)  # + [CLS], [MASK].
        vectorizer.adapt(texts)
        return cls(vectorizer)

    @property
    def cls_id(self):
        return self.vectorizer.vocabulary_size()

    @property
    def mask_id(self):
        return self.vectorizer.vocabulary_size() + 1

    @property
    def vocab_size(self):
        return self.vectorizer.vocabulary_size() + 2

    def stream(self, text):
        """All of `text` as one stream of token ids."""
        return np.asarray(self.vectorizer(text), np.int32)

    def sequences(self, texts, length):
        """[CLS] + each text's first `length - 1` ids, padded with 0: [N, length]."""
        ids = np.asarray(self.vectorizer(texts), np.int32)[:, : length - 1]
        ids = np.pad(ids, [(0, 0), (0, length - 1 - ids.shape[1])])
        return np.concatenate([np.full((len(ids), 1), self.cls_id, np.int32), ids], axis=1)


def chunks(stream, length, cls_id):
    """A token stream cut into [CLS] + (length - 1)-token sequences: [N, length]."""
    count = len(stream) // (length - 1)
    body = stream[: count * (length - 1)].reshape(count, length - 1)
    return np.concatenate([np.full((count, 1), cls_id, np.int32), body], axis=1)


def mask_tokens(sequences, tokenizer, rng, copies=1):
    """BERT's masking: 15% of the real tokens (never [CLS] or padding, and at least one
    per sequence) are to be predicted; of those, 80% become [MASK], 10% a random
    token and 10% stay. Each sequence is masked `copies` times, differently.
    Returns (inputs, labels), labels -1 wherever nothing is to be predicted."""
    sequences = np.repeat(sequences, copies, axis=0)
    real = (sequences > 1) & (sequences != tokenizer.cls_id)  # Not padding, unknown or [CLS].
    chosen = real & (rng.random(sequences.shape) < MASK_RATE)
    for row in np.flatnonzero(~chosen.any(axis=1) & real.any(axis=1)):
        chosen[row, rng.choice(np.flatnonzero(real[row]))] = True
    labels = np.where(chosen, sequences, -1).astype(np.int32)
    roll = rng.random(sequences.shape)
    inputs = np.where(chosen & (roll < 0.8), tokenizer.mask_id, sequences)
    random_tokens = rng.integers(2, tokenizer.cls_id, sequences.shape)
    inputs = np.where(chosen & (roll >= 0.8) & (roll < 0.9), random_tokens, inputs)
    return inputs.astype(np.int32), labels


def mask_in_graph(sequences, indices, cls_id, mask_id, salt=SAMPLE_SPLIT_SEED):
    """`mask_tokens` in TensorFlow, inside the input pipeline: sequence i of the source
    is masked by a stateless random stream seeded by its index, so a resume or another
    worker count masks it as the run did (the text under an index shifts each epoch,
    `corpus`)."""
    length = sequences.shape[1]

    def one(args):
        ids, index = args
        draws = tf.random.stateless_uniform([3, length], tf.stack([index, tf.constant(salt, tf.int64)]))
        real = (ids > 1) & (ids != cls_id)  # Not padding, unknown or [CLS].
        chosen = real & (draws[0] < MASK_RATE)
        # At least one token to predict where there is any: the real one that drew lowest.
        lowest = tf.one_hot(tf.argmin(tf.where(real, draws[0], 2.0)), length, on_value=True, off_value=False)
        chosen |= lowest & ~tf.reduce_any(chosen) & tf.reduce_any(real)
        labels = tf.where(chosen, ids, -1)
        random_tokens = 2 + tf.cast(draws[2] * float(cls_id - 2), tf.int32)
        inputs = tf.where(chosen & (draws[1] < 0.8), mask_id, ids)
        inputs = tf.where(chosen & (draws[1] >= 0.8) & (draws[1] < 0.9), random_tokens, inputs)
        return inputs, labels

    return tf.map_fn(one, (sequences, indices), fn_output_signature=(tf.int32, tf.int32))


def masked_lm_data(files, tokenizer, length, *, open_text=corpus.open_text):
    """Masked-language-model data streaming from your own text `files`: windows of the
    text (the last 10% held out), each cut into [CLS] + `length` - 1 word ids and
    masked by `mask_in_graph`. A window holds as many bytes as `length` - 1 tokens
    take on average in the first megabyte; a longer window is cut, a shorter padded.
    `open_text(files, window)` opens the windows (the engine's `data.open_data` with
    text, so that a mistake in --data is the engine's one-line error)."""
    sample = b""
    for path in files:  # The first megabyte of the text, each file closed after reading.
        if len(sample) >= 1 << 20:
            break
        with tf.io.gfile.GFile(path, "rb") as f:
            sample += f.read((1 << 20) - len(sample))
    tokens = int(tf.size(tokenizer.vectorizer(sample.decode("utf-8", "replace"))))
    if tokens == 0:
        raise RecipeError(f"{', '.join(files)} holds no words to pre-train on")
    window = math.ceil((length - 1) * len(sample) / tokens)
    opened = open_text(files, window)
    cls_id, mask_id = int(tokenizer.cls_id), int(tokenizer.mask_id)  # Python ints: not graph tensors.

    def decode_batch(windows, indices):
        text = tf.strings.substr(windows, 0, window)  # The next-byte target's extra byte is not needed.
        ids = tf.cast(tokenizer.vectorizer(text), tf.int32)[:, : length - 1]
        ids = tf.pad(ids, [[0, 0], [0, length - 1 - tf.shape(ids)[1]]])
        ids = tf.concat([tf.fill([tf.shape(ids)[0], 1], cls_id), ids], axis=1)
        return mask_in_graph(tf.ensure_shape(ids, [None, length]), indices, cls_id, mask_id)

    def masked(split):
        spec = tf.TensorSpec([length], tf.int32)
        return dataclasses.replace(
            split,
            source=dataclasses.replace(
                split.source, x_spec=spec, y_spec=spec, decode_batch=decode_batch, indexed=True
            ),
        )

    return dataclasses.replace(opened, train=masked(opened.train), test=masked(opened.test))


def masked_lm_loss(labels, probabilities):
    """Per-sequence mean cross-entropy over the positions to predict (labels >= 0)."""
    from keras import ops

    to_predict = ops.cast(ops.greater_equal(labels, 0), "float32")
    per_token = keras.losses.sparse_categorical_crossentropy(ops.maximum(labels, 0), probabilities)
    return ops.sum(per_token * to_predict, axis=1) / ops.maximum(ops.sum(to_predict, axis=1), 1.0)


def load(length, vocab_size, mask_copies, seed=SAMPLE_SPLIT_SEED, own_text=None):
    """(pretraining data, fine-tuning ArrayData, tokenizer).

    Pre-training: the reference cut into sequences, 90% masked `mask_copies` times
    for training, 10% masked once (fixed) to measure the MLM loss; or, with
    `own_text` ((files, open_text), see `masked_lm_data`), your own text streamed and
    masked in the input pipeline. Fine-tuning: the docstrings, split stratified 90/10
    by topic. The vocabulary comes from the pre-training text and the fine-tuning
    training split, never the fine-tuning test split.
    """
    from sklearn.model_selection import train_test_split

    for flag, value, minimum, why in (
        ("max_length", length, 2, "[CLS] and at least one token"),
        ("vocab_size", vocab_size, 5, "padding, unknown, [CLS], [MASK] and two words to swap in"),
        ("mask_copies", mask_copies, 1, "each pre-training sequence masked at least once"),
    ):
        if value < minimum:
            raise RecipeError(f"--{flag} must be at least {minimum} ({why}); received {value}")
    texts, labels = [], []
    for label, package in enumerate(TOPICS):
        found = docstrings(package)
        texts += found
        labels += [label] * len(found)
    texts_train, texts_test, y_train, y_test = train_test_split(
        texts, np.int32(labels), test_size=SAMPLE_TEST_FRACTION, stratify=labels, random_state=seed
    )
    fine_tuning = lambda tokenizer: ArrayData(  # noqa: E731
        "docstring_topics",
        "sample",
        tokenizer.sequences(texts_train, length),
        y_train,
        tokenizer.sequences(texts_test, length),
        y_test,
    )
    if own_text is not None:
        files, open_text = own_text
        lines = tf.data.TextLineDataset(files).concatenate(tf.data.Dataset.from_tensor_slices(texts_train))
        tokenizer = Tokenizer.fit(lines.batch(1024), vocab_size)  # Streaming: only the counts are kept.
        pretraining = masked_lm_data(files, tokenizer, length, open_text=open_text)
        return pretraining, fine_tuning(tokenizer), tokenizer

    reference = reference_text()
    tokenizer = Tokenizer.fit([reference] + texts_train, vocab_size)
    rng = np.random.default_rng(seed)
    sequences = chunks(tokenizer.stream(reference), length, tokenizer.cls_id)
    if len(sequences) < 10:
        raise RecipeError(
            f"--max_length={length} leaves {len(sequences)} pre-training sequences "
            "of the reference text; pass a shorter one"
        )
    order = rng.permutation(len(sequences))
    held_out = int(len(sequences) * SAMPLE_TEST_FRACTION)
    x_train, mlm_train = mask_tokens(sequences[order[held_out:]], tokenizer, rng, mask_copies)
    x_test, mlm_test = mask_tokens(sequences[order[:held_out]], tokenizer, rng)
    pretraining = ArrayData("python_reference", "sample", x_train, mlm_train, x_test, mlm_test)
    return pretraining, fine_tuning(tokenizer), tokenizer
