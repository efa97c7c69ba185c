"""The distillation sweep behind the README's "What was tried" table: each setting
on the *validation* split (450 of the teacher's training digits held out), the
student distilled and alone, seeds 0-2. The test split is printed too, for the
record, never for choosing.

    python -m recipes.cnn                                  # the teacher, runs/cnn
    python benchmarks/distill_sweep.py 3,0.5,2 4,0.5,0     # T,alpha,shift per setting

About 35 s per setting and seed on 2 cores (the student alone once per shift and seed).
"""

import contextlib
import io
import os
import shutil
import sys

import numpy as np

os.environ.setdefault("RECIPES_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import strategies  # noqa: E402
from recipes import distill  # noqa: E402
from recipes.core.deploy import runs  # noqa: E402
from recipes.core.training.config import TrainConfig  # noqa: E402

TEACHER_DIR = os.environ.get("TEACHER_DIR", os.path.join("runs", "cnn"))
OUT = os.environ.get("SWEEP_DIR", os.path.join("runs", "distill_sweep"))
SEEDS = (0, 1, 2)


def main(settings):
    strategy = strategies.get_strategy("default")
    teacher = runs.read(TEACHER_DIR)
    dataset = teacher.load_data().with_validation()
    for setting in settings:
        temperature, alpha, shift = (float(v) for v in setting.split(","))
        scores = []
        for seed in SEEDS:
            model_dir = os.path.join(OUT, f"T{temperature}_a{alpha}_s{shift:g}_seed{seed}")
            alone_dir = os.path.join(OUT, f"alone_s{shift:g}_seed{seed}")
            shutil.rmtree(model_dir, ignore_errors=True)
            have_alone = os.path.exists(os.path.join(alone_dir, "metrics.json"))
            with contextlib.redirect_stdout(io.StringIO()):
                distilled = distill.run(
                    TrainConfig(model_dir=model_dir, epochs=20, batch_size=64, seed=seed),
                    strategy,
                    teacher,
                    dataset,
                    distill.Settings(
                        temperature=temperature,
                        alpha=alpha,
                        transfer_shift=int(shift),
                        baseline=not have_alone,
                    ),
                )
            if not have_alone:
                shutil.copytree(os.path.join(model_dir, "baseline"), alone_dir)
            alone = runs.read(alone_dir).metrics
            scores.append(
                [
                    distilled["validation_accuracy"],
                    alone["validation_accuracy"],
                    distilled["test_accuracy"],
                    alone["test_accuracy"],
                ]
            )
            print(
                f"T={temperature:g} alpha={alpha:g} shift={shift:g} seed={seed}: validation "
                f"{scores[-1][0]:.2%} distilled, {scores[-1][1]:.2%} alone",
                flush=True,
            )
        mean = np.mean(scores, axis=0)
        print(
            f"MEAN T={temperature:g} alpha={alpha:g} shift={shift:g}: validation {mean[0]:.2%} distilled, "
            f"{mean[1]:.2%} alone (test, not for choosing: {mean[2]:.2%}, {mean[3]:.2%})",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
