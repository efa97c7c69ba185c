r"""A GPT: a decoder-only transformer trained to predict the next character, then
sampled from.

    python -m recipes.gpt                                    # the bundled text, offline
    python -m recipes.gpt --data=shakespeare.txt             # your own text (any .txt, by glob)
    python -m recipes.gpt --strategy=mirrored --num_cpu_devices=2
    python -m recipes.generate --model_dir=runs/gpt --prompt="The " --max_new_tokens=200
    python -m recipes.gpt --data=other.txt --init_from=runs/gpt --lora_rank=8 --model_dir=runs/gpt_lora

By default it trains on real text that ships with Python: the Python Language
Reference's topics (465,000 characters). The last 10% of the text is held out,
as nanoGPT holds out the last 10% of shakespeare_char. The defaults are nanoGPT's
CPU configuration of shakespeare_char: 4 layers, 4 heads, width 128, context 64,
batch 12, 2,000 steps, AdamW (learning rate 1e-3, weight decay 0.1 on everything
but biases, LayerNorms and embeddings, betas 0.9 and 0.99), 100 warm-up steps then
cosine to 1e-4, gradient clipping 1.0, no dropout.

It reports the held-out loss in nats per character (metrics.json's `test_loss`),
bits per character and perplexity, beside a unigram and a bigram baseline on
the same split, and tokens/s; then the held-out loss with the blocks' weights in int8
(Keras' quantize), and a sample. The run's saved_model/ has a `generate` signature
that runs without this package (docs/gpt.md).

--init_from=RUN fine-tunes a trained GPT run on --data (its sizes and vocabulary;
the text must use only its characters): all of it, or with --lora_rank=R only LoRA
adapters of rank R on the blocks' projections (Keras' enable_lora). It reports the
held-out loss before fine-tuning beside the one after.
"""

if __name__ == "__main__":  # Run as a program: set the process up before TensorFlow loads.
    from recipes.core.cli import entry

    entry.handle_stop_signals()
    entry.set_up_process()

import dataclasses

from absl import flags

import models
from recipes.core.cli import flags as recipe_flags
from recipes.core.deploy import serving
from recipes.core.errors import RecipeError
from recipes.core.input import samples
from recipes.core.nlp import generation, language
from recipes.core.training import step, train

recipe_flags.define_transformer_flags()  # --num_layers, --num_heads, --hidden_size, --max_length.
flags.DEFINE_integer("sample_length", 300, "Characters of the sample printed at the end (0: none).")
flags.DEFINE_string(
    "init_from", None, "A GPT run to fine-tune on --data (its weights, sizes and vocabulary)."
)
flags.DEFINE_integer(
    "lora_rank", 0, "With --init_from: train only LoRA adapters of this rank; 0: every weight."
)

FLAGS = flags.FLAGS

# nanoGPT's shakespeare_char on a CPU; decay_steps follows the run's steps (`main`).
RECIPE_DEFAULTS = dict(
    batch_size=12,
    train_steps=2000,
    optimizer="adamw",
    learning_rate=1e-3,
    lr_schedule="cosine",
    min_learning_rate=1e-4,
    warmup_steps=100,
    weight_decay=0.1,
    beta_2=0.99,
    global_clipnorm=1.0,
    dropout_rate=0.0,
)
SAMPLE_NAME = "python_reference"
SIZES = dict(num_layers=4, num_heads=4, hidden_size=128)  # `run`'s, where it is not given them.


