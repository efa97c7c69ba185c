"""The data engine: every form --data takes, opened as sources of records, split,
streamed by tf.data and resumed exactly (docs/data.md).
"""
