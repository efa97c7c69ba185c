"""What a run leaves behind: TensorBoard summaries while it trains, then
`model.keras`, `saved_model/`, `metrics.json` and `curves.png` in `--model_dir`."""
import io
import json
import math
import os

import tensorflow as tf

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


def write(model, model_dir, metrics):
    """Writes `model.keras`, `saved_model/` and `metrics.json` (through `tf.io.gfile`,
    so a gs:// model_dir works). metrics.json is strict JSON: a value that is not
    finite (say, an AUC with no positive example) is written as null."""
    model.save(os.path.join(model_dir, "model.keras"))
    model.export(os.path.join(model_dir, "saved_model"), verbose=False)
    with tf.io.gfile.GFile(os.path.join(model_dir, "metrics.json"), "w") as f:
        json.dump(_finite_or_none(metrics), f, indent=2, allow_nan=False)


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
    """
    scalars = {}
    for path in sorted(tf.io.gfile.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            if last_step is not None and event.step > last_step:
                continue
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    return scalars


def plot_curves(model_dir, metrics, steps_per_epoch):
    """Writes `<model_dir>/curves.png` (see `curves_figure`); nothing if nothing was logged."""
    figure = curves_figure(model_dir, metrics, steps_per_epoch)
    if not figure.axes:
        return
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    with tf.io.gfile.GFile(os.path.join(model_dir, "curves.png"), "wb") as f:
        f.write(buffer.getvalue())


def curves_figure(model_dir, metrics, steps_per_epoch):
    """A matplotlib `Figure` of the run's TensorBoard logs: the training loss and
    every metric followed, by step; validation by epoch when there is a split;
    and the epoch whose weights early stopping kept."""
    from matplotlib.figure import Figure  # No pyplot: no process-wide backend.

    logs = os.path.join(model_dir, "logs")
    train = read_scalars(os.path.join(logs, "train"), metrics["steps"])
    validation = read_scalars(os.path.join(logs, "validation"), metrics["steps"])
    names = [n for n in dict.fromkeys([*train, *validation]) if n not in _NOT_CURVES
             and not (n == "learning_rate" and len(set(train[n].values())) == 1)]  # Constant.
    names.sort(key=lambda n: (n != "loss", n == "learning_rate"))  # Loss first, rate last.
    columns = max(1, min(3, len(names)))
    rows = -(-len(names) // columns)
    figure = Figure(figsize=(4.5 * columns, 3.2 * rows), layout="constrained")
    figure.suptitle(f"{metrics['recipe']}: {metrics['steps']} steps, "
                    f"{metrics['strategy']} x{metrics['num_replicas']}")
    for index, name in enumerate(names):
        axes = figure.add_subplot(rows, columns, index + 1)
        for label, series, style in (("train", train, "C0-"), ("validation", validation, "C1o-")):
            if name in series:
                steps = sorted(series[name])
                axes.plot(steps, [series[name][s] for s in steps], style, label=label, markersize=3)
        if metrics.get("best_epoch"):
            stopped = "stopped early; " if metrics.get("stopped_early") else ""
            axes.axvline(metrics["best_epoch"] * steps_per_epoch, color="grey", linestyle="--",
                         label=f"{stopped}kept epoch {metrics['best_epoch']}")
        axes.set(title=name, xlabel="step")
        if name == "loss" and min(min(s[name].values()) for s in (train, validation) if name in s) > 0:
            axes.set_yscale("log")
        else:
            axes.ticklabel_format(axis="y", useOffset=False)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    return figure
