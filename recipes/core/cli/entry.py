"""The recipes' entry point: the process-wide set-up a run needs, then `main`, with
a `RecipeError` printed as one line.

    if __name__ == "__main__":   # at the top of a recipe, before TensorFlow loads
        from recipes.core.cli import entry
        entry.handle_stop_signals()
        entry.set_up_process()
    ...
    if __name__ == "__main__":
        entry.run(main)

Only these set process-wide state; importing `models`, `strategies` or
`recipes` changes nothing.
"""

import ctypes
import gc
import logging
import os
import re
import signal
import sys

from absl import app, flags
from absl import logging as absl_logging

from recipes.core.errors import Interrupted, Preempted, RecipeError


def set_up_process():
    """The environment a recipe's process needs, set before TensorFlow loads; a
    value the user exported wins.

    * The BFC CPU allocator. TensorFlow's default CPU allocator returns every
      large buffer to the OS when it is freed, so each step page-faults its
      activations, gradients and optimizer temporaries in afresh; BFC (the one
      GPUs use) keeps and reuses them. A mirrored MNIST run at batch 1024 went
      from 5.2M to 1.7M page faults and from 7,800 to 11,700 examples/s. TF reads
      it when it creates the CPU device, so it still works after the import.
    * TF_CPP_MIN_LOG_LEVEL=2: no C++ INFO lines (XLA's start-up and "Compiled
      cluster" lines). TF reads it once, at its first C++ log line, so it works
      only before `import tensorflow`. What TensorFlow prints while it loads
      (oneDNN, CUDA and CPU-feature notices) comes before it and stays.
    """
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def handle_stop_signals():
    """SIGTERM and SIGINT from the process's start: one line and exit 42 or 130,
    never a traceback or a silent 143. While a run trains, the loop takes them
    over (a checkpoint, then the same codes); its handlers give these back."""
    global _AS_PROGRAM
    _AS_PROGRAM = True
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop_at_once)


_AS_PROGRAM = False  # `handle_stop_signals` ran: this process is a command, not a notebook or a test.


def _ignore_stop_signals():
    """What the command had to do is done, or its error said: a stop signal from now on
    changes nothing. Python gives SIGTERM back its default action while it finalizes
    (which kills with status 143 and no word), but leaves an ignored signal ignored."""
    if _AS_PROGRAM:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)


def _stop_at_once(signum, frame):
    error = (Interrupted if signum == signal.SIGINT else Preempted)(
        f"by {signal.Signals(signum).name} before training began or after it ended; the "
        "checkpoints and outputs on disk are kept; run the same command again to resume"
    )
    print(f"\n{error.line()}", file=sys.stderr, flush=True)
    raise SystemExit(error.exit_code)  # Unwinds, so the run's lock on --model_dir is released.


def _quiet_python_logs():
    """absl's INFO lines from TensorFlow's internals (checkpoint sharding, SavedModel
    signature renames) stay hidden unless `--verbosity` asks for them; so do
    tensorflow-datasets' notes that a folder in its data directory is not a
    prepared dataset (the run says itself when the one it needs is not there)."""
    if not app.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)
        logging.getLogger("tensorflow").setLevel(logging.WARNING)
        if _not_a_dataset_folder not in logging.getLogger("absl").filters:
            logging.getLogger("absl").addFilter(_not_a_dataset_folder)


def _not_a_dataset_folder(record):
    """False for tfds' "Variant folder DIR has no dataset_info.json" (or features.json, or
    an invalid version): a logging filter."""
    return not (
        record.levelno < logging.ERROR
        and str(record.msg).startswith("Variant folder ")
        and "tensorflow_datasets" in record.pathname
    )


_devices_listed = False


def _list_devices_quietly():
    """TensorFlow's first look at the devices, once a process. Where no CUDA driver is
    installed, its C++ `failed call to cuInit` error line says only that there is no
    GPU, which the run says itself; it is dropped then, and every other line passed on
    (TF_CPP_MIN_LOG_LEVEL=3 would hide every C++ error). Listing the physical devices
    starts no runtime: the CPU can still be split, a cluster still joined."""
    global _devices_listed
    tf = sys.modules.get("tensorflow")
    if _devices_listed or tf is None or _cuda_driver_installed():
        return
    _devices_listed = True
    from recipes.core.deploy import serving  # Loaded with TensorFlow already.

    with serving.native_lines_dropped(r"cuda_platform\.cc.*failed call to cuInit"):
        tf.config.list_physical_devices("GPU")  # As TensorFlow's own callback does.


