"""Which records a split holds: a whole `sources.Source`, or the part of one that a
fixed carve keeps (a test or validation split the data lacks, held out of training).

    train, test = splits.carve(splits.Split(source), 0.1)   # 10% held out, whatever --seed
    rows = train.plan(pipeline=0, num_pipelines=2)           # worker 0's blocks of it

A carve ranks the source's record indices by one fixed permutation
(`tf.random.experimental.index_shuffle`, keyed by `CARVE_SEED`), so every run, and
every command that opens the run's data again, holds out the same records; nothing
is read to decide it.
"""

import dataclasses
import functools
import hashlib

import numpy as np
import tensorflow as tf

from recipes.core.errors import RecipeError
from recipes.core.input import sources

CARVE_SEED = (20240, 24)  # The index permutation that decides which records are carved.
# Part of a source carved out (fixed, independent of --seed) as a split it lacks.
CARVE_FRACTION = 0.1
# A block's row in a pipeline's plan: the source's (shard, start, count, first index),
# then which of its kept records this pipeline reads: skip that many, take that many.
SHARD, START, COUNT, FIRST, SKIP, TAKE = range(6)


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: a source, or the part of it a carve keeps (records whose rank under
    a fixed permutation of the source's indices is in [low, high))."""

    source: sources.Source
    keep: tuple[int, int] | None = None

    @functools.cached_property
    def block_counts(self) -> np.ndarray:
        """Records this split keeps in each block of its source."""
        blocks = self.source.blocks
        if self.keep is None:
            return blocks[:, COUNT].copy()
        keep = np.zeros(self.source.num_records, bool)
        for begin in range(0, len(keep), 1 << 20):  # In chunks: memory stays small.
            ranks = _ranks(np.arange(begin, min(begin + (1 << 20), len(keep))), len(keep))
            keep[begin : begin + len(ranks)] = (ranks >= self.keep[0]) & (ranks < self.keep[1])
        order = np.argsort(blocks[:, FIRST])
        counts = np.zeros(len(blocks), np.int64)
        counts[order] = np.add.reduceat(keep, blocks[order, FIRST]) if len(blocks) else []
        return counts

    @property
    def num_examples(self) -> int:
        return int(self.block_counts.sum())

    def plan(self, pipeline: int = 0, num_pipelines: int = 1) -> np.ndarray:
        """The blocks input pipeline `pipeline` of `num_pipelines` reads: a contiguous,
        balanced share of the split's records (shares differ by at most one record), so
        a worker reads only its own files, or its own part of a single file."""
        counts = self.block_counts
        total = int(counts.sum())
        low, high = (total * pipeline // num_pipelines, total * (pipeline + 1) // num_pipelines)
        ends = np.cumsum(counts)
        begins = ends - counts
        skip = np.clip(low - begins, 0, counts)
        take = np.clip(np.minimum(ends, high) - begins - skip, 0, None)
        rows = np.concatenate([self.source.blocks, skip[:, None], take[:, None]], axis=1)
        return rows[take > 0]


def carve(split: Split, fraction: float) -> tuple[Split, Split]:
    """(rest, carved): `fraction` of `split`'s source records, chosen by the fixed carve
    permutation (so whatever --seed): the lowest ranks of those `split` keeps."""
    count = split.source.num_records
    low, high = split.keep or (0, count)
    size = max(1, int(round((high - low) * fraction)))
    if high - low - size < 1:
        raise RecipeError(
            f"{split.source.name} holds {high - low} examples, too few to hold "
            f"{fraction:.0%} out; pass --test_data and --validation_data"
        )
    return Split(split.source, (low + size, high)), Split(split.source, (low, low + size))


def carve_fingerprint(count: int) -> str:
    """A short digest of the carve permutation of [0, count): a run records it, so that
    a TensorFlow whose `index_shuffle` permutes differently cannot silently carve
    another test split out of the same data."""
    return hashlib.sha256(_ranks(np.arange(min(count, 256)), count).tobytes()).hexdigest()[:16]


def _ranks(indices, count):
    """Each record index's rank under the fixed carve permutation of [0, count)."""
    return tf.random.experimental.index_shuffle(
        tf.constant(indices, tf.int64), seed=tf.constant(CARVE_SEED, tf.int64), max_index=count - 1
    ).numpy()


def in_range(index, count, keep):
    """Whether record `index` (a tensor, in a graph) is among those a carve `keep` holds."""
    rank = tf.random.experimental.index_shuffle(
        index, seed=tf.constant(CARVE_SEED, tf.int64), max_index=count - 1
    )
    return (rank >= keep[0]) & (rank < keep[1])
