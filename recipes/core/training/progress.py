"""An epoch's progress on the console: Keras' `Progbar` where a terminal shows it, plain
lines where the output goes to a file or a pipe."""

import sys
import time

import keras


def progress_bar(target):
    """Keras' `Progbar` on a terminal or in a notebook. Elsewhere (output redirected to a
    file or a pipe) a `LineProgress`: Progbar takes every Linux process for a terminal,
    so it would fill the file with its `\\r` redraws and colour codes."""
    if (hasattr(sys.stdout, "isatty") and sys.stdout.isatty()) or "ipykernel" in sys.modules:
        return keras.utils.Progbar(target)
    return LineProgress(target)


class LineProgress:
    """An epoch's progress as plain lines, `step 70/140 - 12s - loss: 0.4121 - ...`: one
    at most every `interval` seconds, and one at the epoch's end. Written by hand:
    Keras' Progbar has no plain mode."""

    def __init__(self, target, interval=10.0):
        self.target, self.interval = target, interval
        self._start = self._last = time.monotonic()

    def update(self, current, values=None):
        """`values`: (name, value) pairs, shown as they are (the loop's are the epoch's means)."""
        now = time.monotonic()
        if not values or (current < self.target and now - self._last < self.interval):
            return
        self._last = now
        shown = " - ".join(
            f"{name}: {value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{name}: {value:.4e}"
            for name, value in values
        )
        print(f"step {current}/{self.target} - {now - self._start:.0f}s - {shown}", flush=True)
