"""A run's directory, `model_dir`: held by one run at a time, probed for writing
before the model is built, and holding the run's settings beside its checkpoints,
which every resume checks.

    with run_dir.claim(model_dir):           # one line and exit 1 if another run holds it
        run_dir.check_settings(model_dir, settings)    # before resuming from its checkpoints
        ...                                            # restore
        run_dir.record_settings(model_dir, settings)

The lock is `<model_dir>/.lock`, a file with the holder's host and PID, created
atomically (O_EXCL) on a local disk. A lock whose PID is gone on this host is
reclaimed. On gs:// there is no atomic create: the check and the write are two
requests, so two runs started within a second of each other can both pass.
"""

import contextlib
import json
import os
import socket

import tensorflow as tf

from recipes.core.errors import DiskFull, RecipeError, first_line, is_disk_full
from recipes.core.input import data

LOCK = ".lock"
SETTINGS = "settings.json"  # In <model_dir>/checkpoints/.
# Outputs that are files, and those that are directories.
OUTPUT_FILES = ("model.keras", "metrics.json", "curves.png")
OUTPUT_DIRS = (
    "saved_model",
    "checkpoints",
    "logs",
    *(os.path.join("logs", name) for name in ("train", "validation", "test")),
)
# Settings a resumed run may change: they change how fast it runs, not what it computes.
# (A pipeline only places the model's own variables; tensor parallelism changes them.)
HARMLESS = (
    "strategy",
    "num_replicas",
    "steps_per_loop",
    "jit_compile",
    "profile",
    "checkpoint_steps",
    "pipeline_stages",
    "num_microbatches",
    "pipeline_balance",
)

_held = {}  # Directory -> how many `claim`s of this process hold it.


def is_local(path):
    return "://" not in path


@contextlib.contextmanager
def claim(model_dir, chief=True):
    """Holds `model_dir` for this process while the block runs (re-entrant).

    Creates the directory, checks that the outputs can go where they belong
    (the lock file itself is the write probe) and takes the lock. Off the chief
    it does nothing: only the chief writes to `model_dir`.
    """
    key = os.path.abspath(model_dir) if is_local(model_dir) else model_dir
    if not chief or key in _held:
        _held[key] = _held.get(key, 0) + 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    _make_directory(model_dir)
    lock = os.path.join(model_dir, LOCK)
    _acquire(lock, model_dir)
    _held[key] = 1
    try:
        _check_outputs(model_dir)
        yield
    finally:
        del _held[key]
        _release(lock)


def _make_directory(model_dir):
    try:
        if not is_local(model_dir) and not data.network_available():  # No retries on a dead network.
            raise OSError("the network is unreachable")
        is_file = tf.io.gfile.exists(model_dir) and not tf.io.gfile.isdir(model_dir)
        if not is_file:
            tf.io.gfile.makedirs(model_dir)
    except (tf.errors.OpError, OSError) as e:
        blocking = _file_above(model_dir)
        if blocking:
            raise RecipeError(
                f"cannot create model_dir={model_dir}: {blocking} is a file, not a directory; move it "
                "away or pass another model_dir"
            ) from None
        raise RecipeError(
            f"cannot create model_dir={model_dir} ({_reason(e)}); pass a directory you can write to"
        ) from None
    if is_file:
        raise RecipeError(f"model_dir={model_dir} is a file, not a directory; pass a directory")


def _file_above(path):
    """The nearest directory above a local `path` that exists, if it is a file."""
    parent = os.path.dirname(os.path.abspath(path)) if is_local(path) else None
    while parent and not os.path.exists(parent) and parent != os.path.dirname(parent):
        parent = os.path.dirname(parent)
    return parent if parent and os.path.exists(parent) and not os.path.isdir(parent) else None


def _check_outputs(model_dir):
    check_output_files(model_dir, OUTPUT_FILES)
    for name in OUTPUT_DIRS:
        path = os.path.join(model_dir, name)
        if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
            raise RecipeError(
                f"{path} is a file, where the run writes a directory; move it away or pass another model_dir"
            )


def check_output_files(directory, names):
    """A one-line `RecipeError` if one of the files `names` that a command writes into
    `directory` is a directory there: to check before the work, not after it."""
    for name in names:
        if tf.io.gfile.isdir(os.path.join(directory, name)):
            raise RecipeError(
                f"{os.path.join(directory, name)} is a directory, where a file is written; move it "
                "away or pass another model_dir"
            )


