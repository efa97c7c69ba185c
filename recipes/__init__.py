"""Runnable recipes (`python -m recipes.mnist`) and the training machinery they share."""
import logging
import os

# Keep TensorFlow's start-up and saving chatter (INFO) out of the run's output;
# set TF_CPP_MIN_LOG_LEVEL=0 to see the C++ side of it again.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
logging.getLogger("tensorflow").setLevel(logging.WARNING)
