"""The machinery every recipe shares, in subpackages by concern. Each may import only
those above it in this list (tests/test_layout.py checks it), and `errors.py`, the
one-line errors, is below them all:

    input/       the data engine: --data opened (data.py), its forms (forms, sources,
                 tables, tfrecords, corpus), splits, the resumable streams
                 (pipeline.py), preprocessing, the bundled samples, TFRecord shards
    deploy/      a finished run served and shrunk: serving.py (raw-input signature,
                 LiteRT), compression.py (Keras quantization, measured rows), runs.py
                 (the one reader of a run directory)
    rundir/      --model_dir: run_dir.py (lock, settings, atomic writes),
                 fault_tolerance.py (restore, preemption, lost workers), artifacts.py
                 (TensorBoard, the outputs written as one set, curves)
    training/    config.py (TrainConfig), optimization.py, metrics.py, step.py (the
                 compiled step and its Objective), loop.py (the outer loop, Hook),
                 hooks.py, progress.py, train.py (Task, train_model) with
                 parallelism.py, resume.py and run_report.py
    objectives/  Objectives beyond the plain loss: pruning.py, distillation.py
    nlp/         the language recipes': text.py (BERT's tokenizer and windows),
                 language.py (characters, losses, baselines), generation.py (KV cache)
    cli/         the commands' shell: flags.py (shared absl flags), data_flags.py
                 (--data from flags), entry.py (process set-up, one-line errors)

`strategies/` and `models/` (beside `recipes/`) never import from here. Importing any
of these changes no process-wide state; `entry.run` sets what a recipe's process needs.
"""
