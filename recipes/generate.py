r"""Generates text from a trained GPT run, streamed to stdout as it comes.

    python -m recipes.generate --model_dir=runs/gpt --prompt="The " --max_new_tokens=200
    python -m recipes.generate --model_dir=runs/gpt --prompt="def " --temperature=0      # greedy
    python -m recipes.generate --model_dir=runs/gpt --prompt="x" --top_k=40 --top_p=0.9 --seed=3
    python -m recipes.generate --model_dir=runs/gpt --prompt="x" --beam_width=4
    python -m recipes.generate --model_dir=runs/gpt --prompt="x" --stop=$'\n\n' --nokv_cache

Greedy (--temperature=0), temperature, top-k and top-p sampling, seeded and
reproducible, or beam search (--beam_width > 1, printed when done); --quantize=int8
generates with the blocks' weights in int8 (Keras' quantize). The key/value
cache is on by default; --nokv_cache runs the whole context again for every token,
for comparison: both give the same tokens. A prompt longer than the model's
context keeps its last max_length characters (a `warning:` line says so).
"""

if __name__ == "__main__":  # Run as a program: set the process up before TensorFlow loads.
    from recipes.core.cli import entry

    entry.handle_stop_signals()
    entry.set_up_process()

import os
import sys
import time

from absl import flags

from recipes.core.cli import flags as recipe_flags  # --model_dir, --seed (of the sampling).
from recipes.core.errors import RecipeError
from recipes.core.nlp import generation, language

flags.DEFINE_string("prompt", None, "The text to continue.")
flags.DEFINE_integer("max_new_tokens", 200, "Characters to generate.")
recipe_flags.define_temperature()
flags.DEFINE_integer("top_k", 0, "Sample among the k most likely characters; 0: all.")
flags.DEFINE_float(
    "top_p", 1.0, "Sample among the fewest most likely characters whose probability reaches p."
)
flags.DEFINE_integer("beam_width", 1, "Beam search over this many continuations; 1: sample.")
flags.DEFINE_string("stop", None, "Stop before the first occurrence of this string.")
flags.DEFINE_bool("kv_cache", True, "Cache each layer's keys and values; --nokv_cache recomputes.")
flags.DEFINE_enum(
    "quantize", None, ["int8"], "Generate with the blocks' weights quantized by Keras (model.quantize): int8."
)

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise RecipeError(f"unexpected arguments {argv[1:]}; pass the text by --prompt=...")
    if FLAGS.prompt is None:
        raise RecipeError("pass --prompt=TEXT, the text to continue")
    sampling = generation.Sampling(
        temperature=recipe_flags.temperature("generate"),
        top_k=FLAGS.top_k,
        top_p=FLAGS.top_p,
        beam_width=FLAGS.beam_width,
        seed=FLAGS.seed,
    )
    generation.check_sampling(2**31, FLAGS.max_new_tokens, sampling)
    model, vocabulary = language.load_run(FLAGS.model_dir or os.path.join("runs", "gpt"))
    if FLAGS.quantize:
        model = language.quantized(model, FLAGS.quantize)
    generator = generation.Generator(model, vocabulary, kv_cache=FLAGS.kv_cache)
    generator.prompt_ids(FLAGS.prompt)  # Checked before anything is printed.
    if len(FLAGS.prompt.encode()) > model.max_length:
        print(
            f"warning: the prompt's {len(FLAGS.prompt.encode())} characters are more than the model's "
            f"context of {model.max_length}; it continues from the last {model.max_length}",
            file=sys.stderr,
            flush=True,
        )
    sys.stdout.write(FLAGS.prompt)
    start = time.perf_counter()
    text = generator.generate(
        FLAGS.prompt,
        FLAGS.max_new_tokens,
        sampling,
        stop=FLAGS.stop,
        on_text=lambda piece: (sys.stdout.write(piece), sys.stdout.flush()),
    )
    seconds = time.perf_counter() - start
    print(
        f"\n[{len(text.encode())} characters in {seconds:.2f} s, "
        f"{'with' if FLAGS.kv_cache else 'without'} the key/value cache]",
        file=sys.stderr,
    )


if __name__ == "__main__":
    entry.run(main)
