"""Generation from a `models.GPT`: sampling (greedy, temperature, top-k, top-p, beam
search), a key/value cache, a stop string and streaming, as a Python API that
`recipes.gpt` and `recipes.generate` share, and as one TensorFlow function for the
SavedModel's `generate` signature.

    generator = generation.Generator(model, vocabulary)
    sampling = generation.Sampling(temperature=0.8, top_k=40, seed=1)
    text = generator.generate("To be", 100, sampling, on_text=print)
"""

import dataclasses
import math
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf

from recipes.core.errors import RecipeError

CHUNK = 16  # Tokens sampled per call, then streamed.


def choose(logits, temperature, top_k, top_p, seed):
    """The next token of each row of `logits` [B, V]: the most likely when
    `temperature` is 0; else a draw from softmax(logits / temperature) over the
    `top_k` most likely (0: all), then over the fewest whose probability reaches
    `top_p` (1: all). `seed` ([2] ints) makes the draw reproducible. [B] int32."""
    logits = tf.cast(logits, tf.float32)
    temperature, top_p = tf.cast(temperature, tf.float32), tf.cast(top_p, tf.float32)
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    scaled = logits / tf.maximum(temperature, 1e-6)
    vocab = tf.shape(logits)[-1]
    top_k = tf.cast(top_k, tf.int32)
    k = tf.where(top_k > 0, tf.minimum(top_k, vocab), vocab)
    descending = tf.sort(scaled, axis=-1, direction="DESCENDING")
    scaled = tf.where(scaled < descending[:, k - 1 : k], -np.inf, scaled)
    descending = tf.sort(scaled, axis=-1, direction="DESCENDING")
    before = tf.cumsum(tf.nn.softmax(descending), axis=-1, exclusive=True)  # Probability above each.
    cutoff = tf.reduce_min(tf.where(before < top_p, descending, np.inf), axis=-1, keepdims=True)
    scaled = tf.where(scaled < cutoff, -np.inf, scaled)
    drawn = tf.random.stateless_categorical(scaled, 1, seed, dtype=tf.int32)[:, 0]
    return tf.where(temperature > 0, drawn, greedy)


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How `Generator.generate` picks each new token (as `choose`).

    Args:
      temperature: 0 picks the most likely token (greedy); else tokens are drawn from
        softmax(logits / temperature).
      top_k: draw among the k most likely tokens; 0: all.
      top_p: then among the fewest most likely whose probability reaches p; 1: all.
      beam_width: > 1 is beam search instead: the most likely continuation of that many
        kept at each step (the settings above and `seed` do not apply).
      seed: the same seed gives the same draws.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    beam_width: int = 1
    seed: int = 0


def check_sampling(vocab_size: int, max_new_tokens: int, sampling: Sampling) -> None:
    """The sampling settings, or a one-line `RecipeError` naming the flag."""
    temperature, top_k, top_p = sampling.temperature, sampling.top_k, sampling.top_p
    problems = [
        (max_new_tokens < 1, f"--max_new_tokens must be at least 1; received {max_new_tokens}"),
        (
            not math.isfinite(temperature) or temperature < 0,
            f"--temperature must be 0 (greedy) or positive; received {temperature}",
        ),
        (
            top_k < 0 or top_k > vocab_size,
            f"--top_k must be between 0 (all) and the vocabulary's {vocab_size} tokens; received {top_k}",
        ),
        (not 0 < top_p <= 1, f"--top_p must be in (0, 1]; received {top_p}"),
        (sampling.beam_width < 1, f"--beam_width must be at least 1; received {sampling.beam_width}"),
    ]
    for failed, message in problems:
        if failed:
            raise RecipeError(message)


