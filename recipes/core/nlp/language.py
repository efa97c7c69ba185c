"""Character-level language modelling: the vocabulary, the data in its ids, the
loss and the baselines it is measured against, a trained run read back, and its
int8 and fine-tuning copies. Generation is in `recipes/core/nlp/generation.py`.

    vocabulary = language.Vocabulary.of_files(files)      # the bytes the text holds
    data = language.in_vocabulary(opened, vocabulary)      # windows of ids, next-id targets
    model, vocabulary = language.load_run("runs/gpt")

Tokens are characters as nanoGPT's shakespeare_char: the distinct bytes of the
text, in byte order (for ASCII text a byte is a character; other UTF-8 text is
modelled byte by byte, and the losses per character count its characters).
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from recipes.core.errors import RecipeError

_CHUNK = 1 << 24  # Bytes read at a time when counting a text.


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """The byte values a text holds, in order; token id i is byte `byte_values[i]`."""

    byte_values: tuple
    bytes_per_character: float = 1.0  # Of the text it was counted on (1 for ASCII).

    @classmethod
    def of_files(cls, files):
        """The distinct bytes of `files`, counted streaming (the whole text, as nanoGPT
        builds its vocabulary from the whole text)."""
        counts = np.zeros(256, np.int64)
        for path in files:
            with tf.io.gfile.GFile(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    counts += np.bincount(np.frombuffer(chunk, np.uint8), minlength=256)
        values = tuple(int(b) for b in np.flatnonzero(counts))
        if len(values) < 2:
            raise RecipeError(
                f"{', '.join(files)} holds {len(values)} distinct character(s); a language "
                "model needs text with at least two"
            )
        characters = counts.sum() - counts[0x80:0xC0].sum()  # UTF-8 continuation bytes start no character.
        return cls(values, float(counts.sum() / max(characters, 1)))

    @property
    def size(self):
        return len(self.byte_values)

    def table(self):
        """int32 [256]: each byte's token id, -1 for bytes outside the vocabulary."""
        table = np.full(256, -1, np.int32)
        table[list(self.byte_values)] = np.arange(self.size, dtype=np.int32)
        return table

    def encode(self, text):
        """`text`'s token ids; characters outside the vocabulary are a one-line error."""
        raw = np.frombuffer(text.encode("utf-8"), np.uint8)
        ids = self.table()[raw]
        if (ids < 0).any():
            unknown = sorted({ch for ch in text if any(b not in self.byte_values for b in ch.encode())})
            raise RecipeError(
                f"the prompt holds {len(unknown)} character(s) the model never saw "
                f"({''.join(unknown)[:20]!r}); its vocabulary is the training text's "
                f"{self.size} characters: leave them out"
            )
        return ids

    def decode(self, ids):
        """Text of token ids (bytes that end mid-character are replaced)."""
        return bytes(self.byte_values[i] for i in ids).decode("utf-8", errors="replace")

    def to_json(self):
        return list(self.byte_values)


def in_vocabulary(opened, vocabulary):
    """The text windows of `opened` (`data.open_data` with a text window: byte ids)
    as token ids of `vocabulary`, in the input pipeline."""
    table = tf.constant(vocabulary.table())

    def mapped(split):
        if split is None:
            return None
        source = split.source
        decode = source.decode_batch

        def decode_batch(records):
            x, y = decode(records)  # Targets of -1 are not scored (corpus.py): they stay -1.
            return tf.gather(table, x), tf.where(y < 0, -1, tf.gather(table, tf.maximum(y, 0)))

        return dataclasses.replace(split, source=dataclasses.replace(source, decode_batch=decode_batch))

    return dataclasses.replace(
        opened, train=mapped(opened.train), test=mapped(opened.test), validation=mapped(opened.validation)
    )


def next_token_loss(labels, logits):
    """Per-window mean cross-entropy of the next token, from logits: [B], over the
    scored targets (those of -1 are context only: see recipes/core/input/corpus.py)."""
    total, count = _scored_loss(labels, logits)
    return total / count


def _scored_loss(labels, logits):
    """(sum of the scored targets' cross-entropy, how many were scored), per window."""
    import keras

    per_token = keras.losses.sparse_categorical_crossentropy(tf.maximum(labels, 0), logits, from_logits=True)
    scored = tf.cast(labels >= 0, per_token.dtype)
    return tf.reduce_sum(per_token * scored, axis=-1), tf.reduce_sum(scored, axis=-1)


