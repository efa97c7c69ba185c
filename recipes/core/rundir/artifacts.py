"""What a run leaves behind: TensorBoard summaries while it trains, then
`model.keras`, `saved_model/`, `metrics.json` and `curves.png` in `--model_dir`."""

import io
import json
import math
import os
import sys

import tensorflow as tf

from recipes.core.deploy import serving
from recipes.core.errors import first_line
from recipes.core.rundir.run_dir import remove

# Scalars logged every loop that are not training curves.
_NOT_CURVES = ("examples_per_second",)


def summary_writer(chief, model_dir, name):
    """A TensorBoard writer for `<model_dir>/logs/<name>`; a no-op off the chief."""
    if not chief:
        return tf.summary.create_noop_writer()
    return tf.summary.create_file_writer(os.path.join(model_dir, "logs", name))


def write_scalars(writer, step, scalars):
    with writer.as_default(step=step):
        for name, value in scalars.items():
            tf.summary.scalar(name, value)


def format_results(results):
    return ", ".join(f"{name}={value:.4f}" for name, value in results.items())


# What `write` puts in place, in this order: metrics.json last, as the mark of a complete set.
ARTIFACTS = ("model.keras", "saved_model", "curves.png", "metrics.json")
STAGING = ".staging"  # <model_dir>/.staging: the next set, written before it replaces the last.
_COMPLETE = "COMPLETE"


def write(model, model_dir, metrics, signature, curves_png=None):
    """Writes `model.keras`, `saved_model/` (serving `signature`, a
    `serving.Signature`: the raw input), `curves.png` (the PNG bytes, if given;
    if not, an earlier set's curves.png is removed, being of other weights)
    and `metrics.json`, so that a kill at any moment keeps a complete set.

    The new set is written whole into `<model_dir>/.staging/` and marked complete;
    then the previous metrics.json is removed and each artifact renamed into
    place, metrics.json last. A metrics.json beside the others means they are one
    complete set; each file is always whole. A kill after the mark leaves
    the renames half done, and the next run (`finish_interrupted_write`) completes
    them. On gs:// a rename is a copy and a delete, with the same order and marks.
    metrics.json is strict JSON: a value that is not finite (say, an AUC with no
    positive example) is written as null.
    """
    staging = os.path.join(model_dir, STAGING)
    remove(staging)
    tf.io.gfile.makedirs(staging)
    model.save(os.path.join(staging, "model.keras"))
    serving.export_saved_model(model, os.path.join(staging, "saved_model"), signature)
    if curves_png:
        with tf.io.gfile.GFile(os.path.join(staging, "curves.png"), "wb") as f:
            f.write(curves_png)
    with tf.io.gfile.GFile(os.path.join(staging, "metrics.json"), "w") as f:
        json.dump(_finite_or_none(metrics), f, indent=2, allow_nan=False)
    with tf.io.gfile.GFile(os.path.join(staging, _COMPLETE), "w") as f:
        json.dump(tf.io.gfile.listdir(staging), f)  # The set, so that what it lacks goes too.
    _commit(model_dir)


def finish_interrupted_write(model_dir):
    """Completes a `write` that a kill interrupted after its new set was whole, or
    discards one interrupted before. Returns whether it completed one."""
    staging = os.path.join(model_dir, STAGING)
    if not tf.io.gfile.exists(staging):
        return False
    if not tf.io.gfile.exists(os.path.join(staging, _COMPLETE)):
        remove(staging)
        return False
    _commit(model_dir)
    return True


def _commit(model_dir):
    """Renames the staged set into place; safe to run again after a kill."""
    staging = os.path.join(model_dir, STAGING)
    the_set = _staged_set(staging)
    remove(os.path.join(model_dir, "metrics.json"))  # The old set is no longer complete.
    for name in ARTIFACTS:
        new, final, old = (
            os.path.join(staging, name),
            os.path.join(model_dir, name),
            os.path.join(staging, f"old.{name}"),
        )
        if not tf.io.gfile.exists(new):
            if the_set is not None and name not in the_set:
                remove(final)  # Not part of the new set (no curves were drawn): not left stale.
            continue
        if tf.io.gfile.isdir(new) and tf.io.gfile.exists(final):
            remove(old)
            _move(final, old)  # A directory cannot be renamed over another.
        _move(new, final)
    remove(staging)


def _staged_set(staging):
    """The names `write` staged, as its mark lists them; None for a mark that lists
    none (one written by an earlier version)."""
    try:
        with tf.io.gfile.GFile(os.path.join(staging, _COMPLETE)) as f:
            names = json.load(f)
    except (tf.errors.OpError, OSError, ValueError):
        return None
    return names if isinstance(names, list) else None


