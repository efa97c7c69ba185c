r"""A small BERT: masked-language-model pre-training on real text, then fine-tuning
with a classification head.

    python -m recipes.bert
    python -m recipes.bert --strategy=mirrored --num_cpu_devices=2

Offline both phases use text that ships with Python (recipes/core/nlp/text.py):
pre-training on the Python Language Reference (15% of tokens masked, BERT's
80/10/10 rule), fine-tuning on standard-library docstrings labelled by package
(asyncio, email, logging, unittest, xml). It reports the held-out MLM loss before
and after pre-training and the fine-tuned test accuracy against the
majority-class baseline. The pre-training run goes to <model_dir>/pretrain, the
classifier to <model_dir>. About 3 minutes on a 2-core CPU; README, "BERT".

Pre-train on your own text instead (streamed, masked in the input pipeline, the
last 10% held out), then fine-tune on the docstrings as above:

    python -m recipes.bert --data='books/*.txt'
"""

if __name__ == "__main__":  # Run as a program: set the process up before TensorFlow loads.
    from recipes.core.cli import entry

    entry.handle_stop_signals()
    entry.set_up_process()

import dataclasses
import os

import numpy as np
from absl import flags

import models
from recipes.core.cli import flags as recipe_flags
from recipes.core.errors import RecipeError
from recipes.core.input import data, sources
from recipes.core.nlp import text
from recipes.core.training import metrics, step, train

flags.DEFINE_integer("pretrain_epochs", 8, "Epochs of masked-language-model pre-training.")
flags.DEFINE_float("pretrain_learning_rate", 1e-3, "Learning rate of the pre-training.")
flags.DEFINE_integer("vocab_size", 4000, "Vocabulary size, special tokens included.")
flags.DEFINE_integer("mask_copies", 4, "Differently masked copies of each pre-training sequence.")
recipe_flags.define_transformer_flags()

FLAGS = flags.FLAGS

# Fine-tuning defaults; pre-training has its own flags above.
RECIPE_DEFAULTS = dict(epochs=10, batch_size=32, learning_rate=5e-4)
SIZES = dict(hidden_size=128, num_layers=2, num_heads=4)  # `run`'s, where it is not given them.


def mean_loss(model, loss_fn, x, y, batch_size=64):
    """The mean per-example loss of `model` on (x, y) (arrays), outside any training loop."""
    losses = [
        np.asarray(loss_fn(y[i : i + batch_size], model(x[i : i + batch_size], training=False)))
        for i in range(0, len(x), batch_size)
    ]
    return float(np.mean(np.concatenate(losses)))


def run(
    config,
    strategy,
    pretraining,
    fine_tuning,
    tokenizer,
    *,
    sizes=None,
    pretrain_epochs=8,
    pretrain_learning_rate=1e-3,
):
    """Pre-trains, then fine-tunes, an encoder of `sizes` (`hidden_size`, `num_layers`,
    `num_heads`; default `SIZES`); a seam for tests to pass their own parts."""
    pretraining = data.as_data(pretraining)
    sizes = {**SIZES, **(sizes or {})}
    length = pretraining.x_spec.shape[0]
    pre_config = dataclasses.replace(
        config,
        model_dir=os.path.join(config.model_dir, "pretrain"),
        epochs=pretrain_epochs,
        learning_rate=pretrain_learning_rate,
    )
    train.set_up_run(config, strategy)  # Once: the fine-tuning continues the same random streams.
    with strategy.scope():
        encoder = train.build(
            models.BertEncoder,
            tokenizer.vocab_size,
            length,
            hidden_size=sizes["hidden_size"],
            num_layers=sizes["num_layers"],
            num_heads=sizes["num_heads"],
            intermediate_size=2 * sizes["hidden_size"],
        )
        pretrainer = models.BertPretrainer(encoder)
        pretrainer.build((None, length))
    losses = pretrain(pre_config, strategy, pretraining, pretrainer, tokenizer)
    baseline = metrics.majority_class_accuracy(fine_tuning.y_train, fine_tuning.y_test)
    fine_tuning = data.as_data(fine_tuning)
    task = train.Task.classifier(
        "bert",
        lambda num_classes: models.BertClassifier(encoder, num_classes),
        fine_tuning,
        preprocess=lambda ids: ids,
        extra_metrics={
            **losses,
            "topics": list(text.TOPICS),
            "baseline": "majority class",
            "baseline_accuracy": baseline,
        },
    )
    results = train.train_classifier(task, fine_tuning, config=config, strategy=strategy, set_up=False)
    print(
        f"Fine-tuned test accuracy {results['test_accuracy']:.2%} against {baseline:.2%} for "
        "the majority class baseline."
    )
    return results


def pretrain(config, strategy, pretraining, pretrainer, tokenizer):
    """Masked-language-model pre-training of `pretrainer` into `config.model_dir`;
    returns the held-out loss before and after it (`mlm_loss_before`, `mlm_loss_after`)."""
    # Before pre-training, on (at most) the first 4,096 held-out sequences.
    before = mean_loss(pretrainer, text.masked_lm_loss, *pretraining.arrays("test", limit=4096))
    print(
        f"Masked-language-model loss before pre-training: {before:.3f} "
        f"(ln of the vocabulary: {np.log(tokenizer.vocab_size):.3f})"
    )
    task = train.Task(
        "bert_pretrain",
        lambda: pretrainer,
        step.Objective(text.masked_lm_loss),
        preprocess=lambda ids: ids,
        extra_metrics={"mlm_loss_before": before},
    )
    pretrained, _ = train.train_model(task, pretraining, config=config, strategy=strategy, set_up=False)
    after = pretrained["test_loss"]
    print(f"Masked-language-model loss: {before:.3f} before pre-training, {after:.3f} after.")
    return {"mlm_loss_before": before, "mlm_loss_after": after}


def own_text():
    """(files, open_text) of the text files --data names, for `text.load`; None for the
    bundled reference. Anything but text is a one-line error."""
    if FLAGS.data == "sample":
        recipe_flags.no_data_flags(
            "the Python Language Reference and standard-library docstrings, or text files by --data"
        )
        return None
    files = sources.expand(FLAGS.data)
    others = [path for path in files if data.file_kind(path) != "text"]
    if others:
        raise RecipeError(
            f"--data={FLAGS.data} names {os.path.basename(others[0])}: BERT pre-trains on "
            "text files (.txt); pass them, by a glob if there are many"
        )
    return files, lambda files, window: recipe_flags.data_from_flags(text_window=window)


def main(argv):
    del argv  # Unused.
    corpus = own_text()
    sizes = recipe_flags.transformer_sizes("bert")
    config = recipe_flags.train_config("bert", **RECIPE_DEFAULTS)
    config = dataclasses.replace(config, recipe_settings={**config.recipe_settings, **sizes})
    strategy = recipe_flags.strategy_from_flags()
    pretraining, fine_tuning, tokenizer = text.load(
        sizes["max_length"], FLAGS.vocab_size, FLAGS.mask_copies, own_text=corpus
    )
    pretraining = data.as_data(pretraining)
    print(
        f"Pre-training: {pretraining.describe()}; fine-tuning: {fine_tuning.describe()}; "
        f"{tokenizer.vocab_size} token ids."
    )
    run(
        config,
        strategy,
        pretraining,
        fine_tuning,
        tokenizer,
        sizes=sizes,
        pretrain_epochs=FLAGS.pretrain_epochs,
        pretrain_learning_rate=FLAGS.pretrain_learning_rate,
    )


if __name__ == "__main__":
    entry.run(main)