def ngram_baselines(data, vocabulary):
    """{"unigram": nats, "bigram": nats}: the mean cross-entropy of the held-out
    windows' targets under the training windows' character frequencies (and pairs:
    each input character with its next), add-one smoothed; the positions the model
    is scored on. Counted streaming."""
    from recipes.core.input import pipeline

    size = vocabulary.size

    def counts(split):
        pairs = np.zeros(size * size, np.int64)
        batches = pipeline.records(split, shuffle=False).batch(1024).map(lambda _, example: example)
        for x, y in batches.as_numpy_iterator():
            scored = y >= 0
            pairs += np.bincount((x * size + y)[scored], minlength=size * size)
        return pairs.reshape(size, size)

    train, test = counts(data.train), counts(data.test)
    unigram = train.sum(axis=0) + 1
    bigram = train + 1
    held_out = test.sum()
    return {
        "unigram": float((test.sum(axis=0) * -np.log(unigram / unigram.sum())).sum() / held_out),
        "bigram": float((test * -np.log(bigram / bigram.sum(axis=1, keepdims=True))).sum() / held_out),
    }


def per_character(nats_per_token, bytes_per_character=1.0):
    """{nats, bits per character, perplexity} from nats per token (byte)."""
    nats = nats_per_token * bytes_per_character
    return {"nats_per_char": nats, "bits_per_char": nats / math.log(2), "perplexity": math.exp(nats)}


def load_run(model_dir):
    """(model, vocabulary) of a finished `recipes.gpt` run; anything else is a one-line
    `RecipeError`."""
    import keras

    import models
    from recipes.core.deploy import runs
    from recipes.core.errors import first_line

    run = runs.read(model_dir)
    vocabulary = run.metrics.get("vocabulary")
    if run.recipe != "gpt" or not vocabulary:
        raise RecipeError(
            f"{model_dir} holds a {run.recipe} run, not a GPT; pass a directory that "
            "python -m recipes.gpt wrote"
        )
    path = run.path("model.keras")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - a damaged or foreign file: say which, in one line.
        raise RecipeError(f"{path} cannot be loaded ({first_line(e, 100)}); train the run again") from None
    if not isinstance(model, models.GPT):
        raise RecipeError(f"{path} holds a {type(model).__name__}, not a GPT")
    return model, Vocabulary(tuple(vocabulary), float(run.metrics.get("bytes_per_character") or 1.0))


def copy_of(model, **config):
    """A new `models.GPT` with `model`'s weights (and `config` changed: lora_rank=...)."""
    copy = type(model).from_config({**model.get_config(), **config})
    copy.build((None, None))
    adapters = copy.lora_rank and not model.lora_rank
    if adapters:  # The adapters' weights are new: copy the rest around them, by path.
        ours = {v.path.partition("/")[2]: v for v in model.weights}
        for variable in copy.weights:
            if "lora" not in variable.name:
                variable.assign(ours[variable.path.partition("/")[2]])
    else:
        copy.set_weights(model.get_weights())
    return copy


def quantized(model, mode="int8"):
    """A copy of `model` whose blocks' projections Keras quantizes (`model.quantize`:
    int8 weights, per-channel scales); the embedding, and so the tied head, stays float."""
    copy = copy_of(model)
    chosen = {id(layer) for layer in copy.projections()}
    copy.quantize(mode, filters=lambda layer: id(layer) in chosen)
    return copy


def held_out_loss(model, split, batch_size=256):
    """The mean next-token loss (nats per token) of `model` over every scored target
    of `split` (a `data.Split`), streamed."""
    from recipes.core.input import pipeline

    @tf.function
    def step(x, y):
        total, count = _scored_loss(y, model(x, training=False))
        return tf.reduce_sum(total), tf.reduce_sum(count)

    total, count = 0.0, 0.0
    for x, y in pipeline.records(split, shuffle=False).batch(batch_size).map(lambda _, example: example):
        batch_total, batch_count = step(x, y)
        total, count = total + float(batch_total), count + float(batch_count)
    return total / count
