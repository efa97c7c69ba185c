"""The errors a user can act on; `entry.run` prints them as one line instead of a traceback."""

import errno


def first_line(text, limit=None):
    """The first line of an underlying error's `text`, cut to `limit` characters,
    to quote inside a one-line error."""
    return str(text).strip().splitlines()[0][:limit]


class RecipeError(Exception):
    """A problem the user can fix: the message says what was wrong and what to do."""

    label = "error"
    exit_code = 1

    def line(self):
        """The one line `entry.run` prints."""
        return f"{self.label}: {self}"


def is_disk_full(error):
    """Whether `error` (Python's OSError, a TensorFlow error, a `DiskFull`) is
    "no space left on device"."""
    return (
        isinstance(error, DiskFull)
        or getattr(error, "errno", None) == errno.ENOSPC
        or "No space left on device" in str(error)
    )


class DiskFull(RecipeError):
    """The disk filled while a file was written; the file's temporary copy was
    removed, and what was there before is kept."""


class Preempted(RecipeError):
    """The platform stopped the run; a checkpoint was saved and a rerun resumes."""

    label = "preempted"
    # A code cluster managers read as "restart me", as TensorFlow's own
    # PreemptionCheckpointHandler uses off Google Cloud.
    exit_code = 42


class Interrupted(RecipeError):
    """The user pressed Ctrl-C (SIGINT); what was saved is kept and a rerun resumes."""

    label = "interrupted"
    exit_code = 130  # 128 + SIGINT, as shells report it.

    def line(self):
        return f"{self.label} {self}"  # "interrupted at step N; ..."
