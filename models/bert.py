"""A small BERT-style encoder, with its masked-language-model and classifier heads.

    encoder = models.BertEncoder(vocab_size=4000, max_length=64)
    pretrainer = models.BertPretrainer(encoder)         # [B, L] ids -> [B, L, vocab] probabilities
    classifier = models.BertClassifier(encoder, num_classes=5)   # [B, L] ids -> [B, classes]

Token id 0 is padding: padded positions are masked out of attention. Each block is
multi-head self-attention, softmax(Q K^T / sqrt(d_k)) V (Keras' MultiHeadAttention),
then a GELU feed-forward layer, each with a residual connection and layer
normalization after it, as in BERT.
"""

import keras
from keras import ops

from models import _checks


@keras.saving.register_keras_serializable(package="models")
class BertEncoder(keras.Model):
    """Token + position embeddings -> `num_layers` transformer blocks -> [B, L, hidden_size].

    Args:
      vocab_size: number of token ids (0 is padding).
      max_length: longest sequence; the number of position embeddings.
      hidden_size: width of every token's representation.
      num_layers: transformer blocks.
      num_heads: attention heads per block; must divide `hidden_size`.
      intermediate_size: width of the feed-forward layer.
      dropout_rate: dropout on embeddings, attention weights and block outputs.
    """

    def __init__(
        self,
        vocab_size: int,
        max_length: int,
        hidden_size: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        intermediate_size: int = 256,
        dropout_rate: float = 0.1,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        vocab_size = _checks.count("vocab_size", vocab_size, minimum=2)
        max_length = _checks.count("max_length", max_length)
        num_layers = _checks.count("num_layers", num_layers)
        num_heads = _checks.count("num_heads", num_heads)
        hidden_size = _checks.count("hidden_size", hidden_size)
        intermediate_size = _checks.count("intermediate_size", intermediate_size)
        if hidden_size % num_heads:
            raise ValueError(
                f"`num_heads` must divide `hidden_size`. Received: num_heads={num_heads}, "
                f"hidden_size={hidden_size}"
            )
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.dropout_rate = dropout_rate
        self.token_embedding = keras.layers.Embedding(vocab_size, hidden_size, name="token_embedding")
        self.position_embedding = keras.layers.Embedding(max_length, hidden_size, name="position_embedding")
        self.embedding_norm = keras.layers.LayerNormalization(epsilon=1e-12, name="embedding_norm")
        self.embedding_dropout = keras.layers.Dropout(dropout_rate)
        self.attention = [
            keras.layers.MultiHeadAttention(
                num_heads, hidden_size // num_heads, dropout=dropout_rate, name=f"attention_{i}"
            )
            for i in range(num_layers)
        ]
        self.attention_norm = [
            keras.layers.LayerNormalization(epsilon=1e-12, name=f"attention_norm_{i}")
            for i in range(num_layers)
        ]
        self.intermediate = [
            keras.layers.Dense(intermediate_size, activation="gelu", name=f"intermediate_{i}")
            for i in range(num_layers)
        ]
        self.output_dense = [keras.layers.Dense(hidden_size, name=f"output_{i}") for i in range(num_layers)]
        self.output_norm = [
            keras.layers.LayerNormalization(epsilon=1e-12, name=f"output_norm_{i}") for i in range(num_layers)
        ]
        self.dropout = keras.layers.Dropout(dropout_rate)

    def build(self, input_shape):
        if self.built:
            return
        length = input_shape[1] or self.max_length
        self.token_embedding.build(input_shape)
        self.position_embedding.build((length,))
        hidden = (input_shape[0], length, self.hidden_size)
        self.embedding_norm.build(hidden)
        for i in range(self.num_layers):
            self.attention[i].build(hidden, hidden)
            self.attention_norm[i].build(hidden)
            self.intermediate[i].build(hidden)
            self.output_dense[i].build(hidden[:-1] + (self.intermediate_size,))
            self.output_norm[i].build(hidden)
        self.built = True

    def call(self, token_ids, training=False):
        padding = ops.not_equal(token_ids, 0)  # [B, L]
        positions = ops.arange(ops.shape(token_ids)[1])
        x = self.token_embedding(token_ids) + self.position_embedding(positions)[None]
        x = self.embedding_dropout(self.embedding_norm(x), training=training)
        # [B, L(query), L(key)]: no query attends to a padding key.
        mask = ops.logical_and(padding[:, :, None], padding[:, None, :])
        for i in range(self.num_layers):
            attended = self.attention[i](x, x, attention_mask=mask, training=training)
            x = self.attention_norm[i](x + self.dropout(attended, training=training))
            transformed = self.output_dense[i](self.intermediate[i](x))
            x = self.output_norm[i](x + self.dropout(transformed, training=training))
        return x

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
        }