def _move(source, destination):
    if "://" not in source or not tf.io.gfile.isdir(source):
        tf.io.gfile.rename(source, destination, overwrite=True)
        return
    for directory, _, files in tf.io.gfile.walk(source):  # Object stores rename files only.
        target = os.path.join(destination, os.path.relpath(directory, source))
        tf.io.gfile.makedirs(target)
        for name in files:
            tf.io.gfile.copy(os.path.join(directory, name), os.path.join(target, name), overwrite=True)
    tf.io.gfile.rmtree(source)


def _finite_or_none(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    return value


def read_scalars(log_dir, last_step=None):
    """`{name: {step: value}}` from the TensorBoard event files in `log_dir`.

    A resumed run logs again the steps after its last checkpoint; the later
    file (their names start with the writer's creation time) wins, so the curves
    are those of the weights that were kept. Through `tf.io.gfile`, so gs:// works.
    A file that ends in a damaged record (the process was killed, or the disk
    filled, while it was written) is read up to that record, with a warning.
    """
    scalars = {}
    for path in sorted(tf.io.gfile.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        for event in _events(path):
            if last_step is not None and event.step > last_step:
                continue
            for value in event.summary.value:
                if value.HasField("tensor") and not value.tensor.tensor_shape.dim:  # A scalar.
                    scalars.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    return scalars


def _events(path):
    """The events of one event file, up to its first record that cannot be read."""
    records = iter(tf.data.TFRecordDataset(path))
    while True:
        try:
            record = next(records)
            event = tf.compat.v1.Event.FromString(record.numpy())
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001 - DataLossError, a directory, a protobuf DecodeError.
            warn(
                f"{path} cannot be read past a damaged record ({first_line(e, 120)}); the curves "
                "use the events before it"
            )
            return
        yield event


def warn(message):
    """One `warning:` line on stderr: something derived was not made, the run goes on."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def curves_png(model_dir, metrics, steps_per_epoch):
    """`curves_figure` as PNG bytes, which record the logs and the step they were
    drawn from; None if nothing was logged. The curves are derived from the logs:
    a failure to draw them is a warning line and None, never an error that would
    keep the run's own outputs from being written."""
    try:
        figure = curves_figure(model_dir, metrics, steps_per_epoch)
        if not figure.axes:
            return None
        buffer = io.BytesIO()
        source = f"{os.path.join(model_dir, 'logs')} up to step {metrics['steps']}"
        figure.savefig(buffer, format="png", dpi=100, metadata={"Source": source})
        return buffer.getvalue()
    except Exception as e:  # noqa: BLE001 - whatever a plot meets, the outputs that matter come first.
        warn(
            f"curves.png was not drawn ({type(e).__name__}: {first_line(e, 160)}); the other "
            f"outputs are written; the TensorBoard logs in {os.path.join(model_dir, 'logs')} hold the curves"
        )
        return None


def curves_figure(model_dir, metrics, steps_per_epoch):
    """A matplotlib `Figure` of the run's TensorBoard logs: the training loss and
    every metric followed, by step; validation by epoch when there is a split;
    and the epoch whose weights early stopping kept."""
    from matplotlib.figure import Figure  # No pyplot: no process-wide backend.

    logs = os.path.join(model_dir, "logs")
    train = read_scalars(os.path.join(logs, "train"), metrics["steps"])
    validation = read_scalars(os.path.join(logs, "validation"), metrics["steps"])
    constant = lambda n: n == "learning_rate" and len(set(train[n].values())) == 1  # A flat line.
    names = [n for n in dict.fromkeys([*train, *validation]) if n not in _NOT_CURVES and not constant(n)]
    names.sort(key=lambda n: (n != "loss", n == "learning_rate"))  # Loss first, rate last.
    columns = max(1, min(3, len(names)))
    rows = -(-len(names) // columns)
    figure = Figure(figsize=(4.5 * columns, 3.2 * rows), layout="constrained")
    figure.suptitle(
        f"{metrics['recipe']}: {metrics['steps']} steps, {metrics['strategy']} x{metrics['num_replicas']}"
    )
    for index, name in enumerate(names):
        axes = figure.add_subplot(rows, columns, index + 1)
        for label, series, style in (("train", train, "C0-"), ("validation", validation, "C1o-")):
            if name in series:
                steps = sorted(series[name])
                axes.plot(steps, [series[name][s] for s in steps], style, label=label, markersize=3)
        if metrics.get("best_epoch"):
            stopped = "stopped early; " if metrics.get("stopped_early") else ""
            axes.axvline(
                metrics["best_epoch"] * steps_per_epoch,
                color="grey",
                linestyle="--",
                label=f"{stopped}kept epoch {metrics['best_epoch']}",
            )
        axes.set(title=name, xlabel="step")
        if name == "loss" and min(min(s[name].values()) for s in (train, validation) if name in s) > 0:
            axes.set_yscale("log")
        else:
            axes.ticklabel_format(axis="y", useOffset=False)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    return figure