class Generator:
    """Text from a `models.GPT` and its `Vocabulary`.

    Sampling runs in one TensorFlow loop (`sampling_loop`, the loop the export's
    `generate` runs, so both give the same text), `chunk` tokens per call, each chunk
    streamed as it comes; beam search steps in Python. With `kv_cache` each new token
    runs one compiled decode step over the cached keys and values of the tokens before
    it; without, the whole context runs again for every token (as nanoGPT's
    `generate`). The context holds at most the model's
    `max_length` tokens: when it is full, it keeps its newest half (recomputed in one
    pass) and goes on, with or without the cache, so both give the same tokens.
    """

    def __init__(self, model, vocabulary, kv_cache=True, chunk=CHUNK):
        self.model = model
        self.vocabulary = vocabulary
        self.kv_cache = kv_cache
        self.chunk = chunk
        self.context = model.max_length
        self.keep = max(1, self.context // 2)
        self.start, self.run = sampling_loop(model, kv_cache)
        ids = tf.TensorSpec([None, None], tf.int32)
        cache = tf.TensorSpec(
            [model.num_layers, None, 2, model.max_length, model.num_heads, model.head_size],
            model.compute_dtype,
        )
        self.forward = tf.function(lambda ids: model(ids, training=False)[:, -1], input_signature=[ids])
        self.prefill = tf.function(lambda ids: _last(*model.prefill(ids)), input_signature=[ids])
        self.decode = tf.function(
            decode_step(model), input_signature=[ids, cache, tf.TensorSpec([], tf.int32)]
        )

    def _start(self, window):
        return self.prefill(window) if self.kv_cache else (self.forward(window), None)

    def _advance(self, window, tokens, cache):
        """(window, logits of its last position, cache) after appending `tokens` [B]."""
        window = np.concatenate([window, np.asarray(tokens, np.int32)[:, None]], axis=1)
        if window.shape[1] > self.context:  # Full: keep the newest half.
            window = window[:, -self.keep :]
            return (window, *self._start(window))
        if not self.kv_cache:
            return window, self.forward(window), None
        return (window, *self.decode(window[:, -1:], cache, tf.constant(window.shape[1] - 1, tf.int32)))

    def prompt_ids(self, prompt):
        """The prompt's ids: at least one character; a prompt longer than the context
        keeps its last `max_length` characters (the caller says so)."""
        if not prompt:
            raise RecipeError("the prompt is empty; pass at least one character (--prompt=...)")
        return self.vocabulary.encode(prompt)[-self.context :]

    def generate(
        self,
        prompt: str,
        max_new_tokens: int,
        sampling: Sampling = Sampling(),
        *,
        stop: str | None = None,
        on_text: Callable[[str], object] | None = None,
    ) -> str:
        """The text generated after `prompt`, up to `max_new_tokens` tokens or the
        first `stop` string (left out), each token picked as `sampling` says.
        `on_text(piece)` gets the text as it comes (held back while it could be the
        start of `stop`)."""
        check_sampling(self.vocabulary.size, max_new_tokens, sampling)
        window = self.prompt_ids(prompt)[None]
        if sampling.beam_width > 1:
            tokens = self._beam_search(window, max_new_tokens, sampling.beam_width)
        else:
            tokens = self._sample(window, max_new_tokens, sampling)
        return _Stream(self.vocabulary, stop, on_text).feed_all(tokens)

    def _sample(self, window, max_new_tokens, sampling: Sampling) -> Iterator[int]:
        """The sampled tokens, `chunk` at a time (a generator)."""
        state = self.start(tf.constant(window[0]))
        settings = (
            tf.constant(sampling.temperature, tf.float32),
            tf.constant(sampling.top_k, tf.int32),
            tf.constant(sampling.top_p, tf.float32),
            tf.constant(sampling.seed, tf.int64),
        )
        for first in range(0, max_new_tokens, self.chunk):
            steps = min(self.chunk, max_new_tokens - first)
            tokens, state = self.run(state, tf.constant(steps), *settings, tf.constant(first))
            yield from tokens.numpy().tolist()

    def _beam_search(self, window, max_new_tokens, beam_width):
        """The most likely continuation of `beam_width` kept after every step."""
        logits, cache = self._start(window)
        scores = np.zeros(1)
        generated = np.zeros((1, 0), np.int32)
        for step in range(max_new_tokens):
            log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float64)).numpy()
            total = (scores[:, None] + log_probs).ravel()
            best = np.argsort(-total, kind="stable")[:beam_width]
            parents, tokens = best // log_probs.shape[1], (best % log_probs.shape[1]).astype(np.int32)
            scores, window = total[best], window[parents]
            generated = np.concatenate([generated[parents], tokens[:, None]], axis=1)
            if step + 1 < max_new_tokens:
                if cache is not None:
                    cache = tf.gather(cache, parents, axis=1)
                window, logits, cache = self._advance(window, tokens, cache)
        yield from generated[int(np.argmax(scores))].tolist()


def _last(logits, cache):
    return logits[:, -1], cache


def decode_step(model):
    """(ids [B, T], cache, index) -> (logits of the last position, cache): the model's
    cached decode step, XLA-compiled (its shapes are fixed), as both `Generator` and
    the exported `generate` run it, so that they round alike."""
    return tf.function(lambda ids, cache, index: _last(*model.decode(ids, cache, index)), jit_compile=True)


class _Stream:
    """Tokens to text, passed on as it comes, cut at the first `stop` string."""

    def __init__(self, vocabulary, stop, on_text):
        import codecs

        self.vocabulary = vocabulary
        self.stop = stop or None
        self.on_text = on_text or (lambda piece: None)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""
        self.passed = 0  # Characters of `text` passed on.

    def feed_all(self, tokens):
        for token in tokens:
            self.text += self.decoder.decode(bytes([self.vocabulary.byte_values[token]]))
            if self.stop and self.stop in self.text:
                self.text = self.text[: self.text.index(self.stop)]
                break
            held = len(self.stop) - 1 if self.stop else 0  # What could still become `stop`.
            self._pass(len(self.text) - held)
        else:
            self.text += self.decoder.decode(b"", final=True)
        self._pass(len(self.text))
        return self.text

    def _pass(self, upto):
        if upto > self.passed:
            self.on_text(self.text[self.passed : upto])
            self.passed = upto


