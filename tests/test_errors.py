"""Nothing lost, nothing silent: every user mistake is one `error:` line and a
non-zero exit, every fault leaves the last good state on disk.

The table runs each bad command line through the recipe's real entry point
(`entry.run(main)`: absl's parsing, the config, the strategy, the data, the run
directory, the model) inside this process, which takes seconds instead of a
TensorFlow start-up each. The faults a process meets (signals, kills, a second
writer, a cluster that never forms) run as real processes.
"""

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

import models
from recipes.core.cli import entry
from recipes.core.errors import RecipeError
from recipes.core.rundir import artifacts, run_dir
from recipes.core.training import config as config_lib
from recipes.core.training import train
from tests.helpers import PIXELS, REPO, assert_one_line_error, run_module, shared_strategy, train_mnist_net


def _file(tmp):
    (tmp / "a_file").write_text("not a directory")
    return tmp / "a_file"


def _dir_with(name, kind):
    def make(tmp):
        run = tmp / "run"
        (run / name).mkdir(parents=True) if kind == "dir" else (run.mkdir(), (run / name).write_text("x"))
        return run

    return make


def _locked_by_a_live_process(tmp):
    run = tmp / "run"
    run.mkdir()
    (run / run_dir.LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid()}))
    return run


# (recipe, flags, the error line must hold this, how to make --model_dir or None).
BAD_INPUTS = [
    # absl's own parsing, in the package's format.
    ("mnist", ["--foo"], "Unknown command line flag 'foo'", None),
    ("mnist", ["--batch_size=1e9"], "flag --batch_size=1e9", None),
    ("mnist", ["--strategy=horovod"], "one of <auto|default|one_device|mirrored|multi_worker|tpu>", None),
    ("mnist", ["--jit_compile=maybe"], "flag --jit_compile=maybe", None),
    ("mnist", ["--mixed_precision=float16"], "one of <auto|none|mixed_bfloat16|mixed_float16|float64>", None),
    ("mnist", ["--optimizer=adagrad"], "flag --optimizer=adagrad", None),
    ("mnist", ["--learning_rate=fast"], "flag --learning_rate=fast", None),
    ("bigmodel", ["--task=cifar"], "flag --task=cifar", None),
    # Values checked before TensorFlow does anything.
    ("mnist", ["--learning_rate=nan"], "--learning_rate must be a finite positive number", None),
    ("mnist", ["--learning_rate=inf"], "--learning_rate must be a finite positive number", None),
    ("mnist", ["--learning_rate=0"], "--learning_rate must be a finite positive number", None),
    ("mnist", ["--seed=-1"], "--seed must be in [0, 2**32)", None),
    ("mnist", ["--seed=99999999999"], "--seed must be in [0, 2**32)", None),
    ("mnist", ["--l2=nan"], "--l2 must be a finite number", None),
    ("mnist", ["--l2=inf"], "--l2 must be a finite number", None),
    ("mnist", ["--l2=-1"], "--l2 must be a finite number, 0 or more", None),
    ("mnist", ["--optimizer=sgd", "--momentum=2"], "--momentum=2.0 applies to", None),
    ("mnist", ["--optimizer=rmsprop", "--momentum=5"], "must be in [0, 1)", None),
    ("mnist", ["--momentum=0.9"], "applies to --optimizer=sgd or rmsprop", None),
    ("mnist", ["--clipnorm=nan"], "--clipnorm must be positive", None),
    ("mnist", ["--global_clipnorm=-1"], "--global_clipnorm must be positive", None),
    ("mnist", ["--clipnorm=1", "--clipvalue=1"], "--clipnorm=1.0, --clipvalue=1.0 each clip the", None),
    ("mnist", ["--dropout_rate=1"], "--dropout_rate must be in [0, 1)", None),
    ("mnist", ["--batch_size=0"], "--batch_size must be at least 1", None),
    ("mnist", ["--epochs=0"], "--epochs must be at least 1", None),
    ("mnist", ["--train_steps=-5"], "--train_steps must be 0 or more", None),
    ("mnist", ["--steps_per_loop=0"], "--steps_per_loop must be at least 1", None),
    ("mnist", ["--accum_steps=0"], "--accum_steps must be at least 1", None),
    ("mnist", ["--checkpoint_steps=-1"], "--checkpoint_steps must be 0 or more", None),
    ("mnist", ["--lr_schedule=exponential"], "needs --decay_steps > 0", None),
    (
        "mnist",
        ["--lr_schedule=step", "--decay_steps=10", "--decay_rate=2"],
        "needs 0 < --decay_rate <= 1",
        None,
    ),
    ("mnist", ["--lr_schedule=linear"], "needs --decay_rate > 0", None),
    ("mnist", ["--decay_rate=nan"], "--decay_rate must be a finite number", None),
    ("mnist", ["--warmup_steps=-1"], "--warmup_steps must be 0 or more", None),
    ("mnist", ["--early_stopping_patience=-1"], "--early_stopping_patience must be 0 or more", None),
    # Where to run.
    (
        "mnist",
        ["--strategy=mirrored", "--num_cpu_devices=1000"],
        "--num_cpu_devices must be in [1, 64]",
        None,
    ),
    ("mnist", ["--num_cpu_devices=0"], "--num_cpu_devices must be in [1, 64]", None),
    ("mnist", ["--strategy=multi_worker"], "needs the cluster", None),
    (
        "mnist",
        ["--strategy=multi_worker", "--worker_hosts=localhost,localhost:2", "--task_index=0"],
        "'localhost' is not host:port",
        None,
    ),
    (
        "mnist",
        ["--strategy=multi_worker", "--worker_hosts=localhost:99999,localhost:2", "--task_index=0"],
        "'localhost:99999' is not host:port with a port in [1, 65535]",
        None,
    ),
    (
        "mnist",
        ["--strategy=multi_worker", "--worker_hosts=localhost:3,localhost:3", "--task_index=0"],
        "names localhost:3 more than once",
        None,
    ),
    (
        "mnist",
        ["--strategy=multi_worker", "--worker_hosts=a:1,b:2", "--task_index=2"],
        "--task_index=2 is not a worker",
        None,
    ),
    (
        "mnist",
        [
            "--strategy=multi_worker",
            "--worker_hosts=a:1,b:2",
            "--task_index=0",
            "--cluster_timeout_seconds=0",
        ],
        "--cluster_timeout_seconds must be positive",
        None,
    ),
    ("mnist", ["--strategy=mirrored", "--all_reduce_alg=nccl"], "--all_reduce_alg=nccl needs GPUs", None),
    (
        "mnist",
        ["--strategy=mirrored", "--all_reduce_alg=ring"],
        "--all_reduce_alg=ring does not apply to the mirrored strategy",
        None,
    ),
    ("mnist", ["--strategy=tpu", "--tpu=grpc://127.0.0.1:9"], "no TPU answers at grpc://127.0.0.1:9", None),
    # The data, and what must fit in it.
    ("mnist", ["--data=mnist"], "not prepared", None),
    (
        "mnist",
        ["--data=mnist", "--data_dir=gs://no-bucket/tfds"],
        "--data_dir=gs://no-bucket/tfds cannot be read",
        None,
    ),
    ("mnist", ["--data_source=auto"], "--data_source is replaced by --data", None),
    (
        "mnist",
        ["--data_dir=gs://no-bucket/tensorflow_datasets"],
        "--data_dir=gs://no-bucket/tensorflow_datasets is tensorflow-datasets' directory, and --data is the "
        "bundled sample",
        None,
    ),
    ("mnist", ["--batch_size=5000"], "larger than the 4500 training examples", None),
    ("mnist", ["--accum_steps=5"], "--accum_steps=5 does not divide the per-replica batch of 32", None),
    # The run directory, probed before the model is built.
    ("mnist", [], "is a file, not a directory", _file),
    ("mnist", [], "is a file, not a directory", lambda tmp: "/dev/null"),
    ("mnist", [], "cannot create --model_dir=/proc/no/such", lambda tmp: "/proc/no/such"),
    ("mnist", [], "cannot create --model_dir=gs://no-bucket/run", lambda tmp: "gs://no-bucket/run"),
    ("mnist", [], "metrics.json is a directory", _dir_with("metrics.json", "dir")),
    ("mnist", [], "model.keras is a directory", _dir_with("model.keras", "dir")),
    ("mnist", [], "saved_model is a file", _dir_with("saved_model", "file")),
    ("mnist", [], "is in use by process", _locked_by_a_live_process),
    # The models' arguments.
    ("bert", ["--num_heads=3"], "`num_heads` must divide `hidden_size`", None),
    ("bert", ["--hidden_size=0"], "`hidden_size` must be a whole number of at least 1", None),
    ("bert", ["--num_layers=0"], "`num_layers` must be a whole number of at least 1", None),
    ("bert", ["--max_length=0"], "--max_length must be at least 2", None),
    ("bert", ["--max_length=100000"], "pass a shorter one", None),
    ("bert", ["--vocab_size=1"], "--vocab_size must be at least 5", None),
    ("bert", ["--mask_copies=0"], "--mask_copies must be at least 1", None),
]