def open_text(max_length, vocabulary=None):
    """The text --data names (the bundled text by default), as windows of `max_length`
    characters with next-character targets, and its vocabulary (`vocabulary` when
    given: a pre-trained model's, which the text must keep to)."""
    opened = recipe_flags.data_from_flags(
        samples={SAMPLE_NAME: samples.BUNDLED_TEXT[SAMPLE_NAME]},
        text_window=max_length,
        text_stride=max(max_length // 2, 1),
    )
    found = language.Vocabulary.of_files(sorted(set(opened.train.source.files + opened.test.source.files)))
    if vocabulary is not None:
        unknown = sorted(set(found.byte_values) - set(vocabulary.byte_values))
        if unknown:
            raise RecipeError(
                f"--data={FLAGS.data} holds {len(unknown)} character(s) the --init_from model "
                f"never saw ({bytes(unknown[:20]).decode('utf-8', 'replace')!r}); fine-tune "
                "on text of its characters"
            )
        found = dataclasses.replace(vocabulary, bytes_per_character=found.bytes_per_character)
    return language.in_vocabulary(opened, found), found


def fine_tuned(base, lora_rank):
    """A copy of `base` to fine-tune: every weight trainable, or with `lora_rank` only
    LoRA adapters (the blocks' kernels frozen by Keras; the rest frozen here)."""
    model = language.copy_of(base, lora_rank=lora_rank or None)
    if lora_rank:
        for variable in model.trainable_variables:
            if "lora" not in variable.name:
                variable.trainable = False
    return model


def run(config, strategy, dataset, vocabulary, *, sizes=None, sample_length=300, base=None, lora_rank=0):
    """Trains and evaluates the GPT on `dataset` (windows of token ids of
    `vocabulary`) at `sizes` (`num_layers`, `num_heads`, `hidden_size`; default
    `SIZES`); with `base` (a trained GPT) fine-tunes it (`fine_tuned`). Returns
    (results, model)."""
    max_length = dataset.x_spec.shape[0]
    baselines = language.ngram_baselines(dataset, vocabulary)
    print(
        f"Held-out baselines: unigram {baselines['unigram']:.3f}, bigram {baselines['bigram']:.3f} "
        f"nats/token; {vocabulary.size} tokens."
    )
    extra = {
        "vocabulary": vocabulary.to_json(),
        "bytes_per_character": vocabulary.bytes_per_character,
        **{f"{name}_test_loss": value for name, value in baselines.items()},
    }
    if base is not None:
        extra["pretrained_test_loss"] = language.held_out_loss(base, dataset.test)
        print(f"Before fine-tuning: {extra['pretrained_test_loss']:.3f} nats/token held-out.")
        build = lambda: fine_tuned(base, lora_rank)  # noqa: E731
    else:
        sizes = {**SIZES, **(sizes or {})}
        build = lambda: models.GPT(
            vocabulary.size,
            max_length,
            hidden_size=sizes["hidden_size"],  # noqa: E731
            num_layers=sizes["num_layers"],
            num_heads=sizes["num_heads"],
            dropout_rate=config.dropout_rate,
        )
    task = train.Task(
        "gpt",
        counted(build, max_length, extra, lora_rank),
        step.Objective(language.next_token_loss),
        preprocess=lambda ids: ids,
        extra_metrics=extra,
        signature=serving.Signature(
            (None,),
            "int32",
            lambda ids: ids,
            "next_token",
            endpoints={"generate": generation.graph_generate_endpoint(vocabulary)},
        ),
    )
    results, model = train.train_model(task, dataset, config=config, strategy=strategy)
    return report(results, model, dataset, vocabulary, baselines, sample_length), model


def counted(build, max_length, extra, lora_rank):
    """`build`, as a builder that also counts the model's parameters into `extra`
    (metrics.json) and prints them."""

    def built():
        model = build()
        model.build((None, max_length))
        extra.update(
            trainable_params=sum(int(v.numpy().size) for v in model.trainable_variables),
            total_params=model.count_params(),
            lora_rank=lora_rank or None,
        )
        print(
            f"Training {extra['trainable_params']:,} of {extra['total_params']:,} parameters "
            f"({extra['trainable_params'] / extra['total_params']:.2%})."
        )
        return model

    return built


def report(results, model, dataset, vocabulary, baselines, sample_length):
    """Prints the held-out figures beside the baselines, the int8 model's loss, and a
    sample of `sample_length` characters (0: none); returns the results with them."""
    max_length = dataset.x_spec.shape[0]
    figures = language.per_character(results["test_loss"], vocabulary.bytes_per_character)
    # None when this run trained nothing and no earlier run's speed was left to keep.
    tokens_per_second = (results["examples_per_second"] or 0) * max_length or None
    speed = f"{tokens_per_second:,.0f} training tokens/s" if tokens_per_second else "no training this time"
    print(
        f"Held-out: {figures['nats_per_char']:.3f} nats/char, {figures['bits_per_char']:.3f} bits/char, "
        f"perplexity {figures['perplexity']:.2f}; bigram {baselines['bigram']:.3f}, unigram "
        f"{baselines['unigram']:.3f} nats/token; {speed}."
    )
    int8_loss = language.held_out_loss(language.quantized(model), dataset.test)
    print(
        f"With the blocks' weights in int8 (Keras' quantize): {int8_loss:.3f} nats/token held-out, "
        f"{int8_loss - results['test_loss']:+.4f} against float."
    )
    if sample_length:
        prompt = vocabulary.decode(dataset.arrays("test", limit=1)[0][0])[:16]
        sampling = generation.Sampling(temperature=0.8, top_k=40)
        sample = generation.Generator(model, vocabulary).generate(prompt, sample_length, sampling)
        print(f"Sample (temperature 0.8, top-k 40) after {prompt!r}:\n{prompt}{sample}")
    return {**results, **figures, "tokens_per_second": tokens_per_second, "int8_test_loss": int8_loss}


def main(argv):
    del argv  # Unused.
    if FLAGS.lora_rank and not FLAGS.init_from:
        raise RecipeError(
            "--lora_rank adapts a trained model: pass --init_from=RUN (a python -m recipes.gpt run) with it"
        )
    base, vocabulary = language.load_run(FLAGS.init_from) if FLAGS.init_from else (None, None)
    sizes = recipe_flags.transformer_sizes("gpt")
    if base is not None:  # The pre-trained model's sizes.
        sizes = {name: getattr(base, name) for name in sizes}
    # decay_steps=1: a placeholder the run's steps replace below, unless --decay_steps is given.
    config = recipe_flags.train_config("gpt", decay_steps=1, **RECIPE_DEFAULTS)
    config = dataclasses.replace(config, recipe_settings={**config.recipe_settings, **sizes})
    strategy = recipe_flags.strategy_from_flags()
    dataset, vocabulary = open_text(sizes["max_length"], vocabulary)
    print(dataset.describe())
    if config.lr_schedule == "cosine" and not FLAGS["decay_steps"].present:  # Over the run's steps.
        steps = config.train_steps or config.epochs * (dataset.train.num_examples // config.batch_size)
        config = dataclasses.replace(config, decay_steps=max(steps, 1))
    run(
        config,
        strategy,
        dataset,
        vocabulary,
        sizes=sizes,
        sample_length=FLAGS.sample_length,
        base=base,
        lora_rank=FLAGS.lora_rank,
    )


if __name__ == "__main__":
    entry.run(main)
