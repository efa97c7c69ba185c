"""A GPT: a decoder-only transformer language model, with a key/value cache for
generation.

    model = models.GPT(vocab_size=65, max_length=64)      # [B, T] ids -> [B, T, vocab] logits
    logits, cache = model.prefill(prompt_ids)              # the cache holds the prompt's keys and values
    logits, cache = model.decode(next_ids, cache, index)   # one new token per sequence

Token and learned position embeddings, then pre-LayerNorm blocks (causal multi-head
self-attention and a GELU MLP, each added to the residual stream), a final
LayerNorm, and an LM head tied to the token embedding, as GPT-2 and nanoGPT. The
attention is Keras' `MultiHeadAttention` (the BERT blocks' attention) with its
projections applied to a cache of fixed size, as keras-hub's
`CachedMultiHeadAttention` does.

The model returns logits: a softmax over a large vocabulary is computed with the
loss (`from_logits=True`), never materialized. `models.logits(gpt, ids)` is the
model's own output.
"""

import keras
from keras import ops

from models import _checks, _keras_compat


@keras.saving.register_keras_serializable(package="models")
class CausalSelfAttention(keras.layers.MultiHeadAttention):
    """Keras' `MultiHeadAttention` over one sequence, causal, and with an optional
    key/value cache: `call(x, cache, index)` writes the keys and values of `x`'s
    positions at `index` into `cache` ([B, 2, max_length, heads, head_size]) and
    attends to every cached position up to its own."""

    def call(self, x, cache=None, index=None, training=False):
        projections = _keras_compat.attention_projections(self)
        query, key, value = projections.query(x), projections.key(x), projections.value(x)
        length = ops.shape(x)[1]
        if cache is None:  # Position t attends to positions 0..t of x.
            positions = ops.arange(length, dtype="int32")
            mask = positions[:, None] >= positions[None, :]
        else:
            start = [0, index, 0, 0]
            key = ops.slice_update(cache[:, 0], start, ops.cast(key, cache.dtype))
            value = ops.slice_update(cache[:, 1], start, ops.cast(value, cache.dtype))
            cache = ops.stack([key, value], axis=1)
            # Query t (at index + t) attends to cached positions 0..index + t.
            queries = ops.cast(index, "int32") + ops.arange(length, dtype="int32")
            mask = queries[:, None] >= ops.arange(ops.shape(key)[1], dtype="int32")[None, :]
        attended = _keras_compat.attend(self, query, key, value, mask[None], training=training)
        output = projections.output(attended)
        return output if cache is None else (output, cache)


@keras.saving.register_keras_serializable(package="models")
class GPTEmbedding(keras.layers.Layer):
    """Token + learned position embeddings, then dropout: ids [B, T] -> [B, T, hidden]."""

    def __init__(self, vocab_size, max_length, hidden_size, dropout_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.max_length, self.hidden_size = vocab_size, max_length, hidden_size
        self.dropout_rate = dropout_rate
        init = keras.initializers.RandomNormal(stddev=0.02)  # GPT-2's initialization, as nanoGPT's.
        self.token_embedding = keras.layers.Embedding(
            vocab_size, hidden_size, embeddings_initializer=init, name="token_embedding"
        )
        self.position_embedding = keras.layers.Embedding(
            max_length, hidden_size, embeddings_initializer=init, name="position_embedding"
        )
        self.dropout = keras.layers.Dropout(dropout_rate)

    def build(self, input_shape):
        self.token_embedding.build(input_shape)
        self.position_embedding.build((None,))
        self.built = True

    def call(self, token_ids, start=0, training=False):
        """The residual stream at positions start, start + 1, ... of `token_ids`."""
        positions = ops.cast(start, "int32") + ops.arange(ops.shape(token_ids)[1], dtype="int32")
        x = self.token_embedding(token_ids) + self.position_embedding(positions)[None]
        return self.dropout(x, training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.hidden_size,)

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "max_length": self.max_length,
            "hidden_size": self.hidden_size,
            "dropout_rate": self.dropout_rate,
        }


