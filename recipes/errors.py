"""One-line errors for a user's mistakes, instead of a long traceback."""
import logging
import sys

from absl import app


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


def run(main):
    """`absl.app.run(main)`, printing a `RecipeError` as one line and exiting non-zero."""

    def guarded_main(argv):
        try:
            return main(argv)
        except RecipeError as e:
            # TensorFlow may still warn while the process tears down (say, about a
            # checkpoint it could not restore); keep the error the last line.
            logging.getLogger("tensorflow").setLevel(logging.ERROR)
            print(flush=True)  # End a progress bar's line.
            print(f"{e.label}: {e}", file=sys.stderr, flush=True)
            sys.exit(e.exit_code)

    app.run(guarded_main)