def sampling_loop(model, kv_cache=True):
    """Sampling as TensorFlow functions (start, run), for `Generator` and the export:
    `start(ids [n])` -> the state after the prompt's last `max_length` ids; `run(state,
    steps, temperature, top_k, top_p, seed, first)` -> (the next `steps` tokens, the
    state after them), token i drawn by `choose` with seed (seed, first + i). The state
    is (window: the context's ids in a buffer of max_length + 1, length, logits of its
    last position, cache). When the context is full it keeps its newest half,
    recomputed. With `kv_cache` each token is one XLA-compiled `decode_step`; without,
    the whole context runs again (the cache is then an empty placeholder)."""
    context, keep = model.max_length, max(1, model.max_length // 2)
    decode = decode_step(model) if kv_cache else None
    no_cache = tf.zeros([0], model.compute_dtype)

    def last_logits(ids):  # ids [n] -> (logits [1, V] of the last, cache)
        if kv_cache:
            return _last(*model.prefill(ids[None]))
        return model(ids[None], training=False)[:, -1], no_cache

    def start(ids):
        ids = ids[-context:]
        length = tf.size(ids)
        window = tf.concat([ids, tf.zeros([context + 1 - length], tf.int32)], axis=0)  # Room for one more.
        return (window, length, *last_logits(ids))

    def run(state, steps, temperature, top_k, top_p, seed, first):
        def step(i, window, length, logits, cache, tokens):
            token = choose(logits, temperature, top_k, top_p, tf.stack([seed, tf.cast(first + i, tf.int64)]))
            window = tf.tensor_scatter_nd_update(window, [[length]], token)

            def slide():  # The context is full: keep its newest half, recomputed.
                newest = window[length + 1 - keep : length + 1]
                return (
                    tf.concat([newest, tf.zeros([context + 1 - keep], tf.int32)], 0),
                    keep,
                    *last_logits(newest),
                )

            def extend():
                if kv_cache:
                    return (window, length + 1, *decode(token[None], cache, length))
                return (window, length + 1, *last_logits(window[: length + 1]))

            window, length, logits, cache = tf.cond(length + 1 > context, slide, extend)
            return i + 1, window, length, logits, cache, tokens.write(i, token[0])

        _, *state, tokens = tf.while_loop(
            lambda i, *_: i < steps,
            step,
            (tf.constant(0), *state, tf.TensorArray(tf.int32, size=steps)),
            shape_invariants=_loop_shapes(state[3].shape),
        )
        return tokens.stack(), tuple(state)

    return tf.function(start, input_signature=[tf.TensorSpec([None], tf.int32)]), tf.function(run)


def _loop_shapes(cache_shape):
    """The shapes `sampling_loop`'s while loop keeps: (i, window [None], length,
    logits [1, None], cache, tokens)."""
    scalar = tf.TensorShape([])
    return (
        scalar,
        tf.TensorShape([None]),
        scalar,
        tf.TensorShape([1, None]),
        cache_shape,
        tf.TensorShape(None),
    )


def graph_generate(model, vocabulary):
    """`Generator.generate` (sampling, with the cache) as one TensorFlow function of
    tensors, for a SavedModel: (prompt: string, max_new_tokens: int32, temperature:
    float32, top_k: int32, top_p: float32, seed: int64) -> {"text": string}. The
    prompt's characters must be in the vocabulary (else an InvalidArgumentError); a
    prompt longer than the context keeps its last `max_length` characters."""
    table = tf.constant(vocabulary.table())
    pieces = tf.constant([bytes([b]) for b in vocabulary.byte_values])
    start, run = sampling_loop(model)

    def generate(prompt, max_new_tokens, temperature, top_k, top_p, seed):
        ids = tf.gather(table, tf.cast(tf.io.decode_raw(prompt, tf.uint8), tf.int32))
        tf.debugging.assert_non_negative(ids, "the prompt holds characters outside the vocabulary")
        tf.debugging.assert_positive(tf.size(ids), "the prompt is empty")
        tokens, _ = run(start(ids), max_new_tokens, temperature, top_k, top_p, seed, tf.constant(0))
        return {"text": tf.strings.reduce_join(tf.gather(pieces, tokens))}

    return generate


GENERATE_SIGNATURE = [
    tf.TensorSpec([], tf.string, name="prompt"),
    tf.TensorSpec([], tf.int32, name="max_new_tokens"),
    tf.TensorSpec([], tf.float32, name="temperature"),
    tf.TensorSpec([], tf.int32, name="top_k"),
    tf.TensorSpec([], tf.float32, name="top_p"),
    tf.TensorSpec([], tf.int64, name="seed"),
]


def graph_generate_endpoint(vocabulary):
    """The SavedModel endpoint `generate` (`serving.Signature.endpoints`)."""
    return lambda model: graph_generate(model, vocabulary), GENERATE_SIGNATURE
