r"""A small BERT: masked-language-model pre-training on real text, then fine-tuning
with a classification head.

    python -m recipes.bert
    python -m recipes.bert --strategy=mirrored --num_cpu_devices=2

Offline both phases use text that ships with Python (recipes/text.py):
pre-training on the Python Language Reference (15% of tokens masked, BERT's
80/10/10 rule), fine-tuning on standard-library docstrings labelled by package
(asyncio, email, logging, unittest, xml). It reports the held-out MLM loss before
and after pre-training and the fine-tuned test accuracy against the
majority-class baseline. The pre-training run goes to <model_dir>/pretrain, the
classifier to <model_dir>. About 3 minutes on a 2-core CPU; README, "BERT".
"""
if __name__ == "__main__":  # Run as a program: set the process up before TensorFlow loads.
    from recipes.core import entry
    entry.handle_stop_signals()
    entry.set_up_process()

import dataclasses
import os

from absl import flags
import numpy as np

import models
from recipes.core import metrics, text, train
from recipes.core import flags as recipe_flags

flags.DEFINE_integer("pretrain_epochs", 8, "Epochs of masked-language-model pre-training.")
flags.DEFINE_float("pretrain_learning_rate", 1e-3, "Learning rate of the pre-training.")
flags.DEFINE_integer("max_length", 64, "Tokens per sequence, [CLS] included.")
flags.DEFINE_integer("vocab_size", 4000, "Vocabulary size, special tokens included.")
flags.DEFINE_integer("mask_copies", 4, "Differently masked copies of each pre-training sequence.")
flags.DEFINE_integer("hidden_size", 128, "Width of the encoder.")
flags.DEFINE_integer("num_layers", 2, "Transformer blocks.")
flags.DEFINE_integer("num_heads", 4, "Attention heads per block.")

FLAGS = flags.FLAGS

# Fine-tuning defaults; pre-training has its own flags above.
RECIPE_DEFAULTS = dict(epochs=10, batch_size=32, learning_rate=5e-4)


def mean_loss(model, loss_fn, x, y, batch_size=64):
    """The mean per-example loss of `model` on (x, y), outside any training loop."""
    losses = [np.asarray(loss_fn(y[i:i + batch_size], model(x[i:i + batch_size], training=False)))
              for i in range(0, len(x), batch_size)]
    return float(np.mean(np.concatenate(losses)))


def run(config, strategy, pretraining, fine_tuning, tokenizer, *, pretrain_epochs=8,
        pretrain_learning_rate=1e-3, hidden_size=128, num_layers=2, num_heads=4):
    """Pre-trains, then fine-tunes; a seam for tests to pass their own parts."""
    length = pretraining.x_train.shape[1]
    pre_config = dataclasses.replace(config, model_dir=os.path.join(config.model_dir, "pretrain"),
                                     epochs=pretrain_epochs, learning_rate=pretrain_learning_rate)
    train.set_up_run(config, strategy)  # Once: the fine-tuning continues the same random streams.
    with strategy.scope():
        encoder = train.build(models.BertEncoder, tokenizer.vocab_size, length,
                              hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                              intermediate_size=2 * hidden_size)
        pretrainer = models.BertPretrainer(encoder)
        pretrainer.build((None, length))
    before = mean_loss(pretrainer, text.masked_lm_loss, pretraining.x_test, pretraining.y_test)
    print(f"Masked-language-model loss before pre-training: {before:.3f} "
          f"(ln of the vocabulary: {np.log(tokenizer.vocab_size):.3f})")
    pretrained, _ = train.train_model(
        pre_config, strategy, pretraining, lambda: pretrainer, loss_fn=text.masked_lm_loss,
        metrics_fn=list, preprocess=lambda ids: ids, recipe="bert_pretrain",
        extra_metrics={"mlm_loss_before": before}, set_up=False)
    after = pretrained["test_loss"]
    print(f"Masked-language-model loss: {before:.3f} before pre-training, {after:.3f} after.")

    baseline = metrics.majority_class_accuracy(fine_tuning.y_train, fine_tuning.y_test)
    results = train.train_classifier(
        config, strategy, fine_tuning,
        lambda num_classes: models.BertClassifier(encoder, num_classes),
        recipe="bert", preprocess=lambda ids: ids,
        extra_metrics={"mlm_loss_before": before, "mlm_loss_after": after,
                       "topics": list(text.TOPICS), "baseline": "majority class",
                       "baseline_accuracy": baseline}, set_up=False)
    print(f"Fine-tuned test accuracy {results['test_accuracy']:.2%} against {baseline:.2%} for "
          "the majority class baseline.")
    return results


def main(argv):
    del argv  # Unused.
    recipe_flags.no_data_flags("the Python Language Reference and standard-library docstrings")
    config = recipe_flags.train_config("bert", **RECIPE_DEFAULTS)
    strategy = recipe_flags.strategy_from_flags()
    pretraining, fine_tuning, tokenizer = text.load(FLAGS.max_length, FLAGS.vocab_size, FLAGS.mask_copies)
    print(f"Pre-training: {pretraining.describe()}; fine-tuning: {fine_tuning.describe()}; "
          f"{tokenizer.vocab_size} token ids.")
    run(config, strategy, pretraining, fine_tuning, tokenizer,
        pretrain_epochs=FLAGS.pretrain_epochs, pretrain_learning_rate=FLAGS.pretrain_learning_rate,
        hidden_size=FLAGS.hidden_size, num_layers=FLAGS.num_layers, num_heads=FLAGS.num_heads)


if __name__ == "__main__":
    entry.run(main)
