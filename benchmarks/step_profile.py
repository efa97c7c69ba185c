r"""Where a training step's time goes, read from a profile of a real recipe run.

    python benchmarks/step_profile.py                       # MNIST net, batch 32: about a minute
    python benchmarks/step_profile.py --batch_size=256
    python benchmarks/step_profile.py --logs=RUN/logs       # a trace you already have

It runs `python -m recipes.mnist --profile` (the default strategy; the second
training loop, after compilation, is traced) with XLA's per-operation trace on
(`--xla_cpu_enable_xprof_traceme`), then sums the trace's events per step:

  * the XLA program's wall time (one program per step: the whole step);
  * inside it, the time XLA's threads spend in matmuls, in element-wise fusions
    (Adam's update, the activations, the loss and its gradient), and in the rest;
  * outside it, TensorFlow's own ops in the loop (the metric updates, the
    while loop's counter).

Thread times add the cores' time together, so on 2 cores they can reach twice the
wall time. A step's wall time not covered by the XLA program is what runs
between programs.
"""

import argparse
import collections
import glob
import os
import re
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks import benchmarked  # noqa: E402

XLA_PROGRAM = "CpuExecutable::ExecuteAsyncOnStream"
STEP = "step (wall, from one program's start to the next one's)"
OUTSIDE = "TF ops outside XLA: metric updates, loop (thread time)"
# Events that contain others or only wait: left out of the sums.
CONTAINERS = ("ThunkExecutor::Execute", "SlinkyThreadPool::Await", "ThreadpoolListener::")


def profile_run(model_dir, batch_size, train_steps):
    """Runs the recipe with `--profile` and XLA's per-operation trace; returns the log dir."""
    env = dict(
        os.environ,
        TF_CPP_MIN_LOG_LEVEL="2",
        RECIPES_OFFLINE="1",
        XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true").strip(),
    )
    benchmarked.run_recipe(
        "--profile",
        f"--batch_size={batch_size}",
        f"--train_steps={train_steps}",
        "--steps_per_loop=100",
        f"--model_dir={model_dir}",
        env=env,
    )
    return os.path.join(model_dir, "logs")


def _events(logs):
    """(thread name, event name, start, duration), in ms, of every host event in the
    newest trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = sorted(glob.glob(os.path.join(logs, "plugins", "profile", "*", "*.xplane.pb")))
    if not paths:
        sys.exit(f"no profile under {logs}/plugins/profile; run a recipe with --profile first")
    space = xplane_pb2.XSpace()
    with open(paths[-1], "rb") as f:
        space.ParseFromString(f.read())
    host = next(plane for plane in space.planes if plane.name == "/host:CPU")
    for line in host.lines:
        for event in line.events:
            yield (
                line.name,
                host.event_metadata[event.metadata_id].name,
                line.timestamp_ns / 1e6 + event.offset_ps / 1e9,
                event.duration_ps / 1e9,
            )


def breakdown(logs):
    """{component: ms per step}, and the number of steps traced."""
    totals = collections.Counter()
    steps, first, last = 0, float("inf"), 0.0
    for thread, name, start, ms in _events(logs):
        if name == XLA_PROGRAM:
            steps += 1
            first, last = min(first, start), max(last, start)
            totals["XLA program (wall)"] += ms
        elif name.startswith(CONTAINERS + ("end:", "BlockUntilReady")) or "::" in name:
            continue
        elif re.fullmatch(r"[\w/.-]+:\w+", name):  # A TensorFlow op, "name:Type".
            totals[OUTSIDE] += ms
        elif "Eigen" in thread or thread.startswith("tf_Compute"):  # The program's operations.
            kind = (
                "matmuls"
                if "MatMul" in name or name.startswith("dot")
                else "element-wise fusions"
                if "fusion" in name
                else "other operations"
            )
            totals[f"XLA {kind} (thread time)"] += ms
    if not steps:
        sys.exit(f"the trace under {logs} holds no XLA program; profile a run with --jit_compile")
    totals[STEP] = (last - first) * steps / max(steps - 1, 1)  # The mean start-to-start period.
    return {name: total / steps for name, total in totals.items()}, steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=benchmarked.positive(int), default=32)
    parser.add_argument(
        "--train_steps", type=benchmarked.positive(int), default=300, help="the second 100 are traced"
    )
    parser.add_argument("--logs", default=None, help="read this trace instead of running a recipe")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        logs = args.logs or profile_run(os.path.join(scratch, "run"), args.batch_size, args.train_steps)
        per_step, steps = breakdown(logs)
    print(f"{steps} steps traced ({logs if args.logs else f'MNIST net, batch {args.batch_size}'})")
    print(f"| {'where':<56} | ms per step |\n|{'-' * 58}|-------------|")
    order = [
        STEP,
        "XLA program (wall)",
        "XLA matmuls (thread time)",
        "XLA element-wise fusions (thread time)",
        "XLA other operations (thread time)",
        OUTSIDE,
    ]
    for name in order:
        print(f"| {name:<56} | {per_step.get(name, 0.0):11.2f} |")


if __name__ == "__main__":
    main()
