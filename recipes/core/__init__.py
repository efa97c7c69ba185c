"""The machinery every recipe shares, one concern a module, in the order a run
uses them:

    flags.py            the shared absl flags (defaults from config.TrainConfig)
    config.py           TrainConfig: how to train, checked once
      -> strategies/    (the package beside this one) the tf.distribute strategy
    data.py             the input: `Data` (splits, spec, class names), --data opened
      sources.py        each form on disk (arrays, images, CSV) read in blocks
      tfrecords.py      TFRecord files and tensorflow-datasets, read from block offsets
      corpus.py         text files as windows of next-byte targets, for language models
      pipeline.py       the sharded, shuffled, resumable streams that feed the replicas
      samples.py        the bundled real data (the default --data=sample)
      shards.py         any data written once as TFRecord shards (recipes.prepare)
    text.py             BERT's text
    optimization.py     Keras optimizers, schedules and clipping from a TrainConfig
    metrics.py          accuracy, precision, recall, F1, AUC-ROC as Keras metrics
    step.py             the inner loop: the compiled step, its Objective (extension points)
    loop.py             the outer loop: Controller, its phases and hooks
    run_dir.py          --model_dir: its lock and write probe, the settings a resume must match
    fault_tolerance.py  restore (and a lost state file), preemption, Ctrl-C, lost workers
    artifacts.py        TensorBoard summaries; model.keras, saved_model/, metrics.json, curves.png
                        written as one atomic set
    serving.py          the raw-input serving signature, LiteRT conversion, running any artifact
    pruning.py          magnitude pruning inside the compiled step (an Objective)
    compression.py      Keras quantization, and the measured row of each compressed variant
    runs.py             a finished run read back (recipes.compress, recipes.predict)
    train.py            one run composed: train_model / train_classifier / train_and_evaluate
    errors.py, entry.py one-line errors; the recipes' entry point (process set-up)

Importing any of these changes no process-wide state; `entry.run` sets what a
recipe's process needs.
"""
