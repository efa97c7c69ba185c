"""One-line errors for a user's mistakes, instead of a long traceback."""
import logging
import sys

from absl import app


class RecipeError(Exception):
    """A problem the user can fix: the message says what was wrong and what to do."""


def run(main):
    """`absl.app.run(main)`, printing a `RecipeError` as one line and exiting 1."""

    def guarded_main(argv):
        try:
            return main(argv)
        except RecipeError as e:
            # TensorFlow may still warn while the process tears down (say, about a
            # checkpoint it could not restore); keep the error the last line.
            logging.getLogger("tensorflow").setLevel(logging.ERROR)
            print(flush=True)  # End a progress bar's line.
            sys.exit(f"error: {e}")

    app.run(guarded_main)