@pytest.fixture
def fresh_flags():
    yield
    flags.FLAGS.unparse_flags()


@pytest.mark.parametrize(
    "recipe,args,expected,model_dir",
    BAD_INPUTS,
    ids=[
        f"{r}{'_'.join([''] + a)}{'' if d is None else f'_dir{i}'}"
        for i, (r, a, _, d) in enumerate(BAD_INPUTS)
    ],
)
def test_a_bad_input_is_one_error_line_and_a_nonzero_exit(
    recipe, args, expected, model_dir, tmp_path, capfd, monkeypatch, fresh_flags
):
    module = importlib.import_module(f"recipes.{recipe}")
    where = model_dir(tmp_path) if model_dir else tmp_path / "run"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            module.__file__,
            f"--model_dir={where}",
            "--train_steps=2",
            "--pretrain_epochs=1" if recipe == "bert" else "--seed=0",
            *args,
        ],
    )
    flags.FLAGS.unparse_flags()
    with pytest.raises(SystemExit) as exited:
        entry.run(module.main)
    out, err = capfd.readouterr()
    assert exited.value.code not in (0, None), err[-2000:]
    assert "Traceback" not in out + err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err[-3000:]
    assert expected in errors[0], errors[0]
    if model_dir is None:  # Nothing was trained, so nothing is left behind but the lock's directory.
        assert not (tmp_path / "run" / "checkpoints").exists()
        assert not (tmp_path / "run" / run_dir.LOCK).exists()