def _cuda_driver_installed():
    """Whether libcuda loads: without it, no GPU can be used (TensorFlow's own test)."""
    if not sys.platform.startswith("linux"):
        return True  # Nothing to drop there.
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def run(main):
    """`absl.app.run(main)` after the process set-up, printing a flag the parser
    rejects, a `RecipeError` or a Ctrl-C as one line and exiting with its code."""

    def guarded_main(argv):
        set_up_process()  # Idempotent; the allocator still takes effect here.
        _quiet_python_logs()
        try:
            return main(argv)
        except KeyboardInterrupt:  # Outside the training loop, which reports its own.
            _exit(
                Interrupted(
                    "at once; the checkpoints and outputs on disk are kept; run the "
                    "same command again to resume"
                )
            )
        except RecipeError as e:
            _exit(e)
        finally:
            _ignore_stop_signals()

    # TensorFlow, Keras and the recipe are imported by now: some 450,000 objects that
    # live as long as the process. Frozen out of the garbage collector's view, they are
    # not traversed by each of its full passes, which tracing and Keras' model building
    # set off often: compress on a small run took 7.9 s instead of 12.3.
    gc.collect()
    gc.freeze()
    app.run(guarded_main, flags_parser=_parse_flags)


def _parse_flags(argv):
    """absl's parsing, with its error (an unknown flag, a value of the wrong type or
    not among the choices) as one `error:` line instead of its two FATAL lines, and
    `--help` (`-h`) as `help_text()`, exit status 0."""
    arguments = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
    if any(argument in HELP_ARGUMENTS for argument in arguments):
        print(help_text(), flush=True)
        sys.exit(0)
    try:
        argv = app.FLAGS(argv)
    except flags.Error as e:
        message = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"error: {message}; see --help for the flags", file=sys.stderr, flush=True)
        sys.exit(1)
    _list_devices_quietly()  # Before absl's after-parsing callbacks: TensorFlow's lists the GPUs.
    return argv


HELP_ARGUMENTS = ("-h", "--help", "-help", "--helpshort", "-helpshort", "-?")


def help_text():
    """What --help prints: the command's docstring, then its flags in groups (its own,
    then the shared ones by topic, `recipe_flags.help_groups`). absl's own --help
    lists none of them (they are not defined in the program's file), and --helpfull
    buries them among TensorFlow's and absl's."""
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    command = spec.name if spec is not None else os.path.basename(sys.argv[0])
    lines = [(main.__doc__ or "").strip(), ""]
    shared = sys.modules.get("recipes.core.cli.flags")
    groups = shared.help_groups(sys.argv[0]) if shared is not None else []
    for title, group in groups:
        shown = [_flag_help(flag) for flag in group] or ["  none"]
        lines += [f"{title.replace('RECIPE', command)}:", *shown, ""]
    lines.append("--helpfull lists TensorFlow's and absl's flags as well.")
    return "\n".join(lines).lstrip()


def _flag_help(flag):
    """One flag as absl's help shows it: name, help, default and the values it takes."""
    name = f"--[no]{flag.name}" if flag.boolean else f"--{flag.name}"
    text = flags.text_wrap(f"{name}: {flag.help}", indent="      ", firstline_indent="  ")
    notes = [
        f"default: {flag.default_as_str}" if flag.default_as_str else None,
        flag.parser.syntactic_help or None,
    ]
    return "\n".join([text] + [flags.text_wrap(f"({note})", indent="      ") for note in notes if note])


def _exit(error):
    # TensorFlow may still warn while the process tears down (say, about a
    # checkpoint it could not restore); keep the error the last line.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    print(flush=True)  # End a progress bar's line.
    print(type(error)(as_flags(str(error))).line(), file=sys.stderr, flush=True)
    sys.exit(error.exit_code)


def as_flags(message):
    """`message` with the settings it names spelled as the flags that set them
    (`batch_size=64` -> `--batch_size=64`): the library names a setting, and on the
    command line each is the flag of the same name. A name with an underscore is a
    setting wherever it stands; a plain word (`epochs`, `tpu`) only before `=` or as
    the message's first word."""
    names = sorted(
        (name for name in app.FLAGS if len(name) > 1 and name.isidentifier()), key=len, reverse=True
    )

    def flag(match):
        name = match.group(1)
        named = "_" in name or match.start() == 0 or message.startswith("=", match.end())
        return f"--{name}" if named else name

    return re.sub(rf"(?<![\w`'./:=-])({'|'.join(names)})\b", flag, message)
