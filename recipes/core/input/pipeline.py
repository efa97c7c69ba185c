"""The input pipelines: a split's records as the shuffled, sharded, resumable stream
that feeds the replicas, and the padded, in-order stream that evaluates them.

    split = data.open_data("shards/").train
    train_ds = pipeline.train_dataset(strategy, split, 64, preprocess=..., seed=0)
    resumed = pipeline.train_dataset(
        strategy, split, 64, preprocess=..., seed=0, options=pipeline.PipelineOptions(start_step=s)
    )
    test_ds, steps = pipeline.eval_dataset(strategy, data.test, 64, preprocess=...)

Written by hand on tf.data, because no library gives all of: a stream whose every
position is arithmetic on record counts (so a resume is exact and costs the same at
any step; `tf.train.Checkpoint(iterator=...)` stores a shuffle buffer whole and
refuses a distributed iterator, tensorflow#56372), a worker's share of a single
file (FILE auto-sharding hangs with fewer files than workers, tensorflow#35878), and
the same batches on N replicas as on one device. Which records a split holds (a
carve of a source) is `recipes/core/input/splits.py`.
"""

import dataclasses
from collections.abc import Callable

import tensorflow as tf

import strategies
from recipes.core.errors import RecipeError
from recipes.core.input import sources, splits
from recipes.core.input.splits import COUNT, FIRST, SHARD, SKIP, START, TAKE, Split, in_range

carve_fingerprint = splits.carve_fingerprint  # What a run records (`runs` reads it here).

# Blocks read (and decoded) at once, in parallel, and the examples shuffled together:
# a bounded buffer of SHUFFLE_RECORDS, or fewer where they would pass SHUFFLE_BYTES.
PARALLEL_BLOCKS = 4
SHUFFLE_RECORDS = 16 * sources.BLOCK_SIZE
SHUFFLE_BYTES = 64 << 20