def test_the_command_line_spells_the_settings_an_error_names_as_its_flags():
    """The library names a setting (`batch_size=32`); `entry` prints it as the flag of
    the same name, and leaves prose, quoted names, paths and flags as they are."""
    from recipes.core.cli import flags as recipe_flags  # noqa: F401 - defines the shared flags.

    assert entry.as_flags(
        "model_dir=/tmp/run holds a run trained with other settings (batch_size=32 there, "
        "64 now); pass a new model_dir"
    ) == (
        "--model_dir=/tmp/run holds a run trained with other settings (--batch_size=32 there, 64 now); "
        "pass a new --model_dir"
    )
    assert entry.as_flags("epochs must be at least 1; received 0") == (
        "--epochs must be at least 1; received 0"
    )
    assert entry.as_flags("no TPU found for tpu=local; pick another strategy") == (
        "no TPU found for --tpu=local; pick another strategy"
    )
    untouched = "the data in /runs/model_dir/x: `num_heads` must divide `hidden_size`; pass --seed=1"
    assert entry.as_flags(untouched) == untouched


def test_the_models_reject_bad_arguments_by_name():
    for build, match in [
        (lambda: models.BigModel(hidden_units=None), "hidden_units"),
        (lambda: models.mnist_dense(hidden_units=(1.9,)), "hidden_units"),
        (lambda: models.two_layer_mlp(hidden_units=0), "hidden_units"),
        (lambda: models.cnn(filters=(32, -1)), "filters"),
        (lambda: models.lstm_classifier(units=2.5), "units"),
        (lambda: models.BertEncoder(100, 16, hidden_size=128, num_heads=3), "num_heads"),
    ]:
        with pytest.raises(ValueError, match=match):
            build()
    with pytest.raises(RecipeError, match="cannot build the model: `hidden_units`"):
        train.build(models.mnist_dense, hidden_units=(1.9,))
    with pytest.raises(RecipeError, match="^learning_rate must be a finite positive number"):
        config_lib.check_schedule("constant", float("nan"))


