"""The errors a user can act on; `entry.run` prints them as one line instead of a traceback."""


class RecipeError(Exception):
    """A problem the user can fix: the message says what was wrong and what to do."""

    label = "error"
    exit_code = 1


class Preempted(RecipeError):
    """The platform stopped the run; a checkpoint was saved and a rerun resumes."""

    label = "preempted"
    # A code cluster managers read as "restart me", as TensorFlow's own
    # PreemptionCheckpointHandler uses off Google Cloud.
    exit_code = 42
