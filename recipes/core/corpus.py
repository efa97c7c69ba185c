"""Text files as a source for the language recipes: the text cut into windows of
`window` + 1 bytes, each starting where the one before it ends, so that a window
gives `window` byte ids in (x) and the next byte of each out (y, next-token targets).

    splits = corpus.open_text(["shakespeare.txt"], window=64)   # {"train": ..., "test": ...}

The held-out test split is the last 10% of the text, as nanoGPT holds out the last
10% of its characters; windows never cross it, nor a file's end. The training
windows' grid shifts by a random offset each epoch (seeded by the run's seed and the
epoch, so a resume reads the same), so that a second epoch does not repeat the
first one's windows: nanoGPT draws every window at a random offset. Each file is a
shard; a block of windows is one byte range, read with a seek (`sources.byte_range`),
so the stream shards, shuffles and resumes like any other source.

Tokens are bytes (ids 0-255): character-level for ASCII text, and any text is
representable; a recipe maps them to a smaller vocabulary if it wants one.
"""
import numpy as np
import tensorflow as tf

from recipes.core.errors import RecipeError
from recipes.core.sources import Source, _blocks, byte_range

HELD_OUT = 0.1  # The last part of the text that is the test split.
# Training windows shuffled together: a block of 256 windows is one seek, so a group
# this large costs little to read (or to resume in), and a batch drawn from it is
# nearly as independent as nanoGPT's windows at random offsets. With the default
# group (16 blocks: 16 runs of consecutive text) the held-out loss of nanoGPT's CPU
# configuration on Shakespeare's plays was 1.952 nats/char; with this, 1.940.
SHUFFLE_WINDOWS = 1 << 16


def open_text(files, window, held_out=HELD_OUT):
    """{"train": Source, "test": Source} over the text `files` (in order, as one text)."""
    if window < 1:
        raise RecipeError(f"the text window must be at least 1 byte; received {window}")
    sizes = [tf.io.gfile.stat(path).length for path in files]
    total = sum(sizes)
    if total < 2 * (window + 1) / held_out:
        raise RecipeError(f"{', '.join(files)} holds {total:,} bytes: too little text for windows of "
                          f"{window + 1} bytes in both splits; pass more text or a shorter context")
    cut = int(total * (1 - held_out))  # Where the held-out text begins, in the files taken as one.
    ranges = {"train": [], "test": []}
    offset = 0
    for path, size in zip(files, sizes):
        begin, end = offset, offset + size
        for split, (low, high) in (("train", (begin, min(end, cut))), ("test", (max(begin, cut), end))):
            if high - low > window:
                ranges[split].append((path, low - begin, high - begin))
        offset = end
    return {split: _windows(parts, window, f"{', '.join(files)} ({split})", shifted=split == "train")
            for split, parts in ranges.items()}


def _windows(parts, window, name, shifted=False):
    """A source of the windows in `parts`: (file, first byte, end byte) each; with
    `shifted`, on a grid that each epoch shifts by [0, window) bytes (one window of
    each part left over for the shift)."""
    counts = [(end - start - 1) // window - shifted for _, start, end in parts]
    paths = tf.constant([path for path, _, _ in parts])
    starts = tf.constant(np.asarray([start for _, start, _ in parts], np.int64))

    def read(shard, start, count, epoch=None):
        first = tf.gather(starts, shard) + start * window
        if shifted:  # The same shift for every block of the epoch: its windows still tile the text.
            first += tf.random.stateless_uniform([], seed=epoch, maxval=window, dtype=tf.int64)
        text = byte_range(tf.gather(paths, shard), first, count * window + 1)
        return tf.data.Dataset.from_tensor_slices(tf.strings.substr(  # The text broadcasts.
            text, tf.range(count) * window, tf.fill([count], tf.constant(window + 1, tf.int64))))

    def decode_batch(windows):
        ids = tf.cast(tf.reshape(tf.io.decode_raw(windows, tf.uint8), [-1, window + 1]), tf.int32)
        return ids[:, :-1], ids[:, 1:]

    return Source(name, _blocks(counts), tf.TensorSpec([window], tf.int32), tf.TensorSpec([window], tf.int32),
                  None, read, decode_batch, files=tuple(path for path, _, _ in parts), service=False,
                  per_epoch=shifted, shuffle_records=SHUFFLE_WINDOWS)