def test_a_stale_lock_is_reclaimed_and_a_live_one_refused(tmp_path, capsys):
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    lock = tmp_path / run_dir.LOCK
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": int(ended)}))
    with run_dir.claim(str(tmp_path)):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with run_dir.claim(str(tmp_path)):  # Re-entrant within one process.
            pass
        assert lock.exists()
    assert f"left by process {ended}, which has ended" in capsys.readouterr().out
    assert not lock.exists()  # Released.
    lock.write_text(json.dumps({"host": "another-host", "pid": int(ended)}))
    with pytest.raises(RecipeError, match=f"in use by process {ended} on another-host"):
        with run_dir.claim(str(tmp_path)):
            pass


def _config(tmp_path, **overrides):
    return config_lib.TrainConfig(
        model_dir=str(tmp_path),
        batch_size=32,
        steps_per_loop=5,
        **{"train_steps": 10, "checkpoint_steps": 5, **overrides},
    )


def test_a_full_disk_is_one_line_and_leaves_no_partial_checkpoint(tmp_path, mnist, monkeypatch):
    """A `tf.io.gfile` fault injected where TensorFlow meets it: the second
    checkpoint's save fails half-way with ENOSPC, after writing its temporary files."""
    strategy = shared_strategy("default")
    train_mnist_net(_config(tmp_path, train_steps=5), strategy, mnist)
    save = tf.train.CheckpointManager.save

    def full_disk(manager, checkpoint_number=None, **kwargs):
        partial = os.path.join(manager.directory, f"ckpt-{checkpoint_number}_temp")
        tf.io.gfile.makedirs(partial)
        with tf.io.gfile.GFile(os.path.join(partial, "part-00000.data.tempstate1"), "w") as f:
            f.write("half")
        raise tf.errors.ResourceExhaustedError(None, None, f"{partial}: No space left on device")

    monkeypatch.setattr(tf.train.CheckpointManager, "save", full_disk)
    with pytest.raises(
        RecipeError,
        match=r"the disk holding model_dir=.* is full; the last complete "
        r"checkpoint is kept \(.*ckpt-5\); free some space",
    ):
        train_mnist_net(_config(tmp_path), strategy, mnist)
    monkeypatch.setattr(tf.train.CheckpointManager, "save", save)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if "ckpt-" in p.name) == [
        "ckpt-5.data-00000-of-00001",
        "ckpt-5.index",
    ]
    assert not (tmp_path / run_dir.LOCK).exists()
    assert train_mnist_net(_config(tmp_path), strategy, mnist)["steps_this_run"] == 5  # Resumes.


def _can_mount_tmpfs(path):
    path.mkdir()
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )


@pytest.mark.slow
def test_a_real_full_disk_through_the_cli(tmp_path):
    """On a 12 MB tmpfs the first checkpoint (the weights and Adam's two slots,
    22 MB) does not fit: the run meets ENOSPC at its first save."""
    disk = tmp_path / "disk"
    if not _can_mount_tmpfs(disk):
        pytest.skip("this machine does not let the tests mount a tmpfs")
    try:
        done = run_module(
            "recipes.mnist",
            f"--model_dir={disk / 'run'}",
            "--train_steps=10",
            "--steps_per_loop=5",
            "--checkpoint_steps=5",
        )
        assert_one_line_error(done, "is full; the last complete checkpoint is kept (none was written)")
        leftovers = [p.name for p in (disk / "run" / "checkpoints").iterdir()]
        assert not [name for name in leftovers if "temp" in name], leftovers
    finally:
        subprocess.run(["umount", str(disk)])