def group_size(source: sources.Source) -> int:
    """Examples shuffled together: SHUFFLE_RECORDS (or the source's own
    `shuffle_records`), or as many whole blocks as fit in SHUFFLE_BYTES of decoded
    examples (large images), at least one block."""
    example = source.x_spec.shape.num_elements() * source.x_spec.dtype.size
    records = source.shuffle_records or SHUFFLE_RECORDS
    blocks = min(records, SHUFFLE_BYTES // max(example, 1)) // sources.BLOCK_SIZE
    return max(1, blocks) * sources.BLOCK_SIZE


def records(
    split: Split,
    *,
    seed: int = 0,
    start: int = 0,
    shuffle: bool = True,
    pipeline: int = 0,
    num_pipelines: int = 1,
) -> tf.data.Dataset:
    """The endless stream of (index, (x, y)) one input pipeline reads from `split`,
    decoded, from position `start` (examples since the run began), or with
    `shuffle=False` one pass in order.

    The stream is a pure function of (split, seed, pipeline): epoch e reads the
    pipeline's blocks in an order permuted by (seed, e), `PARALLEL_BLOCKS` at once, and
    shuffles every `group_size` consecutive examples by (seed, e, group). So the
    position of any example is arithmetic on the block counts: a resume starts at its
    group's first block and drops less than a group, whatever the position (no
    replay), and the whole input state is the position.
    """
    return record_batches(
        split, seed=seed, start=start, shuffle=shuffle, pipeline=pipeline, num_pipelines=num_pipelines
    ).unbatch()


def record_batches(
    split: Split,
    *,
    seed: int = 0,
    start: int = 0,
    shuffle: bool = True,
    pipeline: int = 0,
    num_pipelines: int = 1,
) -> tf.data.Dataset:
    """`records` as batches of (indices, (x, y)) of varying size, which `rebatch` cuts
    into a pipeline's batches without going through the examples one by one."""
    plan = split.plan(pipeline, num_pipelines)
    if not len(plan):
        raise RecipeError(f"{split.source.name} has fewer examples than input pipelines ({num_pipelines})")
    source, keep, total = split.source, split.keep, int(plan[:, TAKE].sum())
    rows = tf.constant(plan)
    group_records = group_size(source)

    def read_rows(table, epoch=None):
        # One element per block, so that reading blocks in parallel keeps their order.
        return tf.data.Dataset.from_tensor_slices(table).interleave(
            lambda row: _read_block(source, row, keep, epoch),
            cycle_length=PARALLEL_BLOCKS,
            block_length=1,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    if not shuffle:
        return read_rows(rows)

    def epoch(number, position):
        """Records of epoch `number` from `position` (records into it), in groups."""
        key = tf.stack([tf.constant(seed, tf.int64), number])
        order = tf.gather(
            rows, tf.random.experimental.stateless_shuffle(tf.range(len(plan), dtype=tf.int64), seed=key)
        )
        ends = tf.cumsum(order[:, TAKE])
        group = position // group_records
        first = group * group_records
        block = tf.searchsorted(ends, [first], side="right")[0]
        into = first - (ends[block] - order[block, TAKE])  # Records of that block already read.
        order = tf.tensor_scatter_nd_add(order[block:], [[0, SKIP], [0, TAKE]], tf.stack([into, -into]))
        groups = read_rows(order, key).rebatch(group_records).enumerate(group)

        def shuffled(g, batch):
            indices, records_ = _shuffled(batch, [number, g], seed)
            drop = tf.where(g == group, position - first, 0)  # Records before `position`.
            return indices[drop:], tf.nest.map_structure(lambda t: t[drop:], records_)

        return groups.map(shuffled)

    first_epoch, position = divmod(start, total)
    return (
        tf.data.Dataset.range(first_epoch, first_epoch + (1 << 40))
        .map(lambda number: (number, tf.where(number == first_epoch, tf.constant(position, tf.int64), 0)))
        .flat_map(epoch)
    )


def _read_block(source, row, keep, epoch=None):
    """One block of `source`, as one batch: the examples a pipeline's `row` takes of it,
    decoded, with their indices; `epoch` is (seed, epoch) for a `per_epoch` source.
    Decoded here, in parallel, so that the shuffle after it moves dense arrays."""

    def decoded(*block):
        indices, kept = _kept(block[0] if len(block) == 1 else block, row, keep, source.num_records)
        return indices, source.decode_batch(kept, indices) if source.indexed else source.decode_batch(kept)

    epoch = tf.zeros([2], tf.int64) if epoch is None else epoch
    read = (
        source.read(row[SHARD], row[START], row[COUNT], epoch)
        if source.per_epoch
        else source.read(row[SHARD], row[START], row[COUNT])
    )
    return read.batch(sources.BLOCK_SIZE).map(decoded)


def _kept(block, row, keep, count):
    """(indices, records) of a block's batch of records that its row takes: those a carve
    keeps, then `row[TAKE]` of them after the first `row[SKIP]`."""
    indices = row[FIRST] + tf.range(tf.shape(tf.nest.flatten(block)[0], out_type=tf.int64)[0])
    if keep is not None:
        mask = in_range(indices, count, keep)
        indices = tf.boolean_mask(indices, mask)
        block = tf.nest.map_structure(lambda t: tf.boolean_mask(t, mask), block)
    end = row[SKIP] + row[TAKE]
    return indices[row[SKIP] : end], tf.nest.map_structure(lambda t: t[row[SKIP] : end], block)


def _shuffled(batch, group, seed):
    """A group's records in an order permuted by (seed, epoch, group)."""
    indices, records_ = batch
    size = tf.shape(indices, out_type=tf.int64)[0]
    permutation = tf.random.experimental.stateless_shuffle(
        tf.range(size), seed=tf.stack([tf.constant(seed, tf.int64) * 1_000_003 + group[0], group[1]])
    )
    return (
        tf.gather(indices, permutation),
        tf.nest.map_structure(lambda t: tf.gather(t, permutation), records_),
    )


def _prepared(preprocess, batch_size):
    """A batch of `batch_size` decoded examples, preprocessed: (x, y, indices), each with
    the static batch size a TPU needs (a reader in Python loses it)."""

    def prepare(indices, examples):
        x, y = examples
        x, y = (tf.ensure_shape(t, [batch_size, *t.shape[1:]]) for t in (preprocess(x), y))
        return x, y, indices

    return prepare


def _replica_batches(dataset, global_batch_size, context):
    """This pipeline's batches split into per-replica batches."""
    per_replica = context.get_per_replica_batch_size(global_batch_size)
    if global_batch_size // context.num_input_pipelines != per_replica:
        dataset = dataset.rebatch(per_replica, drop_remainder=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """How `train_dataset` streams, beyond its split, batch size, preprocessing and seed.

    Attributes:
      start_step: the step a resumed run starts at: the stream goes on where the run's
        checkpoint left it, no record repeated or skipped, and no replay.
      start_record: this input pipeline's records read so far, from the checkpoint's
        `InputState` (default: `start_step` whole batches).
      augment: `augment(batch, seed)` changes each preprocessed batch with stateless
        ops seeded by (the seed, the step).
      data_service: grpc://host:port of a tf.data service dispatcher: its workers run
        the reading, each record once per epoch (`distributed_epoch`), in an order the
        service decides, so a resume there starts a new epoch (docs/data.md).
      with_ids: each batch carries its examples' record indices: (x, y, ids).
    """

    start_step: int = 0
    start_record: int | None = None
    augment: Callable | None = None
    data_service: str | None = None
    with_ids: bool = False


def check_batch_size(global_batch_size: int, num_replicas: int) -> None:
    """A global batch must split into equal, non-empty per-replica batches."""
    if global_batch_size < 1 or global_batch_size % num_replicas:
        raise RecipeError(
            f"batch_size={global_batch_size} does not split evenly over {num_replicas} "
            f"replicas; pass a positive multiple of {num_replicas}"
        )


def train_dataset(
    strategy: tf.distribute.Strategy,
    split: Split,
    global_batch_size: int,
    *,
    preprocess: Callable,
    seed: int,
    options: PipelineOptions | None = None,
) -> tf.distribute.DistributedDataset:
    """An endless, shuffled, distributed stream of (x, y) global batches from `split`.

    Each input pipeline (one per worker) reads its own share of the records
    (`Split.plan`); with one pipeline (one device, mirrored, a TPU host), N replicas
    split exactly the batch one device would take. `preprocess` maps a raw batch of
    x; `seed` decides the shuffle. `options` (`PipelineOptions`) resume the stream
    where a run's checkpoint left it, augment its batches, run its reading on tf.data
    service workers, or add each example's record index.
    """
    options = options or PipelineOptions()
    check_batch_size(global_batch_size, strategy.num_replicas_in_sync)
    if options.data_service and strategies.num_input_pipelines(strategy) > 1:
        raise RecipeError(
            "--data_service feeds one input pipeline; with several workers "
            "(--strategy=multi_worker) each would read every record: leave one out"
        )

    def dataset_fn(context):
        batch = global_batch_size // context.num_input_pipelines
        stream = _pipeline_batches(split, batch, seed, options, context)
        stream = stream.map(_prepared(preprocess, batch), num_parallel_calls=tf.data.AUTOTUNE)
        if options.augment is not None:
            stream = _augmented(stream, options.augment, seed, options.start_step)
        if not options.with_ids:
            stream = stream.map(lambda x, y, ids: (x, y))
        return _replica_batches(stream, global_batch_size, context)

    return strategy.distribute_datasets_from_function(dataset_fn)


def _pipeline_batches(split, batch, seed, options, context):
    """One input pipeline's batches of (indices, (x, y)), `batch` examples each: read by
    the tf.data service, or its own share of `split` from where the run resumes."""
    if options.data_service:
        return _service_records(split, seed, options.data_service).batch(batch, drop_remainder=True)
    stream = record_batches(
        split,
        seed=seed,
        start=options.start_step * batch if options.start_record is None else options.start_record,
        pipeline=context.input_pipeline_id,
        num_pipelines=context.num_input_pipelines,
    )
    return stream.rebatch(batch, drop_remainder=True)


def _augmented(stream, augment, seed, start_step):
    """`stream`'s preprocessed batches (x, y, ids) with x changed by `augment(x, key)`,
    the key (seed, step) counting steps from `start_step`."""
    return stream.enumerate(start_step).map(
        lambda step, batch: (augment(batch[0], tf.stack([tf.constant(seed, tf.int64), step])), *batch[1:]),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


class InputState(tf.Module):
    """Where the input stream is, in the run's checkpoint: the records this input
    pipeline has read. `records` makes that position the whole state of the stream
    (a shuffle buffer or a file offset is recomputed from it), so it is one int64,
    however large the data, and a resume costs the same at any position."""

    def __init__(self, pipeline_batch: int):
        super().__init__(name="input_state")
        self.pipeline_batch = pipeline_batch
        self.position = tf.Variable(-1, dtype=tf.int64, trainable=False, name="records_read")

    def start(self, step: int) -> int:
        """The record to resume from at `step`: the checkpoint's, or (a checkpoint
        written before it held one) `step` whole batches."""
        position = int(self.position.numpy())
        return step * self.pipeline_batch if position < 0 else position


def _service_records(split, seed, address):
    """`split`'s records, read by tf.data service workers: each block once per epoch
    across them (`distributed_epoch`: the dispatcher hands out blocks), in the order
    the workers produce them. Each epoch is a job of its own, so one ends before the
    next begins and every record is read exactly once in it."""
    if not split.source.service:
        raise RecipeError(
            f"--data_service runs the reading on the service's workers, which cannot run "
            f"the Python that reads {split.source.name}; write it as TFRecords first "
            "(python -m recipes.prepare) or leave --data_service out"
        )
    plan = split.plan()
    source, keep = split.source, split.keep

    def read(row):
        return _read_block(source, row, keep).unbatch()

    blocks = tf.data.Dataset.from_tensor_slices(tf.constant(plan))
    stream = blocks.interleave(read, cycle_length=PARALLEL_BLOCKS, num_parallel_calls=tf.data.AUTOTUNE)
    epoch = stream.shuffle(group_size(source), seed=seed).apply(
        tf.data.experimental.service.distribute(
            processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC, service=address
        )
    )
    return epoch.repeat()


def eval_dataset(
    strategy: tf.distribute.Strategy, split: Split, global_batch_size: int, *, preprocess: Callable
) -> tuple[tf.distribute.DistributedDataset, int]:
    """A distributed dataset of (x, y, weight) that counts every example of `split`
    exactly once over all replicas and workers: each pipeline reads its own share in
    order, padded with weight-0 copies to the same whole number of batches, so every
    replica gets a full, statically shaped batch (as TPUs need). Returns (dataset, steps)."""
    check_batch_size(global_batch_size, strategy.num_replicas_in_sync)
    pipelines = strategies.num_input_pipelines(strategy)
    batch = global_batch_size // pipelines
    shares = [split.plan(p, pipelines)[:, TAKE].sum() for p in range(pipelines)]
    steps = max(-(-int(share) // batch) for share in shares)

    def dataset_fn(context):
        share = int(shares[context.input_pipeline_id])
        stream = records(
            split,
            shuffle=False,
            pipeline=context.input_pipeline_id,
            num_pipelines=context.num_input_pipelines,
        )
        weighted = stream.map(lambda index, example: (index, example, tf.constant(1.0)))
        padding = (
            stream.take(1)
            .map(lambda index, example: (index, example, tf.constant(0.0)))
            .repeat(steps * batch - share)
        )
        stream = weighted.concatenate(padding).batch(batch, drop_remainder=True)

        def prepare(indices, examples, weights):
            x, y, _ = _prepared(preprocess, batch)(indices, examples)
            return x, y, weights

        stream = stream.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
        return _replica_batches(stream, global_batch_size, context)

    return strategy.distribute_datasets_from_function(dataset_fn), steps