class _WithEncoder(keras.Model):
    """A head on a `BertEncoder`, serialized together with it."""

    def __init__(self, encoder: BertEncoder | dict, **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(encoder, dict):
            encoder = keras.saving.deserialize_keras_object(encoder)
        self.encoder = encoder

    def get_config(self):
        return {**super().get_config(), "encoder": keras.saving.serialize_keras_object(self.encoder)}


@keras.saving.register_keras_serializable(package="models")
class BertPretrainer(_WithEncoder):
    """The masked-language-model head: every position's probabilities over the vocabulary.

    Dense(hidden, gelu) -> LayerNorm -> Dense(vocab_size, softmax), as in BERT
    (without tying the output weights to the token embedding).
    """

    def __init__(self, encoder: BertEncoder | dict, **kwargs) -> None:
        super().__init__(encoder, **kwargs)
        self.transform = keras.layers.Dense(self.encoder.hidden_size, activation="gelu", name="mlm_transform")
        self.transform_norm = keras.layers.LayerNormalization(epsilon=1e-12, name="mlm_norm")
        self.vocabulary = keras.layers.Dense(
            self.encoder.vocab_size, activation="softmax", name="mlm_output", dtype=_checks.head_dtype()
        )

    def build(self, input_shape):
        if self.built:
            return
        if not self.encoder.built:
            self.encoder.build(input_shape)
        hidden = tuple(input_shape) + (self.encoder.hidden_size,)
        self.transform.build(hidden)
        self.transform_norm.build(hidden)
        self.vocabulary.build(hidden)
        self.built = True

    def call(self, token_ids, training=False):
        x = self.encoder(token_ids, training=training)
        return self.vocabulary(self.transform_norm(self.transform(x)))


@keras.saving.register_keras_serializable(package="models")
class BertClassifier(_WithEncoder):
    """A sequence classifier: the first ([CLS]) token's representation -> Dropout ->
    Dense(num_classes, softmax)."""

    def __init__(
        self, encoder: BertEncoder | dict, num_classes: int, dropout_rate: float = 0.1, **kwargs
    ) -> None:
        super().__init__(encoder, **kwargs)
        if num_classes < 2:
            raise ValueError(f"`num_classes` must be at least 2. Received: num_classes={num_classes}")
        self.num_classes = num_classes
        self.dropout_rate = dropout_rate
        self.dropout = keras.layers.Dropout(dropout_rate)
        self.head = keras.layers.Dense(
            num_classes, activation="softmax", name="classifier", dtype=_checks.head_dtype()
        )

    def build(self, input_shape):
        if self.built:
            return
        if not self.encoder.built:
            self.encoder.build(input_shape)
        self.head.build((input_shape[0], self.encoder.hidden_size))
        self.built = True

    def features(self, token_ids, training=False):
        """What the head reads: the [CLS] token's representation, after dropout."""
        first_token = self.encoder(token_ids, training=training)[:, 0]
        return self.dropout(first_token, training=training)

    def call(self, token_ids, training=False):
        return self.head(self.features(token_ids, training=training))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "dropout_rate": self.dropout_rate}