def test_a_write_killed_mid_rename_is_completed_by_the_next_run(tmp_path, monkeypatch):
    small = models.mnist_dense(hidden_units=(4,))
    artifacts.write(small, str(tmp_path), {"steps": 1}, PIXELS)
    moves = []
    real_move = artifacts._move

    def killed_after_one_rename(source, destination):
        if moves:
            raise KeyboardInterrupt  # Stands for SIGKILL: nothing after it runs.
        moves.append(destination)
        real_move(source, destination)

    monkeypatch.setattr(artifacts, "_move", killed_after_one_rename)
    with pytest.raises(KeyboardInterrupt):
        artifacts.write(small, str(tmp_path), {"steps": 2}, PIXELS)
    assert not (tmp_path / "metrics.json").exists()  # The old set is no longer marked complete...
    keras.models.load_model(tmp_path / "model.keras")  # ...and the model there is whole.
    monkeypatch.setattr(artifacts, "_move", real_move)
    assert artifacts.finish_interrupted_write(str(tmp_path))
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"steps": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "model.keras", "saved_model"]
    tf.saved_model.load(str(tmp_path / "saved_model"))


def _run(model_dir, *args):
    return run_module("recipes.mnist", f"--model_dir={model_dir}", "--steps_per_loop=10", *args)


def _checkpoints(model_dir):
    return sorted(p.name for p in (model_dir / "checkpoints").glob("ckpt-*.index"))


@pytest.mark.slow
def test_the_resume_contract(tmp_path):
    """Training settings must match the checkpoint's, harmless ones may change
    (and are named), fewer steps is an error, a lost state file is recovered."""
    run = tmp_path / "run"
    assert _run(run, "--train_steps=20").returncode == 0
    changed = _run(run, "--train_steps=40", "--learning_rate=0.5", "--batch_size=64")
    assert_one_line_error(
        changed,
        "holds a run trained with other settings",
        "--batch_size=32 there, 64 now",
        "--learning_rate=0.001 there, 0.5 now",
        "new --model_dir",
    )
    fewer = _run(run, "--train_steps=10")
    assert_one_line_error(fewer, "checkpoint at step 20, past the 10 steps asked for")
    assert _checkpoints(run) == ["ckpt-20.index"]  # Neither touched the checkpoints.

    (run / "checkpoints" / "checkpoint").unlink()
    resumed = _run(run, "--train_steps=30", "--strategy=mirrored", "--num_cpu_devices=2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from the newest readable one, ckpt-20" in resumed.stdout
    assert (
        "Resuming with changes that leave the result as it was: --strategy default -> mirrored"
        in resumed.stdout
    )
    assert json.loads((run / "metrics.json").read_text())["steps_this_run"] == 10


@pytest.mark.slow
def test_nan_from_a_diverging_optimizer_never_reaches_disk(tmp_path):
    """SGD whose warm-up takes the rate towards 30: finite checkpoints first (steps
    5-15 here), then the weights blow up; the run stops with one line, and every
    checkpoint on disk is finite."""
    done = _run(
        tmp_path,
        "--optimizer=sgd",
        "--learning_rate=30",
        "--warmup_steps=100",
        "--train_steps=100",
        "--checkpoint_steps=5",
        "--steps_per_loop=5",
    )
    assert_one_line_error(done, "became", "stopped without saving", "lower --learning_rate")
    assert not (tmp_path / "model.keras").exists() and not (tmp_path / "metrics.json").exists()
    assert _checkpoints(tmp_path)
    for index in _checkpoints(tmp_path):
        reader = tf.train.load_checkpoint(str(tmp_path / "checkpoints" / index[: -len(".index")]))
        for name, dtype in reader.get_variable_to_dtype_map().items():
            if dtype.is_floating:
                assert np.all(np.isfinite(reader.get_tensor(name))), (index, name)


def _start(model_dir, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "recipes.mnist", f"--model_dir={model_dir}", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )


def _wait_for(path, process, seconds=120):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.02)


