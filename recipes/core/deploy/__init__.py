"""A finished run served and shrunk: the SavedModel and LiteRT exports, Keras'
quantization, and the one reader of a run directory.
"""
