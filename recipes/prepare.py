r"""Writes any data the recipes read as sharded TFRecords with a schema, once, so that
every later run streams it back with `--data=DIR`.

    python -m recipes.prepare --data=digits/ --output=digits_tfrecords --shards=8
    python -m recipes.prepare --data=wine.csv --label_column=target --output=wine_tfrecords
    python -m recipes.mnist --data=digits_tfrecords

Each split (train, test, and validation where the data has one; a split the data
lacks is carved out as a run would carve it) goes into --shards files
DIR/<split>-0000i-of-0000N.tfrecord, in a fixed shuffled order, beside
DIR/schema.json (the features, class names, and each shard's record count and
block offsets). Shards are written under temporary names and renamed when whole;
a run killed midway keeps the shards it finished, and the same command writes the
rest. About 3 s for scikit-learn's 1,797 digits on a 2-core CPU.
"""

if __name__ == "__main__":  # Run as a program: set the process up before TensorFlow loads.
    from recipes.core.cli import entry

    entry.handle_stop_signals()
    entry.set_up_process()

import os

from absl import flags

from recipes.core.cli import flags as recipe_flags  # noqa: F401 - --data and its companions.
from recipes.core.errors import RecipeError
from recipes.core.input import shards, sources

flags.DEFINE_string("output", None, "The folder to write the shards and schema.json into.")
flags.DEFINE_integer("shards", 4, "TFRecord files per split (fewer when a split has fewer examples).")

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise RecipeError(f"unexpected arguments {' '.join(argv[1:])}; pass --data=SOURCE --output=DIR")
    if not FLAGS.output:
        raise RecipeError("pass --output=DIR, the folder to write the TFRecord shards into")
    if FLAGS.shards < 1:
        raise RecipeError(f"--shards must be at least 1; received {FLAGS.shards}")
    if os.path.exists(os.path.join(FLAGS.output, sources.SCHEMA)):
        raise RecipeError(
            f"{FLAGS.output} already holds prepared data ({sources.SCHEMA}); pass another "
            "--output, or delete it to write it again"
        )
    if os.path.isfile(FLAGS.output):
        raise RecipeError(f"--output={FLAGS.output} is a file; pass a folder")
    data = recipe_flags.data_from_flags()
    print(f"Data: {data.describe()}.")
    schema = shards.write(FLAGS.output, data, shards=FLAGS.shards, source=FLAGS.data)
    counts = {
        split: sum(entry[0] for entry in part["index"].values()) for split, part in schema["splits"].items()
    }
    print(
        f"Wrote {FLAGS.output}: "
        + ", ".join(f"{split} {count:,}" for split, count in counts.items())
        + f"; train on it with --data={FLAGS.output}"
    )


if __name__ == "__main__":
    entry.run(main)
