"""predict on what users pass it: every image kind the docs list on a grey model, and
files it must refuse in one line rather than wrap, guess or exhaust memory on."""

import json
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from tests.helpers import REPO, assert_one_error_line, run_in_process, run_module


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A grey-image run (mnist: uint8 [28, 28]) and a table run (breast cancer: float32 [30])."""
    root = tmp_path_factory.mktemp("predict")
    for name, args in (
        ("mnist", ["--train_steps=3"]),
        ("bigmodel", ["--task=breast_cancer", "--train_steps=3"]),
    ):
        done = run_module(f"recipes.{name}", f"--model_dir={root / name}", *args)
        assert done.returncode == 0, done.stderr[-3000:]
    return root


def _image(path, mode, size=(28, 28)):
    from PIL import Image

    pixels = (np.arange(size[0] * size[1]) % 256).astype(np.uint8).reshape(size)
    image = Image.fromarray(pixels, "L").convert(mode)
    image.save(path)
    return str(path)


def _huge_png(path, width=20_000, height=20_000):
    """A valid PNG header for `width` x `height` pixels, with a tiny compressed body."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\0" * (width + 1) * 16)  # 16 rows; the rest missing.
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )
    return str(path)


def _npy(path, array):
    np.save(path, array)
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind,mode", [("gif", "P"), ("bmp", "L"), ("bmp", "RGB"), ("png", "RGBA"), ("png", "LA"), ("jpg", "RGB")]
)
def test_every_image_kind_the_docs_list_predicts_on_a_grey_model(
    kind, mode, runs, tmp_path, monkeypatch, capfd
):
    from recipes import predict

    path = _image(tmp_path / f"digit.{kind}", mode)
    code, out, err = run_in_process(predict, [f"--model_dir={runs / 'mnist'}", path], monkeypatch, capfd)
    assert code == 0 and f"{path}: " in out and "probability" in out, out + err[-2000:]


BAD_FILES = [  # (run, file maker, the words the error line holds)
    ("mnist", lambda d: _npy(d / "wide.npy", np.full((28, 28), 300, np.uint16)), "values from 300 to 300"),
    ("mnist", lambda d: _npy(d / "none.npy", np.zeros((0, 28, 28), np.uint8)), "holds no examples"),
    ("bigmodel", lambda d: _npy(d / "nan.npy", np.full((30,), np.nan, np.float32)), "NaN or infinite"),
    ("bigmodel", lambda d: _npy(d / "inf.npy", np.full((2, 30), np.inf, np.float64)), "NaN or infinite"),
    ("mnist", lambda d: _huge_png(d / "huge.png"), "20,000 x 20,000 pixels"),
    ("mnist", lambda d: _npy(d / "negative.npy", np.full((28, 28), -1, np.int16)), "int16 array"),
]


@pytest.mark.slow
@pytest.mark.parametrize("run,make,expected", BAD_FILES, ids=[case[2] for case in BAD_FILES])
def test_a_file_the_model_cannot_take_as_it_is_is_one_error_line(
    run, make, expected, runs, tmp_path, monkeypatch, capfd
):
    from recipes import predict

    code, out, err = run_in_process(
        predict, [f"--model_dir={runs / run}", make(tmp_path)], monkeypatch, capfd
    )
    assert_one_error_line(code, err, expected)
    assert "probability" not in out


@pytest.mark.slow
def test_another_runs_keras_file_is_one_error_line(runs, monkeypatch, capfd):
    from recipes import predict

    shutil.copy(runs / "bigmodel" / "model.keras", runs / "mnist" / "other.keras")
    try:
        digit = _npy(runs / "mnist" / "digit.npy", np.zeros((28, 28), np.uint8))
        code, out, err = run_in_process(
            predict, [f"--model_dir={runs / 'mnist'}", "--model=other.keras", digit], monkeypatch, capfd
        )
    finally:
        (runs / "mnist" / "other.keras").unlink()
    assert_one_error_line(code, err, "other.keras")
    assert json.loads((runs / "mnist" / "metrics.json").read_text())["recipe"] == "mnist"


def test_a_stop_signal_after_the_command_ended_changes_nothing():
    """Python gives SIGTERM back its default action while it finalizes: a signal in the
    second after the last output would kill with status 143 and no word. A command's
    process ignores them once its work is done."""
    code = """
import atexit, os, signal, time
from recipes.core.cli import entry
entry.handle_stop_signals()
atexit.register(lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(0.5)))
entry.run(lambda argv: print("done", flush=True))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "done", (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr and "error:" not in done.stderr, done.stderr[-2000:]
