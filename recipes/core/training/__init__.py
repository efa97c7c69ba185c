"""The training loop: the config, the optimizer and its schedules, the metrics, the
compiled step, the outer loop and its hooks, and `train_model` that composes them.
"""