@keras.saving.register_keras_serializable(package="models")
class GPTBlock(keras.layers.Layer):
    """A pre-LayerNorm block: x + attention(LayerNorm(x)), then x + MLP(LayerNorm(x)),
    the MLP Dense(intermediate, GELU) -> Dense(hidden); dropout on each branch.
    The output projections start scaled by 1/sqrt(2 * num_layers), as GPT-2's."""

    def __init__(self, hidden_size, num_heads, intermediate_size, dropout_rate=0.0, num_layers=1, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size, self.num_heads, self.intermediate_size = hidden_size, num_heads, intermediate_size
        self.dropout_rate, self.num_layers = dropout_rate, num_layers
        init = keras.initializers.RandomNormal(stddev=0.02)
        residual_init = keras.initializers.RandomNormal(stddev=0.02 / (2 * num_layers) ** 0.5)
        self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="attention_norm")
        self.attention = CausalSelfAttention(
            num_heads,
            hidden_size // num_heads,
            dropout=dropout_rate,
            kernel_initializer=init,
            name="attention",
        )
        self.mlp_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="mlp_norm")
        self.intermediate = keras.layers.Dense(
            intermediate_size, activation="gelu", kernel_initializer=init, name="intermediate"
        )
        self.mlp_output = keras.layers.Dense(hidden_size, kernel_initializer=residual_init, name="mlp_output")
        self.dropout = keras.layers.Dropout(dropout_rate)

    def build(self, input_shape):
        self.attention_norm.build(input_shape)
        self.attention.build(input_shape, input_shape)
        # Keras' attention has one initializer for all four projections.
        output = _keras_compat.attention_projections(self.attention).output.kernel
        output.assign(output * (2 * self.num_layers) ** -0.5)
        self.mlp_norm.build(input_shape)
        self.intermediate.build(input_shape)
        self.mlp_output.build(tuple(input_shape[:-1]) + (self.intermediate_size,))
        self.built = True

    def call(self, x, cache=None, index=None, training=False):
        """(x, its cache) with a cache, else x."""
        attended = self.attention(self.attention_norm(x), cache=cache, index=index, training=training)
        if cache is not None:
            attended, cache = attended
        x = x + self.dropout(attended, training=training)
        x = x + self.dropout(self.mlp_output(self.intermediate(self.mlp_norm(x))), training=training)
        return x if cache is None else (x, cache)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_size": self.hidden_size,
            "num_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "dropout_rate": self.dropout_rate,
            "num_layers": self.num_layers,
        }


class GPTHead(keras.layers.Layer):
    """The final LayerNorm, then the logits: the token embedding, transposed (tied), in
    float32 even under mixed precision. Built by `GPT` around its embedding."""

    def __init__(self, embedding, **kwargs):
        super().__init__(**kwargs)
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")
        self._tied = [embedding]  # A list, so that its weights stay the embedding's own.

    def build(self, input_shape):
        self.final_norm.build(input_shape)
        self.built = True

    def call(self, x, training=False):
        embeddings = self._tied[0].embeddings
        logits = ops.matmul(ops.cast(self.final_norm(x), embeddings.dtype), ops.transpose(embeddings))
        return ops.cast(logits, "float32" if logits.dtype in ("float16", "bfloat16") else logits.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self._tied[0].input_dim,)


