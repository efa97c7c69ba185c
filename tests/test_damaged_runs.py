"""Damaged run directories, and faults in what a run derives from its own files
(issue 26): each case is one `error:` line that names the file and what to do,
with a non-zero exit, or the correct result.

One MNIST run of 4 steps is trained once for the module, through the recipe's
real entry point in this process; each case copies it, damages the copy, and
runs `python -m recipes.mnist` (4 -> 6 steps) or `python -m recipes.compress`
on it the same way (`run_in_process`).
"""

import errno
import gc
import json
import shutil

import pytest
import tensorflow as tf

from recipes import compress as compress_recipe
from recipes import mnist as mnist_recipe
from recipes.core.errors import DiskFull, RecipeError
from recipes.core.rundir import artifacts, run_dir
from tests.helpers import assert_one_error_line, run_in_process

FIRST, MORE = 4, 6  # The module's run trains 4 steps; a rerun goes on to 6.
TINY = ["--steps_per_loop=2", "--checkpoint_steps=2", "--seed=0"]
COMPRESS = ["--pruning_steps=2", "--finetune_steps=0", "--pruning_frequency=1"]
OUTPUTS = ("model.keras", "saved_model/saved_model.pb", "metrics.json", "curves.png")


class _Uncaptured:
    """`capfd` for a module fixture, which cannot take one: nothing to read back."""

    def readouterr(self):
        return "", ""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 4-step MNIST run; the tests copy it, never change it."""
    run = tmp_path_factory.mktemp("finished") / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        code, _, _ = run_in_process(
            mnist_recipe, [f"--model_dir={run}", f"--train_steps={FIRST}", *TINY], monkeypatch, _Uncaptured()
        )
    assert code == 0 and (run / "metrics.json").exists()
    return run


@pytest.fixture
def copy(finished, tmp_path):
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path / "run"


def _newest_event_file(run, split="train"):
    return max((run / "logs" / split).glob("events.out.tfevents.*"), key=lambda path: path.stat().st_mtime_ns)


def _truncated_event_file(run, monkeypatch):
    """The event file ends part-way through a record, as after a kill."""
    path = _newest_event_file(run)
    path.write_bytes(path.read_bytes()[:-7])


def _event_file_with_half_a_record(run, monkeypatch):
    """A record's header and the start of its data were written, then the disk was full.
    (A header cut short is read as the file's end, with no warning.)"""
    with open(_newest_event_file(run), "ab") as f:
        f.write(b"\x40\x00\x00\x00\x00\x00\x00\x00\x01\x02\x03\x04\x05\x06")


def _event_file_garbled_in_the_middle(run, monkeypatch):
    path = _newest_event_file(run)
    contents = bytearray(path.read_bytes())
    contents[len(contents) // 2 : len(contents) // 2 + 16] = b"\xff" * 16
    path.write_bytes(bytes(contents))


def _event_file_that_is_a_directory(run, monkeypatch):
    (run / "logs" / "train" / "events.out.tfevents.0.host").mkdir()


def _curves_that_fail_to_draw(run, monkeypatch):
    def fail(*args):
        raise RuntimeError("no font could be found")

    monkeypatch.setattr(artifacts, "curves_figure", fail)


def _write(relative, contents):
    def damage(run, monkeypatch):
        (run / relative).write_bytes(contents.encode() if isinstance(contents, str) else contents)

    return damage


def _replace(relative, kind):
    """`relative` replaced by a directory or by a file."""

    def damage(run, monkeypatch):
        run_dir.remove(str(run / relative))
        (run / relative).mkdir() if kind == "dir" else (run / relative).write_text("x")

    return damage


SETTINGS = "checkpoints/settings.json"
TO_ACCEPT = "delete it to accept this run's settings, or pass another --model_dir"
# (id, damage(run, monkeypatch), the error line holds this or None: the run completes,
#  a warning line holds this or None, curves.png is written).
RERUNS = [
    ("truncated_event_file", _truncated_event_file, None, "cannot be read past a damaged record", True),
    ("half_a_record", _event_file_with_half_a_record, None, "cannot be read past a damaged record", True),
    ("garbled_event_file", _event_file_garbled_in_the_middle, None, "cannot be read past a damaged", True),
    ("event_file_a_dir", _event_file_that_is_a_directory, None, "cannot be read past a damaged", True),
    ("empty_event_file", _write("logs/train/events.out.tfevents.1.host", ""), None, None, True),
    ("curves_fail", _curves_that_fail_to_draw, None, "curves.png was not drawn (RuntimeError", False),
    ("staging_a_file", _write(artifacts.STAGING, "x"), None, None, True),
    ("settings_temporary_left", _write("checkpoints/settings.tmp-99999.json", "{"), None, None, True),
    ("settings_garbled", _write(SETTINGS, '{"batch_size": 3'), f"{SETTINGS} cannot be read", None, None),
    ("settings_empty", _write(SETTINGS, ""), f"{SETTINGS} cannot be read", None, None),
    ("settings_not_utf8", _write(SETTINGS, b"\xff\xfe{"), f"{SETTINGS} cannot be read", None, None),
    ("settings_an_array", _write(SETTINGS, "[1, 2]"), f"{SETTINGS} holds an array, not settings", None, None),
    ("settings_null", _write(SETTINGS, "null"), f"{SETTINGS} holds null, not settings", None, None),
    ("settings_a_number", _write(SETTINGS, "32"), f"{SETTINGS} holds a number, not settings", None, None),
    ("settings_a_dir", _replace(SETTINGS, "dir"), f"{SETTINGS} is a directory", None, None),
    ("logs_a_file", _replace("logs", "file"), "logs is a file", None, None),
    ("logs_train_a_file", _replace("logs/train", "file"), "logs/train is a file", None, None),
    ("logs_validation_a_file", _replace("logs/validation", "file"), "logs/validation is a file", None, None),
    ("logs_test_a_file", _replace("logs/test", "file"), "logs/test is a file", None, None),
    ("metrics_a_dir", _replace("metrics.json", "dir"), "metrics.json is a directory", None, None),
    ("model_a_dir", _replace("model.keras", "dir"), "model.keras is a directory", None, None),
    ("curves_a_dir", _replace("curves.png", "dir"), "curves.png is a directory", None, None),
]


def _temporaries(run):
    return sorted(str(path.relative_to(run)) for path in run.rglob("*.tmp-*"))


def _assert_complete(run, steps, curves=True):
    """Every output of a run of `steps` steps is there, and no temporary file."""
    assert json.loads((run / "metrics.json").read_text())["steps"] == steps
    for name in OUTPUTS if curves else OUTPUTS[:-1]:
        assert (run / name).is_file(), name
    if curves:  # Drawn from this run's logs, as the PNG records.
        assert f"logs up to step {steps}".encode() in (run / "curves.png").read_bytes()
    else:  # Not left from the previous set.
        assert not (run / "curves.png").exists()
    assert not _temporaries(run) and not (run / artifacts.STAGING).exists()


@pytest.mark.parametrize(
    "damage,error,warning,curves", [case[1:] for case in RERUNS], ids=[case[0] for case in RERUNS]
)
def test_a_damaged_run_directory_is_one_line_or_resumes(
    copy, damage, error, warning, curves, monkeypatch, capfd
):
    if error is not None and "settings" in error:  # The file is named as the rerun sees it.
        error = error.replace(SETTINGS, str(copy / SETTINGS))
    damage(copy, monkeypatch)
    code, _, err = run_in_process(
        mnist_recipe, [f"--model_dir={copy}", f"--train_steps={MORE}", *TINY], monkeypatch, capfd
    )
    if error is not None:
        assert_one_error_line(code, err, error)
        if "settings" in error:
            assert TO_ACCEPT in err
        return
    assert code == 0, err[-3000:]
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert (warning is None and not warnings) or (len(warnings) == 1 and warning in warnings[0]), warnings
    _assert_complete(copy, MORE, curves)


def test_the_atomic_writer_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "out" / "file.json"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "file.tmp-12345.json").write_text("{")  # A killed write's.
    run_dir.write_atomically(str(target), "{}")
    assert target.read_text() == "{}" and _temporaries(tmp_path) == []

    def half_then_full(path):
        with open(path, "w") as f:
            f.write("{")
        raise OSError(errno.ENOSPC, "No space left on device", path)

    with pytest.raises(DiskFull, match=f"the disk holding {target} is full; nothing was written there"):
        run_dir.write_atomically(str(target), None, write=half_then_full)
    assert target.read_text() == "{}" and _temporaries(tmp_path) == []

    def broken(path):
        raise OSError(errno.EIO, "Input/output error", path)

    with pytest.raises(RecipeError, match=f"cannot write {target} \\(Input/output error\\); check that"):
        run_dir.write_atomically(str(target), None, write=broken)
    target.unlink()
    target.mkdir()
    with pytest.raises(RecipeError, match=f"{target} is a directory, where a file is written"):
        run_dir.write_atomically(str(target), "{}")


def test_unreadable_events_are_read_up_to_the_damage(tmp_path, capfd):
    writer = tf.summary.create_file_writer(str(tmp_path))
    for step in range(5):
        artifacts.write_scalars(writer, step, {"loss": float(step)})
    writer.close()
    path = next(tmp_path.glob("events.out.tfevents.*"))
    path.write_bytes(path.read_bytes()[:-3])
    assert artifacts.read_scalars(str(tmp_path)) == {"loss": {0: 0.0, 1: 1.0, 2: 2.0, 3: 3.0}}
    assert "cannot be read past a damaged record" in capfd.readouterr().err


@pytest.mark.slow
def test_the_disk_filling_while_events_are_written_is_one_line_and_the_rerun_completes(
    tmp_path, monkeypatch, capfd
):
    """A real run whose TensorBoard summaries meet ENOSPC at step 4: one disk-full line,
    the checkpoint of step 2 kept, and the event file cut part-way through a record,
    as a full disk leaves it. Once there is space, the same command completes."""
    run = tmp_path / "run"
    args = [f"--model_dir={run}", f"--train_steps={MORE}", *TINY]
    write_scalars = artifacts.write_scalars

    def full_disk(writer, step, scalars):
        write_scalars(writer, step, scalars)
        if step >= 4:
            writer.flush()
            raise tf.errors.ResourceExhaustedError(None, None, "events.out.tfevents: No space left on device")

    monkeypatch.setattr(artifacts, "write_scalars", full_disk)
    code, _, err = run_in_process(mnist_recipe, args, monkeypatch, capfd)
    assert_one_error_line(
        code, err, f"the disk holding --model_dir={run} is full; the last complete checkpoint is kept"
    )
    assert "ckpt-2)" in err and not (run / "metrics.json").exists()
    gc.collect()  # The failed run's writers are closed.
    _truncated_event_file(run, monkeypatch)
    monkeypatch.setattr(artifacts, "write_scalars", write_scalars)  # Space was freed.
    code, out, err = run_in_process(mnist_recipe, args, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    assert "Resuming from step 2" in out and "cannot be read past a damaged record" in err
    _assert_complete(run, MORE)


def _full_disk_for(name, monkeypatch):
    """`tf.io.gfile.GFile` meets ENOSPC writing the temporary copy of `name`, after half of it."""
    real = tf.io.gfile.GFile

    class FullDisk(real):
        def write(self, contents):
            if name.split(".")[0] + ".tmp-" in self.name and self.mode.startswith("w"):
                super().write(contents[: len(contents) // 2])
                self.flush()
                raise tf.errors.ResourceExhaustedError(None, None, f"{self.name}; No space left on device")
            super().write(contents)

    monkeypatch.setattr(tf.io.gfile, "GFile", FullDisk)


def _made(relative, kind):
    """`relative` made as a directory or as a file, with the directories above it."""

    def damage(run):
        (run / relative).parent.mkdir(parents=True, exist_ok=True)
        (run / relative).mkdir() if kind == "dir" else (run / relative).write_text("x")

    return damage


# (id, damage(run), the error line holds this): compress on a damaged run.
COMPRESSED = [
    (
        "int8_keras_a_dir",
        _made("compressed/int8.keras", "dir"),
        "compressed/int8.keras is a directory, where a",
    ),
    ("pruned_keras_a_dir", _made("compressed/pruned.keras", "dir"), "compressed/pruned.keras is a directory"),
    ("compressed_a_file", _made("compressed", "file"), "compressed is a file, not a directory; move it away"),
    ("pruning_logs_a_file", _made("compressed/pruning/logs/train", "file"), "logs/train is a file"),
]


@pytest.mark.slow
@pytest.mark.parametrize("damage,error", [case[1:] for case in COMPRESSED], ids=[c[0] for c in COMPRESSED])
def test_compress_on_a_damaged_output_path_is_one_line(copy, damage, error, monkeypatch, capfd):
    damage(copy)
    code, _, err = run_in_process(compress_recipe, [f"--model_dir={copy}", *COMPRESS], monkeypatch, capfd)
    assert_one_error_line(code, err, error)
    assert not _temporaries(copy)


@pytest.mark.slow
def test_a_full_disk_while_compressed_is_written_is_one_line_and_leaves_no_temporary_file(
    copy, monkeypatch, capfd
):
    """ENOSPC half-way through the first LiteRT file: one line naming it, no temporary
    file left; once there is space, the same command writes every compressed file."""
    _full_disk_for("float32.tflite", monkeypatch)
    args = [f"--model_dir={copy}", *COMPRESS]
    code, _, err = run_in_process(compress_recipe, args, monkeypatch, capfd)
    assert_one_error_line(code, err, f"the disk holding {copy}/compressed/float32.tflite is full")
    assert "free some space and run the same command again" in err
    assert not _temporaries(copy) and not (copy / "compressed" / "float32.tflite").exists()
    monkeypatch.undo()
    code, _, err = run_in_process(compress_recipe, args, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    report = json.loads((copy / "compressed" / "compression.json").read_text())
    for row in report["variants"][1:]:
        assert (copy / "compressed" / row["variant"]).is_file(), row["variant"]
    assert not _temporaries(copy)
