"""Text files as a source for the language recipes: the text cut into windows of
`window` + 1 bytes, each starting where the one before it ends, so that a window
gives `window` byte ids in (x) and the next byte of each out (y, next-token targets).

    splits = corpus.open_text(["shakespeare.txt"], window=64)   # {"train": ..., "test": ...}

The held-out test split is the last 10% of the text, as nanoGPT holds out the last
10% of its characters; training windows never cross into it, nor any window a
file's end. With a `stride`
shorter than the window, held-out windows start every `stride` bytes and score only
their last `stride` targets (the others are -1: context, not scored), so that every
held-out character is predicted from `window - stride` to `window - 1` characters
before it, as a model of that context is used (Hugging Face's "perplexity of
fixed-length models" strides the same way); the first window reaches back into the
training text for its context, never scoring it. The training
windows' grid shifts by a random offset each epoch (seeded by the run's seed and the
epoch, so a resume reads the same), so that a second epoch does not repeat the
first one's windows: nanoGPT draws every window at a random offset. Each file is a
shard; a block of windows is one byte range, read with a seek (`sources.byte_range`),
so the stream shards, shuffles and resumes like any other source.

Tokens are bytes (ids 0-255): character-level for ASCII text, and any text is
representable; a recipe maps them to a smaller vocabulary if it wants one.
"""

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from recipes.core.errors import RecipeError
from recipes.core.input.sources import Source, _blocks, byte_range

HELD_OUT = 0.1  # The last part of the text that is the test split.
# Training windows shuffled together: a block of 256 windows is one seek, so a group
# this large costs little to read (or to resume in), and a batch drawn from it is
# nearly as independent as nanoGPT's windows at random offsets. With the default
# group (16 blocks: 16 runs of consecutive text) the held-out loss of nanoGPT's CPU
# configuration on Shakespeare's plays was 1.952 nats/char; with this, 1.940.
SHUFFLE_WINDOWS = 1 << 16


def open_text(
    files: Sequence[str], window: int, held_out: float = HELD_OUT, stride: int | None = None
) -> dict[str, Source]:
    """{"train": Source, "test": Source} over the text `files` (in order, as one text);
    `stride` (1 to `window`, default `window`): how far apart held-out windows start."""
    stride = stride or window
    if window < 1 or not 1 <= stride <= window:
        raise RecipeError(
            f"the text window must be at least 1 byte, and its held-out stride 1 to the "
            f"window; received {window} and {stride}"
        )
    sizes = [tf.io.gfile.stat(path).length for path in files]
    total = sum(sizes)
    if total < 2 * (window + 1) / held_out:
        raise RecipeError(
            f"{', '.join(files)} holds {total:,} bytes: too little text for windows of "
            f"{window + 1} bytes in both splits; pass more text or a shorter context"
        )
    cut = int(total * (1 - held_out))  # Where the held-out text begins, in the files taken as one.
    ranges = {"train": [], "test": []}
    offset = 0
    for path, size in zip(files, sizes):
        begin, end = offset, offset + size
        for split, (low, high) in (("train", (begin, min(end, cut))), ("test", (max(begin, cut), end))):
            if split == "test":  # Context for the first scored targets, from before the cut.
                low = max(begin, low - (window - stride))
            if high - low > window:
                ranges[split].append((path, low - begin, high - begin))
        offset = end
    name = ", ".join(files)
    return {
        "train": _windows(ranges["train"], window, f"{name} (train)", shifted=True),
        "test": _windows(ranges["test"], window, f"{name} (test)", stride=stride),
    }


def _windows(parts, window, name, shifted=False, stride=None):
    """A source of the windows in `parts`: (file, first byte, end byte) each; with
    `shifted`, on a grid that each epoch shifts by [0, window) bytes (one window of
    each part left over for the shift); with `stride`, starting every `stride` bytes
    and scoring their last `stride` targets."""
    stride = stride or window
    counts = [(end - start - window - 1) // stride + 1 - shifted for _, start, end in parts]
    paths = tf.constant([path for path, _, _ in parts])
    starts = tf.constant(np.asarray([start for _, start, _ in parts], np.int64))

    def read(shard, start, count, epoch=None):
        first = tf.gather(starts, shard) + start * stride
        if shifted:  # The same shift for every block of the epoch: its windows still tile the text.
            first += tf.random.stateless_uniform([], seed=epoch, maxval=window, dtype=tf.int64)
        text = byte_range(tf.gather(paths, shard), first, (count - 1) * stride + window + 1)
        return tf.data.Dataset.from_tensor_slices(
            tf.strings.substr(  # The text broadcasts.
                text, tf.range(count) * stride, tf.fill([count], tf.constant(window + 1, tf.int64))
            )
        )

    def decode_batch(windows):
        ids = tf.cast(tf.reshape(tf.io.decode_raw(windows, tf.uint8), [-1, window + 1]), tf.int32)
        context = tf.fill([tf.shape(ids)[0], window - stride], -1)  # Targets not scored.
        return ids[:, :-1], tf.concat([context, ids[:, 1 + window - stride :]], axis=1)

    return Source(
        name,
        _blocks(counts),
        tf.TensorSpec([window], tf.int32),
        tf.TensorSpec([window], tf.int32),
        None,
        read,
        decode_batch,
        files=tuple(path for path, _, _ in parts),
        service=False,
        per_epoch=shifted,
        shuffle_records=SHUFFLE_WINDOWS,
    )