def _acquire(lock, model_dir, reclaimed=False):
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    try:
        _create_exclusively(lock, json.dumps(me))
        return
    except FileExistsError:
        pass
    except (tf.errors.OpError, OSError) as e:
        raise RecipeError(
            f"cannot write in model_dir={model_dir} ({_reason(e)}); pass a directory you can write to"
        ) from None
    holder = read_json_object(lock)
    if not reclaimed and holder is not None and _is_gone(holder):
        print(f"Reclaimed the lock on {model_dir} left by process {holder['pid']}, which has ended.")
        tf.io.gfile.remove(lock)
        return _acquire(lock, model_dir, reclaimed=True)
    who = f"process {holder['pid']} on {holder['host']}" if holder else "another run"
    raise RecipeError(
        f"model_dir={model_dir} is in use by {who}; wait for it to finish or pass another "
        f"model_dir (if that run is gone, delete {lock})"
    )


def _create_exclusively(path, text):
    if is_local(path):
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return
    if tf.io.gfile.exists(path):  # No atomic create on object stores: see the module's note.
        raise FileExistsError(path)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)


def _is_gone(holder):
    """Whether the process `holder` names has ended; only known on this host."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # Alive, another user's.
        return False
    return False


def _release(lock):
    holder = read_json_object(lock)
    if holder == {"host": socket.gethostname(), "pid": os.getpid()}:
        tf.io.gfile.remove(lock)


def read_json_object(path):
    """The JSON object in the file `path`, or None if it cannot be read as one (a
    missing, damaged or foreign file): for what is only a hint, never a result."""
    try:
        with tf.io.gfile.GFile(path) as f:
            value = json.load(f)
        return value if isinstance(value, dict) else None
    except (tf.errors.OpError, OSError, ValueError):
        return None


def check_settings(model_dir, settings):
    """Compares `settings` with those the checkpoints in `model_dir` were trained with.

    A setting that changes what is trained must match: otherwise a one-line
    `RecipeError` names each differing setting and its two values. `HARMLESS`
    settings may change; the change is printed. Checkpoints without recorded
    settings (written by hand, say) are not compared; recorded settings that
    cannot be read are an error (`read_settings`), never a fresh start.
    """
    recorded = read_settings(model_dir)
    if recorded is not None:
        # A setting only one side has (one added by a newer version of the package) is
        # not compared: the run that recorded it had no such choice.
        both = sorted(set(settings) & set(recorded))
        differing = [name for name in both if name not in HARMLESS and settings[name] != recorded[name]]
        if differing:
            changes = "; ".join(
                f"{name}={_show(recorded.get(name))} there, {_show(settings.get(name))} now"
                for name in differing
            )
            raise RecipeError(
                f"model_dir={model_dir} holds a run trained with other settings ({changes}); "
                "pass the same values to resume it, or a new model_dir to train with these"
            )
        changed = [
            f"{_flag(name)} {_show(recorded[name])} -> {_show(settings[name])}"
            for name in HARMLESS
            if name in both and settings[name] != recorded[name]
        ]
        if changed:
            print(f"Resuming with changes that leave the result as it was: {', '.join(changed)}.")


def read_settings(model_dir):
    """The settings recorded beside `model_dir`'s checkpoints; None if none are.

    Settings that are there but cannot be read (garbled, not a JSON object, a
    directory) are a one-line `RecipeError`: resuming without them would
    silently drop the resume contract."""
    path = os.path.join(model_dir, "checkpoints", SETTINGS)
    what_to_do = (
        "the checkpoints beside it cannot be checked against this run's settings; "
        "delete it to accept this run's settings, or pass another model_dir"
    )
    if tf.io.gfile.isdir(path):
        raise RecipeError(f"{path} is a directory, not the settings file; {what_to_do}")
    try:
        with tf.io.gfile.GFile(path) as f:
            recorded = json.load(f)
    except tf.errors.NotFoundError:
        return None
    except (tf.errors.OpError, OSError, ValueError) as e:
        raise RecipeError(f"{path} cannot be read ({_reason(e)}); {what_to_do}") from None
    if not isinstance(recorded, dict):
        kind = {list: "an array", str: "a string", type(None): "null"}.get(type(recorded), "a number")
        raise RecipeError(f"{path} holds {kind}, not settings (a JSON object); {what_to_do}")
    return recorded


def record_settings(model_dir, settings):
    """Writes `settings` beside the checkpoints, for the next run to compare."""
    write_atomically(
        os.path.join(model_dir, "checkpoints", SETTINGS), json.dumps(settings, indent=2, sort_keys=True)
    )


def _flag(name):
    """The flag that sets `name`, for the notice a command prints (an error names the
    setting, and `entry` spells it as the flag)."""
    return name if name in ("recipe", "data", "num_replicas") else f"--{name}"


def _show(value):
    return "(unset)" if value is None else value


def write_atomically(path, contents, write=None):
    """Writes `path` through a temporary file renamed into place (through
    `tf.io.gfile`, so gs:// works; there the rename is a copy): `contents`, text
    or bytes, or what `write(temporary_path)` writes.

    However it fails, the temporary file is removed, and those an earlier write
    that was killed left are removed first. A full disk is a one-line
    `DiskFull`, a directory where the file goes, or a failed write, a one-line
    `RecipeError`; both name `path`, and what was there before is kept."""
    if tf.io.gfile.isdir(path):
        raise RecipeError(
            f"{path} is a directory, where a file is written; move it away and run the same command again"
        )
    temporary = _temporary(path, os.getpid())
    try:
        tf.io.gfile.makedirs(os.path.dirname(path))
        remove_temporaries(path)
        if write:
            write(temporary)
        else:
            with tf.io.gfile.GFile(temporary, "wb" if isinstance(contents, bytes) else "w") as f:
                f.write(contents)
        tf.io.gfile.rename(temporary, path, overwrite=True)
    except BaseException as e:
        _remove_quietly(temporary)
        if isinstance(e, (tf.errors.OpError, OSError)):
            raise _write_error(path, e) from None
        raise


def _temporary(path, pid):
    root, extension = os.path.splitext(path)
    return f"{root}.tmp-{pid}{extension}"  # The extension kept: Keras checks it.


def remove_temporaries(path):
    """Removes the temporary files that writes of `path` killed half-way left."""
    for temporary in tf.io.gfile.glob(_temporary(path, "*")):
        _remove_quietly(temporary)


def _remove_quietly(path):
    try:
        remove(path)
    except (tf.errors.OpError, OSError):  # The failure being reported matters more.
        pass


def _write_error(path, error):
    if is_disk_full(error):
        return DiskFull(
            f"the disk holding {path} is full; nothing was written there and what was "
            "there before is kept; free some space and run the same command again"
        )
    return RecipeError(
        f"cannot write {path} ({_reason(error)}); check that {os.path.dirname(path)} "
        "is a directory you can write to, and run the same command again"
    )


@contextlib.contextmanager
def disk_full_is_an_error(model_dir, latest_checkpoint, tidy):
    """Turns "no space left on device", wherever the run meets it, into one line,
    after `tidy()` has removed what the failed write left; `latest_checkpoint()`
    names the checkpoint that is kept."""
    try:
        yield
    except (tf.errors.ResourceExhaustedError, OSError, DiskFull) as e:
        if not is_disk_full(e):
            raise
        tidy()
        raise RecipeError(
            f"the disk holding model_dir={model_dir} is full; the last complete checkpoint is "
            f"kept ({latest_checkpoint() or 'none was written'}); free some space and run the "
            "same command again to resume"
        ) from None


def remove_partial_checkpoints(model_dir):
    """Removes what a save that did not finish leaves in `<model_dir>/checkpoints`:
    `ckpt-N_temp/` directories, `*.tempstate*` files and the settings' temporary file."""
    directory = os.path.join(model_dir, "checkpoints")
    for pattern in ("*_temp", "*.tempstate*", _temporary(SETTINGS, "*"), f"{SETTINGS}.tmp-*"):
        for path in tf.io.gfile.glob(os.path.join(directory, pattern)):
            remove(path)


def remove(path):
    """Removes a file or a directory tree, if it is there."""
    if tf.io.gfile.isdir(path):
        tf.io.gfile.rmtree(path)
    elif tf.io.gfile.exists(path):
        tf.io.gfile.remove(path)


def _reason(error):
    return first_line(getattr(error, "message", None) or getattr(error, "strerror", None) or error, 160)