@keras.saving.register_keras_serializable(package="models")
class GPT(keras.Model):
    """Token + position embeddings -> `num_layers` pre-LayerNorm blocks -> LayerNorm ->
    logits over the vocabulary (the token embedding, transposed).

    Args:
      vocab_size: number of token ids.
      max_length: the context: the most positions the model sees at once.
      hidden_size: width of the residual stream.
      num_layers: transformer blocks.
      num_heads: attention heads per block; must divide `hidden_size`.
      intermediate_size: width of the MLP (4 * hidden_size when None, as GPT-2).
      dropout_rate: dropout on the embeddings, attention weights and each block's
        outputs (nanoGPT's `dropout`).
      lora_rank: when set, every block's query and value projections carry LoRA
        adapters of this rank, as the LoRA paper adapts (Keras' `enable_lora`: the
        kernels frozen, a low-rank update trained beside them); in the config, so a
        saved model loads with them.
    """

    returns_logits = True  # For `models.logits`: the output is the logits already.

    def __init__(
        self,
        vocab_size: int,
        max_length: int,
        hidden_size: int = 128,
        num_layers: int = 4,
        num_heads: int = 4,
        intermediate_size: int | None = None,
        dropout_rate: float = 0.0,
        lora_rank: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.lora_rank = lora_rank and _checks.count("lora_rank", lora_rank)
        self.vocab_size = _checks.count("vocab_size", vocab_size, minimum=2)
        self.max_length = _checks.count("max_length", max_length)
        self.hidden_size = _checks.count("hidden_size", hidden_size)
        self.num_layers = _checks.count("num_layers", num_layers)
        self.num_heads = _checks.count("num_heads", num_heads)
        self.intermediate_size = _checks.count("intermediate_size", intermediate_size or 4 * hidden_size)
        if hidden_size % num_heads:
            raise ValueError(
                f"`num_heads` must divide `hidden_size`. Received: num_heads={num_heads}, "
                f"hidden_size={hidden_size}"
            )
        if not 0 <= dropout_rate < 1:
            raise ValueError(f"`dropout_rate` must be in [0, 1). Received: dropout_rate={dropout_rate}")
        self.dropout_rate = dropout_rate
        self.head_size = hidden_size // num_heads
        self.embedding = GPTEmbedding(vocab_size, max_length, hidden_size, dropout_rate, name="embedding")
        self.blocks = [
            GPTBlock(
                hidden_size,
                num_heads,
                self.intermediate_size,
                dropout_rate,
                self.num_layers,
                name=f"block_{i}",
            )
            for i in range(self.num_layers)
        ]
        self.head = GPTHead(self.embedding.token_embedding, name="head")

    def build(self, input_shape):
        if self.built:
            return
        hidden = (input_shape[0], input_shape[1], self.hidden_size)
        self.embedding.build(input_shape)
        for block in self.blocks:
            block.build(hidden)
        self.head.build(hidden)
        self.built = True
        if self.lora_rank:
            for block in self.blocks:
                projections = _keras_compat.attention_projections(block.attention)
                for layer in (projections.query, projections.value):
                    layer.enable_lora(self.lora_rank)

    def projections(self) -> list[keras.layers.Layer]:
        """Each block's attention projections (query, key, value, output) and its MLP's
        two Dense layers: the weights int8 quantization stores in int8."""
        return [
            layer
            for block in self.blocks
            for layer in (
                *_keras_compat.attention_projections(block.attention),
                block.intermediate,
                block.mlp_output,
            )
        ]

    def layer_stack(self):
        """The layers the model calls one after another (for a pipeline of stages)."""
        return [self.embedding, *self.blocks, self.head]

    def call(self, token_ids, training=False):
        x = self.embedding(token_ids, training=training)
        for block in self.blocks:
            x = block(x, training=training)
        return self.head(x)

    # Generation with a key/value cache.

    def empty_cache(self, batch_size, dtype=None):
        """Zeros: [layers, B, 2 (keys, values), max_length, heads, head_size]."""
        return ops.zeros(
            (self.num_layers, batch_size, 2, self.max_length, self.num_heads, self.head_size),
            dtype or self.compute_dtype,
        )

    def decode(self, token_ids, cache, index):
        """Logits of `token_ids` ([B, T], at positions index..index + T - 1, the cache
        holding every position before) and the cache with their keys and values."""
        x = self.embedding(token_ids, start=index)
        caches = []
        for i, block in enumerate(self.blocks):
            x, layer_cache = block(x, cache=cache[i], index=index)
            caches.append(layer_cache)
        return self.head(x), ops.stack(caches)

    def prefill(self, token_ids):
        """(logits, cache) of a prompt [B, T], T <= max_length, from an empty cache."""
        return self.decode(token_ids, self.empty_cache(ops.shape(token_ids)[0]), 0)

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "max_length": self.max_length,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "dropout_rate": self.dropout_rate,
            "lora_rank": self.lora_rank,
        }