@pytest.mark.slow
def test_ctrl_c_saves_and_exits_130_and_a_second_writer_is_refused(tmp_path):
    process = _start(tmp_path, "--train_steps=100000", "--steps_per_loop=20", "--checkpoint_steps=100")
    _wait_for(tmp_path / "checkpoints" / "checkpoint", process)
    second = _run(tmp_path, "--train_steps=100000")
    assert_one_line_error(second, f"is in use by process {process.pid}", "pass another --model_dir")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted at step ") and "checkpoint kept" in last and "to resume" in last
    step = int(last.split("interrupted at step ")[1].split(";")[0])
    assert tf.train.latest_checkpoint(tmp_path / "checkpoints").endswith(f"ckpt-{step}")
    assert not (tmp_path / run_dir.LOCK).exists()


@pytest.mark.slow
def test_sigterm_while_python_starts_is_one_line_and_exit_42(tmp_path):
    process = _start(tmp_path)
    deadline = time.monotonic() + 60
    while "libtensorflow" not in open(f"/proc/{process.pid}/maps").read():  # Importing it.
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 42, err[-3000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("preempted: by SIGTERM before training began")


@pytest.mark.slow
def test_a_kill_during_the_final_save_keeps_the_previous_model(tmp_path):
    assert _run(tmp_path, "--train_steps=20").returncode == 0
    before = keras.models.load_model(tmp_path / "model.keras").get_weights()
    process = _start(tmp_path, "--train_steps=40", "--steps_per_loop=10")
    _wait_for(tmp_path / artifacts.STAGING, process)
    process.kill()
    process.communicate()
    after = keras.models.load_model(tmp_path / "model.keras").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 20  # Still one set.
    rerun = _run(tmp_path, "--train_steps=40")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 40
    assert not (tmp_path / artifacts.STAGING).exists()


@pytest.mark.slow
def test_a_worker_that_never_starts_ends_the_wait_with_one_line(tmp_path):
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    hosts = ",".join(f"127.0.0.1:{port}" for port in ports)
    start = time.monotonic()
    done = run_module(
        "recipes.mnist",
        "--strategy=multi_worker",
        f"--worker_hosts={hosts}",
        "--task_index=0",
        "--cluster_timeout_seconds=20",
        f"--model_dir={tmp_path}",
        "--train_steps=2",
        timeout=120,
    )
    assert 20 < time.monotonic() - start < 120  # Waited the timeout, and no hang.
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"Waiting for 127.0.0.1:{ports[1]} to join the cluster (10 s of 20 s)." in done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: 127.0.0.1:{ports[1]} did not join the cluster within "
        "cluster_timeout_seconds=20; start every worker with the same worker_hosts "
        "(or TF_CONFIG), each with its own task_index"
    ]


def test_a_setting_newer_than_the_checkpoints_is_not_compared(tmp_path):
    """A run recorded before a setting existed (say, --tensor_parallel) resumes; a
    setting both sides have must still match."""
    (tmp_path / "checkpoints").mkdir()
    run_dir.record_settings(str(tmp_path), {"recipe": "mnist", "batch_size": 32})
    run_dir.check_settings(str(tmp_path), {"recipe": "mnist", "batch_size": 32, "tensor_parallel": 1})
    with pytest.raises(RecipeError, match="batch_size=32 there, 64 now") as error:
        run_dir.check_settings(str(tmp_path), {"recipe": "mnist", "batch_size": 64, "tensor_parallel": 1})
    assert "--" not in str(error.value)  # Settings, not flags: `entry` spells them as flags.
